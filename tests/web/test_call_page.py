"""The call page (`clients/web/`) in real headless Chromium against a real server with the ci models.

Chromium's fake microphone plays an espeak-spoken WAV (`conftest.write_microphone`); the page measures the
avatar's voice with WebAudio and exposes what it saw as ``window.somaCall`` (turns, latencies, a 20 ms level
trace), so the assertions are about what a user would hear and see.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Page, ViewportSize, expect

from tests.conftest import REPO, ServerProcess
from tests.eventually import eventually
from tests.server_api import auth, metric
from tests.web.conftest import Launcher, Script, sign_in

pytestmark = [pytest.mark.models, pytest.mark.slow, pytest.mark.timeout(120)]

LIVE_CALLS = 'soma_live_conversations{channel="webrtc"}'
AUDIBLE_RMS = 0.02  # the page's speech threshold (meter.js SPEECH_RMS)
DESKTOP: ViewportSize = {"width": 1280, "height": 800}
PHONE: ViewportSize = {"width": 390, "height": 844}
# Chromium loops the fake microphone: a long silence after the speech keeps it from asking again mid-test.
QUESTION: Script = [2.0, "What is the capital of France?", 25.0]


def turns(page: Page) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = page.evaluate("window.somaCall.turns")
    return result


def wait_live_calls(server: ServerProcess, count: int, limit_s: float = 20) -> None:
    """Polls the server's metrics until exactly ``count`` WebRTC calls are live."""
    eventually(lambda: metric(server, LIVE_CALLS), until=lambda live: live == count, timeout_s=limit_s,
               what=f"{count} live call(s)")


class CallPage:
    """A page of its own Chromium, collecting the page's uncaught errors (a test ends with none)."""

    def __init__(self, launch: Launcher, script: Script, viewport: ViewportSize = DESKTOP) -> None:
        self.page = launch(script).new_page(viewport=viewport)
        self.errors: list[str] = []
        self.page.on("pageerror", lambda error: self.errors.append(str(error)))

    def assert_no_errors(self) -> None:
        assert not self.errors, self.errors


def test_a_call_is_heard_captioned_timed_and_hung_up(model_server: ServerProcess, launch: Launcher) -> None:
    """Sign in through the form, press Call, ask by voice: the page captions both sides, hears the reply
    (WebAudio), shows the server's and its own voice-to-voice latency; a typed message gets an answer; Hang up
    returns to idle and the server releases the call."""
    tab = CallPage(launch, QUESTION)
    page = tab.page
    sign_in(page, model_server, "caller")
    page.get_by_role("button", name="Call", exact=True).click()
    expect(page.get_by_role("button", name="Hang up")).to_be_visible()
    page.wait_for_function("() => window.somaCall.phase === 'connected'", timeout=15_000)
    assert metric(model_server, LIVE_CALLS) >= 1

    page.wait_for_function("() => window.somaCall.turns.some(t => t.done && t.browserV2vMs !== null)", timeout=45_000)
    (turn,) = turns(page)
    assert "france" in turn["userText"].lower(), turn
    assert turn["replyText"].strip() and not turn["interrupted"]
    assert 0 < turn["serverV2vMs"] < 5000
    # Measured in the page: from the end of the user's speech (mic level) to the first audible reply sample.
    assert 0 < turn["browserV2vMs"] < 8000
    trace = page.evaluate("window.somaCall.levelTrace")
    heard = [s for s in trace if turn["firstAudioAt"] <= s["t"] <= turn["lastAudioAt"]]
    assert max(s["bot"] for s in heard) > 2 * AUDIBLE_RMS, "the reply was not audible in the page"
    assert turn["lastAudioAt"] - turn["firstAudioAt"] > 300
    kinds = [e["type"] for e in page.evaluate("window.somaCall.events")]
    assert kinds.count("soma.turn_state") >= 3  # listening, thinking, speaking, …

    captions = page.get_by_role("log")
    expect(captions.locator(".you .text").first).to_contain_text("France", ignore_case=True)
    expect(captions.locator(".avatar .text").first).to_have_text(turn["replyText"])
    expect(captions.locator(".turn-latency").first).to_contain_text("ms voice-to-voice")
    expect(page.locator("#latency")).to_contain_text(f"{turn['browserV2vMs']} ms voice-to-voice")
    expect(page.get_by_role("status")).to_have_text("Listening")

    # A typed message mid-call.
    page.get_by_role("textbox", name="Type a message").fill("Thank you!")
    page.get_by_role("button", name="Send").click()
    page.wait_for_function("() => window.somaCall.turns.length === 2 && window.somaCall.turns[1].done", timeout=30_000)
    typed = turns(page)[1]
    assert typed["typed"] and typed["userText"] == "Thank you!" and typed["replyText"].strip()
    expect(captions.locator(".you .text").nth(1)).to_have_text("Thank you!")

    page.get_by_role("button", name="Hang up").click()
    expect(page.get_by_role("button", name="Call", exact=True)).to_be_visible()
    expect(page.get_by_role("status")).to_have_text("Ready to call")
    assert page.evaluate("window.somaCall.phase") == "idle"
    wait_live_calls(model_server, 0)
    tab.assert_no_errors()


