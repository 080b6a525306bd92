"""The avatar's own screens (`clients/web/inbox.js`, `persona.js`, `bond.js`, `reachout.js`) in real headless
Chromium against a real server (ci models where a chat turn or an import needs them): the persona learned from
an imported chat and its edits, the bond after a conversation and its reset, when the avatar reaches out and the
milestones it keeps, and its messages arriving live, after sign-in, and marked read. The page records what the
inbox received as ``window.somaInbox``, so assertions are about what the user saw."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Locator, Page, Route, ViewportSize, expect

from tests.avatar import persona_fixtures as fx
from tests.conftest import REPO, ServerProcess
from tests.server.test_persona import import_sam, wait_ready
from tests.server.test_proactive_api import make_due, wait_bond, wait_notifications
from tests.server_api import api
from tests.web.conftest import PASSWORD, Launcher, new_account, sign_in, sign_in_as, submit_sign_in
from tests.web.test_avatar_pages import DESKTOP, PHONE, Tab, axe_violations, open_screen, token_of

pytestmark = [pytest.mark.models, pytest.mark.slow, pytest.mark.timeout(240)]
# A small phone: on it the inbox is well below the call card, so a message is not "seen" by itself (the page
# marks what stays in view for a second read) until the test scrolls to it or clicks it.
SMALL_PHONE: ViewportSize = {"width": 360, "height": 640}


def nav_link(page: Page, name: str) -> Locator:
    return page.get_by_role("navigation", name="Sections").get_by_role("link", name=name, exact=True)


def facts(dl: Locator) -> dict[str, str]:
    """A description list as {term: value}."""
    terms = dl.locator("dt").all_inner_texts()
    values = dl.locator("dd").all_inner_texts()
    return dict(zip(terms, values, strict=True))


def api_token(server: ServerProcess, username: str) -> str:
    """A bearer token of ``username``'s own (the page's is revoked when it signs out)."""
    r = httpx.post(server.base_url + "/v1/auth/token", json={"username": username, "password": PASSWORD})
    assert r.status_code == 200, r.text
    token: str = r.json()["access_token"]
    return token


def sign_out(page: Page) -> None:
    nav_link(page, "Call").click()
    settings = page.locator("#settings")
    if settings.get_attribute("open") is None:
        page.get_by_text("Settings", exact=True).click()
    page.get_by_role("button", name="Sign out").click()
    expect(
        page.get_by_role("heading", name="Sign in").or_(page.get_by_role("heading", name="Create your account"))
    ).to_be_visible()


def test_the_persona_shows_how_the_user_writes_and_an_edit_reaches_the_prompt(
    model_server: ServerProcess, launch: Launcher
) -> None:
    """Before any import the Persona screen says how to get one (a link to Import); once the user's generated
    chat is imported it follows the build to "Built …" and shows the writer: no capitals, signs off with
    "cheers", 😂, English and Portuguese, interests, people and places, and the prompt (collapsed at first)
    says so. Edits (name, instructions) show in the prompt at once and stay after a reload; emptying a field
    removes that edit; saving nothing changed says so."""
    tab = Tab(launch)
    page = tab.page
    sign_in(page, model_server, "sam", display_name=fx.ME)
    token = token_of(page)
    open_screen(page, "Persona", "Your persona")
    expect(page).to_have_title("Persona · Soma")
    status = page.locator("#persona-status")
    expect(status).to_have_text("No persona yet.")
    link = page.locator("#persona-empty").get_by_role("link", name="Import your chats")
    expect(link).to_be_visible()
    expect(link).to_have_attribute("href", "#/import")

    import_sam(model_server, token)
    nav_link(page, "Memories").click()
    nav_link(page, "Persona").click()  # opened again: building or built by now; it follows a build to its end
    expect(status).to_contain_text("Built ", timeout=120_000)
    expect(status).to_contain_text("from 150 of your messages (1 import).")
    expect(page.locator("#persona-empty")).to_be_hidden()
    style = facts(page.locator("#persona-style"))
    assert style["You sign off with"] == "“cheers”", style
    assert style["Capital letters"].startswith("Hardly ever: 100%"), style
    assert "😂" in style["Emoji"] and style["Tone"] == "Casual and relaxed.", style
    assert style["Languages"].startswith("English (") and "Portuguese (" in style["Languages"], style
    assert page.locator("#persona-interests li").all_inner_texts()[:2] == ["hiking", "football"]
    assert page.locator("#persona-people li").all_inner_texts()[:2] == ["Ana Souza", "Bob"]
    assert page.locator("#persona-places li").all_inner_texts() == ["Porto", "Lisbon"]
    expect(page.locator("#persona-about")).to_contain_text("I'm Sam Rivers.")

    prompt = page.get_by_label("The prompt your avatar uses")
    expect(prompt).to_be_hidden()
    page.get_by_text("The prompt your avatar uses", exact=True).click()
    expect(prompt).to_contain_text('signs off with "cheers"')
    expect(prompt).to_contain_text("never uses capital letters")

    page.get_by_label("The name your avatar goes by").fill("Sammy")
    page.get_by_label("Instructions").fill("Never talk about work.")
    page.get_by_role("button", name="Save edits").click()
    expect(page.locator("#persona-edit-status")).to_have_text(
        "Saved. Your avatar uses the new prompt from your next conversation."
    )
    text = prompt.inner_text()
    assert text.startswith("You are Sammy.") and text.endswith("Never talk about work."), text
    edits = {"name": "Sammy", "instructions": "Never talk about work."}
    assert api(model_server, "GET", "/v1/persona", token).json()["edits"] == edits

    page.reload()
    expect(page.get_by_role("heading", name="Your persona")).to_be_visible()  # the hash kept the screen
    expect(page.get_by_label("The name your avatar goes by")).to_have_value("Sammy")
    expect(page.get_by_label("Instructions")).to_have_value("Never talk about work.")
    page.get_by_label("The name your avatar goes by").fill("")
    page.get_by_role("button", name="Save edits").click()
    expect(page.locator("#persona-edit-status")).to_contain_text("Saved.")
    page.get_by_text("The prompt your avatar uses", exact=True).click()
    expect(prompt).to_contain_text("You are Sam Rivers.")
    assert api(model_server, "GET", "/v1/persona", token).json()["edits"] == {"instructions": edits["instructions"]}
    page.get_by_role("button", name="Save edits").click()
    expect(page.locator("#persona-edit-status")).to_have_text("Nothing to save: no field changed.")

    built = api(model_server, "GET", "/v1/persona", token).json()["built_at"]
    page.get_by_role("button", name="Rebuild").click()
    rebuilt = wait_ready(model_server, token, after=built)
    expect(status).to_contain_text("Built ", timeout=60_000)
    expect(page.get_by_role("button", name="Rebuild")).to_be_visible()
    assert rebuilt["edits"] == {"instructions": edits["instructions"]}  # a rebuild keeps the edits
    expect(prompt).to_contain_text("Never talk about work.")
    tab.assert_no_errors()


def test_the_bond_shows_after_a_chat_turn_and_resets(model_server: ServerProcess, launch: Launcher) -> None:
    """A new user's bond is at its start ("Not yet" talked); after chat turns with sad words it shows the
    contact, a one-day streak, a low mood and what that tells the avatar (be gentle); "Reset the bond" asks
    first, "Keep it" keeps it, "Reset" puts it back to the start (also on the server)."""
    tab = Tab(launch)
    page = tab.page
    sign_in(page, model_server, "bond")
    token = token_of(page)
    start = api(model_server, "GET", "/v1/bond", token).json()
    open_screen(page, "Persona", "Your persona")
    bond = page.locator("#bond-facts")
    expect(bond.locator("dd").nth(3)).to_have_text("Not yet")
    before = facts(bond)
    assert before["Streak"] == "No streak yet" and before["Your mood lately"] == "Not known yet", before
    assert before["What it tells your avatar"].startswith("Nothing special"), before
    affinity = page.get_by_role("meter", name="Affinity")
    expect(affinity).to_have_attribute("aria-valuenow", str(round(start["affinity"] * 100)))

    for text in ("I feel terrible, my dog died.", "Everything is awful and I am so sad."):
        body = {"model": "soma", "messages": [{"role": "user", "content": text}], "max_tokens": 8}
        assert api(model_server, "POST", "/v1/chat/completions", token, json=body).status_code == 200
    now = wait_bond(model_server, token)
    nav_link(page, "Call").click()
    nav_link(page, "Persona").click()
    expect(bond.locator("dd").nth(3)).not_to_have_text("Not yet")
    after = facts(bond)
    assert after["Streak"] == "1 day in a row" and after["Your mood lately"] == "Low", after
    assert "gentle" in after["What it tells your avatar"] and not after["What it tells your avatar"].startswith(
        "Tone:"
    ), after
    expect(page.get_by_role("meter", name="Trust")).to_have_attribute("aria-valuenow", str(round(now["trust"] * 100)))

    reset = page.get_by_role("button", name="Reset the bond")
    reset.click()
    dialog = page.get_by_role("dialog", name="Reset your bond?")
    expect(dialog.get_by_role("button", name="Keep it")).to_be_focused()
    dialog.get_by_role("button", name="Keep it").click()
    expect(dialog).to_be_hidden()
    expect(reset).to_be_focused()
    assert api(model_server, "GET", "/v1/bond", token).json()["mood"] is not None
    reset.click()
    dialog.get_by_role("button", name="Reset", exact=True).click()
    expect(page.locator("#bond-status")).to_have_text("Your bond was reset.")
    expect(bond.locator("dd").nth(3)).to_have_text("Not yet")
    assert facts(bond)["Streak"] == "No streak yet"
    assert api(model_server, "GET", "/v1/bond", token).json() == start
    tab.assert_no_errors()


def test_reaching_out_settings_save_and_milestones_are_added_and_deleted(
    server: ServerProcess, launch: Launcher
) -> None:
    """The timezone is filled in from the device while the server still has its default (UTC); quiet hours,
    an opt-out and a birthday are saved (the server has them) and shown again after a reload; a timezone that
    does not exist is refused before it is sent; a milestone is added, listed and deleted."""
    tab = Tab(launch, timezone_id="America/Sao_Paulo")
    page = tab.page
    sign_in(page, server, "reach")
    token = token_of(page)
    open_screen(page, "Reaching out", "Reaching out")
    zone = page.get_by_label("Your timezone")
    expect(zone).to_have_value("America/Sao_Paulo")
    expect(page.locator("#reach-tz-hint")).to_contain_text("Filled in from this device: your server uses UTC")
    assert api(server, "GET", "/v1/proactive/settings", token).json()["timezone"] == "UTC"
    expect(page.get_by_label("Morning messages at")).to_have_value("08:00")
    expect(page.get_by_label("From", exact=True)).to_have_value("22:00")
    expect(page.get_by_label("Until", exact=True)).to_have_value("07:00")
    expect(page.get_by_label("Check in after this many days without talking")).to_have_value("3")
    on_this_day = page.get_by_role("checkbox", name="On this day: a memory from an earlier year")
    expect(on_this_day).to_be_checked()

    page.get_by_label("From", exact=True).fill("23:30")
    page.get_by_label("Until", exact=True).fill("06:45")
    on_this_day.uncheck()
    page.get_by_label("Your birthday").fill("1990-04-12")
    page.get_by_role("button", name="Save", exact=True).click()
    expect(page.locator("#reach-status")).to_have_text("Saved. Your avatar reaches out at these times from now on.")
    saved = api(server, "GET", "/v1/proactive/settings", token).json()
    assert saved == {"timezone": "America/Sao_Paulo", "morning_time": "08:00",
                     "quiet_hours": {"start": "23:30", "end": "06:45"}, "checkin_after_days": 3,
                     "disabled_kinds": ["on_this_day"], "birthday": "1990-04-12"}
    expect(page.locator("#reach-tz-hint")).not_to_contain_text("Filled in")

    page.reload()
    expect(page.get_by_role("heading", name="Reaching out", level=2)).to_be_visible()
    expect(page.get_by_label("From", exact=True)).to_have_value("23:30")
    expect(page.get_by_label("Until", exact=True)).to_have_value("06:45")
    expect(on_this_day).not_to_be_checked()
    expect(page.get_by_role("checkbox", name="A morning greeting")).to_be_checked()
    expect(page.get_by_label("Your birthday")).to_have_value("1990-04-12")
    expect(zone).to_have_value("America/Sao_Paulo")

    zone.fill("Mars/Olympus")
    page.get_by_role("button", name="Save", exact=True).click()
    expect(page.locator("#reach-error")).to_have_text(
        "“Mars/Olympus” is not a timezone: use a name like Europe/Lisbon."
    )
    assert api(server, "GET", "/v1/proactive/settings", token).json() == saved

    expect(page.locator("#milestones-empty")).to_have_text("None yet.")
    page.get_by_label("What it is").fill("Mum's birthday")
    page.get_by_label("Date", exact=True).fill("1960-09-02")
    page.get_by_label("Birthday or anniversary").select_option("birthday")
    page.get_by_role("button", name="Add", exact=True).click()
    item = page.locator("#milestone-list > li").filter(has_text="Mum's birthday")
    expect(item).to_have_count(1)
    expect(item).to_contain_text("Birthday")
    expect(page.locator("#milestones-status")).to_have_text("Added “Mum's birthday”.")
    expect(page.get_by_label("What it is")).to_be_focused()
    (stored,) = api(server, "GET", "/v1/milestones", token).json()["data"]
    assert stored["title"] == "Mum's birthday" and stored["date"] == "1960-09-02" and stored["kind"] == "birthday"
    item.get_by_role("button", name="Delete").click()
    expect(item).to_have_count(0)
    expect(page.locator("#milestones-status")).to_have_text("Deleted “Mum's birthday”.")
    expect(page.locator("#milestones-empty")).to_be_visible()
    assert api(server, "GET", "/v1/milestones", token).json()["data"] == []
    tab.assert_no_errors()


def test_the_avatars_messages_arrive_live_and_after_sign_in_and_are_marked_read(
    server: ServerProcess, launch: Launcher
) -> None:
    """A message the avatar sends while the page is open (on another screen) arrives live: the nav's Call link
    shows an unread badge and the message is announced; on the Call screen it is seen and marked read (the
    badge goes, the server has it read). One sent while signed out is listed after signing in again, marked
    new, with the badge; clicking it marks it read."""
    tab = Tab(launch, SMALL_PHONE)
    page = tab.page
    username = sign_in(page, server, "inbox")
    token = api_token(server, username)
    expect(page.locator("#messages-empty")).to_be_visible()
    badge = page.locator("#nav-unread")
    expect(badge).to_be_hidden()
    open_screen(page, "Persona", "Your persona")  # the inbox out of sight
    page.wait_for_function("() => window.somaInbox.state === 'live'")

    make_due(server, token, "our wedding anniversary")
    expect(badge).to_have_text("1", timeout=60_000)
    expect(nav_link(page, "Call")).to_have_accessible_description("1 unread message from your avatar")
    expect(page.locator("#inbox-live")).to_contain_text(
        "New message from your avatar: Today is our wedding anniversary"
    )
    (first,) = page.evaluate("window.somaInbox.events")
    assert first["fresh"] is True and first["kind"] == "milestone"

    nav_link(page, "Call").click()
    page.locator("#inbox").scroll_into_view_if_needed()
    item = page.locator("#messages > li").first
    expect(item).to_contain_text("Today is our wedding anniversary")
    expect(item).to_contain_text("Milestone")
    expect(badge).to_be_hidden()
    expect(item.get_by_text("New", exact=True)).to_be_hidden()
    assert page.evaluate("window.somaInbox.reads") == [{"id": first["id"], "reason": "seen"}]
    assert api(server, "GET", "/v1/notifications", token, params={"unread": "true"}).json()["data"] == []

    sign_out(page)
    assert page.evaluate("window.somaInbox.state") == "stopped"
    expect(page.locator("#messages > li")).to_have_count(0)
    expect(badge).to_be_hidden()
    make_due(server, token, "the day we met", 3)  # while signed out
    wait_notifications(server, token, 2)
    page.evaluate("window.scrollTo(0, 0)")
    submit_sign_in(page, username)
    items = page.locator("#messages > li")
    expect(items).to_have_count(2)
    expect(items.first).to_contain_text("the day we met: 3 years")  # newest first
    expect(items.first.get_by_text("New", exact=True)).to_be_attached()
    expect(badge).to_have_text("1")
    expect(page.locator("#inbox-summary")).to_have_text("1 unread message")
    items.first.click()
    expect(badge).to_be_hidden()
    reads = page.evaluate("window.somaInbox.reads")
    assert [r["reason"] for r in reads] == ["clicked"], reads  # out of view until the click
    assert api(server, "GET", "/v1/notifications", token, params={"unread": "true"}).json()["data"] == []
    tab.assert_no_errors()


SHOWN_BY_SYSTEM = """async () => {
  const registration = await navigator.serviceWorker.getRegistration();
  const shown = await registration.getNotifications();
  return shown.map((n) => ({ title: n.title, body: n.body, tag: n.tag }));
}"""


def test_a_message_in_the_background_becomes_a_system_notification(server: ServerProcess, launch: Launcher) -> None:
    """The page asks for permission to notify only when its button is clicked; once allowed, a message that
    arrives while the page is in the background is also shown by the system, through the service worker."""
    context = launch([1.0]).new_context(viewport=DESKTOP)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    username = sign_in(page, server, "notify")
    token = api_token(server, username)
    ask = page.get_by_role("button", name="Notify me on this device")
    expect(ask).to_be_visible()
    assert page.evaluate("Notification.permission") == "default"  # nothing asked by itself
    page.wait_for_function("() => navigator.serviceWorker.controller !== null")
    context.grant_permissions(["notifications"], origin=server.base_url)
    ask.click()
    expect(ask).to_be_hidden()
    page.wait_for_function("() => window.somaInbox.state === 'live'")
    page.evaluate("Object.defineProperty(document, 'visibilityState', {value: 'hidden', configurable: true})")
    make_due(server, token, "the day we adopted Rex")
    shown = None
    deadline = time.monotonic() + 60
    while not shown:
        assert time.monotonic() < deadline, page.evaluate("window.somaInbox.events")
        page.wait_for_timeout(200)
        shown = page.evaluate(SHOWN_BY_SYSTEM)
    (note,) = page.evaluate("window.somaInbox.items")
    assert shown == [{"title": "Message from your avatar", "body": note["text"], "tag": note["id"]}], shown
    assert "the day we adopted Rex" in note["text"] and note["read"] is False  # not seen: the page is hidden
    assert not errors, errors
    context.close()


def test_the_avatar_screens_are_accessible_in_light_and_dark_and_fit_a_phone(
    model_server: ServerProcess, launch: Launcher, tmp_path: Path
) -> None:
    """With a built persona, a bond after a conversation, milestones and a message from the avatar, the Call
    (inbox), Persona (prompt open, reset dialog) and Reaching out screens have no axe-core WCAG A/AA violations
    in light and dark; on phones (360 and 390 px wide) every screen's tab is in view and nothing scrolls
    sideways. Screenshots: docs/screenshots/ when SOMA_SAVE_SCREENSHOTS=1, else the test's tmp dir."""
    out = REPO / "docs" / "screenshots" if os.environ.get("SOMA_SAVE_SCREENSHOTS") == "1" else tmp_path
    out.mkdir(parents=True, exist_ok=True)
    tab = Tab(launch, timezone_id="Europe/Lisbon")
    page = tab.page
    username = sign_in(page, model_server, "a11yav", display_name=fx.ME)
    token = api_token(model_server, username)
    import_sam(model_server, token)
    body = {"model": "soma", "messages": [{"role": "user", "content": "I love hiking, today was wonderful!"}],
            "max_tokens": 8}
    assert api(model_server, "POST", "/v1/chat/completions", token, json=body).status_code == 200
    wait_bond(model_server, token)
    open_screen(page, "Persona", "Your persona")
    page.wait_for_function("() => window.somaInbox.state === 'live'")
    make_due(model_server, token, "our wedding anniversary")
    r = api(model_server, "POST", "/v1/milestones", token, json={"title": "Mum's birthday", "date": "1960-09-02",
                                                                  "kind": "birthday"})
    assert r.status_code == 201, r.text
    expect(page.locator("#nav-unread")).to_have_text("1", timeout=60_000)
    expect(page.locator("#persona-status")).to_contain_text("Built ", timeout=120_000)
    page.get_by_text("The prompt your avatar uses", exact=True).click()

    screens = (("Persona", "Your persona"), ("Reaching out", "Reaching out"), ("Call", None))
    for scheme in ("light", "dark"):
        page.emulate_media(color_scheme=scheme)
        for name, heading in screens:
            nav_link(page, name).click()
            if heading:
                expect(page.get_by_role("heading", name=heading, level=2)).to_be_visible()
            expect(page.locator("[aria-busy]")).to_have_count(0)
            assert axe_violations(page) == [], f"{scheme}, {name}"
        nav_link(page, "Persona").click()
        page.get_by_role("button", name="Reset the bond").click()
        dialog = page.get_by_role("dialog", name="Reset your bond?")
        expect(dialog.get_by_role("button", name="Keep it")).to_be_focused()
        assert axe_violations(page) == [], f"{scheme}, bond dialog"
        page.keyboard.press("Escape")
        expect(dialog).to_be_hidden()
        expect(page.get_by_role("button", name="Reset the bond")).to_be_focused()
    page.emulate_media(color_scheme="light")
    page.evaluate("document.activeElement.blur()")
    page.screenshot(path=str(out / "persona-desktop.png"), full_page=True)
    nav_link(page, "Reaching out").click()
    page.evaluate("document.activeElement.blur()")
    page.screenshot(path=str(out / "reaching-out-desktop.png"), full_page=True)

    for phone in (SMALL_PHONE, PHONE):
        page.set_viewport_size(phone)
        for name, _ in screens:
            nav_link(page, name).click()
            assert page.evaluate("document.documentElement.scrollWidth") <= phone["width"], (name, phone)
            for link in ("Call", "Memories", "Import", "Persona", "Reaching out"):
                expect(nav_link(page, link)).to_be_in_viewport()
    page.locator("#inbox").scroll_into_view_if_needed()
    expect(page.locator("#messages > li").first).to_contain_text("Today is our wedding anniversary")
    page.evaluate("document.activeElement.blur()")
    page.screenshot(path=str(out / "inbox-phone.png"))
    nav_link(page, "Persona").click()
    page.evaluate("document.activeElement.blur()")
    page.screenshot(path=str(out / "persona-phone.png"), full_page=True)
    for name in ("persona-desktop.png", "reaching-out-desktop.png", "inbox-phone.png", "persona-phone.png"):
        assert (out / name).stat().st_size > 10_000, name
    tab.assert_no_errors()


