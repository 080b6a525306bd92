"""Training the avatar's own model over HTTP, end to end on a real server with the ci models (SmolLM2-135M) and a
real Postgres: a chat with a strongly marked style is imported, a LoRA job trains on it (a real child process with
torch and peft), its evaluation is computed by the server, the merged CTranslate2 model is sealed at rest and
answers the person's chat completions and Realtime WebSocket sessions in their style, can be switched off and rolled
back, is invisible to another user, is exported with its adapter and is gone on erasure. Also: too little data, and
the job list.
"""

from __future__ import annotations

import asyncio
import io
import json
import subprocess
import zipfile
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.avatar.training_fixtures import ME, styled, styled_whatsapp
from tests.conftest import REPO, SOMA, ServerProcess, new_user, soma_env, start_server
from tests.server.test_imports import follow
from tests.server.test_openai_compat_realtime import ask, next_of
from tests.server.test_openai_sdk import aclient
from tests.server_api import api, auth

pytestmark = [pytest.mark.timeout(900), pytest.mark.models]

PROMPTS = (
    "Are you coming to the quiz on friday?",
    "Did you hear that Jo got a new job in Leeds?",
    "What are you up to this weekend?",
    "Can you lend me your tent for the trip?",
    "I'm going to Porto in june. Have you been?",
    "My brother says hello!",
    "How was the wedding?",
    "Fancy a picnic by the harbour?",
)


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    # 16 comparison contexts instead of 48: the job's comparison is the same code, measured in bench/training.py.
    server = start_server(tmp_path_factory.mktemp("training"), models=True, SOMA_SIGNUP="open", timeout=180,
                          SOMA_TRAINING_COMPARE_PAIRS="16")
    yield server
    server.stop()


def imported(srv: ServerProcess, token: str, exchanges: int) -> None:
    body = styled_whatsapp(exchanges).encode()
    r = api(srv, "POST", "/v1/imports", token, params={"me": ME, "name": "WhatsApp Chat with friends.txt"},
            content=body)
    assert r.status_code == 202, r.text
    _, kind, final = follow(srv, token, r.json()["id"])
    assert kind == "done", final


def replies(srv: ServerProcess, token: str) -> list[str]:
    """The avatar's answers to `PROMPTS` over chat completions, decoded as served."""
    out = []
    for prompt in PROMPTS:
        r = api(srv, "POST", "/v1/chat/completions", token,
                json={"model": "soma", "messages": [{"role": "user", "content": prompt}], "max_tokens": 40})
        assert r.status_code == 200, r.text
        out.append(r.json()["choices"][0]["message"]["content"])
    return out


REALTIME_PROMPTS = PROMPTS[:4]


def realtime_replies(srv: ServerProcess, token: str) -> list[str]:
    """The avatar's text answers to `REALTIME_PROMPTS` over the Realtime WebSocket (the `openai` SDK), one
    connection per prompt so that each answers the prompt alone."""

    async def session() -> list[str]:
        client = aclient(srv, token)
        out = []
        try:
            for prompt in REALTIME_PROMPTS:
                async with client.realtime.connect(model="soma") as conn:
                    await conn.session.update(session={"type": "realtime", "output_modalities": ["text"]})
                    await next_of(conn, "session.updated")
                    events, done = await ask(conn, prompt)
                    assert done.status == "completed", done
                    out.append("".join(e.delta for e in events if e.type == "response.output_text.delta"))
        finally:
            await client.close()
        return out

    return asyncio.run(session())


def job_events(srv: ServerProcess, token: str, job_id: str) -> tuple[list[dict[str, Any]], str, dict[str, Any]]:
    url = f"{srv.base_url}/v1/training/jobs/{job_id}/events"
    progress: list[dict[str, Any]] = []
    kind = ""
    with httpx.stream("GET", url, headers=auth(token), timeout=httpx.Timeout(30, read=None)) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        for line in r.iter_lines():
            if line.startswith("event: "):
                kind = line[len("event: "):]
            elif line.startswith("data: "):
                data = json.loads(line[len("data: "):])
                if kind == "progress":
                    progress.append(data)
                else:
                    return progress, kind, data
    raise AssertionError("the event stream ended without a final event")


