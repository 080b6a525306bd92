"""Checkpoint conversions to CTranslate2, run in a child process.

Converting needs torch and transformers (the optional ``convert`` extras) and ~3 GB of memory for the
0.5B LLM. Running it as ``python -m models.convert`` in a child process means none of that stays resident
in the server, and the runtime never imports torch at all.

Child usage::

    python -m models.convert gguf --input DIR/model.gguf --output OUT --work TMP [--error-file F]
    python -m models.convert hf-encoder --input HF_DIR --output OUT [--error-file F] [--label NAME]

The output directory must not exist; on success it holds a CTranslate2 model plus the tokenizer files
the runtime needs (``tokenizer.json``, ``tokenizer_config.json``, chat template, generation config).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import numpy as np
import numpy.typing as npt
from tqdm import tqdm

from models.catalog import BASE_WEIGHTS
from models.wheels import ProvisionError

# Everything the CT2 runtime reads besides model.bin/config.json/vocabulary.*; absent ones are skipped.
_LLM_SIDE_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "generation_config.json",
    "chat_template.jinja",
)
_ENCODER_SIDE_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "modules.json",
    "sentence_bert_config.json",
    "1_Pooling/config.json",
)
_EXIT_MISSING_DEPS = 3

REFERENCE_FILE = "reference.npz"
MIN_REFERENCE_COSINE = 0.99
REFERENCE_TEXTS = (
    "The cat sits on the mat.",
    "A kitten is resting on a rug.",
    "Quarterly revenue exceeded analyst expectations.",
    "How do I reset my password?",
    "I forgot my login credentials and need to change them.",
    "Remind me to call my sister tomorrow evening, she is moving to Lisbon next month.",
    "ok",
)


def _offline() -> None:
    """Forbid any hub access before transformers is imported: provisioning reads local files only."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _copy_side_files(src: Path, dst: Path, names: Sequence[str]) -> None:
    for name in names:
        if (src / name).is_file():
            (dst / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src / name, dst / name)


def convert_gguf(gguf: Path, output: Path, work: Path, *, label: str, progress: bool) -> None:
    """Convert a GGUF causal LM to a CTranslate2 int8 generator in ``output``.

    Steps: dequantise the GGUF with transformers, save it as safetensors in ``work``, convert that with
    the CTranslate2 converter, then copy the tokenizer files next to the CT2 model. The float32 checkpoint is
    kept as ``output/BASE_WEIGHTS`` (config and safetensors only), fine-tuning's base (`models.finetune`).
    """
    _offline()
    import ctranslate2
    from transformers import AutoModelForCausalLM, AutoTokenizer

    hf_dir = work / "hf"
    with tqdm(total=3, desc=f"{label}: convert", unit="step", disable=not progress) as bar:
        bar.set_postfix_str("load GGUF")
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        bar.update(1)
        bar.set_postfix_str("save safetensors")
        # The weights are dequantised to float32 on load; the GGUF quantisation record left in the config
        # would make the CT2 converter and save_pretrained treat them as still quantised.
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        # transformers >= 5.24 refuses to save while a quantizer is attached; the weights are plain now.
        cast(Any, model).hf_quantizer = None
        model.save_pretrained(hf_dir, safe_serialization=True)
        tokenizer.save_pretrained(hf_dir)
        del model
        bar.update(1)
        bar.set_postfix_str("CTranslate2 int8")
        ctranslate2.converters.TransformersConverter(str(hf_dir)).convert(str(output), quantization="int8")
        _copy_side_files(hf_dir, output, _LLM_SIDE_FILES)
        for name in _LLM_SIDE_FILES:  # the CT2 model's copies are the ones read
            (hf_dir / name).unlink(missing_ok=True)
        hf_dir.rename(output / BASE_WEIGHTS)
        bar.update(1)