def test_a_dropped_event_stream_is_resumed_after_the_last_message_seen(server: ServerProcess, launch: Launcher) -> None:
    """When the event stream ends (here the first one is a canned stream holding the one message the user
    has, then closes), the page opens it again after the server's ``retry`` pause with ``Last-Event-ID``, so
    the server sends only what came after: the message sent meanwhile arrives once, the old one not again.
    "Mark all as read" then clears the badge (on a phone, where the inbox is below the call)."""
    tab = Tab(launch, SMALL_PHONE)
    page = tab.page
    username = new_account(server, "resume")
    token = api_token(server, username)
    make_due(server, token, "our wedding anniversary")
    (old,) = wait_notifications(server, token, 1)
    opened: list[dict[str, str]] = []

    def canned_then_real(route: Route) -> None:
        opened.append(route.request.headers)
        if len(opened) > 1:
            route.continue_()
            return
        body = f"retry: 1500\nid: {old['id']}\nevent: notification\ndata: {json.dumps(old)}\n\n"
        route.fulfill(status=200, headers={"Content-Type": "text/event-stream"}, body=body)

    page.route("**/v1/events", canned_then_real)
    sign_in_as(page, server, username)
    expect(page.locator("#messages > li")).to_have_count(1)
    make_due(server, token, "the day we met", 3)
    expect(page.locator("#messages > li")).to_have_count(2, timeout=60_000)
    expect(page.locator("#messages > li").first).to_contain_text("the day we met: 3 years")
    assert len(opened) == 2, opened
    assert "last-event-id" not in opened[0] and opened[1]["last-event-id"] == old["id"], opened
    events = page.evaluate("window.somaInbox.events")
    assert [(e["id"] == old["id"], e["fresh"]) for e in events] == [(True, False), (False, True)], events
    assert page.evaluate("window.somaInbox.connects") == 2

    expect(page.locator("#nav-unread")).to_have_text("2")
    page.get_by_role("button", name="Mark all as read").click()
    expect(page.locator("#nav-unread")).to_be_hidden()
    expect(page.get_by_role("button", name="Mark all as read")).to_be_hidden()
    expect(page.get_by_role("list", name="Messages from your avatar")).to_be_focused()
    assert [r["reason"] for r in page.evaluate("window.somaInbox.reads")] == ["all", "all"]
    assert api(server, "GET", "/v1/notifications", token, params={"unread": "true"}).json()["data"] == []
    tab.assert_no_errors()