def test_barge_in_stops_the_avatar_and_captions_what_was_heard(model_server: ServerProcess, launch: Launcher) -> None:
    """Speaking while the avatar answers interrupts it: its audio stops in the browser within about a second
    of the user's voice, and the caption keeps only the words that were played (response.done cancelled)."""
    # The ci LLM answers this question at length (~10 s of speech); the second utterance starts ~2.5 s into
    # the reply, far from both its start and its end.
    script: Script = [2.0, "Can you explain how airplanes fly?", 3.5, "Stop. Please wait a moment.", 25.0]
    tab = CallPage(launch, script)
    page = tab.page
    sign_in(page, model_server, "bargein")
    page.get_by_role("button", name="Call", exact=True).click()
    page.wait_for_function("() => window.somaCall.turns.some(t => t.done)", timeout=45_000)
    page.wait_for_function(
        "() => window.somaCall.turns.length >= 2 && window.somaCall.turns[1].userFinal", timeout=20_000
    )
    first, second = turns(page)[:2]
    assert "airplane" in first["userText"].lower() or "fly" in first["userText"].lower(), first
    assert first["interrupted"], first
    assert first["firstAudioAt"] is not None and second["speechStartAt"] is not None
    # The avatar was audibly speaking when the user started, and went quiet soon after.
    assert first["lastAudioAt"] > second["speechStartAt"], "the reply had ended before the user spoke"
    stop_ms = first["lastAudioAt"] - second["speechStartAt"]
    assert stop_ms < 1500, f"the avatar kept talking {stop_ms:.0f} ms into the user's speech"
    if second["firstAudioAt"] is not None:
        assert second["firstAudioAt"] - first["lastAudioAt"] > 200, "no silence between the two replies"
    # Heard text: what response.done said was played, shorter than what the LLM wrote.
    assert first["replyText"].strip(), "nothing of the reply was heard"
    assert len(first["replyText"]) < len(first["streamedText"]), first
    row = page.get_by_role("log").locator(".turn").first
    expect(row.locator(".avatar .text")).to_have_text(first["replyText"])
    expect(row.locator(".tag")).to_have_text("interrupted")
    expect(row.locator(".tag")).to_be_visible()
    page.get_by_role("button", name="Hang up").click()
    wait_live_calls(model_server, 0)
    tab.assert_no_errors()
    print(f"\nbarge-in: avatar quiet {stop_ms:.0f} ms after the user started; heard {first['replyText']!r}")


def test_the_call_screen_is_accessible_on_desktop_and_phone(
    model_server: ServerProcess, launch: Launcher, tmp_path: Path
) -> None:
    """Key controls have accessible names and roles, work from the keyboard with a visible focus ring, and the
    page fits a phone (390x844) without sideways scrolling. Screenshots: docs/screenshots/ when
    SOMA_SAVE_SCREENSHOTS=1, else the test's tmp dir."""
    out = REPO / "docs" / "screenshots" if os.environ.get("SOMA_SAVE_SCREENSHOTS") == "1" else tmp_path
    out.mkdir(parents=True, exist_ok=True)
    tab = CallPage(launch, QUESTION)
    page = tab.page
    sign_in(page, model_server, "a11y")

    call = page.get_by_role("button", name="Call", exact=True)
    expect(call).to_be_focused()  # the screen opens with focus on its main action
    for name in ("Mute", "Stop talking"):
        expect(page.get_by_role("button", name=name)).to_be_disabled()  # no call yet
    expect(page.get_by_role("heading", name="Messages from your avatar")).to_be_visible()
    expect(page.get_by_role("meter", name="Microphone")).to_be_visible()
    expect(page.get_by_role("status")).to_have_text("Ready to call")

    page.keyboard.press("Enter")  # place the call from the keyboard
    hang_up = page.get_by_role("button", name="Hang up")
    expect(hang_up).to_be_focused()  # focus follows the swapped button
    outline = page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
    assert outline == "solid", "no visible focus ring"
    mute = page.get_by_role("button", name="Mute")
    expect(mute).to_be_enabled()
    expect(mute).to_have_attribute("aria-pressed", "false")
    expect(page.get_by_role("textbox", name="Type a message")).to_be_enabled()
    page.wait_for_function("() => window.somaCall.turns.some(t => t.done && t.browserV2vMs !== null)", timeout=45_000)
    expect(page.get_by_role("log")).to_contain_text("France", ignore_case=True)
    page.evaluate("document.activeElement.blur()")  # the pictures are for the README: no focus ring
    page.wait_for_timeout(300)  # let the meter and orb settle
    page.screenshot(path=str(out / "call-desktop.png"))

    page.set_viewport_size(PHONE)
    for name in ("Hang up", "Mute", "Stop talking", "Send"):
        expect(page.get_by_role("button", name=name)).to_be_in_viewport()
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    page.screenshot(path=str(out / "call-phone.png"))

    mute.focus()
    page.keyboard.press("Space")
    expect(mute).to_have_attribute("aria-pressed", "true")
    assert page.evaluate("window.somaCall.muted") is True
    hang_up.focus()
    page.keyboard.press("Enter")
    expect(call).to_be_focused()
    page.get_by_text("Settings", exact=True).click()
    expect(page.get_by_role("button", name="Sign out")).to_be_visible()
    assert (out / "call-desktop.png").stat().st_size > 10_000
    assert (out / "call-phone.png").stat().st_size > 10_000
    wait_live_calls(model_server, 0)
    tab.assert_no_errors()


