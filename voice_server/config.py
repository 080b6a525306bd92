"""Settings: one frozen dataclass read once at start-up.

Sources, later ones winning: built-in defaults → an optional TOML file (``SOMA_CONFIG`` or ``--config``) →
``SOMA_*`` environment variables → explicit CLI overrides. Every value is validated here, so a bad value fails
at start with one line naming the variable, never later inside a request.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Literal, get_args, get_type_hints

from voice_server.ascii_numbers import ascii_int

LogFormat = Literal["auto", "json", "text"]
LogLevel = Literal["debug", "info", "warning", "error"]
ModelProfile = Literal["ci", "full"]
VoiceMatchPlan = Literal["full", "quick"]
SignupPolicy = Literal["first-run", "open", "closed"]

ENV_PREFIX = "SOMA_"
# Variables that are read elsewhere (by the model loaders or the CLI) and are therefore not unknown.
_FOREIGN_ENV = frozenset({"SOMA_CONFIG"})
# Test-only switches may use this prefix without being settings.
_IGNORED_ENV_PREFIXES = ("SOMA_TEST_",)


class ConfigError(ValueError):
    """A setting has a value Soma cannot use; the message names the setting and what is expected."""


def _default_data_dir() -> Path:
    return Path(os.environ.get("XDG_DATA_HOME", Path.home() / ".local" / "share")) / "soma"


def _default_models_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "soma" / "models"


@dataclass(frozen=True, slots=True)
class Settings:
    """Process-wide settings. Immutable; pass it down explicitly, never read env vars elsewhere.

    Attributes:
        host: Address to listen on. Loopback by default: a personal avatar is not a public service.
        port: HTTPS (or HTTP with ``tls=False``) port.
        tls: Serve HTTPS with ``tls_cert``/``tls_key`` or a self-signed certificate generated into the
            data dir on first start. Disable only behind a TLS-terminating proxy.
        tls_cert: PEM certificate path; ``None`` means the generated self-signed one.
        tls_key: PEM private key path, required with ``tls_cert``.
        data_dir: Where user data lives (embedded Postgres, Redis socket, certificates).
        models_dir: Provisioned models (``soma models provision``).
        model_profile: Which provisioned profile the server loads.
        load_models: Load the models at start. Off only for tools/tests that need no inference.
        database_url: ``postgresql://`` URL of a Postgres with pgvector ≥ 0.8; ``None`` = embedded server.
        redis_url: ``redis://`` or ``unix://`` URL of Redis ≥ 6.2; ``None`` = embedded server.
        log_level: Minimum level logged.
        log_format: ``json`` lines, human ``text``, or ``auto`` (text on a terminal, JSON otherwise).
        metrics_public: Serve ``/metrics`` without a token (for a local Prometheus scraper).
        signup: ``first-run`` lets the web page create the first account only; ``open`` always; ``closed``
            never (use ``soma users create``).
        login_token_ttl_s: Lifetime of tokens issued by ``POST /v1/auth/token``.
        db_pool_max: Upper bound of pooled Postgres connections.
        max_request_bytes: Largest HTTP request body accepted (413 beyond it).
        llm_workers: LLM generations (batches) decoded at once (`models.registry.ThreadConfig`).
        llm_max_batch: Most waiting generations decoded together as one batch.
        max_prompt_tokens: Every LLM prompt, on every channel, is cut to this many tokens (oldest history first);
            chat completions answer 400 ``context_length_exceeded`` beyond it. Encoding a prompt cannot be
            interrupted and grows faster than its length (~3,600 tokens took 19 s on 2 cores), so this bounds
            how long a client that left, or a shutdown, waits for the model.
        max_item_tokens: Most tokens in one user message (Realtime ``conversation.item.create``, the messages
            of one turn); longer ones get an ``invalid_request_error``. Client instructions may take half of
            ``max_prompt_tokens``.
        shutdown_timeout_s: From SIGTERM/SIGINT to process exit, at most: connections get half of it to finish,
            then sessions and generations are cancelled, and past it the process exits anyway (code 3).
        memory_llm_extraction: Also ask the local LLM for memory candidates after each turn (rules always
            run). Off by default: on a 2-core machine it competes with live calls for the CPU.
        memory_budget_tokens: Most prompt tokens recalled memories may take per turn.
        memory_reflection: Summarise each chat's and conversation's days with the local LLM in the background
            (when no conversation is going on), as memories that cite their messages. Off by default: the full
            profile's Qwen2.5-0.5B gave no grounded summary in a sample of days (it copies the transcript).
        proactive: Run the proactive scheduler in this process (greetings, check-ins, "on this day",
            milestones). Several processes on one database may all run it: each message is sent once.
        proactive_interval_s: The longest the scheduler waits between passes (it wakes earlier when a job is
            due, and at once when a user changes their settings or milestones).
        webrtc_ice_servers: Comma-separated STUN/TURN URLs for WebRTC calls (``stun:host:3478``,
            ``turn:host:3478?transport=udp``); empty: host candidates only (LAN and loopback).
        webrtc_ice_username: TURN username, if the TURN server needs one.
        webrtc_ice_credential: TURN password (never logged).
        cors_origins: Comma-separated origins (``https://app.example.com``) whose pages may call the API
            from a browser; empty (the default) sends no CORS headers at all, so only Soma's own page can.
            Browser WebSockets from these origins are accepted too.
        login_max_failures: Consecutive failed logins after which an account is locked.
        login_lockout_s: How long a locked account refuses even the right password (429 with Retry-After).
        master_key_file: The master key that wraps every user's data key; ``None`` = ``<data_dir>/master.key``,
            generated (mode 0600) on first start. A supplied file must exist. Losing it loses all user data.
        media_max_bytes: Largest file accepted by ``POST /v1/media`` (streamed and encrypted to disk).
        import_max_per_user: Imports one user may have uploading, waiting or running at once (``429`` with
            Retry-After beyond, to that user only); waiting imports run round-robin between users.
        import_calls_first_max_wait_s: Audio/video imports step aside while any conversation is live, but
            each ~28 s window waits at most this long, so a conversation left open cannot stall them.
        voice_match_plan: How long a voice search runs: ``full`` (140 syntheses, ~2 min; what a person gets) or
            ``quick`` (~14: tests and demos).
        sip_bind: ``host:port`` the SIP listener binds (UDP and TCP); empty or ``off`` disables SIP. Loopback by
            default: open SIP ports are scanned constantly, so a public address is an explicit choice.
        sip_transports: ``udp``, ``tcp`` or ``udp,tcp``.
        sip_public_host: The address put in Contact and SDP when it differs from the bind address (NAT, or a
            ``0.0.0.0`` bind); ``None`` = the bind host.
        sip_rtp_ports: ``low-high`` UDP port range for RTP, one port per call; below the kernel's ephemeral ports
            (32768-60999 on Linux) so outgoing connections do not take them.
        sip_trunks: JSON list of trunks allowed to call in (see `voice_server.sip.trunks.Trunk`): name, ``allow``
            (IP networks), optional ``username``/``password`` for digest auth, ``algorithms``. Empty: any source that
            can reach `sip_bind` may call (only sensible on loopback or a trusted LAN).
        sip_max_calls: Most simultaneous SIP calls (503 beyond).
        sip_media_timeout_s: A call with no RTP from the caller for this long is hung up.
        sip_realm: Realm of digest challenges.
        sip_ring_ms: Ring (180) this long before answering, as a person would; 0 answers at once.
        sip_t1_ms: SIP timer T1 (round-trip estimate, RFC 3261 §17); a 200 OK not acknowledged within 64·T1
            (Timer H, 32 s by default) ends the call.
        sip_invite_rate: New INVITEs per second one source address may send, sustained (token bucket).
        sip_invite_burst: INVITEs a source may send at once; as many more are answered 503 with Retry-After,
            the rest dropped unanswered.
        sip_tcp_idle_s: A SIP TCP connection that completes no message for this long is closed (unless a call
            uses it).
        sip_tcp_max_connections: SIP TCP connections at once; at the cap the oldest idle one without a call is
            closed to make room for a new one.
        sip_tcp_max_per_source: SIP TCP connections at once from one IP address (likewise).
    """

    host: str = "127.0.0.1"
    port: int = 8443
    tls: bool = True
    tls_cert: Path | None = None
    tls_key: Path | None = None
    data_dir: Path = dataclasses.field(default_factory=_default_data_dir)
    models_dir: Path = dataclasses.field(default_factory=_default_models_dir)
    model_profile: ModelProfile = "full"
    load_models: bool = True
    database_url: str | None = None
    redis_url: str | None = None
    log_level: LogLevel = "info"
    log_format: LogFormat = "auto"
    metrics_public: bool = True
    signup: SignupPolicy = "first-run"
    login_token_ttl_s: int = 30 * 24 * 3600
    db_pool_max: int = 10
    max_request_bytes: int = 1024 * 1024
    llm_workers: int = 4
    llm_max_batch: int = 4
    max_prompt_tokens: int = 3000
    max_item_tokens: int = 1000
    shutdown_timeout_s: int = 10
    memory_llm_extraction: bool = False
    memory_budget_tokens: int = 200
    memory_reflection: bool = False
    proactive: bool = True
    proactive_interval_s: int = 60
    webrtc_ice_servers: str = ""
    webrtc_ice_username: str | None = None
    webrtc_ice_credential: str | None = None
    cors_origins: str = ""
    login_max_failures: int = 5
    login_lockout_s: int = 900
    master_key_file: Path | None = None
    media_max_bytes: int = 2 * 1024**3
    import_max_per_user: int = 4
    import_calls_first_max_wait_s: int = 30
    voice_match_plan: VoiceMatchPlan = "full"
    tuned_models_resident: int = 2
    training_threads: int = 2
    training_compare_pairs: int = 48
    sip_bind: str = "127.0.0.1:5060"
    sip_transports: str = "udp,tcp"
    sip_public_host: str | None = None
    sip_rtp_ports: str = "10000-10999"
    sip_trunks: str = ""
    sip_max_calls: int = 150
    sip_media_timeout_s: int = 30
    sip_realm: str = "soma"
    sip_ring_ms: int = 0
    sip_t1_ms: int = 500
    sip_invite_rate: int = 10
    sip_invite_burst: int = 20
    sip_tcp_idle_s: int = 30
    sip_tcp_max_connections: int = 256
    sip_tcp_max_per_source: int = 32

    @property
    def cors_origin_list(self) -> list[str]:
        """`cors_origins` as a list of ``scheme://host[:port]`` strings (validated at start)."""
        return [o.strip().rstrip("/") for o in self.cors_origins.split(",") if o.strip()]

    @property
    def ice_urls(self) -> list[str]:
        """`webrtc_ice_servers` as a list."""
        return [u.strip() for u in self.webrtc_ice_servers.split(",") if u.strip()]

    def __post_init__(self) -> None:
        if not 0 < self.port < 65536:
            raise ConfigError(f"port: must be 1-65535, got {self.port}")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ConfigError("tls_cert and tls_key: set both or neither")
        if self.login_token_ttl_s < 60:
            raise ConfigError(f"login_token_ttl_s: must be at least 60, got {self.login_token_ttl_s}")
        if self.max_request_bytes < 1024:
            raise ConfigError(f"max_request_bytes: must be at least 1024, got {self.max_request_bytes}")
        if not 1 <= self.llm_workers <= 16:
            raise ConfigError(f"llm_workers: must be 1-16, got {self.llm_workers}")
        if not 1 <= self.llm_max_batch <= 64:
            raise ConfigError(f"llm_max_batch: must be 1-64, got {self.llm_max_batch}")
        if not 256 <= self.max_prompt_tokens <= 32_000:
            raise ConfigError(f"max_prompt_tokens: must be 256-32000, got {self.max_prompt_tokens}")
        if not 16 <= self.max_item_tokens <= self.max_prompt_tokens // 2:
            raise ConfigError(f"max_item_tokens: must be 16 to half of max_prompt_tokens, got {self.max_item_tokens}")
        if not 2 <= self.shutdown_timeout_s <= 600:
            raise ConfigError(f"shutdown_timeout_s: must be 2-600, got {self.shutdown_timeout_s}")
        if not 0 <= self.memory_budget_tokens <= 2000:
            raise ConfigError(f"memory_budget_tokens: must be 0-2000, got {self.memory_budget_tokens}")
        if not 1 <= self.proactive_interval_s <= 3600:
            raise ConfigError(f"proactive_interval_s: must be 1-3600, got {self.proactive_interval_s}")
        for url in self.ice_urls:
            if not url.startswith(("stun:", "stuns:", "turn:", "turns:")):
                raise ConfigError(f"webrtc_ice_servers: {url!r} is not a stun:/turn: URL")
        for origin in self.cors_origin_list:
            scheme, sep, rest = origin.partition("://")
            if scheme not in ("http", "https") or not sep or not rest or any(c in rest for c in "/?#*@ "):
                raise ConfigError(f"cors_origins: {origin!r} is not an origin like https://host[:port]")
        if not 1 <= self.login_max_failures <= 100:
            raise ConfigError(f"login_max_failures: must be 1-100, got {self.login_max_failures}")
        if not 1 <= self.login_lockout_s <= 24 * 3600:
            raise ConfigError(f"login_lockout_s: must be 1-86400, got {self.login_lockout_s}")
        if not 1 <= self.import_max_per_user <= 64:
            raise ConfigError(f"import_max_per_user: must be 1-64, got {self.import_max_per_user}")
        if not 1 <= (wait := self.import_calls_first_max_wait_s) <= 3600:
            raise ConfigError(f"import_calls_first_max_wait_s: must be 1-3600, got {wait}")
        if not 0 <= self.tuned_models_resident <= 32:
            raise ConfigError(f"tuned_models_resident: must be 0-32, got {self.tuned_models_resident}")
        if not 1 <= self.training_threads <= 64:
            raise ConfigError(f"training_threads: must be 1-64, got {self.training_threads}")
        if not 4 <= self.training_compare_pairs <= 500:
            raise ConfigError(f"training_compare_pairs: must be 4-500, got {self.training_compare_pairs}")
        if self.db_pool_max < 2:
            raise ConfigError(f"db_pool_max: must be at least 2, got {self.db_pool_max}")
        self._check_sip()
        for name in ("database_url", "redis_url"):
            url = getattr(self, name)
            if url is not None and "://" not in url:
                raise ConfigError(f"{name}: expected a URL like scheme://…, got a value without a scheme")

    @property
    def key_file(self) -> Path:
        """Where the master key is (`master_key_file` or its default in the data dir)."""
        return self.master_key_file or self.data_dir / "master.key"

    @property
    def media_dir(self) -> Path:
        """Where encrypted media files live."""
        return self.data_dir / "media"

    @property
    def sip_address(self) -> tuple[str, int] | None:
        """`sip_bind` as ``(host, port)``, or ``None`` when SIP is off."""
        text = self.sip_bind.strip()
        if text.lower() in ("", "off"):
            return None
        host, _, port = text.rpartition(":")
        return host.strip("[]"), int(port)

    @property
    def rtp_port_range(self) -> tuple[int, int]:
        """`sip_rtp_ports` as ``(low, high)``, both included."""
        low, _, high = self.sip_rtp_ports.partition("-")
        return int(low), int(high)

    def _check_sip(self) -> None:
        text = self.sip_bind.strip()
        if text.lower() not in ("", "off"):
            host, colon, port = text.rpartition(":")
            number = ascii_int(port, max_digits=5)
            if not colon or not host or number is None or not number < 65536:
                raise ConfigError(f"sip_bind: expected host:port or off, got {self.sip_bind!r}")
        transports = {t.strip() for t in self.sip_transports.split(",") if t.strip()}
        if not transports or not transports <= {"udp", "tcp"}:
            raise ConfigError(f"sip_transports: expected udp, tcp or udp,tcp, got {self.sip_transports!r}")
        low_text, dash, high_text = self.sip_rtp_ports.partition("-")
        low, high = ascii_int(low_text, max_digits=5), ascii_int(high_text, max_digits=5)
        if not dash or low is None or high is None or not 1024 <= low <= high < 65536:
            raise ConfigError(f"sip_rtp_ports: expected low-high within 1024-65535, got {self.sip_rtp_ports!r}")
        if not 1 <= self.sip_max_calls <= 2000:
            raise ConfigError(f"sip_max_calls: must be 1-2000, got {self.sip_max_calls}")
        if not 0 <= self.sip_ring_ms <= 30_000:
            raise ConfigError(f"sip_ring_ms: must be 0-30000, got {self.sip_ring_ms}")
        if not 5 <= self.sip_media_timeout_s <= 3600:
            raise ConfigError(f"sip_media_timeout_s: must be 5-3600, got {self.sip_media_timeout_s}")
        bounds = (("sip_t1_ms", 50, 5000), ("sip_invite_rate", 1, 10_000), ("sip_invite_burst", 1, 10_000),
                  ("sip_tcp_idle_s", 1, 3600), ("sip_tcp_max_connections", 1, 10_000),
                  ("sip_tcp_max_per_source", 1, 10_000))
        for name, least, most in bounds:
            if not least <= getattr(self, name) <= most:
                raise ConfigError(f"{name}: must be {least}-{most}, got {getattr(self, name)}")
        from voice_server.sip.trunks import TrunkError, parse_trunks  # here: only SIP settings need the parser

        try:
            parse_trunks(self.sip_trunks)
        except TrunkError as exc:
            raise ConfigError(f"sip_trunks: {exc}") from None

    @property
    def scheme(self) -> str:
        """``https`` or ``http``, as served."""
        return "https" if self.tls else "http"


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _coerce(name: str, raw: Any, hint: Any) -> Any:
    """Convert a TOML/env value to the field's declared type, or raise ConfigError naming the setting."""
    args = get_args(hint)
    if type(None) in args:  # Optional[X]
        if raw is None or (isinstance(raw, str) and raw.strip() == ""):
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _coerce(name, raw, inner)
    if hint is bool:
        if isinstance(raw, bool):
            return raw
        text = str(raw).strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
        raise ConfigError(f"{name}: expected true/false, got {raw!r}")
    if hint is int:
        if isinstance(raw, bool):
            raise ConfigError(f"{name}: expected an integer, got {raw!r}")
        try:
            return int(raw)
        except (TypeError, ValueError):
            raise ConfigError(f"{name}: expected an integer, got {raw!r}") from None
    if hint is Path:
        return Path(str(raw)).expanduser()
    if hint is str:
        return str(raw)
    choices = get_args(hint)
    if choices and all(isinstance(c, str) for c in choices):  # Literal[...]
        text = str(raw).strip().lower()
        if text not in choices:
            raise ConfigError(f"{name}: expected one of {', '.join(choices)}, got {raw!r}")
        return text
    raise ConfigError(f"{name}: unsupported setting type {hint!r}")  # pragma: no cover - programming error


def _field_hints() -> dict[str, Any]:
    hints = get_type_hints(Settings)
    return {f.name: hints[f.name] for f in fields(Settings)}


def load_settings(
    env: Mapping[str, str] | None = None,
    config_file: Path | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Build validated settings.

    Args:
        env: Environment to read (``os.environ`` when ``None``). Unknown ``SOMA_*`` names are an error so
            that a typo such as ``SOMA_PROT`` does not silently leave the default in place.
        config_file: TOML file with the same keys as `Settings` (lower case); defaults to ``$SOMA_CONFIG``.
        overrides: Already-typed values from the command line; they win over everything else.

    Raises:
        ConfigError: On an unknown key, a value of the wrong type, or an inconsistent combination.
    """
    env = os.environ if env is None else env
    hints = _field_hints()
    values: dict[str, Any] = {}

    path = config_file or (Path(env["SOMA_CONFIG"]) if env.get("SOMA_CONFIG") else None)
    if path is not None:
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"config file {path}: not found") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {path}: invalid TOML ({exc})") from None
        for key, raw in data.items():
            if key not in hints:
                raise ConfigError(f"config file {path}: unknown setting {key!r}{_suggest(key, hints)}")
            values[key] = _coerce(key, raw, hints[key])

    for var, raw in env.items():
        if not var.startswith(ENV_PREFIX) or var in _FOREIGN_ENV or var.startswith(_IGNORED_ENV_PREFIXES):
            continue
        key = var[len(ENV_PREFIX) :].lower()
        if key not in hints:
            raise ConfigError(f"{var}: unknown setting{_suggest(key, hints, env_style=True)}")
        values[key] = _coerce(var, raw, hints[key])

    values.update(overrides or {})
    try:
        return Settings(**values)
    except TypeError as exc:  # pragma: no cover - overrides with a bad key are a programming error
        raise ConfigError(str(exc)) from None


def _suggest(key: str, hints: Mapping[str, Any], *, env_style: bool = False) -> str:
    close = difflib.get_close_matches(key, list(hints), n=1)
    if not close:
        return ""
    name = ENV_PREFIX + close[0].upper() if env_style else close[0]
    return f" (did you mean {name}?)"
