"""The Voice screen (`clients/web/voice.js`) in real headless Chromium against a real server with the ci models.

Chromium's fake microphone plays an espeak-spoken sentence over quiet room noise (`write_noisy_microphone`,
looped); the page records it through its AudioWorklet, shows the live meter, uploads the clip as WAV and shows
the server's verdict. The search tests enroll through the API and use a server with the quick search plan.
What the page measured and showed is kept as ``window.somaVoice``, so assertions are about what the user saw;
the server's state is read back through the API.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from axe_playwright_python.sync_playwright import Axe
from playwright.sync_api import Browser, ConsoleMessage, Locator, Page, Playwright, ViewportSize, expect

from models.paths import default_models_dir
from pipeline.audio import to_int16, wav_bytes
from tests.audio_fixtures import spoken
from tests.conftest import ServerProcess, start_server
from tests.server_api import api
from tests.web.conftest import CHROMIUM, CHROMIUM_ARGS, RATE, sign_in

pytestmark = [pytest.mark.models, pytest.mark.slow, pytest.mark.timeout(180)]

DESKTOP: ViewportSize = {"width": 1280, "height": 800}
PHONE: ViewportSize = {"width": 360, "height": 740}
# Mostly speech, so that any 4 s of the looped microphone hold a good share of it.
SPEECH = "The quick brown fox jumps over the lazy dog, then rests by the river bank."
ROOM_NOISE_DBFS = -60.0  # a quiet room: the page measures it between the words
RECORD_MS = 4500
FLOOR_DBFS = -60  # the meter's empty end (voice.js FLOOR_DBFS)
SERVER_VERDICT_MS = 60_000  # the first clip may wait for the speaker models to load


def write_noisy_microphone(path: Path) -> Path:
    """`SPEECH` with 0.3 s of quiet either side, over steady white noise at `ROOM_NOISE_DBFS` (digital silence
    would leave the page no room noise to measure), as the 48 kHz mono WAV Chromium loops as its microphone."""
    pad = np.zeros(int(0.3 * RATE), np.float32)
    voice = np.concatenate([pad, spoken(SPEECH, RATE).astype(np.float32) / 32768, pad])
    noise = np.random.default_rng(7).normal(0, 10 ** (ROOM_NOISE_DBFS / 20), voice.size).astype(np.float32)
    path.write_bytes(wav_bytes(to_int16(voice + noise), RATE))
    return path


@pytest.fixture
def browser(browser_driver: Playwright, tmp_path: Path) -> Iterator[Browser]:
    """A headless Chromium whose microphone is `write_noisy_microphone`'s recording."""
    wav = write_noisy_microphone(tmp_path / "mic.wav")
    args = [*CHROMIUM_ARGS, f"--use-file-for-fake-audio-capture={wav}"]
    launched = browser_driver.chromium.launch(executable_path=CHROMIUM, headless=True, args=args)
    yield launched
    launched.close()


class Tab:
    """A page of its own Chromium that collects uncaught errors and Content-Security-Policy violations."""

    def __init__(self, browser: Browser) -> None:
        self.page = browser.new_page(viewport=DESKTOP)
        self.errors: list[str] = []
        self.page.on("pageerror", lambda error: self.errors.append(str(error)))
        self.page.on("console", self.on_console)

    def on_console(self, message: ConsoleMessage) -> None:
        if "Content Security Policy" in message.text:
            self.errors.append(message.text)

    def assert_no_errors(self) -> None:
        assert not self.errors, self.errors


@pytest.fixture(scope="module")
def quick_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A server with the ci models, open sign-up and the quick voice-search plan (a search in well under a
    minute rather than minutes)."""
    server = start_server(
        tmp_path_factory.mktemp("voice-page"),
        models=True,
        SOMA_SIGNUP="open",
        SOMA_VOICE_MATCH_PLAN="quick",
        timeout=180,
    )
    yield server
    server.stop()


def token_of(page: Page) -> str:
    token: str = page.evaluate("sessionStorage.getItem('soma-token')")
    return token


def axe_violations(page: Page) -> list[str]:
    """axe-core's WCAG 2.x A/AA violations of the page as it is now."""
    options = {"runOnly": {"type": "tag", "values": ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]}}
    results = Axe().run(page, options=options).response
    return [f"{v['id']}: {[n['target'] for n in v['nodes']]}" for v in results["violations"]]