STYLE_CASES = """async () => {
  const { styleFacts } = await import("/persona.js");
  const base = {
    messages: 40, words_per_message: { median: 1, p90: 3 },
    capitalisation: { no_capitals: 0.1, starts_lower_case: 0.05 },
    emoji: { per_message: 0, messages_with_emoji: 0.01, top: [] },
    punctuation: { exclamation: 0.3, question: 0.01, ellipsis: 0, trailing_full_stop: 0.75 },
    formality: { score: 0.8, label: "formal" }, languages: [{ code: "de", share: 1 }],
    greetings: [], sign_offs: [], phrases: [],
  };
  const lower = { ...base, capitalisation: { no_capitals: 0.3, starts_lower_case: 0.7 },
    punctuation: { exclamation: 0, question: 0, ellipsis: 0, trailing_full_stop: 0.05 } };
  return { formal: styleFacts(base), lower: styleFacts(lower), empty: styleFacts({}), none: styleFacts(undefined) };
}"""


def test_style_habits_are_put_in_plain_words(server: ServerProcess, launch: Launcher) -> None:
    """persona.js words a style profile whatever its habits: one word or many, capitals as usual or a
    lower-case start, no emoji, only the punctuation marks the writer uses and how they end a message, the
    language by its name; an empty profile has no facts."""
    page = Tab(launch, locale="en-US").page
    page.goto(server.base_url + "/")
    got: dict[str, list[list[str]]] = page.evaluate(STYLE_CASES)
    assert dict(got["formal"]) == {
        "Message length": "About 1 word a message; 9 in 10 have at most 3.",
        "Capital letters": "You use them as usual.",
        "Emoji": "Almost never.",
        "Punctuation": "“!” in 30% of your messages. You end 75% of them with a full stop.",
        "Tone": "Polite and formal.",
        "Languages": "German (100%).",
    }
    lower = dict(got["lower"])
    assert lower["Capital letters"] == "You usually start in lower case (70%)."
    assert lower["Punctuation"] == "Hardly ever “!”, “?” or “...”. You rarely end with a full stop."
    assert got["empty"] == [] and got["none"] == []
