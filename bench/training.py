"""Training benchmark: does a model trained on the person's own replies write more like them than today's
prompt-only avatar, at what cost on this 2-core CPU, and does either avatar read its internal context out?

On a real ``soma serve`` (full profile: Qwen2.5-0.5B) with the committed synthetic history of one person
(``bench/data/training_history``: five WhatsApp chats, 3,250 of Sam's messages), imported through the API:

1. **Today's avatar** (base model + persona prompt + recalled memories + examples, exactly as served): the friends'
   words of up to `CONTEXTS` held-out contexts (the newest 10 % of Sam's replies, which training never sees) are
   sent to ``/v1/chat/completions``; each reply is checked for internal context read out (`leaked`: a header of the
   prompt, a memory's date, a list, or six words in a row from the persona prompt) and for a stock refusal
   (`refused`). ``prompt_leak_rate_prompt_only``, ``refusal_rate_prompt_only``; the style distance of its replies
   to Sam's real ones (``chat_style_distance_prompt_only``), and of the same avatar sampled as a tuned model is
   served (``…_prompt_only_sampled_subset``, on `VARIANT_CONTEXTS` of the contexts, next to the greedy figure on
   the same subset: how much of the tuned model's gain sampling alone would give).
2. **Training** through ``POST /v1/training/jobs`` with a step budget of `STEPS` (1,000 pairs at batch 4): the job's
   own figures: tokens/s, time per 1,000 pairs, the trainer's peak RSS, merge + int8 conversion time, held-out
   perplexity tuned / base (``perplexity_ratio``) and the style distance of the three systems to Sam's real replies
   on held-out contexts (``style_distance_reduction`` = 1 − tuned / prompt-only).
3. **The tuned avatar**, switched on: the same contexts again (``…_tuned`` rates), the server's RSS growth once
   the tuned model is loaded (``tuned_model_rss_mb``), the chat-level style distance as served (sampled) and greedy
   (``chat_style_distance_tuned``, ``chat_style_distance_reduction``; greedy on the subset:
   ``…_tuned_greedy_subset``), and first-token latency of streamed chat completions, base vs tuned alternating per
   request (``ttft_ratio``).

    make bench BENCH=training                          # full profile, ~1 h
    python -m bench.training --profile ci --quick      # smoke run with SmolLM2
"""

from __future__ import annotations

import argparse
import re
import shutil
import statistics
import tempfile
import time
from datetime import UTC
from pathlib import Path
from typing import Any

import httpx
import psutil

from bench._common import percentiles, print_table, stop_server, write_result
from bench._server_api import api, upload
from tests.conftest import ServerProcess, new_user, start_server
from voice_server.avatar.importers import Me
from voice_server.avatar.importers.records import ImportedMessage
from voice_server.avatar.importers.whatsapp import conversation_from_filename, parse
from voice_server.avatar.training.compare import spread
from voice_server.avatar.training.pairs import ChatLine, Pair, build_pairs
from voice_server.avatar.training.serving import TUNED_TEMPERATURE, TUNED_TOP_P
from voice_server.avatar.training.style_distance import style_distance, style_profile

DATA = Path(__file__).resolve().parent / "data" / "training_history"
ME = "Sam Rivers"
CONTEXTS = 150
STEPS = 250  # 1,000 pairs
TTFT_REQUESTS = 20
REPLY_TOKENS = 60
VARIANT_CONTEXTS = 60
SAMPLED = (TUNED_TEMPERATURE, TUNED_TOP_P)  # a client's temperature, top_p that decode as a tuned model is served