def test_the_page_installs_as_a_pwa_and_its_shell_loads_offline(model_server: ServerProcess, launch: Launcher) -> None:
    """The manifest is linked, valid and has icons; the service worker caches the shell (never /v1/), and
    with the network gone a reload still shows the app."""
    tab = CallPage(launch, [1.0], PHONE)
    page = tab.page
    sign_in(page, model_server, "pwa")
    href = page.get_attribute("link[rel=manifest]", "href")
    assert href == "/manifest.webmanifest"
    manifest = page.request.get(model_server.base_url + href)
    assert manifest.ok and manifest.headers["content-type"].startswith("application/manifest+json")
    body = json.loads(manifest.text())
    assert body["name"] and body["short_name"] and body["start_url"] == "/" and body["display"] == "standalone"
    sizes = {icon["sizes"] for icon in body["icons"]}
    assert {"192x192", "512x512"} <= sizes and any(i.get("purpose") == "maskable" for i in body["icons"])
    for icon in body["icons"]:
        got = page.request.get(model_server.base_url + icon["src"])
        assert got.ok and got.headers["content-type"] == icon["type"], icon

    state = page.evaluate("navigator.serviceWorker.ready.then(r => r.active.state)")
    assert state in ("activating", "activated")
    page.wait_for_function("() => navigator.serviceWorker.controller !== null")  # clients.claim() in sw.js
    cached = page.evaluate(
        "caches.keys().then(names => Promise.all(names.map(n => caches.open(n).then(c => c.keys()))))"
        ".then(lists => lists.flat().map(r => new URL(r.url).pathname))"
    )
    assert "/" in cached and "/app.js" in cached and "/style.css" in cached, cached
    assert not [path for path in cached if path.startswith("/v1/")], cached
    loaded = page.evaluate(
        "performance.getEntriesByType('resource').map(e => new URL(e.name))"
        ".filter(u => u.origin === location.origin && /[.](js|css|png|svg|webmanifest)$/.test(u.pathname))"
        ".map(u => u.pathname)"
    )
    assert {"/call.js", "/turns.js", "/style.css"} <= set(loaded), loaded
    assert set(loaded) <= set(cached), f"shell files missing from sw.js: {set(loaded) - set(cached)}"

    page.context.set_offline(True)
    try:
        assert page.evaluate("fetch('/healthz').then(() => 'online', () => 'offline')") == "offline"
        page.reload()
        expect(page.get_by_role("heading", name="Soma", level=1)).to_be_visible()
        expect(page.get_by_role("button", name="Call", exact=True)).to_be_visible()
        expect(page.get_by_role("alert").filter(has_text="offline")).to_be_visible()
    finally:
        page.context.set_offline(False)
    tab.assert_no_errors()


