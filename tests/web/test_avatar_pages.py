"""The Import and Memories screens (`clients/web/imports.js`, `memories.js`) in real headless Chromium against a
real server: uploads through the page, the job's progress read from its SSE stream, reports, past imports, and
the memories an import created found, corrected and forgotten there. The page records what it received and
showed as ``window.somaImport``, so assertions are about what the user saw."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from axe_playwright_python.sync_playwright import Axe
from playwright.sync_api import Locator, Page, Route, ViewportSize, expect

from tests.conftest import REPO, ServerProcess, start_server
from tests.eventually import eventually
from tests.server.test_imports import ME, NAME, export_file
from tests.server.test_privacy import admin_db
from tests.server_api import api, auth
from tests.web.conftest import Launcher, sign_in, sign_in_as

pytestmark = [pytest.mark.models, pytest.mark.slow, pytest.mark.timeout(180)]

DESKTOP: ViewportSize = {"width": 1280, "height": 800}
PHONE: ViewportSize = {"width": 390, "height": 844}
IMPORT_LIMIT = 64 * 1024  # SOMA_MEDIA_MAX_BYTES of the small server below


class Tab:
    """A page of its own Chromium that collects the page's uncaught errors and Content-Security-Policy
    violations (a test ends with none)."""

    def __init__(self, launch: Launcher, viewport: ViewportSize = DESKTOP, **options: Any) -> None:
        """``options``: more of Playwright's `new_page` options (``timezone_id``, ``locale``, …)."""
        self.page = launch([1.0]).new_page(viewport=viewport, **options)
        self.errors: list[str] = []
        self.watch(self.page)

    def watch(self, page: Page) -> None:
        page.on("pageerror", lambda error: self.errors.append(str(error)))
        page.on("console", lambda m: "Content Security Policy" in m.text and self.errors.append(m.text))

    def assert_no_errors(self) -> None:
        assert not self.errors, self.errors


def token_of(page: Page) -> str:
    token: str = page.evaluate("sessionStorage.getItem('soma-token')")
    return token


def write_export(tmp: Path, canary: str, messages: int) -> Path:
    """The WhatsApp export of the server import tests (the user's own fact about ``canary`` at its end)."""
    path = tmp / canary / NAME
    path.parent.mkdir()
    path.write_bytes(export_file(tmp, canary, messages))
    return path


def open_screen(page: Page, name: str, heading: str) -> None:
    page.get_by_role("navigation", name="Sections").get_by_role("link", name=name, exact=True).click()
    expect(page.get_by_role("heading", name=heading, level=2)).to_be_focused()


def start_import(page: Page, *files: Path) -> None:
    page.get_by_label("Export files").set_input_files([str(f) for f in files])
    page.get_by_role("button", name="Import", exact=True).click()


def run_item(page: Page, file_name: str, nth: int = 0) -> Locator:
    return page.locator("#import-runs > li").filter(has_text=file_name).nth(nth)


def report(item: Locator) -> dict[str, str]:
    """A report's description list as {term: value}."""
    terms = item.locator(".report dt").all_inner_texts()
    values = item.locator(".report dd").all_inner_texts()
    return dict(zip(terms, values, strict=True))


def memory_item(page: Page, text: str) -> Locator:
    return page.locator("#memory-list > li").filter(has_text=text)