def sentence_item(page: Page, k: int) -> Locator:
    return page.locator(f'#voice-clips > li[data-sentence="{k}"]')


def record_once(page: Page) -> dict[str, Any]:
    """Presses Record, lets the microphone speak, checks the live meter moved, presses Stop; returns the
    page's record of that upload once the server's verdict is shown."""
    uploads = page.evaluate("window.somaVoice.uploads.length")
    record = page.locator("#voice-record")
    record.click()
    expect(record).to_have_text("Stop")
    expect(page.locator("#voice-status")).to_contain_text("Recording")
    page.wait_for_timeout(RECORD_MS)
    meter = page.get_by_role("meter", name="Level")
    assert int(meter.get_attribute("aria-valuenow") or FLOOR_DBFS) > FLOOR_DBFS
    expect(page.locator("#voice-noise")).to_contain_text("dBFS")  # the room, measured between the words
    expect(page.locator("#voice-speech")).not_to_have_text("—")
    record.click()
    expect(page.locator("#voice-status")).to_contain_text("kept", timeout=SERVER_VERDICT_MS)
    done: dict[str, Any] = page.evaluate(f"window.somaVoice.uploads[{uploads}]")
    return done


def profile_of(server: ServerProcess, token: str) -> dict[str, Any] | None:
    """The user's voice profile as the server has it (None: none)."""
    response = api(server, "GET", "/v1/voice/profile", token)
    assert response.status_code == 200, response.text
    profile: dict[str, Any] | None = response.json()["profile"]
    return profile


def enrollment_clips(server: ServerProcess, token: str) -> list[dict[str, Any]]:
    profile = profile_of(server, token)
    return [c for c in (profile["clips"] if profile else []) if c["source"] == "enrollment"]


