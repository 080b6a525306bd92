"""The torch side of :mod:`models.finetune`: train a LoRA adapter, evaluate it, merge and convert it.

Imported only inside the ``python -m models.finetune`` child (it imports torch at module level). The recipe
is the one measured in shared/TRAINING.md: base weights in float32 from the kept checkpoint (`load_base`), LoRA
r=8/alpha 16/dropout 0 on q/k/v/o, AdamW at lr 1e-3, batch 4, one epoch, bf16 autocast where the hardware has
native bf16 (float32 elsewhere, `native_bf16`), and the loss taken through the LM head only at reply positions
(1.1-1.5x faster and lighter than the full-vocabulary loss). A batch's shared start (the persona prompt) runs
once per batch, not once per row (`shared_prefix`).

Checkpoints (``WORK/checkpoint/``) hold the LoRA weights, the optimizer state and ``state.json`` (step, the
shuffled order, time spent, losses so far). They are written to ``checkpoint.tmp/`` and renamed into place,
so a kill at any moment leaves the previous complete checkpoint; a run finding one resumes after its step.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import random
import resource
import shutil
import signal
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import Any

from models.catalog import BASE_WEIGHTS
from models.finetune_data import (
    IGNORE,
    EventWriter,
    Example,
    FinetuneError,
    build_example,
)

# Both must be set before torch (OpenMP) and transformers are imported; the parent's child_env sets them too.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj")
_LOSS_WINDOW = 5  # steps averaged for the done event's first_loss / last_loss
_CHECKPOINT = "checkpoint"
_ADAPTER = "adapter"
_STATE = "state.json"
_LORA_FILE = "lora.safetensors"
_OPTIMIZER_FILE = "optimizer.pt"
_EXPORT_SIDE_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja")


# ------------------------------------------------------------------------------------------- shared helpers


def _setup(threads: int) -> torch.device:
    torch.set_num_threads(max(1, threads))
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # only settable before any parallel work; harmless if already fixed
        pass
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _rss_mb() -> float:
    with open("/proc/self/statm") as statm:
        return round(int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20, 1)


def _peak_rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)  # KiB on Linux


def _tokenization(model_dir: Path) -> tuple[Any, Any, str]:
    """The tokenizer and chat template serving uses (models.llm), so training prompts match served ones."""
    from tokenizers import Tokenizer

    from models.chat_prompt import ChatPrompt

    tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    prompt = ChatPrompt(model_dir)
    end_token = prompt.tokens.get("eos_token")
    if end_token is None or tokenizer.token_to_id(end_token) is None:
        raise FinetuneError(f"{model_dir}: the tokenizer has no end-of-turn (eos) token")
    return tokenizer, prompt, end_token


def _examples(model_dir: Path, pairs: Sequence[Sequence[dict[str, str]]]) -> list[Example]:
    tokenizer, prompt, end_token = _tokenization(model_dir)
    examples = []
    for messages in pairs:
        example = build_example(
            messages,
            render=lambda m, gen: prompt.render(m, add_generation_prompt=gen),
            encode=lambda text: tokenizer.encode(text, add_special_tokens=False).ids,
            end_token=end_token,
        )
        if example is not None:
            examples.append(example)
    if not examples:
        raise FinetuneError("every pair's prompt alone is longer than the token limit")
    return examples


def load_base(model_dir: Path) -> Any:
    """The base model in float32, from the checkpoint provisioning kept (``model_dir/base-weights``)."""
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(model_dir / BASE_WEIGHTS, dtype=torch.float32)


def _batch(examples: Sequence[Example], device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-padded ids, attention mask and labels. Pads are found by length, never by id: SmolLM2's pad
    token *is* its end-of-turn token, which must keep its label."""
    width = max(len(e.input_ids) for e in examples)
    ids = torch.zeros((len(examples), width), dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE, dtype=torch.long)
    for row, example in enumerate(examples):
        n = len(example.input_ids)
        ids[row, :n] = torch.tensor(example.input_ids)
        mask[row, :n] = 1
        labels[row, :n] = torch.tensor(example.labels)
    return ids.to(device), mask.to(device), labels.to(device)