def test_an_import_shows_progress_and_a_report_and_its_memory_is_found_edited_and_deleted(
    model_server: ServerProcess, launch: Launcher, tmp_path: Path
) -> None:
    """A user imports a generated WhatsApp export through the page (name prefilled from the account): upload
    and reading progress, then the report and the past imports list; in Memories the fact from the chat is
    listed as from an import, found by search, corrected in place, kept on "Keep it" and forgotten on
    "Forget it"; a memory added by hand is listed first and searchable."""
    tab = Tab(launch)
    page = tab.page
    sign_in(page, model_server, "importer", display_name=ME)
    canary = "Zqwebsister"
    export = write_export(tmp_path, canary, 30_000)

    open_screen(page, "Import", "Import your history")
    expect(page).to_have_title("Import · Soma")
    expect(page.get_by_label("Your name in the chat")).to_have_value(ME)  # the account's display name
    start_import(page, export)
    item = run_item(page, NAME)
    expect(item.get_by_role("status")).to_have_text("Imported", timeout=90_000)
    expect(page.get_by_role("button", name="Import", exact=True)).to_be_enabled()
    got = report(item)
    assert got["Messages read"] == "30,002" and got["New"] == "30,002", got
    assert got["Memories created"] != "0", got
    expect(item.get_by_role("progressbar")).to_be_hidden()

    (run,) = page.evaluate("window.somaImport.runs")
    assert run["me"] == ME and run["status"] == "done"
    progress = [e["data"] for e in run["events"] if e["event"] == "progress"]
    reading = [p for p in progress if p["status"] == "running" and p["read"] > 0]
    assert reading, progress  # the page saw the job at work, not only its end
    assert all(0 < p["position"] <= p["size"] == export.stat().st_size for p in reading), reading
    assert [p["read"] for p in reading] == sorted(p["read"] for p in reading)
    assert run["events"][-1]["event"] == "done" and run["final"]["read"] == 30_002
    assert run["phases"][0] == "Uploading…" and "Reading messages…" in run["phases"], run["phases"]
    assert run["phases"][-1] == "Imported"

    past = page.locator("#import-history > li").filter(has_text=NAME)
    expect(past).to_have_count(1)
    expect(past.locator(".badge")).to_have_text("Imported")
    assert report(past)["Messages read"] == "30,002"

    # Memories: the fact the chat told, from the import.
    open_screen(page, "Memories", "Memories")
    fact = memory_item(page, canary)
    expect(fact).to_have_count(1)
    expect(fact.locator(".memory-text")).to_have_text(f"My sister {canary} lives in Porto.")
    expect(fact).to_contain_text("From an import")
    # Where it came from (issue 20): the message it was taken from, quoted, with who wrote it and when.
    expect(fact.locator(".memory-origin")).to_contain_text("From a message from you in")
    expect(fact.locator(".memory-origin q")).to_have_text(f"My sister {canary} lives in Porto.")
    page.get_by_role("searchbox", name="Search memories").fill("where does my sister live")
    page.get_by_role("button", name="Search", exact=True).click()
    expect(page.locator("#memories-status")).to_contain_text("match “where does my sister live”")
    expect(page.get_by_role("button", name="Show all memories")).to_be_visible()
    found = page.locator("#memory-list > li .memory-text").all_inner_texts()
    assert any(canary in text for text in found[:3]), found

    # Correct it in place.
    memory_item(page, canary).get_by_role("button", name="Edit").click()
    box = page.get_by_role("textbox", name="Memory text")
    expect(box).to_be_focused()
    box.fill(f"My sister {canary} lives in Lisbon now.")
    page.get_by_role("button", name="Save").click()
    fact = memory_item(page, canary)
    expect(fact.locator(".memory-text")).to_have_text(f"My sister {canary} lives in Lisbon now.")
    expect(fact.get_by_role("button", name="Edit")).to_be_focused()
    memory_id = fact.get_attribute("data-id")
    token = token_of(page)
    assert api(model_server, "GET", f"/v1/memories/{memory_id}", token).json()["text"].endswith("Lisbon now.")

    # Forget it: asked first; "Keep it" keeps it.
    fact.get_by_role("button", name="Delete").click()
    dialog = page.get_by_role("dialog", name="Forget this memory?")
    expect(dialog).to_be_visible()
    expect(dialog).to_contain_text("Lisbon now.")
    dialog.get_by_role("button", name="Keep it").click()
    expect(dialog).to_be_hidden()
    expect(fact.get_by_role("button", name="Delete")).to_be_focused()
    assert api(model_server, "GET", f"/v1/memories/{memory_id}", token).status_code == 200
    fact.get_by_role("button", name="Delete").click()
    dialog.get_by_role("button", name="Forget it").click()
    expect(fact).to_have_count(0)
    expect(page.locator("#memories-status")).to_have_text("Memory forgotten.")
    assert api(model_server, "GET", f"/v1/memories/{memory_id}", token).status_code == 404

    # Tell it something by hand: newest first in the full list, and searchable.
    page.get_by_role("button", name="Show all memories").click()
    page.get_by_label("Something your avatar should know").fill("I am allergic to peanuts.")
    page.get_by_label("Kind").select_option("fact")
    page.get_by_role("button", name="Remember this").click()
    first = page.locator("#memory-list > li").first
    expect(first.locator(".memory-text")).to_have_text("I am allergic to peanuts.")
    expect(first).to_contain_text("Added by you")
    page.get_by_role("searchbox", name="Search memories").fill("peanut allergy")
    page.keyboard.press("Enter")
    expect(page.locator("#memory-list > li").first).to_contain_text("allergic to peanuts")
    tab.assert_no_errors()


