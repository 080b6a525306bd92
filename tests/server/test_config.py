"""Settings parsing and the CLI's one-line errors for bad configuration."""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

import pytest

from tests.conftest import REPO, SOMA, free_port, soma_env
from voice_server.config import ConfigError, Settings, load_settings


def test_defaults_and_env_override(tmp_path: Path) -> None:
    """Env vars override TOML, which overrides defaults; values are typed."""
    toml = tmp_path / "soma.toml"
    toml.write_text('port = 9000\nlog_level = "debug"\ntls = false\n')
    s = load_settings({"SOMA_PORT": "9100", "SOMA_DATA_DIR": "~/x"}, config_file=toml)
    assert s.port == 9100 and s.log_level == "debug" and s.tls is False
    assert s.data_dir == Path("~/x").expanduser()
    assert load_settings({}).port == 8443 and load_settings({}).tls is True


@pytest.mark.parametrize(
    ("env", "needle"),
    [
        ({"SOMA_PORT": "abc"}, "SOMA_PORT: expected an integer"),
        ({"SOMA_PORT": "70000"}, "port: must be 1-65535"),
        ({"SOMA_TLS": "maybe"}, "SOMA_TLS: expected true/false"),
        ({"SOMA_MODEL_PROFILE": "huge"}, "expected one of ci, full"),
        ({"SOMA_PROT": "1"}, "did you mean SOMA_PORT"),
        ({"SOMA_DATABASE_URL": "localhost"}, "database_url"),
        ({"SOMA_WEBRTC_ICE_SERVERS": "stun:ok:3478,http://example.com"}, "not a stun:/turn: URL"),
        ({"SOMA_MEMORY_BUDGET_TOKENS": "-1"}, "memory_budget_tokens"),
        ({"SOMA_TRAINING_COMPARE_PAIRS": "2"}, "training_compare_pairs: must be 4-500"),
    ],
)
def test_bad_values_raise_config_error(env: dict[str, str], needle: str) -> None:
    """Each bad value raises ConfigError naming the setting."""
    with pytest.raises(ConfigError, match=needle):
        load_settings(env)


def test_ice_servers_are_a_comma_separated_list() -> None:
    s = load_settings({"SOMA_WEBRTC_ICE_SERVERS": " stun:stun.example:3478, turn:turn.example:3478?transport=udp "})
    assert s.ice_urls == ["stun:stun.example:3478", "turn:turn.example:3478?transport=udp"]
    assert load_settings({}).ice_urls == []


def test_settings_are_frozen() -> None:
    """Settings cannot be mutated after start-up."""
    s = Settings()
    with pytest.raises(AttributeError):
        s.port = 1  # type: ignore[misc]


def _run_soma(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*SOMA, *args], env=soma_env(tmp_path / "data", **env), cwd=REPO, capture_output=True, text=True, timeout=120
    )


def _assert_one_line_error(result: subprocess.CompletedProcess[str], code: int, needle: str) -> None:
    assert result.returncode == code, result.stderr
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("soma: error:")]
    assert len(errors) == 1 and needle in errors[0], result.stderr


def test_cli_bad_env_value(tmp_path: Path) -> None:
    """An unparseable env value ends `soma serve` with one error line and exit 2."""
    _assert_one_line_error(_run_soma(tmp_path, "serve", SOMA_PORT="abc"), 2, "SOMA_PORT")


def test_cli_unknown_env_name(tmp_path: Path) -> None:
    """A misspelt SOMA_ variable is reported with a suggestion, exit 2."""
    _assert_one_line_error(_run_soma(tmp_path, "serve", SOMA_LOG_LEVL="debug"), 2, "SOMA_LOG_LEVEL")


def test_cli_port_in_use(tmp_path: Path) -> None:
    """A port already taken is reported at once, before anything slow starts."""
    port = free_port()
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", port))
        busy.listen(1)
        result = _run_soma(tmp_path, "serve", "--http", SOMA_PORT=str(port))
    _assert_one_line_error(result, 1, "already in use")


def test_cli_missing_model(tmp_path: Path) -> None:
    """A missing model names the command that provisions it."""
    result = _run_soma(
        tmp_path, "serve", "--http", SOMA_PORT=str(free_port()), SOMA_MODELS_DIR=str(tmp_path / "no-models")
    )
    _assert_one_line_error(result, 1, "soma models provision --profile full")


def test_cli_users_create_and_list(tmp_path: Path) -> None:
    """`soma users create` makes a usable account against the embedded database; bad input is one line."""
    made = subprocess.run(
        [*SOMA, "users", "create", "carol", "--password-stdin", "--token"],
        input="carol-password\n",
        env=soma_env(tmp_path / "data"),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert made.returncode == 0, made.stderr
    assert made.stdout.strip().startswith("soma_")
    listed = _run_soma(tmp_path, "users", "list")
    assert listed.returncode == 0 and listed.stdout.startswith("carol")
    again = subprocess.run(
        [*SOMA, "users", "create", "carol", "--password-stdin"],
        input="carol-password\n",
        env=soma_env(tmp_path / "data"),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    _assert_one_line_error(again, 1, "already taken")