def test_too_little_data_starts_nothing(srv: ServerProcess) -> None:
    """Without enough of the person's replies the job is refused with how many there are, and none is listed."""
    _, token = new_user(srv, "few")
    r = api(srv, "POST", "/v1/training/jobs", token, json={})
    assert r.status_code == 422 and r.json()["error"]["code"] == "too_little_data"
    assert "there are 0" in r.json()["error"]["message"]
    imported(srv, token, 40)
    data = api(srv, "GET", "/v1/training/data", token).json()
    assert 30 <= data["replies"] < 200 and data["enough"] is False
    r = api(srv, "POST", "/v1/training/jobs", token, json={"max_steps": 5})
    assert r.status_code == 422 and f"there are {data['replies']}" in r.json()["error"]["message"]
    assert api(srv, "GET", "/v1/training/jobs", token).json() == {"jobs": []}
    assert api(srv, "POST", "/v1/training/jobs", token, json={"max_steps": 0}).status_code == 400
    assert api(srv, "POST", "/v1/training/jobs", token, json={"nonsense": 1}).status_code == 400


def test_train_evaluate_serve_switch_export_erase(srv: ServerProcess) -> None:
    """The whole life of a tuned model (see the module doc)."""
    name, token = new_user(srv, "trainee")
    _, stranger = new_user(srv, "stranger")
    imported(srv, token, 280)
    data = api(srv, "GET", "/v1/training/data", token).json()
    assert data["enough"] is True and data["heldout"] >= 20 and data["train"] > data["heldout"]
    base_replies = replies(srv, token)
    base_spoken = realtime_replies(srv, token)

    r = api(srv, "POST", "/v1/training/jobs", token, json={"max_steps": 30, "minutes": 10})
    assert r.status_code == 202, r.text
    job_id = r.json()["id"]
    again = api(srv, "POST", "/v1/training/jobs", token, json={"max_steps": 30})
    assert again.status_code == 409 and again.json()["error"]["code"] == "job_running"
    assert api(srv, "GET", f"/v1/training/jobs/{job_id}", stranger).status_code == 404

    progress, kind, job = job_events(srv, token, job_id)
    assert kind == "done", job
    stages = [p["stage"] for p in progress]
    assert "training" in stages and "sampling" in stages
    steps = [p["step"] for p in progress if p["stage"] == "training" and p["step"]]
    assert steps and max(steps) == 30 and all(p["loss"] is not None for p in progress if p["step"])
    result = job["result"]
    assert result["training"]["last_loss"] < result["training"]["first_loss"]
    assert result["perplexity"]["tuned"] < result["perplexity"]["base"]
    assert set(result["style_distance"]) == {"base", "prompt_only", "tuned"}
    assert result["samples"] and all(set(s) == {"said", "real", "prompt_only", "tuned"} for s in result["samples"])
    assert len(job["losses"]) >= 2 and job["tuned_model_id"]
    tuned_model_id = job["tuned_model_id"]

    state = api(srv, "GET", "/v1/persona/model", token).json()
    assert [m["id"] for m in state["models"]] == [tuned_model_id]
    # The gate: on only when it beat the prompt-only avatar on both measures.
    assert state["active"] == ("tuned" if result["passed"] else "base")
    on = api(srv, "PUT", "/v1/persona/model", token, json={"use": "tuned"}).json()
    assert on["active"] == "tuned" and on["tuned_model_id"] == tuned_model_id

    # Sealed at rest: nothing of the model is readable on disk.
    user_id = api(srv, "GET", "/v1/me", token).json()["id"]
    stored = sorted((srv.data_dir / "tuned" / user_id / tuned_model_id).iterdir())
    assert [p.name for p in stored] == ["adapter_config.json.sealed", "adapter_model.safetensors.sealed",
                                        "config.json.sealed", "model.bin.sealed", "vocabulary.json.sealed"]
    for path in stored:
        raw = path.read_bytes()
        # Plaintext markers of each file (tokens in the vocabulary, adapter tensor names, config keys), long
        # enough that random ciphertext never holds them.
        plain = (b"<|im_end|>", b"lora_A.weight", b"peft_type")
        assert raw.startswith(b"SOMA-ENC") and not any(marker in raw for marker in plain)

    tuned_replies = replies(srv, token)  # loaded from the sealed files; sampled, as a tuned model is served
    assert sum(map(styled, tuned_replies)) > sum(map(styled, base_replies)), (base_replies, tuned_replies)
    tuned_spoken = realtime_replies(srv, token)  # a call's session leases the same model
    assert sum(map(styled, tuned_spoken)) > sum(map(styled, base_spoken)), (base_spoken, tuned_spoken)

    off = api(srv, "PUT", "/v1/persona/model", token, json={"use": "base"}).json()
    assert off["active"] == "base" and off["previous_tuned_model_id"] == tuned_model_id
    assert sum(map(styled, replies(srv, token))) < sum(map(styled, tuned_replies))
    back = api(srv, "PUT", "/v1/persona/model", token, json={"use": "previous"}).json()
    assert back["active"] == "tuned" and back["tuned_model_id"] == tuned_model_id

    stolen = {"use": "tuned", "tuned_model_id": tuned_model_id}
    assert api(srv, "PUT", "/v1/persona/model", stranger, json=stolen).status_code == 404
    assert api(srv, "PUT", "/v1/persona/model", stranger, json={"use": "tuned"}).status_code == 409
    assert api(srv, "GET", "/v1/persona/model", stranger).json()["models"] == []
    assert api(srv, "POST", f"/v1/training/jobs/{job_id}/cancel", stranger).status_code == 404
    listed = api(srv, "GET", "/v1/training/jobs", token).json()["jobs"]
    assert [j["id"] for j in listed] == [job_id] and listed[0]["state"] == "done"

    exported = api(srv, "GET", "/v1/me/export", token)
    assert exported.status_code == 200
    archive = zipfile.ZipFile(io.BytesIO(exported.content))
    jobs = [json.loads(line) for line in archive.read("training_jobs.jsonl").splitlines()]
    assert jobs[0]["result"]["perplexity"] == result["perplexity"]
    models = [json.loads(line) for line in archive.read("tuned_models.jsonl").splitlines()]
    assert models[0]["id"] == tuned_model_id and "perplexity" in models[0]["evaluation"]
    adapter = archive.read(f"tuned/{tuned_model_id}/adapter_config.json")
    assert json.loads(adapter)["peft_type"] == "LORA"
    assert len(archive.read(f"tuned/{tuned_model_id}/adapter_model.safetensors")) > 100_000

    assert api(srv, "DELETE", "/v1/me", token, params={"confirm": name}).status_code == 204
    assert not (srv.data_dir / "tuned" / user_id).exists()


