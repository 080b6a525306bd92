"""Abuse guards of the SIP listener, sans-I/O: dialog matching, peer checks, INVITE rate limits, media budgets.

Each guard takes the time (``now``, seconds on any monotonic clock) as an argument and touches no socket, so it
is tested with plain function calls; the call manager (`voice_server.sip.calls`) and the media
(`voice_server.sip.rtp_stream`) consult them.

- `matches_dialog` / `peer_allowed`: an in-dialog request (BYE, INFO, re-INVITE, ACK) belongs to a dialog only
  when its Call-ID *and* both tags match (RFC 3261 §12.2.2), and it is obeyed only when it comes from the
  dialog's peer: the address the dialog was established on, its remote target, or its trunk's networks. The
  Call-ID alone is no secret (it travels in clear text to every proxy on the path).
- `InviteLimiter`: new INVITEs per source address go through a token bucket; beyond it a second bucket of the
  same size pays for ``503`` answers with Retry-After, and beyond that INVITEs are dropped unanswered, so a
  flood costs neither calls nor an answer per datagram.
- `MediaBudget`: media towards an address that has not shown it wants it (no RTP came back from it yet) is
  limited per destination host, so a forged SDP ``c=`` line cannot aim the server's RTP at a third party.
"""

from __future__ import annotations

import ipaddress
from collections import OrderedDict
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING

from voice_server.sip.message import Request, SipParseError, parse_uri
from voice_server.sip.trunks import Trunk

if TYPE_CHECKING:
    from voice_server.sip.dialog import Dialog

MAX_TRACKED = 4096  # sources/destinations remembered; the least recently seen are forgotten beyond this
UNVERIFIED_PPS = 50.0  # one call's worth of 20 ms packets per unverified destination host, all calls together
UNVERIFIED_BURST = 10.0  # absorbs the media clock's jitter


class TokenBuckets:
    """One token bucket per key (``rate`` tokens/s, at most ``burst``), for at most `MAX_TRACKED` keys.

    A key not seen for a while is forgotten first when the table is full; forgetting refills its bucket, which
    only ever errs towards letting a source through.
    """

    def __init__(self, rate: float, burst: float, *, max_keys: int = MAX_TRACKED) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("a token bucket needs a positive rate and a burst of at least 1")
        self.rate, self.burst, self._max = rate, burst, max_keys
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # key → (tokens, at)

    def take(self, key: str, now: float) -> float:
        """Spend one token of ``key``: 0.0 when there was one, else the seconds until there is one."""
        tokens, at = self._buckets.pop(key, (self.burst, now))
        tokens = min(self.burst, tokens + max(0.0, now - at) * self.rate)
        wait = 0.0
        if tokens >= 1.0:
            tokens -= 1.0
        else:
            wait = (1.0 - tokens) / self.rate
        self._buckets[key] = (tokens, now)
        while len(self._buckets) > self._max:
            self._buckets.popitem(last=False)
        return wait

    def __len__(self) -> int:
        return len(self._buckets)


class Admission(Enum):
    """What to do with a new INVITE as far as its source's rate goes."""

    ADMIT = "admit"
    REFUSE = "refuse"  # answer 503 with Retry-After
    DROP = "drop"  # over both buckets: no answer at all


@dataclass(frozen=True, slots=True)
class InviteVerdict:
    """`InviteLimiter.check`'s answer.

    Attributes:
        admission: Admit, refuse (503) or drop.
        retry_after: Whole seconds for the 503's Retry-After (at least 1).
        first: True for the first refusal of a limiting episode of this source (log one line then, not per
            INVITE).
    """

    admission: Admission
    retry_after: int = 0
    first: bool = False