# Internal context read out. The prompt's own headers and instructions (voice_server/avatar/persona/prompt.py,
# bond/model.py, memory/policy.py), a memory's ISO date, a list line; plus verbatim runs from the persona prompt.
LEAK = re.compile(
    r"tone:|what the user told you|how [\w ]{1,40} writes|real messages of theirs|copy the style|"
    r"you describe yourself|how you write:|in their words|most relevant first|speak as [A-Z]|never as an ai|"
    r"so be warm and familiar|so welcome them back|so be gentle and ask|\(\d{4}-\d{2}-\d{2}\)|^\s*[-*] ",
    re.IGNORECASE | re.MULTILINE,
)
REFUSAL = re.compile(
    r"i'?m sorry,? (but )?i (can'?t|cannot)|i (can'?t|cannot) (assist|help) with|i'?m unable to (help|assist)|"
    r"as an ai\b", re.IGNORECASE,
)
SHINGLE = 6


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9']+", text.lower().replace("\u2019", "'"))


def leaked(reply: str, persona_prompt: str) -> bool:
    """Whether ``reply`` reads internal context out (see `LEAK`) or copies six words in a row of the persona."""
    if LEAK.search(reply):
        return True
    words = _words(persona_prompt)
    shingles = {tuple(words[i : i + SHINGLE]) for i in range(len(words) - SHINGLE + 1)}
    said = _words(reply)
    return any(tuple(said[i : i + SHINGLE]) in shingles for i in range(len(said) - SHINGLE + 1))


def refused(reply: str) -> bool:
    """Whether ``reply`` is a stock assistant refusal."""
    return bool(REFUSAL.search(reply.replace("\u2019", "'")))


def heldout(limit: int) -> list[Pair]:
    """The held-out pairs of the committed history, split as the server splits them, `spread` to ``limit``."""
    lines: list[ChatLine] = []
    for path in sorted(DATA.glob("*.txt")):
        with path.open("rb") as f:
            for record in parse(f, me=Me.of(ME), conversation=conversation_from_filename(path.name)):
                if isinstance(record, ImportedMessage) and record.at is not None:
                    at = record.at if record.at.tzinfo else record.at.replace(tzinfo=UTC)
                    lines.append(ChatLine(record.conversation, record.sender, record.text, at, record.is_user,
                                          record.attachment))
    lines.sort(key=lambda line: line.at)
    return spread(build_pairs(lines).heldout, limit)


def import_history(srv: ServerProcess, token: str) -> None:
    for path in sorted(DATA.glob("*.txt")):
        upload(srv, token, ME, path.name, path.read_bytes())
    deadline = time.monotonic() + 900
    while api(srv, "GET", "/v1/persona", token).json()["status"] != "ready":
        if time.monotonic() > deadline:
            raise RuntimeError("the persona was not built within 15 minutes")
        time.sleep(2)


def answers(srv: ServerProcess, token: str, pairs: list[Pair], **decoding: float) -> list[str]:
    """The avatar's replies to each pair's context, as a friend's chat would reach it; ``decoding``: the
    client's ``temperature``/``top_p`` (none: decoded as the server serves the avatar)."""
    out = []
    for pair in pairs:
        r = api(srv, "POST", "/v1/chat/completions", token,
                json={"model": "soma", "messages": list(pair.context), "max_tokens": REPLY_TOKENS, **decoding})
        r.raise_for_status()
        out.append(r.json()["choices"][0]["message"]["content"])
    return out


def rates(replies: list[str], prompt: str) -> tuple[float, float]:
    return (round(sum(leaked(r, prompt) for r in replies) / len(replies), 4),
            round(sum(map(refused, replies)) / len(replies), 4))


def first_delta_ms(srv: ServerProcess, token: str, question: str) -> float:
    started = time.perf_counter()
    body = {"model": "soma", "stream": True, "max_tokens": 8, "messages": [{"role": "user", "content": question}]}
    with httpx.stream("POST", srv.base_url + "/v1/chat/completions", json=body, timeout=120,
                      headers={"Authorization": f"Bearer {token}"}) as r:
        for line in r.iter_lines():
            if line.startswith("data: ") and '"content": "' in line and '"content": ""' not in line:
                return (time.perf_counter() - started) * 1000
    raise RuntimeError("no content delta")


