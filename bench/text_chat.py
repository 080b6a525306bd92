"""Text-chat benchmark: Soma's OpenAI-compatible text endpoints, driven by the official ``openai`` SDK.

It starts a real ``soma serve --http`` (the profile's models loaded, open sign-up) on a free port, signs up one
user per simulated client, and measures two endpoints with the same ~600-token persona prompt:

* ``POST /v1/chat/completions`` with ``stream: true`` (SSE): the persona is the system message, the question
  the only user message, with ``"soma": {"history": "recent"}`` so the server adds the user's recent history.
* ``GET /v1/realtime?model=soma`` (OpenAI Realtime over a WebSocket, text only): after ``session.created`` a
  ``session.update`` sets ``output_modalities: ["text"]`` and the persona as ``instructions``; each turn is a
  ``conversation.item.create`` (a user text message) then ``response.create``, answered with
  ``response.output_text.delta`` events and ``response.done``.

Per request it records the **first delta** latency (chat: from the HTTP call; realtime: from sending
``response.create``, on an already open connection, to the first non-empty text delta) and the **decode rate**
(deltas after the first / seconds from the first to the last delta; the server sends one delta per decoded
piece, so a delta stands for a token; the chat usage block gives the true ratio, ``chat_tokens_per_delta``).
Both at 1 client (sequential requests after warm-up ones) and at 10 concurrent clients (each a different user,
each asking a few questions back to back, started within a random 0-0.5 s stagger), where the aggregate rate
is all deltas / wall time from the first request to the last delta. Every request asks a different short
question; later turns of a user include that user's earlier turns in the prompt, as in real use.

    make bench BENCH=text_chat                             # full profile
    python bench/text_chat.py --profile ci --quick         # smoke run with the small models
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script (python bench/text_chat.py): make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import argparse  # noqa: E402
import asyncio  # noqa: E402
import random  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Sequence  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
import openai  # noqa: E402
from soma_client import SomaClient  # noqa: E402

from bench._common import percentiles, print_table, stop_server, write_result  # noqa: E402
from models.registry import describe  # noqa: E402
from tests.conftest import ServerProcess, start_server  # noqa: E402

MODEL = "soma"  # the caller's own avatar
PASSWORD = "bench-text-chat-password"
STAGGER_S = 0.5  # concurrent clients start within this many seconds of each other
REQUEST_TIMEOUT_S = 120.0  # a request still unanswered after this counts as failed
TARGET_FIRST_DELTA_P50_AT_1_MS = 300.0
TARGET_FIRST_DELTA_P95_AT_10_MS = 1500.0

# ~600 tokens with the Qwen2.5 tokenizer (617; 635 with SmolLM2's).
PERSONA = """\
You are Margaret "Maggie" Lindqvist, and you are talking with someone by text as yourself. You are 58 years old \
and live in a red wooden house on the edge of Duluth, Minnesota, a short walk from Lake Superior. You grew up on \
a dairy farm in Wisconsin, the middle child of five, and you still get up at half past five without an alarm. You \
are warm, practical and curious, a little stubborn, and you laugh easily, mostly at yourself. You distrust fuss \
and jargon, you love a good story, and you always want to know how people are really doing, not just how they \
say they are.

Family: you have been married for thirty-one years to Tom, a retired high-school shop teacher who builds canoes \
in the garage and hums while he works. Your daughter Elise, 29, is a veterinarian in Minneapolis and phones you \
every Sunday evening; your son Ben, 26, moved to Denver for a job in solar energy and texts more than he calls. \
You have one grandchild, Noor, who is three and calls you "Gammy Mags". Your younger sister Karin lives in \
Madison; you talk on the phone twice a week and argue cheerfully about politics and pie. Your mother, Ruth, is \
84, lives in assisted living near Karin, and still beats everyone at cribbage.

Work: for twenty-six years you were a labour and delivery nurse at St. Mary's hospital, mostly on night shifts. \
Two years ago you cut back to three days a week teaching new nurses in the simulation lab. You are proud of the \
work, calm in a crisis, and you have strong opinions about hand-washing, sleep and drinking enough water. You \
sometimes tell short hospital stories, but you never share anything private about a patient.

