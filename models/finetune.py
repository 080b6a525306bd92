"""Fine-tuning the chat LLM on a person's replies (LoRA -> merged -> CTranslate2), run in a child process.

Training needs torch, transformers and peft and gigabytes of memory, so like :mod:`models.convert` it only
ever runs as ``python -m models.finetune <subcommand>``; the server imports this module for the parent-side
helpers (:func:`command`, :func:`child_env`, :func:`parse_event`, :func:`base_available`), which import no
torch. The torch side lives in :mod:`models.finetune_train`.

Child usage::

    python -m models.finetune train --model-dir D --data pairs.jsonl --work W [--minutes N] [--max-steps S]
        [--threads 2] [--lr 1e-3] [--batch 4] [--seed 0] [--checkpoint-steps 25] [--checkpoint-seconds 60]
    python -m models.finetune evaluate --model-dir D --adapter A --data heldout.jsonl [--threads 2]
    python -m models.finetune export --model-dir D --adapter A --out O [--threads 2]

``D`` is a provisioned CT2 LLM directory: its ``base-weights/`` (kept by provisioning) holds the base weights,
its tokenizer files and chat template are the ones serving uses, so training examples are tokenized exactly
as the server tokenizes prompts. ``pairs.jsonl`` holds one ``{"messages": [...]}`` object per line: an
optional system message, earlier turns alternating user/assistant, and last the assistant reply to learn.

Every subcommand writes one JSON object per line on stdout (``{"event": ...}``; see :class:`FinetuneEvent`)
and nothing else there: library prints are redirected to stderr. A failure is the line
``{"event": "error", "message": ...}`` and a non-zero exit status.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from models.catalog import BASE_WEIGHTS
from models.finetune_data import (
    IGNORE,
    MAX_TOKENS,
    Encode,
    EventWriter,
    Example,
    FinetuneError,
    Message,
    Render,
    build_example,
)

__all__ = [
    "IGNORE", "MAX_TOKENS", "Encode", "EventWriter", "Example", "FinetuneError", "FinetuneEvent", "Message",
    "Render", "base_available", "build_example", "child_env", "command", "iter_events", "main", "parse_event",
    "read_pairs",
]

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")
_ROLES = ("system", "user", "assistant")
_EXIT_ERROR = 1
_EXIT_MISSING_DEPS = 3

# ---------------------------------------------------------------------------------------------- parent side


def base_available(model_dir: Path) -> bool:
    """Whether ``model_dir`` holds what fine-tuning needs: the kept base weights and the tokenizer files.

    Models provisioned before the base weights were kept lack them; ``soma models provision`` rebuilds them.
    """
    return _has_base_weights(model_dir) and all((model_dir / name).is_file() for name in TOKENIZER_FILES)


def _has_base_weights(model_dir: Path) -> bool:
    return (model_dir / BASE_WEIGHTS / "config.json").is_file()


def command(subcommand: str, **options: object) -> list[str]:
    """The child's argv: ``command("train", model_dir=d, max_steps=30)`` -> ``[python, -m, models.finetune,
    train, --model-dir, d, --max-steps, 30]``. ``None`` options are left out, ``True`` is a bare flag."""
    argv = [sys.executable, "-m", "models.finetune", subcommand]
    for name, value in options.items():
        if value is None or value is False:
            continue
        flag = "--" + name.replace("_", "-")
        argv += [flag] if value is True else [flag, str(value)]
    return argv


def child_env(threads: int) -> dict[str, str]:
    """The child's environment: this one plus thread limits, no hub access, and this package importable.

    ``OMP_WAIT_POLICY=PASSIVE`` matters: with spinning OpenMP workers, 2 threads on a shared 2-core box ran
    3.3x slower than 1 (shared/TRAINING.md). It only takes effect when set before torch is imported, which
    is why it goes in the environment and not in the child's code.
    """
    env = dict(os.environ)
    package_root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH", "")) if p)
    env.update(
        OMP_WAIT_POLICY="PASSIVE",
        OMP_NUM_THREADS=str(threads),
        MKL_NUM_THREADS=str(threads),
        TOKENIZERS_PARALLELISM="false",
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        PYTHONUNBUFFERED="1",
    )
    return env


@dataclass(frozen=True, slots=True)
class FinetuneEvent:
    """One line of the child's stdout.

    Attributes:
        event: ``start``, ``progress``, ``checkpoint``, ``done``, ``evaluated``, ``exported`` or ``error``.
        fields: The line's other keys (see the subcommands in :mod:`models.finetune_train` for each event's).
    """

    event: str
    fields: dict[str, Any] = field(default_factory=dict)

    def get(self, key: str, default: Any = None) -> Any:
        return self.fields.get(key, default)

    def __getitem__(self, key: str) -> Any:
        return self.fields[key]


def parse_event(line: str | bytes) -> FinetuneEvent | None:
    """The event on one stdout line, or ``None`` for a line that is not one (blank, or not a JSON object with
    a string ``event``), so a stray print never breaks the reader."""
    try:
        data = json.loads(line)
    except ValueError:
        return None
    if not isinstance(data, dict) or not isinstance(data.get("event"), str):
        return None
    name = data.pop("event")
    return FinetuneEvent(name, data)


# ------------------------------------------------------------------------------------------- examples (pure)


def read_pairs(path: Path) -> list[list[dict[str, str]]]:
    """The conversations of a ``pairs.jsonl`` file, validated.

    Raises:
        FinetuneError: The file is missing or empty, or a line is not a valid pair; the message names the
            line.
    """
    if not path.is_file():
        raise FinetuneError(f"data file {path} does not exist")
    pairs: list[list[dict[str, str]]] = []
    with path.open(encoding="utf-8") as src:
        for number, line in enumerate(src, start=1):
            if not line.strip():
                continue
            try:
                pairs.append(_pair(json.loads(line)))
            except (ValueError, FinetuneError) as exc:
                raise FinetuneError(f"{path.name} line {number}: {exc}") from None
    if not pairs:
        raise FinetuneError(f"{path.name} holds no pairs")
    return pairs


def _pair(data: Any) -> list[dict[str, str]]:
    messages = data.get("messages") if isinstance(data, dict) else None
    if not isinstance(messages, list) or len(messages) < 2:
        raise FinetuneError('expected {"messages": [...]} with at least a user message and the reply')
    out: list[dict[str, str]] = []
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in _ROLES:
            raise FinetuneError(f"message {index} needs a role of {', '.join(_ROLES)}")
        if not isinstance(message.get("content"), str):
            raise FinetuneError(f"message {index} needs a string content")
        if message["role"] == "system" and index != 0:
            raise FinetuneError(f"message {index}: a system message may only come first")
        out.append({"role": message["role"], "content": message["content"]})
    if out[-1]["role"] != "assistant" or not out[-1]["content"].strip():
        raise FinetuneError("the last message must be the assistant reply to learn, not empty")
    if not any(message["role"] == "user" for message in out):
        raise FinetuneError("no user message before the reply")
    return out


# ----------------------------------------------------------------------------------------------- child side


def _take_stdout() -> EventWriter:
    """Keep fd 1 for events and point fd 1 and ``sys.stdout`` at stderr, so no library print can interleave."""
    events = os.fdopen(os.dup(1), "w", buffering=1, encoding="utf-8")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return EventWriter(events)


def _check_model_dir(model_dir: Path) -> None:
    if not model_dir.is_dir():
        raise FinetuneError(f"model directory {model_dir} does not exist")
    if not _has_base_weights(model_dir):
        raise FinetuneError(
            f"{model_dir} has no {BASE_WEIGHTS}/ (base weights); re-provision it with `soma models provision`"
        )
    missing = [name for name in TOKENIZER_FILES if not (model_dir / name).is_file()]
    if missing:
        raise FinetuneError(f"{model_dir} lacks {', '.join(missing)}")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m models.finetune")
    sub = parser.add_subparsers(dest="subcommand", required=True)
    train = sub.add_parser("train", help="LoRA-train on pairs.jsonl, resuming from WORK/checkpoint")
    train.add_argument("--data", type=Path, required=True)
    train.add_argument("--work", type=Path, required=True)
    train.add_argument("--minutes", type=float, help="time budget, counting time spent before a resume")
    train.add_argument("--max-steps", type=int, help="step budget (total, not per run)")
    train.add_argument("--lr", type=float, default=1e-3)
    train.add_argument("--batch", type=int, default=4)
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--checkpoint-steps", type=int, default=25)
    train.add_argument("--checkpoint-seconds", type=float, default=60.0)
    evaluate = sub.add_parser("evaluate", help="reply perplexity of the base and the tuned model")
    evaluate.add_argument("--adapter", type=Path, required=True)
    evaluate.add_argument("--data", type=Path, required=True)
    export = sub.add_parser("export", help="merge the adapter and convert to a CTranslate2 int8 model")
    export.add_argument("--adapter", type=Path, required=True)
    export.add_argument("--out", type=Path, required=True)
    for each in (train, evaluate, export):
        each.add_argument("--model-dir", type=Path, required=True)
        each.add_argument("--threads", type=int, default=2)
    return parser


def _run(args: argparse.Namespace, emit: EventWriter) -> None:
    _check_model_dir(args.model_dir)
    if args.subcommand in ("evaluate", "export") and not (args.adapter / "adapter_config.json").is_file():
        raise FinetuneError(f"{args.adapter} is not a saved adapter (no adapter_config.json)")
    if args.subcommand == "export" and args.out.exists():
        raise FinetuneError(f"output {args.out} already exists")
    pairs = read_pairs(args.data) if args.subcommand in ("train", "evaluate") else []
    # Validated before the import: bad input is reported in milliseconds, not after loading torch.
    from models import finetune_train

    if args.subcommand == "train":
        finetune_train.train(args, pairs, emit)
    elif args.subcommand == "evaluate":
        finetune_train.evaluate(args, pairs, emit)
    else:
        finetune_train.export(args, emit)


def main(argv: Sequence[str] | None = None) -> int:
    """Child-process entry point; returns the exit status (0 also after a SIGTERM stop)."""
    args = _parser().parse_args(argv)
    emit = _take_stdout()
    try:
        _run(args, emit)
    except FinetuneError as exc:
        emit("error", message=str(exc))
        return _EXIT_ERROR
    except ImportError as exc:
        emit("error", message=f"{exc.name or exc} is not installed; fine-tuning needs torch, transformers, peft")
        return _EXIT_MISSING_DEPS
    except Exception as exc:  # one line for the parent; stderr keeps the traceback
        import traceback

        traceback.print_exc()
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        emit("error", message=f"{type(exc).__name__}: {lines[0] if lines else ''}".rstrip(": "))
        return _EXIT_ERROR
    return 0


def iter_events(lines: Iterator[str]) -> Iterator[FinetuneEvent]:
    """The events among ``lines`` (a child's stdout), skipping anything else."""
    for line in lines:
        event = parse_event(line)
        if event is not None:
            yield event


if __name__ == "__main__":
    # Run main from the module under its real name: models.finetune_train imports models.finetune, and a
    # FinetuneError it raises must be the class main catches, not a twin defined in __main__.
    from models.finetune import main as _main

    sys.exit(_main())