def test_a_wrong_name_offers_the_participants_and_one_click_imports(
    model_server: ServerProcess, launch: Launcher, tmp_path: Path
) -> None:
    """An import under a name nobody in the chat has fails with the server's reason; the participants it
    lists are offered as buttons, one click imports the file again as that person, and the page remembers
    that name for this account's next import (also after a reload)."""
    tab = Tab(launch)
    page = tab.page
    sign_in(page, model_server, "wrongname", display_name="Somebody Else")
    export = write_export(tmp_path, "Zqwebwho", 60)
    open_screen(page, "Import", "Import your history")
    expect(page.get_by_label("Your name in the chat")).to_have_value("Somebody Else")
    start_import(page, export)

    item = run_item(page, NAME)
    expect(item.get_by_role("status")).to_have_text("Not imported", timeout=60_000)
    alert = item.get_by_role("alert")
    expect(alert).to_contain_text("No message in this file is from somebody else; its participants are: ")
    choices = item.get_by_role("group", name="Which one is you?")
    names = [n.split(" (")[0] for n in choices.get_by_role("button").all_inner_texts()]
    assert set(names) == {"Ana Souza", ME, "Carlos 🎸", "Zoë"}, names
    mine = choices.get_by_role("button", name=ME)
    expect(mine).to_contain_text("messages)")
    expect(choices.get_by_role("button").first).to_be_focused()  # the choice is one key press away

    mine.click()
    expect(item.get_by_role("status")).to_have_text("Imported", timeout=60_000)
    expect(choices).to_have_count(0)
    assert report(item)["Messages read"] == "62"
    expect(page.get_by_label("Your name in the chat")).to_have_value(ME)
    runs = page.evaluate("window.somaImport.runs")
    assert [r["status"] for r in runs] == ["done"] and runs[0]["me"] == ME
    assert [e["event"] for e in runs[0]["events"]].count("failed") == 1  # the first attempt's end
    expect(page.locator("#import-history .badge")).to_have_text(["Imported", "Failed"])  # newest first

    page.reload()
    expect(page.get_by_role("heading", name="Import your history")).to_be_visible()  # the hash kept the screen
    expect(page.get_by_label("Your name in the chat")).to_have_value(ME)  # remembered, not the display name
    tab.assert_no_errors()


def test_a_running_import_can_be_stopped(model_server: ServerProcess, launch: Launcher, tmp_path: Path) -> None:
    """"Stop this import" appears while the server holds the job; pressing it ends the import as not
    imported with the server's reason, keeps nothing, and the button goes away."""
    tab = Tab(launch)
    page = tab.page
    sign_in(page, model_server, "stopper", display_name=ME)
    export = write_export(tmp_path, "Zqwebstop", 100_000)
    open_screen(page, "Import", "Import your history")
    start_import(page, export)
    item = run_item(page, NAME)
    stop = item.get_by_role("button", name="Stop this import")
    expect(item.get_by_role("status")).to_have_text("Reading messages…", timeout=60_000)
    stop.click()
    expect(item.get_by_role("status")).to_have_text("Not imported", timeout=60_000)
    expect(item.get_by_role("alert")).to_contain_text("Cancelled: you stopped this import")
    expect(stop).to_be_hidden()
    listed = httpx.get(f"{model_server.base_url}/v1/imports", headers=auth(token_of(page)))
    (row,) = listed.json()["data"]
    assert row["status"] == "failed" and row["created"] == 0, row
    tab.assert_no_errors()