_MIN_SHARED = 16
"""A shared prefix shorter than this is not worth a separate forward pass."""


def shared_prefix(examples: Sequence[Example]) -> int:
    """How many leading tokens every example of a batch has in common, ending before the first position that
    predicts a reply token (0 when under ``_MIN_SHARED`` or for a batch of one).

    A person's examples all begin with the same persona system prompt (about 200 of ~250 tokens per example in
    bench/training.py's history), so a batch computes it once and the rest of each example on top of it.
    """
    if len(examples) < 2:
        return 0
    first = examples[0].input_ids
    limit = min(len(e.input_ids) for e in examples)
    # The position before a reply token predicts it, so the prefix ends at least one token before any label.
    limit = min([limit, *(next((i for i, v in enumerate(e.labels) if v != IGNORE), limit) - 1 for e in examples)])
    n = 0
    while n < limit and all(e.input_ids[n] == first[n] for e in examples):
        n += 1
    return n if n >= _MIN_SHARED else 0


def _reply_nll(
    base: Any, ids: torch.Tensor, mask: torch.Tensor, labels: torch.Tensor, prefix: int = 0
) -> tuple[torch.Tensor, int]:
    """Summed negative log-likelihood of the reply tokens and their count; the LM head runs only on the
    positions that predict a reply token (the vocabulary projection is most of the cost elsewhere).

    With ``prefix`` > 0 (`shared_prefix`), the first ``prefix`` tokens (the same in every row) run once, for row
    0, and their keys and values are repeated for the batch under the rest of each row. Causal attention makes
    this the same computation as the full rows (equal within float rounding, gradients included: the cache
    tensors stay in the autograd graph), at ~40% of the tokens for a persona-prompted batch of 4.
    """
    if prefix:
        cache = base.model(input_ids=ids[:1, :prefix], use_cache=True).past_key_values
        cache.batch_repeat_interleave(ids.shape[0])
        hidden = base.model(
            input_ids=ids[:, prefix:], attention_mask=mask, past_key_values=cache, use_cache=True
        ).last_hidden_state
        labels = labels[:, prefix:]
    else:
        hidden = base.model(input_ids=ids, attention_mask=mask).last_hidden_state
    targets = labels[:, 1:]
    keep = targets != IGNORE
    logits = base.lm_head(hidden[:, :-1][keep])
    return F.cross_entropy(logits.float(), targets[keep], reduction="sum"), int(keep.sum())


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` computes bfloat16 natively: a CUDA GPU that supports it, or a CPU with AVX512-BF16 or
    AMX. Elsewhere torch emulates bf16 matmuls, measured 50x slower than float32 on an AVX2-only EPYC (a 1024^2
    matmul: 2.6 s vs 52 ms), which turned a 2 s training step into 140 s; there the step runs in float32."""
    if device.type == "cuda":
        return bool(torch.cuda.is_bf16_supported())
    # torch exposes the CPU's features only through these private helpers; without them, float32 (always right).
    probes = (getattr(torch.cpu, "_is_avx512_bf16_supported", None), getattr(torch.cpu, "_is_amx_tile_supported", None))
    return any(probe is not None and bool(probe()) for probe in probes)


def _autocast(device: torch.device) -> torch.autocast:
    """bf16 autocast where it is native (`native_bf16`: ~1.5x the float32 rate, losses within 0.025), else off."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=native_bf16(device))


# ------------------------------------------------------------------------------------------------- training


class _Signals:
    """SIGTERM asks for a clean stop after the current step; SIGCONT marks a step that spanned a pause (the
    server SIGSTOPs the trainer while a call is live), whose wall time must not count against the budget."""

    def __init__(self) -> None:
        self.stop = False
        self.resumed = False
        signal.signal(signal.SIGTERM, self._on_term)
        signal.signal(signal.SIGCONT, self._on_cont)

    def _on_term(self, signum: int, frame: FrameType | None) -> None:
        self.stop = True

    def _on_cont(self, signum: int, frame: FrameType | None) -> None:
        self.resumed = True


def _data_digest(examples: Sequence[Example], args: argparse.Namespace) -> str:
    digest = hashlib.sha256(json.dumps([args.seed, args.batch, args.lr]).encode())
    for example in examples:
        digest.update(json.dumps(example.labels).encode())
    return digest.hexdigest()


def _read_checkpoint(work: Path) -> Path | None:
    """The complete checkpoint directory, repairing a rename interrupted between its two steps."""
    final, old = work / _CHECKPOINT, work / f"{_CHECKPOINT}.old"
    shutil.rmtree(work / f"{_CHECKPOINT}.tmp", ignore_errors=True)
    if not final.is_dir() and old.is_dir():
        old.rename(final)
    shutil.rmtree(old, ignore_errors=True)
    return final if (final / _STATE).is_file() else None


def _replace_dir(tmp: Path, final: Path) -> None:
    """Put ``tmp`` at ``final``; at every instant either the old or the new one is complete on disk."""
    old = final.with_name(f"{final.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        final.rename(old)
    tmp.rename(final)
    shutil.rmtree(old, ignore_errors=True)


def _save_checkpoint(work: Path, model: Any, optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> None:
    from peft import get_peft_model_state_dict
    from safetensors.torch import save_file

    tmp = work / f"{_CHECKPOINT}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    weights = {
        k: v.detach().to("cpu").contiguous()
        for k, v in get_peft_model_state_dict(model, save_embedding_layers=False).items()
    }
    save_file(weights, str(tmp / _LORA_FILE))
    torch.save(optimizer.state_dict(), tmp / _OPTIMIZER_FILE)
    (tmp / _STATE).write_text(json.dumps(state), encoding="utf-8")
    for path in tmp.iterdir():  # on disk before the rename makes them the checkpoint
        with path.open("rb") as handle:
            os.fsync(handle.fileno())
    _replace_dir(tmp, work / _CHECKPOINT)


def train(args: argparse.Namespace, pairs: Sequence[Sequence[dict[str, str]]], emit: EventWriter) -> None:
    """Train one epoch (or until ``--max-steps`` / ``--minutes``), resuming from ``WORK/checkpoint``.

    Events: ``start`` {pairs, examples, total_steps, trainable_params, device, bf16, resumed_from}; per step
    ``progress`` {step, total_steps, loss, tokens, tokens_per_s, step_s, eta_s, elapsed_s, rss_mb};
    ``checkpoint`` {step}; ``done`` {steps, first_loss, last_loss, stopped, tokens, seconds, peak_rss_mb,
    adapter}. ``stopped`` is ``steps`` (step budget), ``time`` (time budget), ``end`` (epoch finished) or
    ``signal`` (SIGTERM: checkpointed, no adapter written). ``first_loss``/``last_loss`` average the first
    and last five steps of the whole run (resumes included); ``seconds`` is training time across runs,
    pauses (SIGSTOP) excluded. The adapter is saved with peft's ``save_pretrained`` to ``WORK/adapter``.
    """
    from peft import LoraConfig, get_peft_model, set_peft_model_state_dict
    from safetensors.torch import load_file

    signals = _Signals()
    device = _setup(args.threads)
    work: Path = args.work
    work.mkdir(parents=True, exist_ok=True)
    examples = _examples(args.model_dir, pairs)
    digest = _data_digest(examples, args)
    epoch_steps = math.ceil(len(examples) / args.batch)
    total_steps = min(epoch_steps, args.max_steps) if args.max_steps else epoch_steps

    torch.manual_seed(args.seed)
    model = get_peft_model(
        load_base(args.model_dir),
        LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules=list(LORA_TARGETS), task_type="CAUSAL_LM"),
    ).to(device)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=args.lr)

    state: dict[str, Any] = {"step": 0, "elapsed_s": 0.0, "tokens": 0, "losses": [], "digest": digest}
    checkpoint = _read_checkpoint(work)
    if checkpoint is not None:
        saved = json.loads((checkpoint / _STATE).read_text(encoding="utf-8"))
        if saved.get("digest") == digest:  # other data or settings: the old checkpoint does not apply
            set_peft_model_state_dict(model, load_file(str(checkpoint / _LORA_FILE), device=str(device)))
            optimizer.load_state_dict(torch.load(checkpoint / _OPTIMIZER_FILE, map_location=device))
            state = saved
    if "order" not in state:
        order = list(range(len(examples)))
        random.Random(args.seed).shuffle(order)
        state["order"] = order
    order = state["order"]
    emit(
        "start",
        pairs=len(pairs),
        examples=len(examples),
        total_steps=total_steps,
        trainable_params=sum(p.numel() for p in params),
        device=device.type,
        bf16=native_bf16(device),
        resumed_from=state["step"],
    )

    base = model.get_base_model()
    budget_s = args.minutes * 60 if args.minutes else math.inf
    last_step_s = 0.0
    last_checkpoint = (state["step"], time.monotonic())
    stopped = "end"
    while state["step"] < total_steps:
        if signals.stop:
            stopped = "signal"
            break
        if state["elapsed_s"] + last_step_s > budget_s:
            stopped = "time"
            break
        step = state["step"]
        batch = [examples[i] for i in order[step * args.batch : (step + 1) * args.batch]]
        ids, mask, labels = _batch(batch, device)
        signals.resumed = False
        started, cpu_started = time.monotonic(), time.process_time()
        with _autocast(device):
            nll, count = _reply_nll(base, ids, mask, labels, shared_prefix(batch))
        loss = nll / max(count, 1)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]
        optimizer.step()
        wall = time.monotonic() - started
        # A step the server paused (SIGSTOP ... SIGCONT) would count the pause; CPU time does not see it.
        step_s = min(wall, time.process_time() - cpu_started) if signals.resumed else wall
        last_step_s = step_s
        tokens = int(mask.sum())
        state["step"] = step + 1
        state["elapsed_s"] += step_s
        state["tokens"] += tokens
        state["losses"].append(round(float(loss.detach()), 5))
        emit(
            "progress",
            step=state["step"],
            total_steps=total_steps,
            loss=state["losses"][-1],
            tokens=tokens,
            tokens_per_s=round(tokens / step_s, 1) if step_s > 0 else None,
            step_s=round(step_s, 3),
            eta_s=round(state["elapsed_s"] / state["step"] * (total_steps - state["step"]), 1),
            elapsed_s=round(state["elapsed_s"], 1),
            rss_mb=_rss_mb(),
        )
        since_steps, since_time = state["step"] - last_checkpoint[0], time.monotonic() - last_checkpoint[1]
        if since_steps >= args.checkpoint_steps or since_time >= args.checkpoint_seconds:
            _save_checkpoint(work, model, optimizer, state)
            last_checkpoint = (state["step"], time.monotonic())
            emit("checkpoint", step=state["step"])
    else:
        stopped = "steps" if total_steps < epoch_steps else "end"
    if state["step"] != last_checkpoint[0] or checkpoint is None:
        _save_checkpoint(work, model, optimizer, state)
        emit("checkpoint", step=state["step"])
    adapter = None
    if stopped != "signal":
        tmp = work / f"{_ADAPTER}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        # Only the LoRA weights: peft would otherwise add the (tied, untrained) embeddings of some GGUF configs.
        model.save_pretrained(str(tmp), save_embedding_layers=False)
        _replace_dir(tmp, work / _ADAPTER)
        adapter = str(work / _ADAPTER)
    losses = state["losses"]
    emit(
        "done",
        steps=state["step"],
        first_loss=_mean(losses[:_LOSS_WINDOW]),
        last_loss=_mean(losses[-_LOSS_WINDOW:]),
        stopped=stopped,
        tokens=state["tokens"],
        seconds=round(state["elapsed_s"], 2),
        peak_rss_mb=_peak_rss_mb(),
        adapter=adapter,
    )


def _mean(values: Sequence[float]) -> float | None:
    return round(sum(values) / len(values), 5) if values else None


# ------------------------------------------------------------------------------------ evaluation and export


def _load_tuned(model_dir: Path, adapter: Path, device: torch.device) -> Any:
    from peft import PeftModel

    return PeftModel.from_pretrained(load_base(model_dir), str(adapter)).to(device).eval()


def evaluate(args: argparse.Namespace, pairs: Sequence[Sequence[dict[str, str]]], emit: EventWriter) -> None:
    """Reply-token perplexity of the base model (adapter disabled) and the tuned one, from one load.

    Event: ``evaluated`` {ppl_base, ppl_tuned, nll_base, nll_tuned, tokens, pairs, seconds}; the NLLs are
    means per reply token (float32, no autocast, so base and tuned compare exactly).
    """
    started = time.monotonic()
    device = _setup(args.threads)
    examples = _examples(args.model_dir, pairs)
    model = _load_tuned(args.model_dir, args.adapter, device)
    base = model.get_base_model()

    def mean_nll() -> tuple[float, int]:
        total, count = 0.0, 0
        with torch.no_grad():
            for start in range(0, len(examples), 4):
                batch = examples[start : start + 4]
                nll, n = _reply_nll(base, *_batch(batch, device), shared_prefix(batch))
                total, count = total + float(nll), count + n
        return total / max(count, 1), count

    with model.disable_adapter():
        nll_base, tokens = mean_nll()
    nll_tuned, _ = mean_nll()
    emit(
        "evaluated",
        ppl_base=round(math.exp(nll_base), 4),
        ppl_tuned=round(math.exp(nll_tuned), 4),
        nll_base=round(nll_base, 5),
        nll_tuned=round(nll_tuned, 5),
        tokens=tokens,
        pairs=len(examples),
        seconds=round(time.monotonic() - started, 2),
    )


def export(args: argparse.Namespace, emit: EventWriter) -> None:
    """Merge the adapter into the float32 base and convert straight to a CTranslate2 int8 model in ``--out``.

    The merged weights never reach disk: the converter's ``load_model`` returns the merged model, and the
    directory it is pointed at holds only its config and the tokenizer files. ``--out`` receives
    ``config.json``, ``model.bin`` and ``vocabulary.json`` (written to ``OUT.tmp`` and renamed). Event:
    ``exported`` {seconds, bytes, peak_rss_mb}.
    """
    import ctranslate2

    started = time.monotonic()
    _setup(args.threads)
    merged = _load_tuned(args.model_dir, args.adapter, torch.device("cpu")).merge_and_unload()

    class MergedConverter(ctranslate2.converters.TransformersConverter):  # type: ignore[misc]
        def load_model(self, model_class: Any, model_name_or_path: str, **kwargs: Any) -> Any:
            return merged

    out: Path = args.out
    tmp = out.with_name(f"{out.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    with tempfile.TemporaryDirectory(prefix="soma-export-") as config_dir:
        merged.config.save_pretrained(config_dir)
        for name in _EXPORT_SIDE_FILES:
            if (args.model_dir / name).is_file():
                shutil.copy2(args.model_dir / name, Path(config_dir) / name)
        MergedConverter(config_dir).convert(str(tmp), quantization="int8")
    tmp.rename(out)
    emit(
        "exported",
        seconds=round(time.monotonic() - started, 2),
        bytes=sum(p.stat().st_size for p in out.iterdir() if p.is_file()),
        peak_rss_mb=_peak_rss_mb(),
    )
