"""SIP settings and trunk configuration are validated at start, with messages naming the setting."""

from __future__ import annotations

import json

import pytest

from voice_server.config import ConfigError, load_settings
from voice_server.sip.auth import ALGORITHMS
from voice_server.sip.routing import Line
from voice_server.sip.trunks import DIGEST_ALGORITHMS, parse_trunks


def test_defaults_listen_on_loopback_5060() -> None:
    """Binding a public address must be an explicit choice: the default is 127.0.0.1:5060."""
    settings = load_settings(env={})
    assert settings.sip_address == ("127.0.0.1", 5060) and settings.rtp_port_range == (10000, 10999)
    assert load_settings(env={"SOMA_SIP_BIND": "off"}).sip_address is None


@pytest.mark.parametrize(
    ("env", "needle"),
    [
        ({"SOMA_SIP_BIND": "5060"}, "sip_bind"),
        ({"SOMA_SIP_TRANSPORTS": "udp,sctp"}, "sip_transports"),
        ({"SOMA_SIP_RTP_PORTS": "500-600"}, "sip_rtp_ports"),
        ({"SOMA_SIP_RTP_PORTS": "41000-40000"}, "sip_rtp_ports"),
        ({"SOMA_SIP_BIND": "127.0.0.1:\u00b2"}, "sip_bind"),  # "²".isdigit(), but int() refuses it
        ({"SOMA_SIP_RTP_PORTS": "\u0661\u0660\u0660\u0660\u0660-20000"}, "sip_rtp_ports"),  # Arabic-Indic
        ({"SOMA_SIP_TRUNKS": "[{"}, "sip_trunks: invalid JSON"),
        ({"SOMA_SIP_TRUNKS": json.dumps([{"name": "x", "allow": ["nonsense"]}])}, "'allow'"),
        ({"SOMA_SIP_TRUNKS": json.dumps([{"name": "x", "username": "u"}])}, "both username and password"),
        ({"SOMA_SIP_TRUNKS": json.dumps([{"name": "x"}])}, "give 'allow'"),
        ({"SOMA_SIP_TRUNKS": json.dumps([{"allow": ["10.0.0.0/8"], "algorithms": ["SHA-1"]}])}, "algorithms"),
        ({"SOMA_SIP_TRUNKS": json.dumps([{"allow": [], "passwd": "x"}])}, "unknown keys"),
    ],
)
def test_bad_sip_settings_fail_at_start(env: dict[str, str], needle: str) -> None:
    """Each bad value is a ConfigError naming what is wrong."""
    with pytest.raises(ConfigError, match=needle):
        load_settings(env=env)


def test_trunk_password_is_not_in_errors_or_reprs() -> None:
    """A trunk's password never appears in its repr (logs) nor in configuration errors."""
    (trunk,) = parse_trunks(json.dumps([{"name": "pbx", "allow": ["10.0.0.0/8"], "username": "u",
                                         "password": "hunter2-secret"}]))
    assert "hunter2-secret" not in repr(trunk)
    assert trunk.admits("10.1.2.3") and not trunk.admits("192.168.0.1") and not trunk.admits("nonsense")
    with pytest.raises(ConfigError) as err:
        load_settings(env={"SOMA_SIP_TRUNKS": json.dumps([{"name": "pbx", "username": "u",
                                                           "password": "hunter2-secret", "algorithms": ["X"]}])})
    assert "hunter2-secret" not in str(err.value)


def test_trunk_algorithms_are_the_digest_ones() -> None:
    """The algorithm names a trunk may list are exactly those the digest code implements."""
    assert set(DIGEST_ALGORITHMS) == set(ALGORITHMS)


def test_caller_allow_list_ignores_formatting() -> None:
    """``+49 30-111`` on the list admits ``+4930111``; an empty list admits everyone."""
    import uuid

    line = Line(uuid.uuid4(), "alice", "1001", ("+49 30-111",))
    assert line.admits_caller("+4930111") and not line.admits_caller("+4930112")
    assert Line(uuid.uuid4(), "bob", None, ()).admits_caller("anyone")