def convert_hf_encoder(hf_dir: Path, output: Path, *, label: str, progress: bool) -> None:
    """Convert a transformers encoder (e.g. ``BertModel``) to a float32 CTranslate2 encoder in ``output``.

    Weights stay float32 (90 MB for MiniLM): int8 weights cost up to 0.017 cosine on very short texts
    ("ok": 0.983 vs transformers). The runtime can still quantise at load (``compute_type="int8"``).

    Also writes ``reference.npz``: embeddings of :data:`REFERENCE_TEXTS` computed by the original float32
    model with transformers (mean pooling, L2 norm, as sentence-transformers does). The conversion fails
    unless the converted model, run through the runtime embedder, matches them (cosine > 0.99); tests
    compare against the same file, so they need no torch.
    """
    _offline()
    import ctranslate2

    with tqdm(total=2, desc=f"{label}: convert", unit="step", disable=not progress) as bar:
        ctranslate2.converters.TransformersConverter(str(hf_dir)).convert(str(output))
        _copy_side_files(hf_dir, output, _ENCODER_SIDE_FILES)
        bar.update(1)
        bar.set_postfix_str("check against transformers")
        reference = _reference_embeddings(hf_dir)
        np.savez(output / REFERENCE_FILE, texts=np.array(REFERENCE_TEXTS), embeddings=reference)
        from models.embed import MiniLmEmbedder

        embedder = MiniLmEmbedder(output)
        try:
            cosine = np.sum(embedder.embed(REFERENCE_TEXTS) * reference, axis=1)
        finally:
            embedder.close()
        if cosine.min() <= MIN_REFERENCE_COSINE:
            raise RuntimeError(f"converted encoder disagrees with transformers: min cosine {cosine.min():.4f}")
        bar.update(1)


def _reference_embeddings(hf_dir: Path) -> npt.NDArray[np.float32]:
    """Mean-pooled, L2-normalised float32 embeddings of the reference texts from the original model."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(hf_dir)
    model = AutoModel.from_pretrained(hf_dir).eval()
    batch = tokenizer(list(REFERENCE_TEXTS), padding=True, truncation=True, max_length=256, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).float()
    pooled = torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=1)
    return np.asarray(pooled.numpy(), dtype=np.float32)


def run_conversion(
    kind: str,
    source: Path,
    output: Path,
    *,
    work: Path | None = None,
    label: str = "model",
    progress: bool = True,
) -> None:
    """Run one conversion in a child Python process and wait for it.

    Args:
        kind: ``"gguf"`` or ``"hf-encoder"``.
        source: The GGUF file or the transformers model folder.
        output: Where the CT2 model goes; must not exist yet.
        work: Scratch directory for the GGUF path (needs ~4x the GGUF size free).
        label: Model name shown on the progress bar.
        progress: Let the child draw its progress bars on this process's stderr.

    Raises:
        ProvisionError: The child failed; carries its one-line reason.
    """
    error_file = output.parent / f".{output.name}.convert-error"
    error_file.unlink(missing_ok=True)
    command = [sys.executable, "-m", "models.convert", kind, "--input", str(source), "--output", str(output)]
    command += ["--error-file", str(error_file), "--label", label]
    if work is not None:
        command += ["--work", str(work)]
    if not progress:
        command.append("--quiet")
    env = dict(os.environ)
    # The child must import this very package even when it is not installed (run from a checkout).
    package_root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH", "")) if p)
    if not progress:
        # Silence transformers' logging and every tqdm bar (its own and ours) in the child.
        env.update(TQDM_DISABLE="1", TRANSFORMERS_VERBOSITY="error", HF_HUB_DISABLE_PROGRESS_BARS="1")
    output_stream = None if progress else subprocess.DEVNULL
    result = subprocess.run(command, env=env, stdout=output_stream, stderr=output_stream, check=False)
    if result.returncode != 0:
        reason = error_file.read_text(encoding="utf-8").strip() if error_file.exists() else ""
        error_file.unlink(missing_ok=True)
        raise ProvisionError(f"converting {source.name} failed: {reason or f'exit status {result.returncode}'}")


def main(argv: Sequence[str] | None = None) -> int:
    """Child-process entry point; returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m models.convert")
    parser.add_argument("kind", choices=("gguf", "hf-encoder"))
    parser.add_argument("--input", type=Path, required=True)
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--work", type=Path)
    parser.add_argument("--error-file", type=Path)
    parser.add_argument("--label", default="model")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)

    def fail(message: str, status: int) -> int:
        if args.error_file is not None:
            args.error_file.write_text(message + "\n", encoding="utf-8")
        print(f"error: {message}", file=sys.stderr)
        return status

    if args.output.exists():
        return fail(f"output {args.output} already exists", 2)
    try:
        if args.kind == "gguf":
            work = args.work or args.output.parent / f"{args.output.name}.work"
            convert_gguf(args.input, args.output, work, label=args.label, progress=not args.quiet)
        else:
            convert_hf_encoder(args.input, args.output, label=args.label, progress=not args.quiet)
    except ImportError as exc:
        return fail(
            f"{exc.name or exc} is not installed; conversion needs the convert extras "
            "(pip install 'soma[convert]': torch, transformers, gguf, accelerate)",
            _EXIT_MISSING_DEPS,
        )
    except Exception as exc:  # one line for the parent; the child's stderr keeps the traceback context
        return fail(f"{type(exc).__name__}: {exc}".splitlines()[0], 1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