def test_the_page_calls_again_when_the_connection_drops(model_server: ServerProcess, launch: Launcher) -> None:
    """Mid-call, the network going away and coming back ("online" after "offline"), or the call dropping at
    the server's end, makes the page place a new call by itself ("Reconnecting…"); the old call is released
    and the new one answers."""
    tab = CallPage(launch, [1.0])
    page = tab.page
    sign_in(page, model_server, "roamer")
    page.get_by_role("button", name="Call", exact=True).click()
    page.wait_for_function("() => window.somaCall.phase === 'connected'", timeout=15_000)
    page.context.set_offline(True)
    page.wait_for_timeout(500)
    page.context.set_offline(False)
    page.wait_for_function("() => window.somaCall.callsPlaced === 2 && window.somaCall.phase === 'connected'",
                           timeout=20_000)
    wait_live_calls(model_server, 1)  # the first call was hung up, the second is live

    # The call ends at the server's side (as when the server restarts): the data channel closes under the page.
    token = page.evaluate("sessionStorage.getItem('soma-token')")
    url = model_server.base_url + page.evaluate("window.somaCall.callUrl")
    assert httpx.delete(url, headers=auth(token), timeout=15).status_code == 204
    page.wait_for_function("() => window.somaCall.callsPlaced === 3 && window.somaCall.phase === 'connected'",
                           timeout=20_000)
    phases = [p["phase"] for p in page.evaluate("window.somaCall.phases")]
    assert phases == ["connecting", "connected", *["reconnecting", "connected"] * 2], phases
    wait_live_calls(model_server, 1)

    page.get_by_role("textbox", name="Type a message").fill("Hello again!")
    page.get_by_role("button", name="Send").click()
    page.wait_for_function("() => window.somaCall.turns.some(t => t.typed && t.done && t.replyText)", timeout=30_000)
    page.get_by_role("button", name="Hang up").click()
    wait_live_calls(model_server, 0)
    tab.assert_no_errors()


TIMELINE = """async () => {
  const { Turns } = await import("/turns.js");
  const turns = new Turns(() => {});
  const mic = { micLoudAt: null, micOnsetAt: null };
  const ev = (type, fields, at) => turns.handle({ type, ...fields }, mic, at);
  const loud = (from, to) => { for (let t = from; t <= to; t += 20) turns.sample(t, true); };
  // Spoken question: the mic is loud 1000..2500 ms; the server's VAD reports the end at 2800.
  mic.micOnsetAt = 1000;
  ev("input_audio_buffer.speech_started", { item_id: "i1" }, 1100);
  ev("conversation.item.input_audio_transcription.delta", { item_id: "i1", delta: "How do" }, 1800);
  mic.micLoudAt = 2500;
  ev("input_audio_buffer.speech_stopped", { item_id: "i1" }, 2800);
  const final = "conversation.item.input_audio_transcription.completed";
  ev(final, { item_id: "i1", transcript: "How do planes fly?" }, 2900);
  ev("response.created", { response: { id: "r1" } }, 2950);
  ev("response.output_audio_transcript.delta", { response_id: "r1", delta: "Planes fly because" }, 3000);
  ev("response.output_audio_transcript.delta", { response_id: "r1", delta: " their wings push air down." }, 3100);
  loud(3300, 5300);  // the reply is heard from 3300 ms
  ev("soma.turn_latency", { voice_to_voice_ms: 420 }, 3310);
  // Barge-in: the user speaks from 5000 ms; the server cancels the reply, which stops at 5300.
  mic.micOnsetAt = 5000;
  ev("input_audio_buffer.speech_started", { item_id: "i2" }, 5100);
  ev("output_audio_buffer.cleared", { response_id: "r1" }, 5250);
  const heard = { status: "cancelled", id: "r1", output: [{ content: [{ transcript: "Planes fly because" }] }] };
  ev("response.done", { response: heard }, 5260);
  mic.micLoudAt = 5600;
  ev("input_audio_buffer.speech_stopped", { item_id: "i2" }, 5900);
  ev(final, { item_id: "i2", transcript: "Stop." }, 5950);
  ev("response.created", { response: { id: "r2" } }, 6000);
  loud(6400, 6800);
  // A typed message: no browser-side latency (nobody spoke).
  turns.typed("Thanks!");
  ev("response.created", { response: { id: "r3" } }, 7000);
  ev("response.output_text.delta", { response_id: "r3", delta: "You're welcome." }, 7100);
  ev("response.done", { response: { status: "completed", id: "r3", output: [] } }, 7200);
  return turns.list;
}"""


def test_turns_follow_a_scripted_barge_in_timeline(model_server: ServerProcess, launch: Launcher) -> None:
    """The page's turn bookkeeping (turns.js), fed a scripted event timeline with explicit times: captions,
    heard text after an interruption, and both latencies land on the right turns."""
    page = CallPage(launch, [1.0]).page
    page.goto(model_server.base_url + "/")
    first, second, typed = page.evaluate(TIMELINE)
    assert first["userText"] == "How do planes fly?" and first["userFinal"]
    assert first["interrupted"] and first["replyText"] == "Planes fly because"
    assert first["streamedText"] == "Planes fly because their wings push air down."
    assert first["serverV2vMs"] == 420 and first["browserV2vMs"] == 3300 - 2500
    assert (first["speechStartAt"], first["firstAudioAt"], first["lastAudioAt"]) == (1000, 3300, 5300)
    assert second["userText"] == "Stop." and second["speechStartAt"] == 5000
    assert second["firstAudioAt"] == 6400 and second["browserV2vMs"] == 6400 - 5600
    assert typed["typed"] and typed["replyText"] == "You're welcome." and typed["browserV2vMs"] is None