Hobbies: you bake bread every Saturday, a sourdough starter named Gus lives in your fridge, and your cardamom \
buns are famous at church. You keep a vegetable garden with far too many tomatoes, you knit socks while watching \
mystery shows, and you swim in the lake from June to September no matter how cold it is. You read two or three \
novels a month, mostly detective stories and Scandinavian crime, and you belong to a book club that mostly \
drinks wine. You and Tom paddle the Boundary Waters every August.

How you talk: plain, friendly Midwestern English. Short sentences, everyday words, the occasional "oh, for \
goodness' sake" or "you betcha". You are encouraging but honest, and you will gently say so when you think \
someone is making a mistake. You ask one follow-up question when it helps. You do not lecture.

Rules for this chat: answer in two or three short sentences, as Maggie would say them out loud. Never use lists, \
headings, markdown, emoji or code. If you do not know something, say so plainly and offer what you do know. \
Never say you are an AI or a language model; you are Maggie."""

QUESTIONS = [
    "How was your weekend?",
    "What are you baking this Saturday?",
    "Any tips for keeping a sourdough starter alive?",
    "How cold is the lake in June, really?",
    "What's Tom working on in the garage these days?",
    "How is Noor doing?",
    "What book are you reading right now?",
    "Can you recommend a good detective novel?",
    "How did you stay awake on night shifts?",
    "What's the best advice you ever got as a nurse?",
    "What do you do with all those tomatoes?",
    "How do you make your cardamom buns?",
    "What's the hardest part of teaching new nurses?",
    "When did you last talk to Karin?",
    "Who usually wins at cribbage, you or your mom?",
    "What should I pack for a canoe trip?",
    "How do you deal with a stressful day?",
    "What's your favourite season up north?",
    "Do you have a good soup recipe for winter?",
    "How often does Elise call you?",
    "What does Ben like about Denver?",
    "How do I get better sleep?",
    "Is it silly to start swimming at fifty?",
    "What's a good first knitting project?",
    "What was the farm like when you were a kid?",
    "How do you keep a marriage happy for thirty years?",
    "What do you argue about with your sister?",
    "What's the best pie, in your opinion?",
    "Should I learn to bake bread?",
    "What's the Boundary Waters like in August?",
    "How do I tell a friend they're making a mistake?",
    "What do you miss about working full time?",
    "What's your morning routine?",
    "How much water should I drink in a day?",
    "What show are you watching while you knit?",
    "What did you cook for dinner last night?",
    "How do you cheer yourself up on a grey day?",
    "What's the funniest thing Noor has said lately?",
    "Do you like living near the lake?",
    "What would you tell a new nurse on her first day?",
    "What's on your to-do list this week?",
    "How do you pick a good tomato variety?",
    "What's your book club reading next?",
    "Any advice for someone moving to a new city?",
    "How do you stay patient with a toddler?",
    "What's a small thing that made you happy today?",
    "How do you like your coffee?",
    "What are you looking forward to this month?",
]
LEADS = ["", "Quick question: ", "I was wondering, ", "Tell me, ", "Hey Maggie, "]


class Questions:
    """Hands out a different short question for every request (shuffled; varied once the list runs out)."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.order = self.rng.sample(QUESTIONS, k=len(QUESTIONS))
        self.used = 0

    def next(self) -> str:
        text = self.order[self.used % len(self.order)]
        lead = LEADS[(self.used // len(self.order)) % len(LEADS)]
        self.used += 1
        return lead + (text[0].lower() + text[1:] if lead else text)


@dataclass
class Sample:
    """One request: its timings (``time.perf_counter`` seconds) and how many text deltas it got."""

    started: float
    first: float | None = None
    last: float | None = None
    ended: float | None = None
    deltas: int = 0
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    error: str | None = None

    def delta(self) -> None:
        now = time.perf_counter()
        if self.first is None:
            self.first = now
        self.last = now
        self.deltas += 1

    @property
    def ok(self) -> bool:
        return self.error is None and self.first is not None

    @property
    def first_delta_ms(self) -> float | None:
        return None if self.first is None else (self.first - self.started) * 1000

    @property
    def reply_ms(self) -> float | None:
        return None if self.last is None else (self.last - self.started) * 1000

    @property
    def tokens_per_s(self) -> float | None:
        """Decode rate after the first delta (``None`` with fewer than two deltas)."""
        if self.first is None or self.last is None or self.deltas < 2 or self.last <= self.first:
            return None
        return (self.deltas - 1) / (self.last - self.first)


# ------------------------------------------------------------------------------------------------ clients


def signup(base_url: str, username: str) -> str:
    """Create ``username`` on the server and return its bearer token."""
    with SomaClient(base_url) as soma:
        soma.signup(username, PASSWORD)
        assert soma.token is not None
        return soma.token


def sdk(base_url: str, token: str) -> openai.AsyncOpenAI:
    """An OpenAI SDK client for one Soma user (no retries: a failure must show in the figures)."""
    return openai.AsyncOpenAI(base_url=base_url + "/v1", api_key=token, max_retries=0, timeout=REQUEST_TIMEOUT_S)


class ChatClient:
    """One user of ``POST /v1/chat/completions`` (streaming)."""

    def __init__(self, client: openai.AsyncOpenAI, max_tokens: int) -> None:
        self.client = client
        self.max_tokens = max_tokens

    async def open(self) -> None:
        """Nothing to open: each request is its own HTTP call."""

    async def ask(self, question: str) -> Sample:
        sample = Sample(time.perf_counter())
        try:
            stream = await self.client.chat.completions.create(
                model=MODEL,
                messages=[{"role": "system", "content": PERSONA}, {"role": "user", "content": question}],
                stream=True,
                stream_options={"include_usage": True},
                max_tokens=self.max_tokens,
                extra_body={"soma": {"history": "recent"}},  # as measured before history became opt-in
            )
            async with stream:
                async for chunk in stream:
                    for choice in chunk.choices:
                        if choice.delta is not None and choice.delta.content:
                            sample.delta()
                    if chunk.usage is not None:
                        sample.prompt_tokens = chunk.usage.prompt_tokens
                        sample.completion_tokens = chunk.usage.completion_tokens
        except (openai.OpenAIError, OSError) as exc:
            sample.error = f"{type(exc).__name__}: {exc}"[:200]
        sample.ended = time.perf_counter()
        return sample

    async def close(self) -> None:
        await self.client.close()


class RealtimeClient:
    """One user's ``/v1/realtime`` WebSocket in text mode; the connection stays open across its turns."""

    def __init__(self, client: openai.AsyncOpenAI) -> None:
        self.client = client
        self.manager: Any = None
        self.conn: Any = None

    async def open(self) -> None:
        """Connect, wait for ``session.created``, set text output and the persona, wait for ``session.updated``."""
        self.manager = self.client.realtime.connect(model=MODEL)
        self.conn = await self.manager.__aenter__()
        await self._expect("session.created")
        await self.conn.session.update(
            session={"type": "realtime", "output_modalities": ["text"], "instructions": PERSONA}
        )
        await self._expect("session.updated")

    async def _expect(self, kind: str) -> None:
        async with asyncio.timeout(60):
            while True:
                event = await self.conn.recv()
                if event.type == kind:
                    return
                if event.type == "error":
                    raise RuntimeError(f"realtime error while waiting for {kind}: {event.error}")

    async def ask(self, question: str) -> Sample:
        conn = self.conn
        item = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": question}]}
        sample = Sample(time.perf_counter())
        response_id: str | None = None
        try:
            await conn.conversation.item.create(item=item)
            sample.started = time.perf_counter()  # the clock starts at response.create, the request proper
            await conn.response.create()
            async with asyncio.timeout(REQUEST_TIMEOUT_S):
                while True:
                    event = await conn.recv()
                    kind = event.type
                    if kind == "response.created":
                        response_id = event.response.id
                    elif kind == "response.output_text.delta":
                        if event.response_id == response_id and event.delta:
                            sample.delta()
                    elif kind == "response.done":
                        if event.response.id == response_id:
                            if event.response.status != "completed":
                                sample.error = f"response {event.response.status}"
                            break
                    elif kind == "error":
                        sample.error = f"error event: {event.error.code}: {event.error.message}"[:200]
                        break
        except (TimeoutError, openai.OpenAIError, OSError) as exc:
            sample.error = f"{type(exc).__name__}: {exc}"[:200]
        sample.ended = time.perf_counter()
        return sample

    async def close(self) -> None:
        if self.manager is not None:
            await self.manager.__aexit__(None, None, None)
        await self.client.close()


Client = ChatClient | RealtimeClient


# ------------------------------------------------------------------------------------------------- phases


async def sequential(client: Client, questions: Questions, warmup: int, requests: int) -> list[Sample]:
    """``warmup`` untimed requests then ``requests`` timed ones, one after another."""
    await client.open()
    try:
        for _ in range(warmup):
            warm = await client.ask(questions.next())
            if warm.error:
                print(f"warm-up request failed: {warm.error}", file=sys.stderr)
        return [await client.ask(questions.next()) for _ in range(requests)]
    finally:
        await client.close()


async def concurrent(clients: Sequence[Client], questions: Questions, turns: int, seed: int) -> list[Sample]:
    """Every client asks ``turns`` questions back to back; clients start within a random ``STAGGER_S``."""
    rng = random.Random(seed)
    delays = [rng.uniform(0, STAGGER_S) for _ in clients]

    async def run(client: Client, delay: float) -> list[Sample]:
        await asyncio.sleep(delay)
        return [await client.ask(questions.next()) for _ in range(turns)]

    try:
        await asyncio.gather(*(c.open() for c in clients))  # connections are set up before the clock starts
        per_client = await asyncio.gather(*(run(c, d) for c, d in zip(clients, delays, strict=True)))
    finally:
        await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)
    return [s for samples in per_client for s in samples]


# ------------------------------------------------------------------------------------------------ metrics


def summarise(samples: Sequence[Sample], prefix: str, suffix: str, metrics: dict[str, Any]) -> None:
    """Add ``<prefix>first_delta_ms<suffix>``, ``<prefix>tokens_per_s<suffix>`` and friends to ``metrics``."""
    ok = [s for s in samples if s.ok]
    # A request that failed after its first delta (e.g. timed out) still measured its first delta.
    firsts = [s.first_delta_ms for s in samples if s.first_delta_ms is not None]
    replies = [s.reply_ms for s in ok if s.reply_ms is not None]
    rates = [s.tokens_per_s for s in ok if s.tokens_per_s is not None]
    if firsts:
        metrics[f"{prefix}first_delta_ms{suffix}"] = percentiles(firsts)
    if replies:
        metrics[f"{prefix}reply_ms{suffix}"] = percentiles(replies)
    if rates:
        metrics[f"{prefix}tokens_per_s{suffix}"] = round(float(np.median(rates)), 1)
    if ok:
        metrics[f"{prefix}deltas_per_reply{suffix}"] = round(float(np.median([s.deltas for s in ok])), 1)
    metrics[f"{prefix}failed{suffix}"] = len(samples) - len(ok)
    for s in samples:
        if not s.ok:  # the reason goes to the log: a request that completed with no text has no error
            print(f"{prefix or 'realtime_'}failed{suffix}: {s.error or 'completed without any text delta'}",
                  file=sys.stderr)


def aggregate_rate(samples: Sequence[Sample]) -> float | None:
    """All deltas / seconds from the first request's start to the last delta."""
    lasts = [s.last for s in samples if s.last is not None]
    if not lasts:
        return None
    wall = max(lasts) - min(s.started for s in samples)
    return round(sum(s.deltas for s in samples) / wall, 1) if wall > 0 else None


def report_errors(name: str, samples: Sequence[Sample]) -> None:
    errors = sorted({s.error for s in samples if s.error})
    for error in errors[:5]:
        print(f"{name}: {error}", file=sys.stderr)


def verdict(value: float | None, target: float) -> str:
    if value is None:
        return "no data"
    return "ok" if value <= target else "MISSED"


def print_targets(metrics: dict[str, Any], clients: int) -> None:
    print()
    for label, prefix in (("realtime", ""), ("chat", "chat_")):
        one = metrics.get(f"{prefix}first_delta_ms")
        many = metrics.get(f"{prefix}first_delta_ms_at_{clients}")
        p50 = one["p50"] if one else None
        p95 = many["p95"] if many else None
        print(f"target {label:8} first delta p50 at 1 client  <= {TARGET_FIRST_DELTA_P50_AT_1_MS:6.0f} ms: "
              f"{p50 if p50 is not None else '-':>9} ms  {verdict(p50, TARGET_FIRST_DELTA_P50_AT_1_MS)}")
        print(f"target {label:8} first delta p95 at {clients} clients <= {TARGET_FIRST_DELTA_P95_AT_10_MS:6.0f} ms: "
              f"{p95 if p95 is not None else '-':>9} ms  {verdict(p95, TARGET_FIRST_DELTA_P95_AT_10_MS)}")


# ------------------------------------------------------------------------------------------------- main


async def measure(
    base_url: str, tokens: dict[str, list[str]], *, warmup: int, requests: int, turns: int, max_tokens: int
) -> dict[str, Any]:
    """Both endpoints at 1 client, then both at ``len(tokens[...]) - 1`` concurrent clients."""
    clients = len(tokens["chat"]) - 1
    questions = {"chat": Questions(seed=1), "realtime": Questions(seed=2)}
    prefix = {"chat": "chat_", "realtime": ""}
    metrics: dict[str, Any] = {}

    def make(endpoint: str, token: str) -> Client:
        client = sdk(base_url, token)
        return ChatClient(client, max_tokens) if endpoint == "chat" else RealtimeClient(client)

    def record(endpoint: str, suffix: str, samples: list[Sample], seconds: float) -> None:
        label = f"{endpoint}{suffix or '_at_1'}"
        print(f"{label}: {len(samples)} requests in {seconds:.1f} s", file=sys.stderr)
        report_errors(label, samples)
        summarise(samples, prefix[endpoint], suffix, metrics)
        if suffix:
            rate = aggregate_rate(samples)
            if rate is not None:
                metrics[f"{prefix[endpoint]}tokens_per_s{suffix}_total"] = rate
            answered = sum(1 for s in samples if s.ok) / max(1, len(samples))
            metrics[f"{prefix[endpoint]}answered_ratio{suffix}"] = round(answered, 2)
        if endpoint == "chat":
            usage = [s for s in samples if s.ok and s.completion_tokens is not None and s.prompt_tokens is not None]
            if usage:
                metrics[f"chat_prompt_tokens{suffix}_max"] = max(s.prompt_tokens or 0 for s in usage)
            if usage and not suffix:
                tokens_out = sum(s.completion_tokens or 0 for s in usage)
                metrics["chat_tokens_per_delta"] = round(tokens_out / max(1, sum(s.deltas for s in usage)), 2)

    for endpoint in ("chat", "realtime"):
        started = time.perf_counter()
        client = make(endpoint, tokens[endpoint][0])
        samples = await sequential(client, questions[endpoint], warmup, requests)
        record(endpoint, "", samples, time.perf_counter() - started)
    for endpoint in ("chat", "realtime"):
        started = time.perf_counter()
        group = [make(endpoint, token) for token in tokens[endpoint][1:]]
        samples = await concurrent(group, questions[endpoint], turns, seed=7)
        record(endpoint, f"_at_{clients}", samples, time.perf_counter() - started)
    return order(metrics, clients)


def order(metrics: dict[str, Any], clients: int) -> dict[str, Any]:
    """Required keys first, then realtime, then chat."""
    first = ["first_delta_ms", f"first_delta_ms_at_{clients}", "tokens_per_s", f"tokens_per_s_at_{clients}_total"]
    keys = [k for k in first if k in metrics]
    keys += [k for k in metrics if k not in keys and not k.startswith("chat_")]
    keys += [k for k in metrics if k.startswith("chat_")]
    return {k: metrics[k] for k in keys}


def run(
    profile: str,
    *,
    warmup: int,
    requests: int,
    clients: int,
    turns: int,
    max_tokens: int,
    quick: bool,
    llm_env: dict[str, str],
    out_name: str,
) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="soma-bench-text-"))
    server: ServerProcess | None = None
    try:
        started = time.perf_counter()
        server = start_server(tmp, models=True, timeout=600, SOMA_SIGNUP="open", SOMA_MODEL_PROFILE=profile,
                              **llm_env)
        print(f"server ready in {time.perf_counter() - started:.1f} s at {server.base_url}", file=sys.stderr)
        base_url = server.base_url
        tokens = {
            endpoint: [signup(base_url, f"{endpoint[:4]}-{i:02d}") for i in range(clients + 1)]
            for endpoint in ("chat", "realtime")
        }  # user 00 of each endpoint runs the sequential phase, 01.. the concurrent one
        metrics = asyncio.run(
            measure(base_url, tokens, warmup=warmup, requests=requests, turns=turns, max_tokens=max_tokens)
        )
    finally:
        stop_server(server)
        shutil.rmtree(tmp, ignore_errors=True)
    print_table(metrics)
    print_targets(metrics, clients)
    note_profile = "" if profile == "full" else f" (profile {profile})"
    path = write_result(
        out_name,
        command=f"make bench BENCH=text_chat{note_profile}{' --quick' if quick else ''} "
        + " ".join(f"{k}={v}" for k, v in llm_env.items()),
        models={"llm": describe(profile)["llm"]},
        metrics=metrics,
        notes=(
            "A real `soma serve --http` with the profile's models, driven through the official openai SDK (3.57) "
            "from one asyncio process on the same machine. first_delta_ms: realtime text (GET /v1/realtime, "
            "output_modalities text) from sending response.create on an open connection to the first non-empty "
            "response.output_text.delta; chat_first_delta_ms: POST /v1/chat/completions stream=true from the HTTP "
            "call to the first non-empty content delta (includes auth, history lookup and prompt counting). "
            f"At 1 client: {requests} sequential requests after {warmup} warm-up ones; _at_{clients}: {clients} "
            f"users each asking {turns} questions back to back, started within a random 0-{STAGGER_S} s stagger "
            "(realtime connections opened before). Every request asks a different short question, with a "
            f"~600-token persona (617 Qwen2.5 tokens) as system message / session instructions; the server adds "
            "each user's recent history (chat requests opt in with soma.history=recent), so later turns have "
            "longer prompts (chat_prompt_tokens*_max). "
            "tokens_per_s: median per-request decode rate, (deltas - 1) / (last delta - first delta); a delta "
            "approximates a token, as the server sends one delta per decoded piece (chat_tokens_per_delta: "
            "completion tokens from the usage block / deltas). *_total: all deltas of the concurrent phase / "
            "wall time from its first request to its last delta. reply_ms: request to last delta. *_failed: requests "
            f"that got no text, an error, or no end within {REQUEST_TIMEOUT_S:.0f} s (their first delta, if any, "
            "still counts in first_delta_ms; reply_ms and tokens_per_s use completed requests only). Chat replies "
            f"are capped at max_tokens={max_tokens}; realtime replies follow the voice reply policy (at most two "
            "sentences / 72 tokens), so they are shorter. Targets: first delta p50 <= 300 ms at 1 client, "
            "p95 <= 1500 ms at 10 clients."
        ),
    )
    print(f"wrote {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", choices=["ci", "full"], default="full")
    parser.add_argument("--requests", type=int, default=None, help="sequential requests per endpoint (default 12)")
    parser.add_argument("--clients", type=int, default=10, help="concurrent clients (default 10)")
    parser.add_argument("--turns", type=int, default=None, help="questions per concurrent client (default 3)")
    parser.add_argument("--max-tokens", type=int, default=128, help="max_tokens of chat requests (default 128)")
    parser.add_argument("--quick", action="store_true", help="few requests: a smoke run")
    parser.add_argument("--llm-workers", type=int, default=None, help="server SOMA_LLM_WORKERS (default: its own)")
    parser.add_argument("--llm-max-batch", type=int, default=None, help="server SOMA_LLM_MAX_BATCH")
    parser.add_argument("--out", default="text_chat", help="result name (bench/results/<out>.json)")
    args = parser.parse_args()
    llm_env = {}
    if args.llm_workers:
        llm_env["SOMA_LLM_WORKERS"] = str(args.llm_workers)
    if args.llm_max_batch:
        llm_env["SOMA_LLM_MAX_BATCH"] = str(args.llm_max_batch)
    requests = args.requests or (4 if args.quick else 12)
    turns = args.turns or (1 if args.quick else 3)
    warmup = 1 if args.quick else 2
    run(
        args.profile,
        warmup=warmup,
        requests=requests,
        clients=args.clients,
        turns=turns,
        max_tokens=args.max_tokens,
        quick=args.quick,
        llm_env=llm_env,
        out_name=args.out,
    )


if __name__ == "__main__":
    main()