@pytest.fixture(scope="module")
def small_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A server without models whose uploads are limited to `IMPORT_LIMIT` bytes (imports need no model)."""
    server = start_server(
        tmp_path_factory.mktemp("small-imports"), SOMA_SIGNUP="open", SOMA_MEDIA_MAX_BYTES=str(IMPORT_LIMIT)
    )
    yield server
    server.stop()


def test_too_large_waiting_and_too_busy_are_said_clearly(
    small_server: ServerProcess, launch: Launcher, tmp_path: Path
) -> None:
    """A file over the server's limit (413) says so and how to fix it. With the job runner held back (a
    table lock), an upload waits in the queue and the page says so; a fifth import of one person is refused
    (429, their share is 4) with a "Try again" that works once the queue drained, while another person's import
    is not refused but waits its turn, and both the waiting imports finish."""
    tab = Tab(launch)
    page = tab.page
    waiter = sign_in(page, small_server, "waiter", display_name=ME)
    open_screen(page, "Import", "Import your history")
    big = write_export(tmp_path, "Zqwebbig", 3000)
    assert big.stat().st_size > IMPORT_LIMIT
    start_import(page, big)
    refused = run_item(page, NAME)
    expect(refused.get_by_role("status")).to_have_text("Not imported", timeout=30_000)
    expect(refused.get_by_role("alert")).to_contain_text("is larger than this server accepts")
    expect(refused.get_by_role("button", name="Try again")).to_have_count(0)  # the same file would fail again

    small = write_export(tmp_path, "Zqwebsmall", 40)
    token = token_of(page)
    other = launch([1.0]).new_page(viewport=PHONE)
    tab.watch(other)
    sign_in(other, small_server, "crowded", display_name=ME)
    open_screen(other, "Import", "Import your history")
    second = launch([1.0]).new_page(viewport=PHONE)  # the same person on another device (a page imports one at a time)
    tab.watch(second)
    sign_in_as(second, small_server, waiter)
    open_screen(second, "Import", "Import your history")

    def upload() -> None:
        r = api(
            small_server, "POST", "/v1/imports", token, params={"me": ME, "name": "x.txt"}, content=small.read_bytes()
        )
        assert r.status_code == 202, r.text

    with admin_db(small_server) as db, db.transaction():
        # The running job blocks on its first insert, so what is uploaded next stays queued.
        db.execute("LOCK TABLE imported_messages IN SHARE MODE")
        upload()
        start_import(page, small)
        waiting = run_item(page, NAME, 0)
        expect(waiting.get_by_role("status")).to_have_text("Waiting for the server to start it…", timeout=30_000)
        expect(waiting.get_by_role("progressbar")).to_be_visible()
        for _ in range(2):  # one person may have 4 imports in progress (SOMA_IMPORT_MAX_PER_USER)
            upload()
        start_import(second, small)
        refused = run_item(second, NAME)
        expect(refused.get_by_role("alert")).to_contain_text("as many imports in progress", timeout=30_000)
        expect(refused.get_by_role("status")).to_have_text("Not imported")
        # Someone else's import is not refused because this person filled their share: it waits its turn.
        start_import(other, small)
        theirs = run_item(other, NAME)
        expect(theirs.get_by_role("status")).to_have_text("Waiting for the server to start it…", timeout=30_000)
        expect(waiting.get_by_role("status")).to_have_text("Waiting for the server to start it…")
    expect(waiting.get_by_role("status")).to_have_text("Imported", timeout=60_000)
    assert report(waiting)["Messages read"] == "42"
    expect(theirs.get_by_role("status")).to_have_text("Imported", timeout=60_000)
    assert report(theirs)["New"] == "42"
    refused.get_by_role("button", name="Try again").click()
    expect(refused.get_by_role("status")).to_have_text("Imported", timeout=60_000)
    assert report(refused)["Messages read"] == "42"
    tab.assert_no_errors()


def test_a_dropped_progress_stream_is_followed_again(
    small_server: ServerProcess, launch: Launcher, tmp_path: Path
) -> None:
    """When the progress stream cannot be opened (here: the first two attempts are aborted in the browser),
    the page reconnects with a growing pause and still shows the import's report."""
    tab = Tab(launch)
    page = tab.page
    sign_in(page, small_server, "reconnect", display_name=ME)
    aborted: list[str] = []

    def drop_twice(route: Route) -> None:
        if len(aborted) < 2:
            aborted.append(route.request.url)
            route.abort("connectionreset")
        else:
            route.continue_()

    page.route("**/v1/imports/*/events", drop_twice)
    open_screen(page, "Import", "Import your history")
    start_import(page, write_export(tmp_path, "Zqwebdrop", 40))
    item = run_item(page, NAME)
    expect(item.get_by_role("status")).to_have_text("Imported", timeout=30_000)
    (run,) = page.evaluate("window.somaImport.runs")
    assert len(aborted) == 2 and run["reconnects"] == 2, (aborted, run)
    assert report(item)["Messages read"] == "42"
    tab.assert_no_errors()


