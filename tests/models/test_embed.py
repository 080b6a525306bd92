"""The MiniLM sentence embedder on a CTranslate2 encoder."""

from __future__ import annotations

import numpy as np
import pytest

from models.convert import REFERENCE_FILE
from models.registry import ModelSet

pytestmark = pytest.mark.models

SENTENCES = [
    "The cat sits on the mat.",
    "A kitten is resting on a rug.",
    "Quarterly revenue exceeded analyst expectations.",
    "How do I reset my password?",
    "I forgot my login credentials and need to change them.",
]


def test_embeddings_are_unit_384d_rows(ci_models: ModelSet) -> None:
    """embed() returns one L2-normalised 384-d float32 row per text, and an empty matrix for no text."""
    assert ci_models.embed is not None
    vectors = ci_models.embed.embed(SENTENCES)
    assert vectors.shape == (len(SENTENCES), 384) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert ci_models.embed.embed([]).shape == (0, 384)


def test_similar_sentences_are_closer_than_unrelated(ci_models: ModelSet) -> None:
    """Paraphrases score higher cosine similarity than unrelated sentences."""
    assert ci_models.embed is not None
    v = ci_models.embed.embed(SENTENCES)
    assert v[0] @ v[1] > v[0] @ v[2] + 0.3
    assert v[3] @ v[4] > v[3] @ v[0] + 0.3


def test_batch_padding_does_not_change_embeddings(ci_models: ModelSet) -> None:
    """A text embeds the same alone as in a batch with longer texts (padding is masked out)."""
    assert ci_models.embed is not None
    together = ci_models.embed.embed(SENTENCES)
    alone = ci_models.embed.embed([SENTENCES[0]])
    assert float(together[0] @ alone[0]) > 0.999


def test_matches_transformers_reference(ci_models: ModelSet) -> None:
    """CT2 int8 embeddings agree with the float32 transformers model + mean pooling (cosine > 0.99).

    The reference vectors were computed with transformers and torch when the model was provisioned
    (``reference.npz``), so this runs without torch.
    """
    embedder = ci_models.embed
    assert embedder is not None
    with np.load(embedder.model_dir / REFERENCE_FILE) as reference:
        texts = [str(text) for text in reference["texts"]]
        expected = reference["embeddings"]
    assert len(texts) >= 5 and expected.shape == (len(texts), 384)
    cosine = np.sum(embedder.embed(texts) * expected, axis=1)
    assert cosine.min() > 0.99, cosine