class InviteLimiter:
    """Rate limit of new INVITEs per source address.

    Args:
        rate: INVITEs per second a source may send, sustained.
        burst: How many it may send at once; also how many 503 answers it gets beyond that before the rest
            are dropped silently.
    """

    def __init__(self, rate: float, burst: int) -> None:
        self._invites = TokenBuckets(rate, burst)
        self._answers = TokenBuckets(rate, burst)
        self._limited: OrderedDict[str, None] = OrderedDict()  # sources in a limiting episode

    def check(self, source: str, now: float) -> InviteVerdict:
        """Count one new INVITE from ``source`` (its IP address)."""
        wait = self._invites.take(source, now)
        if wait == 0.0:
            self._limited.pop(source, None)  # the episode is over
            return InviteVerdict(Admission.ADMIT)
        first = source not in self._limited
        self._limited[source] = None
        while len(self._limited) > MAX_TRACKED:
            self._limited.popitem(last=False)
        if self._answers.take(source, now) > 0.0:
            return InviteVerdict(Admission.DROP, first=first)
        return InviteVerdict(Admission.REFUSE, retry_after=max(1, int(wait + 0.999)), first=first)


class MediaBudget:
    """Packets per second the server may send to destination hosts that have not confirmed they want them.

    A stream's destination is confirmed once RTP arrived from it (symmetric RTP latched); until then every
    stream aimed at the same host shares `UNVERIFIED_PPS`. A real phone sends its own audio from the first
    20 ms, so it is confirmed before it notices; a victim named in a forged SDP never is.
    """

    def __init__(self, pps: float = UNVERIFIED_PPS, burst: float = UNVERIFIED_BURST) -> None:
        self._buckets = TokenBuckets(pps, burst)
        self.held_back = 0  # packets not sent for lack of budget (for logs and tests)

    def allow(self, host: str, now: float) -> bool:
        """Whether one more packet may go to the unconfirmed ``host`` now (spends the budget if so)."""
        if self._buckets.take(host, now) == 0.0:
            return True
        self.held_back += 1
        return False


def matches_dialog(request: Request, call_id: str, local_tag: str, remote_tag: str) -> bool:
    """Whether ``request`` is inside the dialog (§12.2.2): same Call-ID, our tag in To, the peer's in From.

    ``remote_tag`` is empty for a peer that sent no From tag (RFC 2543); its requests must then carry none.
    Malformed From/To values never match.
    """
    if request.call_id != call_id:
        return False
    try:
        return request.to.tag == local_tag and (request.from_.tag or "") == remote_tag
    except SipParseError:
        return False


def peer_allowed(ip: str, *, flow_ip: str, remote_target: str, trunk: Trunk | None) -> bool:
    """Whether a request of a dialog coming from ``ip`` may act on it.

    Args:
        ip: The request's source address.
        flow_ip: The address the dialog was established on (the INVITE's source; for our outbound calls the
            trunk proxy).
        remote_target: The dialog's remote target URI (the peer's Contact); counts when its host is an IP.
        trunk: The trunk the call came in or went out through: any address of its ``allow`` networks counts
            (a PBX cluster may send the BYE from another node). A trunk admitting any source adds nothing.
    """
    if ip == flow_ip:
        return True
    try:
        host = parse_uri(remote_target).host.strip("[]")
        if ipaddress.ip_address(host) == ipaddress.ip_address(ip):
            return True
    except (SipParseError, ValueError):
        pass  # a hostname (or garbage) in Contact cannot vouch for an address
    return trunk is not None and bool(trunk.allow) and trunk.admits(ip)


def dialog_status(request: Request, source: str, dialog: Dialog, *, flow_ip: str, trunk: Trunk | None) -> int:
    """Whether an in-dialog ``request`` from ``source`` may act on ``dialog``: 200 yes, 481 when it does not
    match the dialog (`matches_dialog`), 403 when it does but comes from elsewhere than its peer (`peer_allowed`)."""
    if not matches_dialog(request, dialog.call_id, dialog.local_tag, dialog.remote_tag):
        return 481
    if not peer_allowed(source, flow_ip=flow_ip, remote_target=dialog.remote_target, trunk=trunk):
        return 403
    return 200
