"""SIP telephony bridge: a phone line (trunk, PBX, desk or soft phone) rings the avatar.

Layers, outermost first: `endpoint` (UDP/TCP sockets, framing, rejections) → `transactions` (retransmission,
sans-I/O) → `calls` (UAS dialog logic, call lifetime) → `media` (RTP socket, jitter buffer, pipeline
transport). Wire formats are sans-I/O modules: `message` (SIP), `sdp`, `rtp`, `auth` (digest), `dialog`.
"""
