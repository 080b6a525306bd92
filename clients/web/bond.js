// The bond card on the Persona screen: affinity, trust, streak, last contact, mood, and what they tell the avatar.
//
// `GET /v1/bond` answers the bond decayed to now (see voice_server/avatar/bond/); "Reset the bond" asks in a
// modal dialog, then `DELETE /v1/bond` puts it back to its starting state.
import { ApiError, api } from "./api.js";
import { el, focusIfIdle, plural, when } from "./dom.js";

const $ = (id) => document.getElementById(id);
const MOODS = { positive: "In good spirits", neutral: "Even", negative: "Low" };
const percent = new Intl.NumberFormat(undefined, { style: "percent", maximumFractionDigits: 0 });
const factor = new Intl.NumberFormat(undefined, { maximumFractionDigits: 1 });
let meters = 0;

/** A 0..1 value as a labelled bar (role "meter") and its percentage. */
function level(value, labelId) {
  const bar = el("span", { class: "bar" });
  bar.style.transform = `scaleX(${Math.max(0, Math.min(1, value))})`; // CSSOM, which the CSP allows
  const shown = percent.format(value);
  return el("span", { class: "level" },
    el("span", { class: "meter", role: "meter", "aria-labelledby": labelId, "aria-valuemin": 0, "aria-valuemax": 100,
      "aria-valuenow": Math.round(value * 100), "aria-valuetext": shown }, bar),
    el("span", { class: "level-value", text: shown, "aria-hidden": "true" }));
}

/** The ``GET /v1/bond`` object as [term, value node or text] pairs. */
function facts(bond) {
  const affinityId = `bond-affinity-${++meters}`;
  const trustId = `bond-trust-${meters}`;
  const rows = [
    [el("dt", { id: affinityId, text: "Affinity" }), level(bond.affinity, affinityId)],
    [el("dt", { id: trustId, text: "Trust" }), level(bond.trust, trustId)],
    [el("dt", { text: "Streak" }), bond.streak_days ? `${plural(bond.streak_days, "day")} in a row` : "No streak yet"],
    [el("dt", { text: "Last talked" }), bond.last_contact ? when(bond.last_contact, { withTime: true }) : "Not yet"],
    [el("dt", { text: "Your mood lately" }), bond.mood ? MOODS[bond.mood.label] || bond.mood.label : "Not known yet"],
  ];
  const tone = (bond.tone || "").replace(/^Tone:\s*/, "");
  rows.push([el("dt", { text: "What it tells your avatar" }),
    tone || "Nothing special: your avatar talks to you as usual."]);
  if (bond.reach_out >= 1.05) { // the check-in wait of the Reaching out settings is divided by it
    rows.push([el("dt", { text: "Check-ins" }),
      `Sooner than your setting: the wait is divided by ${factor.format(bond.reach_out)}.`]);
  }
  return rows.flatMap(([term, value]) => [term, el("dd", {}, value)]);
}

/** Sets up the bond card once. Returns `show()` (load it afresh) and `reset()` (sign-out: forget it). */
export function setUpBond() {
  const state = { ticket: 0, generation: 0 };
  const dialog = $("bond-confirm");

  function problem(error) {
    return error instanceof ApiError ? error.message : "no connection to your Soma server.";
  }

  async function load() {
    const ticket = ++state.ticket;
    $("bond-error").textContent = "";
    try {
      const bond = await api("/v1/bond");
      if (ticket !== state.ticket) return;
      $("bond-facts").replaceChildren(...facts(bond));
      $("bond-reset").hidden = false;
    } catch (error) {
      if (ticket !== state.ticket) return;
      $("bond-error").textContent = `Your bond could not be loaded: ${problem(error)}`;
    }
  }

  $("bond-reset").addEventListener("click", () => {
    dialog.returnValue = "";
    dialog.showModal();
  });

  dialog.addEventListener("close", async () => {
    if (dialog.returnValue !== "reset") { $("bond-reset").focus(); return; }
    const generation = state.generation;
    try {
      await api("/v1/bond", { method: "DELETE" });
    } catch (error) {
      if (generation !== state.generation) return;
      $("bond-error").textContent = `Not reset: ${problem(error)}`;
      focusIfIdle($("bond-reset"));
      return;
    }
    if (generation !== state.generation) return;
    await load();
    $("bond-status").textContent = "Your bond was reset.";
    focusIfIdle($("bond-reset"));
  });

  return {
    show() {
      $("bond-status").textContent = "";
      return load();
    },
    reset() {
      state.ticket += 1;
      state.generation += 1;
      if (dialog.open) { dialog.returnValue = ""; dialog.close(); }
      $("bond-facts").replaceChildren();
      $("bond-error").textContent = $("bond-status").textContent = "";
      $("bond-reset").hidden = true;
    },
  };
}