def test_record_retake_choose_and_play_a_voice(quick_server: ServerProcess, browser: Browser) -> None:
    """A user records the first sentence (the live meter shows a level above the floor, the noise and the
    speech share; the server keeps the clip and its verdict shows in the list), retakes it (the server holds
    one clip for it, the new one), sees the stock voices with their similarity, chooses one (marked in use
    on the page and chosen on the server) and plays a sample (a blob: audio element). The screen has no
    axe-core violations in light and dark, fits a 360 px phone, and the profile is deleted after a confirm."""
    tab = Tab(browser)
    page = tab.page
    sign_in(page, quick_server, "voice")
    token = token_of(page)
    sentences = api(quick_server, "GET", "/v1/voice/sentences", token).json()["sentences"]
    assert len(sentences) >= 2

    page.get_by_role("navigation", name="Sections").get_by_role("link", name="Voice", exact=True).click()
    expect(page.get_by_role("heading", name="Your voice", level=2)).to_be_focused()
    expect(page).to_have_title("Voice · Soma")
    expect(page.locator("#voice-step")).to_have_text(f"Sentence 1 of {len(sentences)}")
    expect(page.locator("#voice-sentence")).to_have_text(sentences[0])
    expect(sentence_item(page, 0)).to_contain_text("Not recorded yet")
    expect(page.get_by_role("button", name="Find the closest voice", exact=True)).to_be_disabled()  # no profile yet

    # Record sentence 1: measured live, kept by the server, listed with its verdict.
    first = record_once(page)
    assert first["status"] == 201, first
    measured = first["browser"]
    assert measured["speechSeconds"] > 1.0 and measured["speechRatio"] > 0.3, measured
    assert abs(measured["noise"] - ROOM_NOISE_DBFS) < 6, measured  # the quietest frames: the room's noise
    assert max(page.evaluate("window.somaVoice.levels")) > -40  # speech, well above the floor
    assert first["quality"]["ok"] and first["quality"]["speech_s"] > 1.0, first["quality"]
    expect(sentence_item(page, 0)).to_contain_text("quality ok")
    expect(sentence_item(page, 0).get_by_role("button", name="Retake")).to_be_visible()
    expect(page.locator("#voice-step")).to_have_text(f"Sentence 2 of {len(sentences)}")  # on to the next one
    (clip,) = enrollment_clips(quick_server, token)
    assert clip["sentence"] == 0

    # Retake it: the server keeps one clip for the sentence, the new one.
    sentence_item(page, 0).get_by_role("button", name="Retake").click()
    expect(page.locator("#voice-record")).to_be_focused()
    expect(page.locator("#voice-record")).to_have_text("Record again")
    expect(page.locator("#voice-sentence")).to_have_text(sentences[0])
    assert record_once(page)["status"] == 201
    (again,) = enrollment_clips(quick_server, token)
    assert again["sentence"] == 0 and again["id"] != clip["id"], (clip, again)
    expect(sentence_item(page, 0)).to_have_attribute("data-id", again["id"])
    expect(page.get_by_role("button", name="Find the closest voice", exact=True)).to_be_disabled()  # ~4 s: not ready

    # The voices: stock ones listed with an honest similarity; choose one that is not in use.
    voices = api(quick_server, "GET", "/v1/voice/voices", token).json()
    stock = [v for v in voices["voices"] if v["kind"] == "stock"]
    assert stock, voices
    items = page.locator("#voice-list > li")
    expect(items).to_have_count(len(voices["voices"]))
    target = next(v for v in stock if v["id"] != voices["chosen"])
    item = page.locator(f'#voice-list > li[data-id="{target["id"]}"]')
    expect(item).to_contain_text(target["name"])
    expect(item).to_contain_text("Similarity to your recordings")
    use = item.get_by_role("button", name="Use this voice")
    expect(use).to_have_attribute("aria-pressed", "false")
    use.click()
    expect(item.get_by_role("button", name="Use this voice")).to_have_attribute("aria-pressed", "true")
    expect(item).to_contain_text("In use")
    expect(page.locator('#voice-list [aria-pressed="true"]')).to_have_count(1)
    assert api(quick_server, "GET", "/v1/voice/voices", token).json()["chosen"] == target["id"]

    # Play its sample: fetched with the token, played from a blob: URL.
    item.get_by_role("button", name="Play").click()
    audio = item.locator("audio")
    expect(audio).to_have_attribute("src", re.compile(r"^blob:"), timeout=30_000)
    duration = page.wait_for_function(
        f"""() => {{ const a = document.querySelector('#voice-list li[data-id="{target["id"]}"] audio');
                    return a && a.readyState >= 1 && a.duration > 0.3 ? a.duration : null; }}"""
    ).json_value()
    assert duration > 0.3

    for scheme in ("light", "dark"):
        page.emulate_media(color_scheme=scheme)
        assert axe_violations(page) == [], scheme
    page.emulate_media(color_scheme="light")

    page.set_viewport_size(PHONE)
    expect(page.locator("#voice-record")).to_be_visible()
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    page.set_viewport_size(DESKTOP)

    # This user imported nothing: the page says that no voice notes were found, and the profile is unchanged.
    page.get_by_role("button", name="Use my imported voice notes").click()
    expect(page.locator("#voice-status")).to_have_text("No usable voice notes of yours were found among your imports.")
    assert [c["id"] for c in enrollment_clips(quick_server, token)] == [again["id"]]

    # Delete the profile: asked first; then nothing is recorded.
    page.get_by_role("button", name="Delete my voice profile").click()
    dialog = page.get_by_role("dialog", name="Delete your voice profile?")
    expect(dialog.get_by_role("button", name="Keep it")).to_be_focused()
    assert axe_violations(page) == [], "dialog"
    dialog.get_by_role("button", name="Delete", exact=True).click()
    expect(page.locator("#voice-status")).to_contain_text("deleted")
    expect(sentence_item(page, 0)).to_contain_text("Not recorded yet")
    assert enrollment_clips(quick_server, token) == []
    tab.assert_no_errors()


def enroll_by_api(server: ServerProcess, token: str) -> None:
    """Every enrollment sentence read by espeak and uploaded through the API: a profile that is ready."""
    sentences = api(server, "GET", "/v1/voice/sentences", token).json()["sentences"]
    for k, text in enumerate(sentences):
        body = wav_bytes(spoken(text, 16_000), 16_000)
        headers = {"Content-Type": "audio/wav"}
        r = api(server, "POST", f"/v1/voice/clips?sentence={k}", token, content=body, headers=headers)
        assert r.status_code == 201, r.text
    profile = profile_of(server, token)
    assert profile is not None and profile["ready"], profile


class MatchCard:
    """The "Find the closest voice" card of the Voice screen, opened for a user whose profile is ready."""

    def __init__(self, page: Page) -> None:
        page.get_by_role("navigation", name="Sections").get_by_role("link", name="Voice", exact=True).click()
        expect(page.locator("#voice-total")).to_contain_text("enough to find the closest voice")
        self.find = page.get_by_role("button", name="Find the closest voice", exact=True)
        self.status = page.locator("#voice-match-status")
        self.bar = page.get_by_role("progressbar", name="Find the closest voice", exact=True)
        self.cancel = page.get_by_role("button", name="Cancel the search")
        self.result = page.locator("#voice-match-result")


