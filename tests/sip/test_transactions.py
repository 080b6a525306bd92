"""UAS transactions on explicit time (RFC 3261 §17.2): absorption, Timer G/H retransmission, ACK, lingering."""

from __future__ import annotations

from voice_server.sip.transactions import T1, T2, AckTimeout, Kind, Resend, ServerTransactions

ADDR = ("127.0.0.1", 5062)


def test_a_retransmitted_invite_gets_the_last_response_again() -> None:
    """Same branch and method → RETRANSMISSION carrying the last response sent (nothing before any)."""
    t = ServerTransactions()
    assert t.receive("INVITE", "b1", "c1", ADDR, 0.0, reliable=False).kind is Kind.NEW
    assert t.receive("INVITE", "b1", "c1", ADDR, 0.1, reliable=False).resend is None
    t.respond("INVITE", "b1", 180, b"180", 0.2)
    again = t.receive("INVITE", "b1", "c1", ADDR, 0.3, reliable=False)
    assert again.kind is Kind.RETRANSMISSION and again.resend == b"180"


def test_200_is_resent_with_doubling_intervals_until_the_ack() -> None:
    """Timer G: 0.5, 1, 2, 4, 4 s… ; the dialog's ACK (new branch) stops it and is ACK_2XX."""
    t = ServerTransactions()
    t.receive("INVITE", "b1", "c1", ADDR, 0.0, reliable=False)
    t.respond("INVITE", "b1", 200, b"200", 0.0)
    sent = []
    now = 0.0
    while now < 12.0:
        now = t.next_deadline() or 99
        sent += [(now, a) for a in t.tick(now) if isinstance(a, Resend)]
    assert [round(s, 2) for s, _ in sent[:5]] == [T1, 1.5, 3.5, 7.5, 7.5 + T2]
    assert t.receive("ACK", "b2", "c1", ADDR, 12.0, reliable=False).kind is Kind.ACK_2XX
    assert not [a for a in t.tick(13.0) if isinstance(a, Resend)] and not t.tick(40.0)


def test_a_2xx_never_acknowledged_reports_the_dialog() -> None:
    """64·T1 without ACK → AckTimeout(call_id), once."""
    t = ServerTransactions()
    t.receive("INVITE", "b1", "c1", ADDR, 0.0, reliable=True)
    t.respond("INVITE", "b1", 200, b"200", 0.0)
    assert t.tick(31.0) == []
    assert t.tick(32.0) == [AckTimeout("c1")]
    assert t.tick(33.0) == [] and len(t) == 0


def test_ack_for_a_failure_is_absorbed_and_stray_acks_dropped() -> None:
    """The ACK of a 4xx (same branch) ends retransmission; an ACK matching nothing is a STRAY_ACK."""
    t = ServerTransactions()
    t.receive("INVITE", "b1", "c1", ADDR, 0.0, reliable=False)
    t.respond("INVITE", "b1", 486, b"486", 0.0)
    assert t.receive("ACK", "b1", "c1", ADDR, 0.2, reliable=False).kind is Kind.ACK_NON2XX
    assert not [a for a in t.tick(1.0) if isinstance(a, Resend)]
    assert t.receive("ACK", "zz", "c9", ADDR, 0.3, reliable=False).kind is Kind.STRAY_ACK


def test_non_invite_transactions_linger_then_are_forgotten() -> None:
    """A BYE retransmitted within 32 s gets the same 200; after that the transaction is gone (UDP)."""
    t = ServerTransactions()
    t.receive("BYE", "b1", "c1", ADDR, 0.0, reliable=False)
    t.respond("BYE", "b1", 200, b"200", 0.0)
    assert t.receive("BYE", "b1", "c1", ADDR, 10.0, reliable=False).resend == b"200"
    t.tick(32.5)
    assert len(t) == 0


def test_the_table_is_bounded() -> None:
    """A flood of distinct branches evicts the oldest transactions instead of growing."""
    t = ServerTransactions(max_transactions=100)
    for i in range(1000):
        t.receive("OPTIONS", f"b{i}", f"c{i}", ADDR, 0.0, reliable=False)
    assert len(t) == 100
