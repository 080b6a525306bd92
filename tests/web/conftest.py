"""Real-browser fixtures: Debian's Chromium driven by Playwright, with a WAV file as the microphone."""

from __future__ import annotations

import secrets
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from playwright.sync_api import Browser, Page, Playwright, expect, sync_playwright

from pipeline.audio import wav_bytes
from tests.audio_fixtures import spoken
from tests.conftest import ServerProcess

RATE = 48_000
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
PASSWORD = "password-" + secrets.token_hex(6)
# Playwright's own browser download fails offline: launch the system Chromium with a fake microphone.
CHROMIUM_ARGS = [
    "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream",
    "--autoplay-policy=no-user-gesture-required",
    "--no-sandbox",
    "--disable-features=WebRtcHideLocalIpsWithMdns",
    "--allow-loopback-in-peer-connection",
    "--disable-dev-shm-usage",
]

Script = list[str | float]
"""A microphone script: spoken text, or a float for that many seconds of silence."""
Launcher = Callable[[Script], Browser]
"""The `launch` fixture: starts a Chromium whose microphone says the script."""


def write_microphone(path: Path, script: Script) -> Path:
    """Writes ``script`` as the 48 kHz mono 16-bit WAV Chromium loops as its fake microphone."""
    parts = [np.zeros(int(item * RATE), np.int16) if isinstance(item, float) else spoken(item, RATE) for item in script]
    path.write_bytes(wav_bytes(np.concatenate(parts), RATE))
    return path


@pytest.fixture(scope="module")
def browser_driver() -> Iterator[Playwright]:
    """Playwright's driver for this module (its sync API: the tests using it are plain functions)."""
    if CHROMIUM is None:
        pytest.skip("Chromium is not installed (apt-get install chromium)")
    with sync_playwright() as pw:
        yield pw


@pytest.fixture
def launch(browser_driver: Playwright, tmp_path: Path) -> Iterator[Launcher]:
    """``launch(script)``: a headless Chromium whose microphone says ``script`` (and then loops it)."""
    browsers: list[Browser] = []

    def start(script: Script) -> Browser:
        wav = write_microphone(tmp_path / f"mic{len(browsers)}.wav", script)
        args = [*CHROMIUM_ARGS, f"--use-file-for-fake-audio-capture={wav}"]
        browser = browser_driver.chromium.launch(executable_path=CHROMIUM, headless=True, args=args)
        browsers.append(browser)
        return browser

    yield start
    for browser in browsers:
        browser.close()


def new_account(server: ServerProcess, prefix: str, display_name: str = "") -> str:
    """Signs up a fresh user with the known test `PASSWORD` (through the API) and returns the username."""
    from soma_client import SomaClient

    name = f"{prefix}{secrets.token_hex(4)}"
    with SomaClient(server.base_url) as client:
        client.signup(name, PASSWORD, display_name)
    return name


def sign_in(page: Page, server: ServerProcess, prefix: str = "web", display_name: str = "") -> str:
    """Opens the page and signs in through its form as a new user; returns when the call screen shows."""
    username = new_account(server, prefix, display_name)
    sign_in_as(page, server, username)
    return username


def sign_in_as(page: Page, server: ServerProcess, username: str) -> None:
    """Opens the page and signs in through its form as ``username`` (an account with the test `PASSWORD`);
    returns when the call screen shows."""
    page.goto(server.base_url + "/")
    submit_sign_in(page, username)


def submit_sign_in(page: Page, username: str) -> None:
    """Signs in as ``username`` through the sign-in form the page shows now (after loading or signing out)."""
    switch = page.get_by_role("button", name="I already have an account")
    expect(switch).to_be_visible()  # sign-up is open on the test server: the form starts as "create"
    switch.click()
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in", exact=True).click()
    expect(page.get_by_role("button", name="Call", exact=True)).to_be_visible()
    page.wait_for_function("() => window.somaCall !== undefined")
