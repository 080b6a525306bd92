"""The SIP abuse guards on explicit time, no sockets: token buckets, the INVITE rate limit, the media budget of
unconfirmed destinations, dialog matching, the dialog peer check, and the rejection log's line budget."""

from __future__ import annotations

import ipaddress
import logging

import pytest

from voice_server.sip import dialog as d
from voice_server.sip.endpoint import RejectionLog
from voice_server.sip.guard import (
    Admission,
    InviteLimiter,
    MediaBudget,
    TokenBuckets,
    dialog_status,
    matches_dialog,
    peer_allowed,
)
from voice_server.sip.message import Headers, Request
from voice_server.sip.trunks import Trunk

DIALOG = d.Dialog("call-1", "ours", "sip:soma@127.0.0.1", "sip:bob@10.0.0.5", "theirs", "sip:bob@10.0.0.5:5062")


def bye(*, call_id: str = "call-1", from_tag: str | None = "theirs", to_tag: str | None = "ours") -> Request:
    headers = Headers()
    headers.items += [("via", "SIP/2.0/UDP 10.0.0.5:5062;branch=z9hG4bKx"),
                      ("from", "<sip:bob@10.0.0.5>" + (f";tag={from_tag}" if from_tag else "")),
                      ("to", "<sip:soma@127.0.0.1>" + (f";tag={to_tag}" if to_tag else "")),
                      ("call-id", call_id), ("cseq", "2 BYE")]
    return Request(headers, b"", method="BYE", uri="sip:soma@127.0.0.1")


def test_a_token_bucket_allows_a_burst_then_the_rate() -> None:
    """Burst 3 at 2/s: three at once, the fourth waits 0.5 s; keys are independent and their number bounded."""
    buckets = TokenBuckets(2.0, 3, max_keys=2)
    assert [buckets.take("a", 0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert buckets.take("a", 0.0) == 0.5
    assert buckets.take("a", 0.5) == 0.0 and buckets.take("b", 0.5) == 0.0
    buckets.take("c", 0.5)
    assert len(buckets) == 2


def test_an_invite_flood_is_admitted_then_refused_then_dropped() -> None:
    """Burst INVITEs pass; as many more get a 503 with Retry-After (the first flagged for the one log line);
    the rest are dropped; once the source slows down it is admitted again and a new episode starts."""
    limiter = InviteLimiter(rate=5, burst=4)
    verdicts = [limiter.check("10.0.0.9", 0.0) for _ in range(12)]
    assert [v.admission for v in verdicts] == [Admission.ADMIT] * 4 + [Admission.REFUSE] * 4 + [Admission.DROP] * 4
    assert [v.first for v in verdicts[4:]] == [True] + [False] * 7
    assert all(v.retry_after >= 1 for v in verdicts[4:8])
    assert limiter.check("10.0.0.10", 0.0).admission is Admission.ADMIT  # another source is not affected
    again = [limiter.check("10.0.0.9", 1.0) for _ in range(5)]  # a second later: the bucket is full again
    assert [v.admission for v in again][:4] == [Admission.ADMIT] * 4 and again[4].first


def test_unconfirmed_media_gets_one_calls_worth_per_host() -> None:
    """50 packets/s (after a burst of 10) towards one unconfirmed host, whatever the number of streams; another
    host has its own budget."""
    budget = MediaBudget()
    sent = sum(budget.allow("192.0.2.7", t * 0.02 / 3) for t in range(3 * 50))  # three streams for one second
    assert 50 <= sent <= 62 and budget.held_back == 150 - sent
    assert budget.allow("192.0.2.8", 1.0)


def test_a_dialog_matches_on_call_id_and_both_tags() -> None:
    """§12.2.2: Call-ID alone, a wrong or missing tag → no match; 481 before any source check."""
    assert matches_dialog(bye(), "call-1", "ours", "theirs")
    for request in (bye(call_id="call-2"), bye(to_tag=None), bye(to_tag="guess"), bye(from_tag="guess")):
        assert not matches_dialog(request, "call-1", "ours", "theirs")
        assert dialog_status(request, "10.0.0.5", DIALOG, flow_ip="10.0.0.5", trunk=None) == 481
    assert matches_dialog(bye(from_tag=None), "call-1", "ours", "")  # an RFC 2543 peer without From tag


def test_only_the_dialogs_peer_may_act_on_it() -> None:
    """The dialog's flow address, its remote target's host and its trunk's networks may; others get 403."""
    pbx = Trunk("pbx", allow=(ipaddress.ip_network("10.1.0.0/16"),))
    assert dialog_status(bye(), "10.0.0.5", DIALOG, flow_ip="10.0.0.5", trunk=None) == 200
    assert dialog_status(bye(), "10.0.0.5", DIALOG, flow_ip="10.9.9.9", trunk=None) == 200  # the Contact's host
    assert dialog_status(bye(), "10.1.2.3", DIALOG, flow_ip="10.9.9.9", trunk=pbx) == 200  # a trunk node
    assert dialog_status(bye(), "203.0.113.1", DIALOG, flow_ip="10.9.9.9", trunk=pbx) == 403
    assert not peer_allowed("203.0.113.1", flow_ip="10.9.9.9", remote_target="sip:bob@pbx.example", trunk=None)
    assert not peer_allowed("203.0.113.1", flow_ip="10.9.9.9", remote_target="junk", trunk=Trunk("any", username="u",
                                                                                                 password="p"))


def test_rejections_are_all_counted_but_logged_within_a_budget(caplog: pytest.LogCaptureFixture) -> None:
    """A flood from one source logs `burst` lines; one spread over 1,000 (spoofed) sources logs `total_burst`;
    an unexpected error logs one line like a rejection. Every event is counted."""
    counted: list[int] = []
    rejections = RejectionLog(burst=3, total_burst=20, count=lambda: counted.append(1))
    with caplog.at_level(logging.INFO, logger="voice_server.sip.endpoint"):
        for _ in range(50):
            rejections.reject("198.51.100.1", "a bad CSeq")
        assert len(caplog.records) == 3
        for i in range(1000):
            rejections.reject(f"10.0.{i // 256}.{i % 256}", "a bad CSeq")
        rejections.failure("198.51.100.2", "a message", ValueError("boom"))
    assert len(caplog.records) == 20 and len(counted) == rejections.total == 1051