def wait_imports_done(server: ServerProcess, token: str, count: int, limit_s: float = 60) -> None:
    eventually(lambda: [r["status"] for r in api(server, "GET", "/v1/imports", token).json()["data"]],
               until=lambda statuses: sum(s in ("done", "failed") for s in statuses) >= count, timeout_s=limit_s,
               what=f"{count} imports to end")


def axe_violations(page: Page) -> list[str]:
    """axe-core's WCAG 2.x A/AA violations of the page as it is now (the engine ships in the wheel)."""
    options = {"runOnly": {"type": "tag", "values": ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]}}
    results = Axe().run(page, options=options).response
    return [f"{v['id']}: {[n['target'] for n in v['nodes']]}" for v in results["violations"]]


def test_the_import_and_memory_screens_are_accessible(
    model_server: ServerProcess, launch: Launcher, tmp_path: Path
) -> None:
    """The screens are reached from the keyboard (focus lands on their heading), have no axe-core WCAG A/AA
    violations in light and dark (with a report, participant choices, memories and the dialog showing), fit
    a phone without sideways scrolling, and the dialog closes on Escape. Screenshots: docs/screenshots/
    when SOMA_SAVE_SCREENSHOTS=1, else the test's tmp dir."""
    out = REPO / "docs" / "screenshots" if os.environ.get("SOMA_SAVE_SCREENSHOTS") == "1" else tmp_path
    out.mkdir(parents=True, exist_ok=True)
    tab = Tab(launch)
    page = tab.page
    sign_in(page, model_server, "a11ypages", display_name="Nobody Here")
    token = token_of(page)
    for text in ("I love climbing on Saturdays.", "My sister Ana lives in Porto."):
        assert api(model_server, "POST", "/v1/memories", token, json={"text": text}).status_code == 201

    # Keyboard: from the call screen's main action to the Memories link, and into the screen.
    nav = page.get_by_role("navigation", name="Sections")
    expect(nav.get_by_role("link", name="Call")).to_have_attribute("aria-current", "page")
    memories_link = nav.get_by_role("link", name="Memories")
    memories_link.focus()
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", name="Memories", level=2)).to_be_focused()
    expect(memories_link).to_have_attribute("aria-current", "page")
    expect(page.locator("#memory-list > li")).to_have_count(2)
    expect(page.get_by_role("button", name="Call", exact=True)).to_be_hidden()

    for scheme in ("light", "dark"):
        page.emulate_media(color_scheme=scheme)
        assert axe_violations(page) == [], scheme
        page.locator("#memory-list > li").first.get_by_role("button", name="Delete").click()
        dialog = page.get_by_role("dialog")
        expect(dialog.get_by_role("button", name="Keep it")).to_be_focused()
        assert axe_violations(page) == [], f"{scheme}, dialog"
        page.screenshot(path=str(out / f"memories-forget-{scheme}.png"))
        page.keyboard.press("Escape")
        expect(dialog).to_be_hidden()
        expect(page.locator("#memory-list > li").first.get_by_role("button", name="Delete")).to_be_focused()
    page.emulate_media(color_scheme="light")
    page.evaluate("document.activeElement.blur()")
    page.screenshot(path=str(out / "memories-desktop.png"))

    open_screen(page, "Import", "Import your history")
    start_import(page, write_export(tmp_path, "Zqweba11y", 40))
    choices = run_item(page, NAME).get_by_role("group", name="Which one is you?")
    expect(choices).to_be_visible(timeout=60_000)
    for scheme in ("light", "dark"):
        page.emulate_media(color_scheme=scheme)
        assert axe_violations(page) == [], f"{scheme}, import"
    page.emulate_media(color_scheme="light")
    page.screenshot(path=str(out / "import-desktop.png"))

    page.set_viewport_size(PHONE)
    for screen, heading in (("Import", "Import your history"), ("Memories", "Memories"), ("Call", None)):
        nav.get_by_role("link", name=screen, exact=True).click()
        if heading:
            expect(page.get_by_role("heading", name=heading, level=2)).to_be_visible()
        assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"], screen
        for link in ("Call", "Memories", "Import"):
            expect(nav.get_by_role("link", name=link, exact=True)).to_be_in_viewport()
    expect(page.get_by_role("button", name="Call", exact=True)).to_be_focused()
    nav.get_by_role("link", name="Memories", exact=True).click()
    page.get_by_role("button", name="Add a memory").click()  # the form is below the list on a phone
    expect(page.get_by_label("Something your avatar should know")).to_be_focused()
    expect(page.get_by_label("Something your avatar should know")).to_be_in_viewport()
    nav.get_by_role("link", name="Import", exact=True).click()
    page.evaluate("document.activeElement.blur()")
    page.screenshot(path=str(out / "import-phone.png"), full_page=True)
    for name in ("memories-desktop.png", "import-desktop.png", "import-phone.png"):
        assert (out / name).stat().st_size > 10_000, name
    tab.assert_no_errors()


