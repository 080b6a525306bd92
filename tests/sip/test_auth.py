"""SIP digest authentication (RFC 2617, RFC 8760) on both sides, on an injected clock."""

from __future__ import annotations

import pytest

from voice_server.sip.auth import DigestServer, Verdict, client_authorization

PASSWORDS = {"pbx": "s3cret"}


@pytest.mark.parametrize("algorithm", ["SHA-256", "MD5"])
def test_a_correct_answer_to_each_challenge_is_accepted(algorithm: str) -> None:
    """The client's answer to the SHA-256 or MD5 challenge verifies; the verdict names the user."""
    server = DigestServer("soma", clock=lambda: 1000.0)
    challenge = next(c for c in server.challenge() if f"algorithm={algorithm}" in c)
    header = client_authorization(challenge, username="pbx", password="s3cret", method="INVITE", uri="sip:a@b")
    assert server.verify(header, "INVITE", PASSWORDS.get) == (Verdict.OK, "pbx")


def test_wrong_password_user_or_forged_nonce_is_bad() -> None:
    """A wrong password, an unknown user or a nonce we did not issue → BAD; no header → MISSING."""
    server = DigestServer("soma", clock=lambda: 1000.0)
    challenge = server.challenge()[0]
    wrong = client_authorization(challenge, username="pbx", password="nope", method="INVITE", uri="sip:a@b")
    assert server.verify(wrong, "INVITE", PASSWORDS.get)[0] is Verdict.BAD
    stranger = client_authorization(challenge, username="eve", password="x", method="INVITE", uri="sip:a@b")
    assert server.verify(stranger, "INVITE", PASSWORDS.get)[0] is Verdict.BAD
    forged = challenge.replace('nonce="', 'nonce="3e8.0')
    header = client_authorization(forged, username="pbx", password="s3cret", method="INVITE", uri="sip:a@b")
    assert server.verify(header, "INVITE", PASSWORDS.get)[0] is Verdict.BAD
    assert server.verify(None, "INVITE", PASSWORDS.get)[0] is Verdict.MISSING
    huge = f'Digest username="pbx", realm="soma", nonce="{"f" * 20000}.00", uri="sip:a@b", response="00"'
    assert server.verify(huge, "INVITE", PASSWORDS.get)[0] is Verdict.BAD  # not an exception (int->str limit)


def test_non_ascii_nonce_or_response_is_bad_not_an_exception() -> None:
    """Non-ASCII text in the nonce or response (Unicode digits, accents) → BAD, never a TypeError."""
    server = DigestServer("soma", clock=lambda: 1000.0)
    challenge = server.challenge()[0]
    good = client_authorization(challenge, username="pbx", password="s3cret", method="INVITE", uri="sip:a@b")
    nonce = good.split('nonce="', 1)[1].split('"', 1)[0]
    arabic = "".join(chr(0x660 + int(c)) if c.isdigit() else c for c in nonce)  # same value as int(), other text
    assert server.verify(good.replace(nonce, arabic), "INVITE", PASSWORDS.get)[0] is Verdict.BAD
    response = good.split('response="', 1)[1].split('"', 1)[0]
    accented = good.replace(response, "é" * len(response))
    assert server.verify(accented, "INVITE", PASSWORDS.get)[0] is Verdict.BAD


def test_an_old_nonce_is_stale_not_bad() -> None:
    """The right password on an expired nonce → STALE (challenge again with stale=true)."""
    now = [1000.0]
    server = DigestServer("soma", clock=lambda: now[0])
    challenge = server.challenge()[0]
    header = client_authorization(challenge, username="pbx", password="s3cret", method="INVITE", uri="sip:a@b")
    now[0] += 3600
    assert server.verify(header, "INVITE", PASSWORDS.get)[0] is Verdict.STALE
    assert "stale=true" in server.challenge(stale=True)[0]


def test_answers_are_bound_to_the_method() -> None:
    """An answer computed for REGISTER does not authenticate an INVITE."""
    server = DigestServer("soma", clock=lambda: 1000.0)
    header = client_authorization(server.challenge()[0], username="pbx", password="s3cret", method="REGISTER",
                                  uri="sip:a@b")
    assert server.verify(header, "INVITE", PASSWORDS.get)[0] is Verdict.BAD