def test_a_search_shows_its_progress_and_can_be_cancelled(quick_server: ServerProcess, browser: Browser) -> None:
    """With 20 s of speech in the profile "Find the closest voice" is enabled; the search it starts shows its
    progress ("Trying voices: n of N" over a progress bar) polled from the server, and "Cancel the search"
    stops it (on the server too) and enables the button again."""
    tab = Tab(browser)
    page = tab.page
    sign_in(page, quick_server, "voicecancel")
    token = token_of(page)
    enroll_by_api(quick_server, token)
    card = MatchCard(page)
    expect(card.find).to_be_enabled()
    card.find.click()
    expect(card.cancel).to_be_focused()
    expect(card.bar).to_be_visible()
    expect(card.find).to_be_disabled()
    expect(card.status).to_have_text(re.compile(r"^Trying voices: \d+ of \d+$"), timeout=30_000)
    total = int(card.status.inner_text().rsplit(" ", 1)[1])
    expect(card.bar).to_have_attribute("max", str(total))
    card.cancel.click()
    expect(card.status).to_have_text("Cancelled")
    expect(card.cancel).to_be_hidden()
    expect(card.bar).to_be_hidden()
    expect(card.find).to_be_enabled()
    job_id = page.evaluate("window.somaVoice.jobs.at(-1).id")
    job = api(quick_server, "GET", f"/v1/voice/match/{job_id}", token).json()["job"]
    assert job["state"] == "cancelled", job
    assert axe_violations(page) == []
    tab.assert_no_errors()


@pytest.mark.timeout(360)
def test_a_finished_search_is_shown_honestly_and_played_beside_the_voice_in_use(
    quick_server: ServerProcess, browser: Browser
) -> None:
    """A search run to its end (the quick plan: 18 syntheses, 1–2 min on two cores) refreshes the
    voices and shows the result honestly: a match as "the closest available voice" with its score and the
    default's, listed and in use, never called the person's voice (or, if nothing came closer, that), and offers
    the match and another voice to play side by side."""
    tab = Tab(browser)
    page = tab.page
    sign_in(page, quick_server, "voicematch")
    token = token_of(page)
    enroll_by_api(quick_server, token)
    card = MatchCard(page)
    card.find.click()
    expect(card.status).to_have_text("Done", timeout=300_000)
    expect(card.bar).to_be_hidden()
    voices = api(quick_server, "GET", "/v1/voice/voices", token).json()
    matched = [v for v in voices["voices"] if v["kind"] == "matched"]
    if matched:
        (voice,) = matched
        expect(card.result).to_contain_text(f"Closest available voice: {voice['similarity']['r']:.2f}")
        expect(card.result).to_contain_text("The default voice scores")
        item = page.locator(f'#voice-list > li[data-id="{voice["id"]}"]')
        expect(item).to_contain_text("Closest available voice")
        expect(item.get_by_role("button", name="Use this voice")).to_have_attribute(
            "aria-pressed", "true" if voices["chosen"] == voice["id"] else "false"
        )
        card.result.get_by_role("button", name="Play the closest voice").click()
        expect(card.result.locator("audio")).to_have_attribute("src", re.compile(r"^blob:"), timeout=30_000)
        expect(card.result.get_by_role("button", name=re.compile(r"\(for comparison\)$"))).to_be_visible()
    else:  # an espeak voice may be far from every stock voice: saying so is the honest result
        expect(card.result).to_contain_text("No mix of the stock voices came closer")
    for shown in (card.result, page.locator("#voice-list")):  # a match is never called the person's own voice
        assert "your voice" not in shown.inner_text().lower()
    assert axe_violations(page) == []
    tab.assert_no_errors()


