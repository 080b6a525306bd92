"""Fixtures for SIP tests: a real `soma serve` with the SIP listener on free ports, sipp, speech files."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.audio_fixtures import spoken
from tests.conftest import ServerProcess, new_user, start_server

SCENARIOS = Path(__file__).resolve().parent / "scenarios"
SIPP = shutil.which("sipp")
SIPP_PCAPS = Path("/usr/share/sip-tester")
QUESTION = "What is the capital of France?"
needs_sipp = pytest.mark.skipif(SIPP is None, reason="sipp is not installed (apt sip-tester; make install adds it)")


def free_udp_port() -> int:
    """A UDP port (also free on TCP) nothing is bound to right now."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            u.bind(("127.0.0.1", 0))
            port = int(u.getsockname()[1])
            with socket.socket() as t:
                try:
                    t.bind(("127.0.0.1", port))
                except OSError:
                    continue
            return port
    raise RuntimeError("no free port")


@dataclass
class SipServer:
    """A server with SIP on ``sip_port`` and RTP on ``rtp_ports``."""

    srv: ServerProcess
    sip_port: int
    rtp_ports: tuple[int, int]
    outbound_port: int = 0  # where its outbound trunk's proxy (a sipp UAS in the tests) listens

    @property
    def addr(self) -> tuple[str, int]:
        return ("127.0.0.1", self.sip_port)

    def metric(self, name: str, labels: str = "") -> float:
        """A metric's current value from ``/metrics`` (0 when absent)."""
        text = httpx.get(self.srv.base_url + "/metrics", timeout=10).text
        pattern = re.escape(name + (("{" + labels + "}") if labels else "")) + r" ([0-9.e+-]+)"
        match = re.search(r"(?m)^" + pattern + "$", text)
        return float(match.group(1)) if match else 0.0

    def user(self, prefix: str = "caller") -> tuple[str, str]:
        return new_user(self.srv, prefix)


def start_sip_server(tmp: Path, *, models: bool, outbound_port: int = 0, **env: str) -> SipServer:
    port = free_udp_port()
    low = 12000 + (os.getpid() * 7 + port) % 20000 // 2 * 2  # 12000-32199: below the ephemeral ports
    server = start_server(tmp, models=models, timeout=180, SOMA_SIGNUP="open", SOMA_SIP_BIND=f"127.0.0.1:{port}",
                          SOMA_SIP_RTP_PORTS=f"{low}-{low + 199}", **env)
    return SipServer(server, port, (low, low + 199), outbound_port)


@pytest.fixture(scope="session")
def sip_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SipServer]:
    """The SIP server with the ci models (media timeout shortened so the timeout test is quick) and one trunk:
    loopback callers admitted by address, outbound calls sent to a proxy (sipp) with digest credentials."""
    outbound = free_udp_port()
    trunk = {"name": "loop", "allow": ["127.0.0.1/32"], "proxy": f"127.0.0.1:{outbound}",
             "proxy_username": "soma", "proxy_password": "outbound-secret"}
    srv = start_sip_server(tmp_path_factory.mktemp("sip-server"), models=True, outbound_port=outbound,
                           SOMA_SIP_MEDIA_TIMEOUT_S="6", SOMA_SIP_TRUNKS=json.dumps([trunk]))
    yield srv
    srv.srv.stop()
    shutil.rmtree(srv.srv.data_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def speech_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory with the question as raw μ-law and A-law (for sipp's rtp_stream) and a ``pcap`` link.

    The question is followed by a minute of silence: a phone keeps sending RTP for the whole call, and the
    server hangs up on a caller whose media stops (``sip_media_timeout_s``)."""
    out = tmp_path_factory.mktemp("sip-speech")
    wav = out / "question.wav"
    subprocess.run(["espeak-ng", "-s", "160", "-w", str(wav), QUESTION], check=True)
    for ext, kind in (("ulaw", "ul"), ("alaw", "al")):
        subprocess.run(["sox", str(wav), "-r", "8000", "-c", "1", "-t", kind, str(out / f"question.{ext}"),
                        "pad", "0", "60"], check=True)
    if SIPP_PCAPS.is_dir():
        (out / "pcap").symlink_to(SIPP_PCAPS)
    return out


def question_8k() -> np.ndarray:
    """The question as 8 kHz int16 (for the project's own phone)."""
    return spoken(QUESTION, 8000)


@dataclass
class SippRun:
    returncode: int
    stdout: str
    errors: str


def run_sipp(server: SipServer, scenario: str, cwd: Path, *, user: str, caller: str = "sipp", calls: int = 1,
             limit: int = 1, pause_ms: int = 6000, media_port: int | None = None, timeout_s: float = 90,
             extra: list[str] | None = None) -> SippRun:
    """Run one committed scenario against ``server`` (``-m calls -l limit``), from ``cwd``."""
    assert SIPP is not None
    local = free_udp_port()
    args = [SIPP, f"127.0.0.1:{server.sip_port}", "-sf", str(SCENARIOS / f"{scenario}.xml"), "-s", user,
            "-key", "caller", caller, "-d", str(pause_ms), "-m", str(calls), "-l", str(limit), "-r", str(limit),
            "-timeout", f"{int(timeout_s)}s", "-nostdin", "-p", str(local), "-i", "127.0.0.1",
            "-mp", str(media_port or free_udp_port()), "-trace_err", *(extra or [])]
    for old in cwd.glob(f"{scenario}_*_errors.log"):
        old.unlink()
    proc = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=timeout_s + 30)
    errors = "".join(p.read_text(errors="replace") for p in cwd.glob(f"{scenario}_*_errors.log"))
    return SippRun(proc.returncode, proc.stdout[-3000:], errors[-3000:])


@dataclass
class LoopbackCapture:
    """Captures UDP datagrams sent to ``port`` on the loopback interface (AF_PACKET: needs root)."""

    port: int
    packets: list[tuple[float, bytes]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> LoopbackCapture:
        self._sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.ntohs(0x0003))
        self._sock.bind(("lo", 0))
        self._sock.settimeout(0.2)
        self._thread = threading.Thread(target=self._run, name="lo-capture", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2)
        self._sock.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                frame, meta = self._sock.recvfrom(65535)
            except TimeoutError:
                continue
            except OSError:
                return
            if meta[2] == socket.PACKET_OUTGOING:
                continue  # loopback frames are seen twice (out and in): keep one copy
            ip = frame[14:]
            if len(ip) < 28 or ip[0] >> 4 != 4 or ip[9] != 17:
                continue
            udp = ip[(ip[0] & 0x0F) * 4 :]
            if int.from_bytes(udp[2:4], "big") == self.port:
                self.packets.append((time.monotonic(), bytes(udp[8:])))


def is_root() -> bool:
    return os.geteuid() == 0
