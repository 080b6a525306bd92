"""UAS transaction state (RFC 3261 §17.2, RFC 6026): retransmission absorption and response retransmission.

Sans-I/O: `ServerTransactions.receive` classifies an incoming request, `respond` records what was answered,
`tick(now)` returns the datagrams to resend and the dialogs whose 2xx was never acknowledged. Time is always
passed in; nothing here reads a clock or touches a socket.

- A retransmitted request (same top Via branch and method, from the same source address: §17.2.3 matches the
  sent-by too, and a stranger who learnt a branch must not answer for, or pre-empt, the real peer's request)
  is absorbed: the last response is sent again, or nothing if none was sent yet.
- A final response to INVITE over UDP is retransmitted (Timer G: T1, doubling up to T2) until the ACK comes;
  after 64·T1 without ACK (Timer H; for a 2xx, §13.3.1.4) the dialog is reported dead so the call ends. Only
  an ACK the caller says matches the dialog (tags and source, `voice_server.sip.guard`) stops that clock: a
  stranger who knows the Call-ID cannot keep an unacknowledged call alive.
- Finished transactions linger (Timer J / Timer L: 64·T1) to absorb late retransmissions, then are forgotten.
  The table is bounded (`MAX_TRANSACTIONS`): a flood of distinct branches evicts the oldest.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass
from enum import Enum

T1 = 0.5
T2 = 4.0
MAX_TRANSACTIONS = 4096

Addr = tuple[str, int]
Key = tuple[str, str, str]  # (branch, method, source IP)


class Kind(Enum):
    """What an incoming request is, as far as transactions go."""

    NEW = "new"
    RETRANSMISSION = "retransmission"  # absorbed; `Received.resend` is the last response, if any
    ACK_2XX = "ack-2xx"  # ACK for our 200 OK: the dialog is confirmed
    ACK_NON2XX = "ack-non2xx"  # ACK for a failure response: absorbed
    STRAY_ACK = "stray-ack"  # an ACK matching nothing: dropped silently (§17.2.3 / §13.3.1.4)


@dataclass(frozen=True, slots=True)
class Received:
    """The verdict for one request."""

    kind: Kind
    resend: bytes | None = None


@dataclass(frozen=True, slots=True)
class Resend:
    """Send ``data`` to ``addr`` again (a final INVITE response not yet acknowledged)."""

    data: bytes
    addr: Addr


@dataclass(frozen=True, slots=True)
class AckTimeout:
    """No ACK came for the 2xx of ``call_id`` within 64·T1: the call must be ended with a BYE."""

    call_id: str


@dataclass(slots=True)
class _Txn:
    method: str
    call_id: str
    addr: Addr
    reliable: bool
    response: bytes | None = None
    status: int = 0
    created: float = 0.0
    next_resend: float | None = None
    interval: float = T1
    give_up: float | None = None
    done_at: float | None = None  # when it stops absorbing retransmissions and is forgotten


class ServerTransactions:
    """Every server transaction of one SIP listener."""

    def __init__(self, *, max_transactions: int = MAX_TRANSACTIONS, t1: float = T1) -> None:
        """``t1``: the round-trip estimate T1 (RFC 3261 §17.1.1.1); Timer H and the linger time are 64·T1."""
        self._txns: collections.OrderedDict[Key, _Txn] = collections.OrderedDict()
        self._max = max_transactions
        self.t1, self.t2 = t1, max(T2, t1)
        self.linger_s = 64 * t1
        self._awaiting_ack: dict[str, Key] = {}  # call-id → key of the INVITE whose 2xx awaits ACK

    def __len__(self) -> int:
        return len(self._txns)

    def receive(self, method: str, branch: str, call_id: str, addr: Addr, now: float, *, reliable: bool,
                in_dialog: bool = True) -> Received:
        """Classify a parsed request (``branch`` of its top Via) and open a transaction for a new one.

        Args:
            in_dialog: For an ACK: whether it matches its dialog (tags, source). One that does not is a
                `Kind.STRAY_ACK` and leaves the 2xx waiting (and Timer H running).
        """
        if method == "ACK":
            invite = self._txns.get((branch, "INVITE", addr[0]))
            if invite is not None and invite.status >= 300:  # same branch: the ACK of a failure (§17.1.1.3)
                invite.next_resend = invite.give_up = None
                invite.done_at = now + (0 if reliable else self.t2 * 2)
                return Received(Kind.ACK_NON2XX)
            if not in_dialog:
                return Received(Kind.STRAY_ACK)
            key = self._awaiting_ack.pop(call_id, None)
            if key is not None:
                txn = self._txns.get(key)
                if txn is not None:
                    txn.next_resend = txn.give_up = None
                return Received(Kind.ACK_2XX)
            return Received(Kind.STRAY_ACK)
        key = (branch, method, addr[0])
        txn = self._txns.get(key)
        if txn is not None:
            return Received(Kind.RETRANSMISSION, txn.response)
        while len(self._txns) >= self._max:
            self._forget(next(iter(self._txns)))
        self._txns[key] = _Txn(method, call_id, addr, reliable, created=now)
        return Received(Kind.NEW)

    def respond(self, method: str, branch: str, status: int, data: bytes, now: float, *,
                source: str | None = None) -> None:
        """Record the response sent for a transaction (every provisional and final one).

        ``source`` is the request's source IP (part of the transaction's identity); ``None`` picks the newest
        transaction with that branch and method, for a caller that talks to one peer only.

        Final INVITE responses over UDP start retransmission; 2xx ones wait for the dialog's ACK
        (`receive` with method ACK). Non-INVITE transactions linger 64·T1 (0 over TCP) after their final.
        """
        key = (branch, method, source) if source is not None else next(
            (k for k in reversed(self._txns) if k[:2] == (branch, method)), None)
        txn = self._txns.get(key) if key is not None else None
        if txn is None or key is None:
            return
        txn.response, txn.status = data, status
        if status < 200:
            return
        if method == "INVITE":
            if not txn.reliable:
                txn.next_resend, txn.interval = now + self.t1, self.t1
            txn.give_up = now + self.linger_s
            txn.done_at = now + self.linger_s
            if status < 300:
                self._awaiting_ack[txn.call_id] = key
        else:
            txn.done_at = now + (0.0 if txn.reliable else self.linger_s)

    def forget_dialog(self, call_id: str) -> None:
        """Stop waiting for the ACK of ``call_id`` (the call ended some other way)."""
        key = self._awaiting_ack.pop(call_id, None)
        txn = self._txns.get(key) if key is not None else None
        if txn is not None:
            txn.next_resend = txn.give_up = None

    def tick(self, now: float) -> list[Resend | AckTimeout]:
        """Due retransmissions and ACK timeouts; forgets finished transactions. Call at `next_deadline`."""
        out: list[Resend | AckTimeout] = []
        for key, txn in list(self._txns.items()):
            if txn.give_up is not None and now >= txn.give_up:
                txn.next_resend = txn.give_up = None
                if self._awaiting_ack.get(txn.call_id) == key:
                    del self._awaiting_ack[txn.call_id]
                    out.append(AckTimeout(txn.call_id))
            if txn.next_resend is not None and now >= txn.next_resend and txn.response is not None:
                out.append(Resend(txn.response, txn.addr))
                txn.interval = min(txn.interval * 2, self.t2)
                txn.next_resend = now + txn.interval
            if txn.done_at is not None and now >= txn.done_at and txn.next_resend is None:
                self._forget(key)
        return out

    def next_deadline(self) -> float | None:
        """The earliest time `tick` has something to do, or ``None``."""
        times = [t for txn in self._txns.values() for t in (txn.next_resend, txn.give_up, txn.done_at) if t is not None]
        return min(times, default=None)

    def _forget(self, key: Key) -> None:
        txn = self._txns.pop(key)
        if self._awaiting_ack.get(txn.call_id) == key:
            del self._awaiting_ack[txn.call_id]