def test_sign_out_clears_the_screens(model_server: ServerProcess, launch: Launcher) -> None:
    """Signing out empties the memories and import screens and hides the navigation, so the next person
    to sign in on this tab sees nothing of the previous account (and starts on the call screen)."""
    tab = Tab(launch)
    page = tab.page
    sign_in(page, model_server, "leaver")
    token = token_of(page)
    api(model_server, "POST", "/v1/memories", token, json={"text": "Zqprivate fact about me."})
    open_screen(page, "Memories", "Memories")
    expect(memory_item(page, "Zqprivate")).to_have_count(1)
    page.get_by_role("link", name="Call").click()
    page.get_by_text("Settings", exact=True).click()
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("navigation", name="Sections")).to_be_hidden()
    assert page.evaluate("location.hash") == ""
    assert page.locator("#memory-list > li").count() == 0
    assert "Zqprivate" not in page.content()
    tab.assert_no_errors()


SSE_CASES = """async () => {
  const { SseParser, SseError, readEvents } = await import("/sse.js");
  const { participantsIn } = await import("/imports.js");
  const feed = (chunks) => { const p = new SseParser(); return chunks.flatMap((c) => p.push(c)); };
  const whole = "\\ufeffevent: progress\\r\\ndata: {\\"a\\": 1}\\r\\n\\r\\n: keep-alive\\n\\nid: 7\\ndata: one\\n"
    + "data:two\\nretry: 3000\\nweird field\\n\\ndata\\n\\r\\r";
  const cuts = [];
  for (let i = 0; i <= whole.length; i++) cuts.push(feed([whole.slice(0, i), whole.slice(i)]));
  const bytes = new TextEncoder().encode("event: done\\ndata: Zoë 🎸 ☀️\\n\\n");
  const stream = new ReadableStream({ start(c) { for (const b of bytes) c.enqueue(new Uint8Array([b])); c.close(); } });
  const streamed = [];
  for await (const e of readEvents(new Response(stream))) streamed.push(e);
  let tooLong = null;
  try { new SseParser({ maxLine: 10 }).push("data: 0123456789"); } catch (e) { tooLong = e instanceof SseError; }
  let silent = null;
  const hang = new Response(new ReadableStream({ start(c) { c.enqueue(new TextEncoder().encode(": hi\\n")); } }));
  try { for await (const e of readEvents(hang, { idleMs: 200 })) { /* none */ } } catch (e) { silent = e.message; }
  const error = "no message in this file is from bob; its participants are: Ana Souza (3), Smith, John (12), "
    + "Zoë (1)";
  return { cuts, streamed, tooLong, silent, people: participantsIn(error), none: participantsIn("bad line 3") };
}"""