def test_cli_trains_next_to_the_server_with_a_progress_report(srv: ServerProcess) -> None:
    """``soma train --user U --steps N`` next to the running server: too little data is a clear error (exit 2,
    nothing started); with enough it trains, evaluates and reports, and the server lists the job."""
    name, token = new_user(srv, "clitrain")
    env = soma_env(srv.data_dir, **srv.env)
    few = subprocess.run([*SOMA, "train", "--user", name], env=env, cwd=REPO, capture_output=True, text=True,
                         timeout=300)
    assert few.returncode == 2 and "there are 0" in few.stderr, few.stderr
    imported(srv, token, 240)
    run = subprocess.run([*SOMA, "train", "--user", name, "--steps", "4"], env=env, cwd=REPO, capture_output=True,
                         text=True, timeout=600)
    assert run.returncode in (0, 1), run.stderr  # 0: switched on, 1: kept but not switched on
    assert "to learn from" in run.stderr and "training" in run.stderr and "held-out perplexity" in run.stderr
    jobs = api(srv, "GET", "/v1/training/jobs", token).json()["jobs"]
    assert [j["state"] for j in jobs] == ["done"] and jobs[0]["step"] == 4
    state = api(srv, "GET", "/v1/persona/model", token).json()
    assert state["active"] == ("tuned" if run.returncode == 0 else "base") and len(state["models"]) == 1
