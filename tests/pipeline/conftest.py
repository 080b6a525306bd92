"""Fixtures for pipeline tests with the real ci models: one shared model set and a session factory."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from models.registry import ModelSet, load_models
from pipeline.llm import ConversationLlm
from pipeline.local_transport import LocalTransport
from pipeline.session import Session, SessionModels


@pytest.fixture(scope="session")
def ci_models() -> Iterator[ModelSet]:
    """The ci profile's voice models, loaded once for every pipeline test that needs them."""
    models = load_models(None, "ci", roles=["vad", "asr", "llm", "tts-fast", "tts-quality"])
    yield models
    models.close()


def real_session(models: ModelSet, transport: LocalTransport) -> Session:
    """A voice session on ``transport`` using the real models (Piper voice)."""
    assert models.vad and models.asr and models.llm and models.tts_fast
    shared = SessionModels(
        llm=ConversationLlm(models.llm),
        vad=models.vad,
        asr=models.asr,
        tts=models.tts_fast,
        vad_executor=models.vad.lane.executor,
    )
    return Session(transport, shared)


def words(text: str) -> list[str]:
    """Lower-case words of ``text``, punctuation dropped."""
    return "".join(c.lower() if c.isalnum() or c.isspace() else " " for c in text).split()