def test_the_sse_reader_parses_any_chunking_and_the_participant_list(
    model_server: ServerProcess, launch: Launcher
) -> None:
    """sse.js follows the event-stream grammar whatever the chunk boundaries (CRLF split across chunks, BOM,
    comments, multi-line data, ids, events without data), decodes UTF-8 split byte by byte, bounds a line,
    and gives up on a silent stream; imports.js reads the participants out of the server's error."""
    page = Tab(launch).page
    page.goto(model_server.base_url + "/")
    got: dict[str, Any] = page.evaluate(SSE_CASES)
    expected = [
        {"event": "progress", "data": '{"a": 1}', "id": ""},
        {"event": "message", "data": "one\ntwo", "id": "7"},
        {"event": "message", "data": "", "id": "7"},
    ]
    for cut, events in enumerate(got["cuts"]):
        assert events == expected, f"cut at {cut}: {events}"
    assert got["streamed"] == [{"event": "done", "data": "Zoë 🎸 ☀️", "id": ""}]
    assert got["tooLong"] is True
    assert got["silent"] == "the event stream was silent for 0.2 s"
    assert got["people"] == [
        {"name": "Ana Souza", "messages": 3},
        {"name": "Smith, John", "messages": 12},
        {"name": "Zoë", "messages": 1},
    ]
    assert got["none"] == []


def test_memories_page_through_the_list(model_server: ServerProcess, launch: Launcher) -> None:
    """More memories than a page (50): the first page shows newest first with "Show more", which appends
    the rest (focus on the first one added) and then disappears."""
    tab = Tab(launch)
    page = tab.page
    sign_in(page, model_server, "pager")
    token = token_of(page)
    for n in range(53):
        body = {"text": f"Zqpage fact number {n}.", "kind": "fact"}
        assert api(model_server, "POST", "/v1/memories", token, json=body).status_code == 201
    open_screen(page, "Memories", "Memories")
    items = page.locator("#memory-list > li .memory-text")
    expect(items).to_have_count(50)
    expect(items.first).to_have_text("Zqpage fact number 52.")
    expect(page.locator("#memories-status")).to_have_text("50 memories, newest first (more below).")
    page.get_by_role("button", name="Show more").click()
    expect(items).to_have_count(53)
    expect(items.last).to_have_text("Zqpage fact number 0.")
    expect(page.locator("#memory-list > li").nth(50).get_by_role("button", name="Edit")).to_be_focused()
    expect(page.get_by_role("button", name="Show more")).to_be_hidden()
    expect(page.locator("#memories-status")).to_have_text("53 memories, newest first.")
    tab.assert_no_errors()