def run(
    profile: str, quick: bool, leaks_only: bool = False, steps: int | None = None
) -> tuple[dict[str, Any], dict[str, str]]:
    """Run the three parts (see the module doc); the metrics and the loaded models. ``leaks_only``: part 1
    alone, printing every reply that leaked or refused (for working on the prompt and the guard)."""
    contexts = heldout(20 if quick else CONTEXTS)
    steps = steps or (10 if quick else STEPS)
    variants = spread(contexts, VARIANT_CONTEXTS)  # the decoding comparisons: a subset, to save an hour of CPU
    tmp = Path(tempfile.mkdtemp(prefix="bench-training-"))
    server = start_server(tmp, models=True, timeout=600, SOMA_SIGNUP="open", SOMA_MODEL_PROFILE=profile)
    metrics: dict[str, Any] = {}
    try:
        loaded = httpx.get(server.base_url + "/healthz").json().get("models", [])
        models = dict(entry.split(":", 1) for entry in loaded)
        _, token = new_user(server, "sam")
        started = time.monotonic()
        import_history(server, token)
        print(f"history imported and persona built in {time.monotonic() - started:.0f} s")
        prompt = api(server, "GET", "/v1/persona", token).json()["prompt"]
        data = api(server, "GET", "/v1/training/data", token).json()
        metrics.update(replies=data["replies"], train_pairs=data["train"], heldout_pairs=data["heldout"])

        base_replies = answers(server, token, contexts)
        metrics["prompt_leak_rate_prompt_only"], metrics["refusal_rate_prompt_only"] = rates(base_replies, prompt)
        real = style_profile([p.reply for p in contexts])

        def chat_distance(replies: list[str]) -> float:
            return round(style_distance(style_profile([r or " " for r in replies]), real).total, 4)

        metrics["chat_style_distance_prompt_only"] = chat_distance(base_replies)
        if leaks_only:
            for pair, reply in zip(contexts, base_replies, strict=True):
                if leaked(reply, prompt) or refused(reply):
                    print(f"--- {pair.context[-1]['content']!r}\n    -> {reply!r}")
            return metrics, models
        # The same avatar sampled as the tuned one is served: does sampling alone account for the tuned gain?
        subset = style_profile([p.reply for p in variants])
        chosen = [i for i, p in enumerate(contexts) if p in variants]

        def subset_distance(replies: list[str]) -> float:
            return round(style_distance(style_profile([r or " " for r in replies]), subset).total, 4)

        metrics["variant_contexts"] = len(variants)
        metrics["chat_style_distance_prompt_only_subset"] = subset_distance([base_replies[i] for i in chosen])
        metrics["chat_style_distance_prompt_only_sampled_subset"] = subset_distance(
            answers(server, token, variants, temperature=SAMPLED[0], top_p=SAMPLED[1]))

        r = api(server, "POST", "/v1/training/jobs", token, json={"max_steps": steps, "minutes": 180})
        r.raise_for_status()
        job_id = r.json()["id"]
        while (job := api(server, "GET", f"/v1/training/jobs/{job_id}", token).json())["state"] not in (
            "done", "failed", "cancelled"):
            time.sleep(5)
        if job["state"] != "done":
            raise RuntimeError(f"training {job['state']}: {job['error']}")
        result = job["result"]
        trained = result["training"]
        pairs_trained = trained["steps"] * 4
        metrics.update(
            style_distance_reduction=result["style_distance_reduction"],
            perplexity_ratio=round(result["perplexity"]["tuned"] / result["perplexity"]["base"], 4),
            perplexity_base=result["perplexity"]["base"], perplexity_tuned=result["perplexity"]["tuned"],
            style_distance_base=result["style_distance"]["base"],
            style_distance_prompt_only=result["style_distance"]["prompt_only"],
            style_distance_tuned=result["style_distance"]["tuned"],
            minutes_per_1000_pairs=round(trained["seconds"] / 60 / pairs_trained * 1000, 2),
            train_tokens_per_s=round(trained["tokens"] / trained["seconds"], 1),
            train_steps=trained["steps"], peak_rss_mb=trained["peak_rss_mb"],
            merge_convert_s=result["export"]["seconds"], export_peak_rss_mb=result["export"]["peak_rss_mb"],
            gate_passed=result["passed"],
        )
        server_rss = psutil.Process(server.proc.pid)
        before = server_rss.memory_info().rss
        api(server, "PUT", "/v1/persona/model", token, json={"use": "tuned"}).raise_for_status()
        tuned_replies = answers(server, token, contexts)
        metrics["tuned_model_rss_mb"] = round((server_rss.memory_info().rss - before) / 2**20, 1)
        metrics["prompt_leak_rate_tuned"], metrics["refusal_rate_tuned"] = rates(tuned_replies, prompt)
        metrics["chat_style_distance_tuned"] = chat_distance(tuned_replies)
        metrics["chat_style_distance_tuned_subset"] = subset_distance([tuned_replies[i] for i in chosen])
        metrics["chat_style_distance_tuned_greedy_subset"] = subset_distance(
            answers(server, token, variants, temperature=0))
        metrics["chat_style_distance_reduction"] = round(
            1 - metrics["chat_style_distance_tuned"] / metrics["chat_style_distance_prompt_only"], 4)

        questions = [p.context[-1]["content"] for p in spread(contexts, TTFT_REQUESTS)]
        first: dict[str, list[float]] = {"base": [], "tuned": []}
        for use in ("base", "tuned"):  # warm: each model's persona prefix cached
            api(server, "PUT", "/v1/persona/model", token, json={"use": use}).raise_for_status()
            first_delta_ms(server, token, "hello")
        for question in questions:
            for use in ("base", "tuned"):
                api(server, "PUT", "/v1/persona/model", token, json={"use": use}).raise_for_status()
                first[use].append(first_delta_ms(server, token, question))
        metrics["ttft_base_ms"] = percentiles(first["base"])
        metrics["ttft_tuned_ms"] = percentiles(first["tuned"])
        metrics["ttft_ratio"] = round(statistics.median(first["tuned"]) / statistics.median(first["base"]), 3)
        metrics["samples"] = [
            {"said": p.context[-1]["content"], "real": p.reply, "prompt_only": b, "tuned": t}
            for p, b, t in list(zip(contexts, base_replies, tuned_replies, strict=True))[:8]
        ]
        metrics["job_samples"] = result["samples"]
        return metrics, models
    finally:
        stop_server(server)
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", choices=["ci", "full"], default="full")
    parser.add_argument("--quick", action="store_true", help="20 contexts, 10 steps: a smoke run")
    parser.add_argument("--steps", type=int, default=None, help=f"training steps of 4 pairs (default {STEPS})")
    parser.add_argument("--leaks-only", action="store_true", help="today's avatar only; print what leaked (no JSON)")
    args = parser.parse_args()
    metrics, models = run(args.profile, args.quick, args.leaks_only, args.steps)
    if args.leaks_only:
        print_table(metrics)
        return
    print_table({k: v for k, v in metrics.items() if k not in ("samples", "job_samples")})
    name = "training" if not args.quick else "training_quick"
    flags = " ".join(f for f in (f"--profile {args.profile}" if args.profile != "full" else "",
                                 "--quick" if args.quick else "",
                                 f"--steps {args.steps}" if args.steps else "") if f)
    path = write_result(
        name, models=models, metrics=metrics,
        command=f"python -m bench.training {flags}".strip(),
        notes="Synthetic history bench/data/training_history (seed 30). Today's avatar = base model + persona prompt "
        "+ memories + examples through /v1/chat/completions; the job's style distances use the persona prompt "
        "alone (voice_server/avatar/training/compare.py). Leak/refusal detectors: bench/training.py LEAK, REFUSAL.",
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
