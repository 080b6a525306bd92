"""Sentence embeddings (all-MiniLM-L6-v2) on a CTranslate2 encoder, without torch.

Reproduces sentence-transformers' pipeline for this model: WordPiece tokens (max 256), the BERT encoder's
last hidden state, mean pooling over real (unpadded) tokens, L2 normalisation.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import ctranslate2
import numpy as np
import numpy.typing as npt
from tokenizers import Tokenizer

from models.catalog import Role
from models.executors import ComputeLane
from models.locate import locate

FloatArray = npt.NDArray[np.float32]


class MiniLmEmbedder:
    """A loaded sentence-transformers encoder with mean pooling, converted to CTranslate2.

    Args:
        model_dir: CT2 encoder directory as written by ``models.convert hf-encoder``.
        intra_threads: OpenMP threads for the encoder.
        batch_size: Texts per encoder call; longer lists are split.
        compute_type: ``float32`` (default) matches sentence-transformers to cosine 1.000 at ~6 ms per
            sentence; ``int8`` takes ~2.5 ms but drops to ~0.98 cosine on very short texts.

    Raises:
        ValueError: The model's pooling config is not mean pooling (the only one implemented).
    """

    def __init__(
        self, model_dir: Path, *, intra_threads: int = 1, batch_size: int = 32, compute_type: str = "float32"
    ) -> None:
        self.model_dir = model_dir
        pooling = _read_json(model_dir / "1_Pooling" / "config.json")
        if pooling and not pooling.get("pooling_mode_mean_tokens", False):
            raise ValueError(f"{model_dir}: only mean pooling is supported, config says {pooling}")
        max_length = int(_read_json(model_dir / "sentence_bert_config.json").get("max_seq_length", 256))
        self._tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        # tokenizer.json ships with fixed padding to 128; the encoder takes ragged batches, so padding
        # would only add work (the mask below still makes the result independent of it).
        self._tokenizer.no_padding()
        self._tokenizer.enable_truncation(max_length)
        self._encoder = ctranslate2.Encoder(
            str(model_dir), device="cpu", compute_type=compute_type, intra_threads=intra_threads, inter_threads=1
        )
        self.batch_size = batch_size
        self.dimension = int(_read_json(model_dir / "config.json").get("hidden_size", 384))
        self.lane = ComputeLane("embed")

    def embed(self, texts: Sequence[str]) -> FloatArray:
        """Embed ``texts``; returns ``(len(texts), dimension)`` float32 rows of unit L2 norm. Blocking."""
        self.lane.check_open()
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        rows = [self._embed_batch(texts[i : i + self.batch_size]) for i in range(0, len(texts), self.batch_size)]
        return np.concatenate(rows)

    def _embed_batch(self, texts: Sequence[str]) -> FloatArray:
        ids = [encoding.ids for encoding in self._tokenizer.encode_batch(list(texts))]
        hidden = np.asarray(self._encoder.forward_batch(ids).last_hidden_state, dtype=np.float32)
        lengths = np.array([len(row) for row in ids])
        mask = (np.arange(hidden.shape[1])[np.newaxis, :] < lengths[:, np.newaxis]).astype(np.float32)
        pooled = (hidden * mask[:, :, np.newaxis]).sum(axis=1) / np.maximum(lengths, 1)[:, np.newaxis]
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        embeddings: FloatArray = (pooled / np.maximum(norms, 1e-12)).astype(np.float32)
        return embeddings

    async def aembed(self, texts: Sequence[str]) -> FloatArray:
        """:meth:`embed` on the embedder's worker thread."""
        return await self.lane.run(self.embed, texts)

    def close(self, timeout: float | None = None) -> bool:
        """Stop the worker (waiting at most ``timeout`` s) and free the encoder. Idempotent. Returns False when
        an encoding was still running (it keeps its own reference to the encoder)."""
        if self.lane.closed:
            return True
        stopped = self.lane.close(timeout)
        del self._encoder
        return stopped

    def __enter__(self) -> MiniLmEmbedder:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    data = json.loads(path.read_text(encoding="utf-8"))
    return data if isinstance(data, dict) else {}


def load_embedder(
    models_dir: Path | None,
    which: str | Path,
    *,
    intra_threads: int = 1,
    batch_size: int = 32,
    compute_type: str = "float32",
) -> MiniLmEmbedder:
    """Load the text embedder of profile/model/directory ``which``.

    Raises:
        ModelMissingError: Not provisioned.
    """
    _, model_dir = locate(models_dir, Role.EMBED, which)
    return MiniLmEmbedder(model_dir, intra_threads=intra_threads, batch_size=batch_size, compute_type=compute_type)
