// The Reaching out screen: when and what the avatar sends by itself, and the birthdays and anniversaries it keeps.
//
// The form shows `GET /v1/proactive/settings` and saves it whole with `PUT` (the server checks the timezone
// and the birthday again). The server's default timezone is UTC: while it still has that, the field is filled
// in from this device's zone, and saving makes it the server's. Milestones are `GET/POST /v1/milestones` and
// `DELETE /v1/milestones/{id}`, listed in the order they next come round.
import { ApiError, api } from "./api.js";
import { day, el, focusIfIdle } from "./dom.js";

const $ = (id) => document.getElementById(id);
const DEFAULT_ZONE = "UTC"; // what the server has for a user who never saved settings
const KINDS = { birthday: "Birthday", anniversary: "Anniversary" };

function deviceZone() {
  try {
    return Intl.DateTimeFormat().resolvedOptions().timeZone || "";
  } catch {
    return "";
  }
}

/** The time now in ``zone`` ("14:05"), or null when the browser does not know the zone. */
function timeIn(zone) {
  try {
    return new Date().toLocaleTimeString(undefined, { timeZone: zone, hour: "2-digit", minute: "2-digit" });
  } catch {
    return null;
  }
}

/** Today in this device's calendar as "YYYY-MM-DD". */
function today() {
  const now = new Date();
  return [now.getFullYear(), now.getMonth() + 1, now.getDate()].map((n) => String(n).padStart(2, "0")).join("-");
}

/** Days from today until ``isoDate``'s month and day next come round (0: today). */
function daysUntil(isoDate) {
  const [, m, d] = isoDate.split("-").map(Number);
  const now = new Date();
  const start = new Date(now.getFullYear(), now.getMonth(), now.getDate());
  let next = new Date(now.getFullYear(), m - 1, d);
  if (next < start) next = new Date(now.getFullYear() + 1, m - 1, d);
  return Math.round((next - start) / 86_400_000);
}

function problem(error) {
  return error instanceof ApiError ? error.message : "no connection to your Soma server.";
}