def test_bring_a_piper_voice_choose_it_and_remove_it(quick_server: ServerProcess, browser: Browser) -> None:
    """A user brings a Piper voice through the form (the provisioned ``en_US-joe-medium`` .onnx and its
    .onnx.json, 63 MB): a file that is not a voice is refused with the server's reason; the real one is listed as
    "Piper voice you added" with a Remove button (stock voices have none) and can be chosen. Removing it asks
    first (keeping it changes nothing), then deletes it on the server and the avatar falls back to the default
    voice. The screen, form and dialog have no axe-core violations."""
    piper_dir = default_models_dir() / "tts-piper-joe"
    (onnx,) = piper_dir.glob("*.onnx")
    config = onnx.with_name(onnx.name + ".json")
    tab = Tab(browser)
    page = tab.page
    sign_in(page, quick_server, "voicepiper")
    token = token_of(page)
    before = api(quick_server, "GET", "/v1/voice/voices", token).json()
    page.get_by_role("navigation", name="Sections").get_by_role("link", name="Voice", exact=True).click()
    items = page.locator("#voice-list > li")
    expect(items).to_have_count(len(before["voices"]))
    expect(page.locator("#voice-list").get_by_role("button", name="Remove")).to_have_count(0)  # stock only

    # Not a voice (the config where the weights belong): refused, with the server's reason.
    page.get_by_label("Name of the voice").fill("Not a voice")
    page.get_by_label("The voice (.onnx)").set_input_files(config)
    page.get_by_label("Its settings (.onnx.json)").set_input_files(config)
    page.get_by_role("button", name="Add the voice").click()
    expect(page.locator("#voice-piper-error")).to_contain_text("Not added: ", timeout=30_000)
    assert page.locator("#voice-piper-error").inner_text() != "Not added: no connection to your Soma server."
    assert len(api(quick_server, "GET", "/v1/voice/voices", token).json()["voices"]) == len(before["voices"])

    # The real voice: uploaded, tried out by the server, listed.
    page.get_by_label("Name of the voice").fill("Joe from home")
    page.get_by_label("The voice (.onnx)").set_input_files(onnx)
    page.get_by_label("Its settings (.onnx.json)").set_input_files(config)
    page.get_by_role("button", name="Add the voice").click()
    expect(page.locator("#voice-piper-status")).to_have_text(
        "Joe from home was added to your voices: play it, or choose it.", timeout=60_000
    )
    expect(page.locator("#voice-piper-error")).to_have_text("")
    expect(page.get_by_label("Name of the voice")).to_have_value("")  # the form is ready for another
    listed = api(quick_server, "GET", "/v1/voice/voices", token).json()
    (brought,) = [v for v in listed["voices"] if v["kind"] == "piper"]
    assert brought["name"] == "Joe from home", brought
    item = page.locator(f'#voice-list > li[data-id="{brought["id"]}"]')
    expect(item).to_contain_text("Piper voice you added")
    expect(items).to_have_count(len(before["voices"]) + 1)

    # Choose it.
    item.get_by_role("button", name="Use this voice").click()
    expect(item).to_contain_text("In use")
    assert api(quick_server, "GET", "/v1/voice/voices", token).json()["chosen"] == brought["id"]
    for scheme in ("light", "dark"):
        page.emulate_media(color_scheme=scheme)
        assert axe_violations(page) == [], scheme
    page.emulate_media(color_scheme="light")

    # Remove it: asked first; kept, nothing changes and focus goes back to its Remove button.
    remove = item.get_by_role("button", name="Remove")
    remove.click()
    dialog = page.get_by_role("dialog", name="Remove this voice?")
    expect(dialog).to_contain_text("Joe from home")
    expect(dialog).to_contain_text("default voice")  # it is in use
    expect(dialog.get_by_role("button", name="Keep it")).to_be_focused()
    assert axe_violations(page) == [], "dialog"
    dialog.get_by_role("button", name="Keep it").click()
    expect(remove).to_be_focused()
    expect(items).to_have_count(len(before["voices"]) + 1)
    remove.click()
    dialog.get_by_role("button", name="Remove", exact=True).click()
    expect(item).to_have_count(0)
    default = next(v for v in before["voices"] if v["id"] == before["chosen"])
    expect(page.locator("#voice-list-status")).to_have_text(
        f"Joe from home was removed. Your avatar speaks with {default['name']}."
    )
    expect(page.get_by_role("heading", name="Voices", level=2)).to_be_focused()
    after = api(quick_server, "GET", "/v1/voice/voices", token).json()
    assert after["chosen"] == before["chosen"], after  # back to the default
    assert [v["id"] for v in after["voices"]] == [v["id"] for v in before["voices"]]
    fallback = page.locator(f'#voice-list > li[data-id="{before["chosen"]}"]')
    expect(fallback.get_by_role("button", name="Use this voice")).to_have_attribute("aria-pressed", "true")
    tab.assert_no_errors()
