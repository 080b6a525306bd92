"""The ASGI application: routes, error handling, metrics, static web client, lifespan."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.middleware.cors import CORSMiddleware

from models.llm import CT2Llm
from models.prompt_fit import PromptLimits
from voice_server.api import (
    auth_routes,
    call_routes,
    chat_routes,
    conversation_routes,
    import_routes,
    media_routes,
    memory_routes,
    persona_routes,
    privacy_routes,
    proactive_routes,
    realtime_routes,
    sip_routes,
    system,
    training_routes,
    voice_routes,
)
from voice_server.api.audit_http import AuditMiddleware
from voice_server.app_state import AppState
from voice_server.avatar.calls_first import CallsFirstAsr, CallsFirstLlm
from voice_server.avatar.imports.job import worker_id
from voice_server.avatar.imports.recordings_plan import MediaTools
from voice_server.avatar.imports.service import ImportService
from voice_server.avatar.proactive.messages import Completer, PersonalLlm
from voice_server.avatar.proactive.service import ProactiveService
from voice_server.config import Settings, load_settings
from voice_server.errors import install_error_handlers
from voice_server.http_limits import BodyLimitMiddleware
from voice_server.metrics import Metrics, MetricsMiddleware
from voice_server.resources import Resources
from voice_server.security_headers import SecurityHeadersMiddleware, cors_options
from voice_server.sip.service import start_sip
from voice_server.user_files import MediaStore
from voice_server.webrtc.calls import CallManager

WEB_DIR = Path(__file__).resolve().parent.parent / "clients" / "web"


def _personal_llm(res: Resources) -> PersonalLlm | None:
    """The person's tuned model for their proactive messages (calls first, like the shared one)."""
    training = res.training
    if training is None:
        return None

    async def personal(user_id: uuid.UUID) -> tuple[Completer, Callable[[], None]] | None:
        lease = await training.lease_for(user_id)
        return None if lease is None else (CallsFirstLlm(lease.llm, res.live_calls), lease.release)

    return personal


def create_app(settings: Settings, resources: Resources | None = None) -> FastAPI:
    """Build the app.

    Args:
        settings: Validated settings.
        resources: Already-open resources (``soma serve`` opens them before listening, to report start-up
            errors cleanly). When ``None`` the lifespan opens them and closes them at shutdown.
    """

    metrics = resources.metrics if resources is not None else Metrics()

    @asynccontextmanager
    async def serving(app: FastAPI, res: Resources) -> AsyncIterator[None]:
        models = res.models
        llm_metrics: Collector | None = None
        if models is not None and models.llm is not None:
            # Before anything generates: every channel reads the limits from the LLM handle.
            models.llm.limits = PromptLimits(res.settings.max_prompt_tokens, res.settings.max_item_tokens)
            llm_metrics = LlmCollector(models.llm)
            res.metrics.registry.register(llm_metrics)
        calls = CallManager(res)
        sip = await start_sip(res)
        embedder = models.embed if models is not None else None
        wait_s = float(res.settings.import_calls_first_max_wait_s)
        asr = None
        if models is not None and models.asr is not None:
            asr = CallsFirstAsr(models.asr, res.live_calls, max_wait_s=wait_s)
        media = MediaTools(asr, MediaStore(res.db, res.keys, res.settings.media_dir), res.settings.media_max_bytes)
        imports = ImportService(
            res.db, res.keys, embedder, res.settings.data_dir, media, on_imported=res.persona.after_import,
            per_user=res.settings.import_max_per_user,
        )
        await imports.start()
        llm = CallsFirstLlm(models.llm, res.live_calls) if models is not None and models.llm is not None else None
        proactive = ProactiveService(
            res.db, res.keys, worker=await asyncio.to_thread(worker_id, res.settings.data_dir), llm=llm,
            personal=_personal_llm(res),
            schedule=res.settings.proactive, interval_s=float(res.settings.proactive_interval_s),
        )
        await proactive.start()
        app.state.soma = AppState(res, calls, sip, imports, proactive)
        try:
            yield
        finally:
            await proactive.aclose()
            await imports.aclose()
            if sip is not None:
                await sip.aclose()
            await calls.aclose()
            if llm_metrics is not None:
                res.metrics.registry.unregister(llm_metrics)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if resources is not None:
            async with serving(app, resources):
                yield
            return
        async with Resources.open(settings, metrics) as res, serving(app, res):
            yield

    app = FastAPI(
        title="Soma",
        version="0.1.0",
        summary="A personal AI avatar you call — local voice pipeline, memories, realtime transports.",
        lifespan=lifespan,
        docs_url="/docs",
        redoc_url=None,
    )
    install_error_handlers(app)
    # Innermost: by the time a response ends, routing has named the route and auth has named the caller.
    app.add_middleware(AuditMiddleware)
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    app.add_middleware(
        BodyLimitMiddleware,
        max_bytes=settings.max_request_bytes,
        # Uploads stream to disk sealed: their own, larger cap.
        overrides={"/v1/media": settings.media_max_bytes, "/v1/imports": settings.media_max_bytes,
                   **voice_routes.UPLOAD_LIMITS},
    )
    if settings.cors_origin_list:  # closed by default: no CORS headers unless the operator lists origins
        app.add_middleware(CORSMiddleware, **cors_options(settings.cors_origin_list))
    # Added last so it wraps the others: 413s and CORS preflights carry the headers too.
    app.add_middleware(SecurityHeadersMiddleware, tls=settings.tls, docs_prefix=app.docs_url)
    app.include_router(system.router)
    app.include_router(auth_routes.router)
    app.include_router(chat_routes.router)
    app.include_router(conversation_routes.router)
    app.include_router(memory_routes.router)
    app.include_router(realtime_routes.router)
    app.include_router(call_routes.router)
    app.include_router(media_routes.router)
    app.include_router(import_routes.router)
    app.include_router(persona_routes.router)
    app.include_router(privacy_routes.router)
    app.include_router(proactive_routes.router)
    app.include_router(sip_routes.router)
    app.include_router(sip_routes.outbound)
    app.include_router(voice_routes.router)
    app.include_router(training_routes.router)
    if WEB_DIR.is_dir():
        app.mount("/", StaticFiles(directory=WEB_DIR, html=True), name="web")
    return app


class LlmCollector(Collector):
    """The LLM's work on ``/metrics``, read from its batch decoder when scraped.

    ``soma_llm_tokens_decoded_total`` and ``soma_llm_sequences_decoding`` show whether generations stop when
    their client leaves or the server shuts down (the decoding count drops to 0, the token count stops).
    """

    def __init__(self, llm: CT2Llm) -> None:
        self._batcher = llm.batcher

    def collect(self) -> Iterable[Metric]:
        yield CounterMetricFamily(
            "soma_llm_tokens_decoded", "Tokens the LLM decoded, all requests", value=self._batcher.tokens_decoded
        )
        yield GaugeMetricFamily(
            "soma_llm_sequences_decoding",
            "Sequences the LLM is working on right now (a prompt being encoded included)",
            value=self._batcher.decoding,
        )


def app_factory() -> FastAPI:
    """``uvicorn --factory voice_server.app:app_factory`` entry (settings from the environment)."""
    return create_app(load_settings())