/** Sets up the Reaching out screen once. Returns `show()` (load it afresh) and `reset()` (sign-out). */
export function setUpReachingOut() {
  // ticket: the settings load still wanted; generation: the signed-in session; dirty: typed into since filled.
  const state = { ticket: 0, milestoneTicket: 0, generation: 0, dirty: false, ids: 0 };
  const kinds = () => [...document.querySelectorAll('input[name="reach-kind"]')];

  function zoneHint(note = "") {
    const zone = $("reach-tz").value.trim();
    const now = zone ? timeIn(zone) : null;
    const where = now ? `It is ${now} there now.` : "A name like Europe/Lisbon or America/New_York.";
    $("reach-tz-hint").textContent = note ? `${note} ${where}` : where;
  }

  function fill(settings) {
    const device = deviceZone();
    const suggest = settings.timezone === DEFAULT_ZONE && device && device !== DEFAULT_ZONE;
    $("reach-tz").value = suggest ? device : settings.timezone;
    zoneHint(suggest ? `Filled in from this device: your server uses ${DEFAULT_ZONE} until you save.` : "");
    $("reach-morning").value = settings.morning_time;
    $("reach-quiet-start").value = settings.quiet_hours.start;
    $("reach-quiet-end").value = settings.quiet_hours.end;
    $("reach-checkin").value = String(settings.checkin_after_days);
    for (const box of kinds()) box.checked = !settings.disabled_kinds.includes(box.value);
    $("reach-birthday").value = settings.birthday || "";
    state.dirty = false;
  }

  async function loadSettings() {
    const ticket = ++state.ticket;
    $("reach-error").textContent = "";
    $("reach-birthday").max = today();
    try {
      const settings = await api("/v1/proactive/settings");
      if (ticket !== state.ticket || state.dirty) return; // keep what the user is typing
      fill(settings);
    } catch (error) {
      if (ticket === state.ticket) $("reach-error").textContent = `Your settings could not be loaded: ${problem(error)}`;
    }
  }

  function milestoneItem(milestone) {
    const titleId = `milestone-${++state.ids}`;
    const until = daysUntil(milestone.date);
    const next = until === 0 ? "today" : until === 1 ? "tomorrow" : `in ${until} days`; // when it comes round
    const li = el("li", { class: "milestone", "data-id": milestone.id },
      el("p", { class: "milestone-title", id: titleId, text: milestone.title }),
      el("p", { class: "memory-meta" }, el("span", { class: "chip", text: KINDS[milestone.kind] || milestone.kind }),
        ` ${day(milestone.date)} · ${next}`));
    const remove = el("button", { class: "secondary-button small", type: "button", text: "Delete",
      "aria-describedby": titleId, on: { click: () => forget(milestone, li) } });
    li.append(remove);
    return li;
  }

  async function loadMilestones() {
    const ticket = ++state.milestoneTicket;
    $("milestones-error").textContent = "";
    try {
      const { data } = await api("/v1/milestones");
      if (ticket !== state.milestoneTicket) return;
      data.sort((a, b) => daysUntil(a.date) - daysUntil(b.date) || a.title.localeCompare(b.title));
      $("milestone-list").replaceChildren(...data.map(milestoneItem));
      $("milestones-empty").hidden = data.length > 0;
    } catch (error) {
      if (ticket === state.milestoneTicket) {
        $("milestones-error").textContent = `Your milestones could not be loaded: ${problem(error)}`;
      }
    }
  }

  async function forget(milestone, li) {
    const generation = state.generation;
    $("milestones-error").textContent = "";
    try {
      await api(`/v1/milestones/${milestone.id}`, { method: "DELETE" });
    } catch (error) {
      if (generation !== state.generation) return;
      if (!(error instanceof ApiError && error.status === 404)) { // 404: already gone, as wanted
        $("milestones-error").textContent = `Not deleted: ${problem(error)}`;
        return;
      }
    }
    if (generation !== state.generation) return;
    const next = li.nextElementSibling || li.previousElementSibling;
    const hadFocus = li.contains(document.activeElement);
    li.remove();
    state.milestoneTicket += 1; // a list request still on its way would bring it back
    $("milestones-empty").hidden = $("milestone-list").children.length > 0;
    $("milestones-status").textContent = `Deleted “${milestone.title}”.`;
    if (hadFocus) focusIfIdle(next?.querySelector("button") || $("milestone-title"));
  }

  $("reach-form").addEventListener("input", () => { state.dirty = true; });
  $("reach-tz").addEventListener("input", () => zoneHint());

  $("reach-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const generation = state.generation;
    $("reach-error").textContent = $("reach-status").textContent = "";
    const body = {
      timezone: $("reach-tz").value.trim(),
      morning_time: $("reach-morning").value,
      quiet_hours: { start: $("reach-quiet-start").value, end: $("reach-quiet-end").value },
      checkin_after_days: Number($("reach-checkin").value),
      disabled_kinds: kinds().filter((box) => !box.checked).map((box) => box.value),
      birthday: $("reach-birthday").value || null,
    };
    if (!timeIn(body.timezone)) {
      $("reach-error").textContent = `“${body.timezone}” is not a timezone: use a name like Europe/Lisbon.`;
      $("reach-tz").focus();
      return;
    }
    $("reach-save").disabled = true;
    try {
      const saved = await api("/v1/proactive/settings", { method: "PUT", body: JSON.stringify(body) });
      if (generation !== state.generation) return;
      state.ticket += 1; // a load sent before this answer would show the old settings
      fill(saved);
      const off = saved.disabled_kinds.length;
      $("reach-status").textContent = off === 4 ? "Saved. Your avatar will not message you by itself."
        : "Saved. Your avatar reaches out at these times from now on.";
    } catch (error) {
      if (generation !== state.generation) return;
      $("reach-error").textContent = `Not saved: ${problem(error)}`;
    } finally {
      $("reach-save").disabled = false;
    }
  });

  $("milestone-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const generation = state.generation;
    const title = $("milestone-title").value.trim();
    $("milestone-error").textContent = $("milestones-status").textContent = "";
    if (!title) {
      $("milestone-error").textContent = "Say what it is, e.g. “Mum’s birthday”.";
      $("milestone-title").focus();
      return;
    }
    const body = { title, date: $("milestone-date").value, kind: $("milestone-kind").value };
    try {
      await api("/v1/milestones", { method: "POST", body: JSON.stringify(body) });
    } catch (error) {
      if (generation !== state.generation) return;
      $("milestone-error").textContent = `Not added: ${problem(error)}`;
      return;
    }
    if (generation !== state.generation) return;
    $("milestone-form").reset();
    await loadMilestones();
    if (generation !== state.generation) return;
    $("milestones-status").textContent = `Added “${title}”.`;
    focusIfIdle($("milestone-title"), $("milestone-form"));
  });

  const zones = typeof Intl.supportedValuesOf === "function" ? Intl.supportedValuesOf("timeZone") : [];
  $("reach-zones").replaceChildren(...[DEFAULT_ZONE, ...zones.filter((z) => z !== DEFAULT_ZONE)]
    .map((zone) => el("option", { value: zone })));

  return {
    show() {
      return Promise.all([loadSettings(), loadMilestones()]);
    },
    reset() {
      state.ticket += 1;
      state.milestoneTicket += 1;
      state.generation += 1;
      state.dirty = false;
      $("reach-form").reset();
      $("milestone-form").reset();
      $("milestone-list").replaceChildren();
      $("milestones-empty").hidden = true;
      for (const id of ["reach-status", "reach-error", "milestones-status", "milestones-error", "milestone-error"]) {
        $(id).textContent = "";
      }
      zoneHint();
    },
  };
}
