"""Prometheus metrics, in a registry owned by the app (no process-global state, so tests can run many apps).

Request metrics are labelled by the *route template* (``/v1/auth/tokens/{token_id}``), never the raw path,
so label cardinality stays bounded whatever clients send.
"""

from __future__ import annotations

import asyncio
import threading
import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from pipeline.frames import MarkName, TurnMarks

# Stage name → (from mark, to mark).
TURN_STAGES: dict[str, tuple[MarkName, MarkName]] = {
    "transcript_final": ("speech_end", "transcript_final"),
    "llm_first_token": ("speech_end", "llm_first_token"),
    "tts_first_chunk": ("speech_end", "tts_first_chunk"),
    "voice_to_voice": ("speech_end", "first_audio_out"),
    "barge_in": ("barge_in_onset", "audio_stopped"),
}

# Voice latencies live between ~20 ms and a few seconds; finer buckets at the low end where targets sit.
LATENCY_BUCKETS_S = (0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.7, 1.0, 1.5, 2.0, 3.0, 5.0)


class Metrics:
    """All of Soma's collectors. Other components register theirs here via `registry`."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.http_requests = Counter(
            "soma_http_requests_total", "HTTP requests served", ["method", "route", "status"], registry=self.registry
        )
        self.http_latency = Histogram(
            "soma_http_request_seconds",
            "HTTP request handling time",
            ["method", "route"],
            buckets=LATENCY_BUCKETS_S,
            registry=self.registry,
        )
        self.model_load_seconds = Gauge(
            "soma_model_load_seconds", "Time taken to load each model at start", ["model"], registry=self.registry
        )
        self.up = Gauge("soma_up", "1 while the server is serving", registry=self.registry)
        self.turn_latency = Histogram(
            "soma_turn_latency_seconds",
            "Per-turn latency from the end of the user's speech (or barge-in onset) to each stage, by channel",
            ["stage", "channel"],
            buckets=LATENCY_BUCKETS_S,
            registry=self.registry,
        )

        self.live_conversations = Gauge(
            "soma_live_conversations", "Conversations in progress", ["channel"], registry=self.registry
        )
        self.sip_dtmf = Counter("soma_sip_dtmf_total", "DTMF key presses received on SIP calls", registry=self.registry)
        self.sip_rejected = Counter(
            "soma_sip_rejected_total", "SIP messages or calls turned away (malformed, unauthorised, unknown…)",
            registry=self.registry,
        )
        # Read when /metrics is rendered, on the event loop: leaks show up as counts that never come back down.
        tasks = Gauge("soma_asyncio_tasks", "Tasks alive on the server's event loop", registry=self.registry)
        tasks.set_function(_task_count)
        threads = Gauge("soma_threads", "Threads alive in the server process", registry=self.registry)
        threads.set_function(lambda: float(threading.active_count()))

    def observe_turn(self, marks: TurnMarks, channel: str = "other") -> None:
        """Record one finished turn's stage latencies (the pipeline's `TurnObserver`; see `for_channel`)."""
        for stage, (start, end) in TURN_STAGES.items():
            gap = marks.gap_ms(start, end)
            if gap is not None and gap >= 0:
                self.turn_latency.labels(stage, channel).observe(gap / 1000.0)

    def for_channel(self, channel: str) -> ChannelTurns:
        """A `TurnObserver` whose observations carry ``channel`` (``realtime``, ``webrtc``, ``sip``…)."""
        return ChannelTurns(self, channel)

    def render(self) -> bytes:
        """The text exposition format."""
        return generate_latest(self.registry)


class ChannelTurns:
    """`Metrics.observe_turn` bound to one channel label."""

    def __init__(self, metrics: Metrics, channel: str) -> None:
        self._metrics, self._channel = metrics, channel

    def observe_turn(self, marks: TurnMarks) -> None:
        self._metrics.observe_turn(marks, self._channel)


def _task_count() -> float:
    try:
        return float(len(asyncio.all_tasks()))
    except RuntimeError:  # rendered outside the loop (tests)
        return 0.0


class MetricsMiddleware:
    """Pure ASGI middleware (no BaseHTTPMiddleware: that would buffer streaming responses)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = _route_template(scope)
            self.metrics.http_requests.labels(scope["method"], route, str(status)).inc()
            self.metrics.http_latency.labels(scope["method"], route).observe(time.perf_counter() - start)


def _route_template(scope: Scope) -> str:
    app = scope.get("app")
    router = getattr(app, "router", None)
    for route in getattr(router, "routes", ()):
        match, _ = route.matches(scope)
        if match == Match.FULL:
            return str(getattr(route, "path", "other"))
    return "unmatched"
