// The Persona screen: how the avatar speaks as its user — what was learned, the prompt in use, and the edits.
//
// `GET /v1/persona` gives the status (empty, building, ready), the profile learned from the user's own messages
// (style statistics, interests, people, places, a self-description), the user's edits and the system prompt
// with them applied. The style statistics are put into plain words here (`styleFacts`); the prompt is shown as
// the server wrote it. While a build runs the screen asks again every `POLL_MS` (only while it is open). Edits
// are `PATCH /v1/persona` with only the fields that changed; an emptied field sends `null`, which removes that
// edit. "Rebuild" is `POST /v1/persona/rebuild`.
import { ApiError, api } from "./api.js";
import { count, el, focusIfIdle, plural, when } from "./dom.js";

const $ = (id) => document.getElementById(id);
const POLL_MS = 2000;
const FIELDS = { name: "persona-name", self_description: "persona-self", style_notes: "persona-notes",
  instructions: "persona-instructions" };
const TONES = { casual: "Casual and relaxed", neutral: "Neither formal nor casual", formal: "Polite and formal" };
const percent = new Intl.NumberFormat(undefined, { style: "percent", maximumFractionDigits: 0 });
const languageNames = new Intl.DisplayNames(undefined, { type: "language", fallback: "code" });

function quoted(items) {
  return items.map((item) => `“${item}”`).join(", ");
}

function languageName(code) {
  try {
    return languageNames.of(code);
  } catch {
    return code; // not a language tag the browser knows
  }
}

/** The punctuation shares in plain words: the marks the user does use, and how they end a message. */
function punctuationWords(p) {
  const used = [["“!”", p.exclamation], ["“?”", p.question], ["“...”", p.ellipsis]]
    .filter(([, share]) => share >= 0.02)
    .map(([mark, share]) => `${mark} in ${percent.format(share)}`);
  const marks = used.length ? `${used.join(", ")} of your messages.` : "Hardly ever “!”, “?” or “...”.";
  const stop = p.trailing_full_stop;
  const ending = stop <= 0.1 ? "You rarely end with a full stop."
    : `You end ${percent.format(stop)} of them with a full stop.`;
  return `${marks} ${ending}`;
}

/**
 * The profile's ``style`` object (see voice_server/avatar/persona/style.py) as [term, plain words] pairs, the
 * strongest habits in full; [] for an empty profile.
 */
export function styleFacts(style) {
  if (!style?.messages) return [];
  const facts = [];
  const words = style.words_per_message;
  facts.push(["Message length", `About ${plural(words.median, "word")} a message; 9 in 10 have at most ${words.p90}.`]);
  const caps = style.capitalisation;
  if (caps.no_capitals >= 0.8) {
    facts.push(["Capital letters", `Hardly ever: ${percent.format(caps.no_capitals)} of your messages have none.`]);
  } else if (caps.starts_lower_case >= 0.6) {
    facts.push(["Capital letters", `You usually start in lower case (${percent.format(caps.starts_lower_case)}).`]);
  } else {
    facts.push(["Capital letters", "You use them as usual."]);
  }
  const emoji = style.emoji;
  if (emoji.messages_with_emoji >= 0.02 && emoji.top.length) {
    facts.push(["Emoji", `In ${percent.format(emoji.messages_with_emoji)} of your messages; your favourites: `
      + `${emoji.top.join(" ")}`]);
  } else {
    facts.push(["Emoji", "Almost never."]);
  }
  facts.push(["Punctuation", punctuationWords(style.punctuation)]);
  facts.push(["Tone", `${TONES[style.formality.label] || style.formality.label}.`]);
  if (style.languages.length) {
    const langs = style.languages.map((l) => `${languageName(l.code)} (${percent.format(l.share)})`);
    facts.push(["Languages", `${langs.join(", ")}.`]);
  }
  if (style.greetings.length) facts.push(["You greet with", quoted(style.greetings)]);
  if (style.sign_offs.length) facts.push(["You sign off with", quoted(style.sign_offs)]);
  if (style.phrases.length) facts.push(["You often say", quoted(style.phrases)]);
  return facts;
}

function statusText(persona) {
  const { messages, imports } = persona.sources;
  switch (persona.status) {
    case "building":
      return "Building your persona from your messages…";
    case "ready":
      return `Built ${when(persona.built_at, { withTime: true })} from ${count(messages)} of your messages`
        + `${imports ? ` (${plural(imports, "import")})` : ""}.`;
    default:
      return "No persona yet.";
  }
}

function chips(listId, boxId, items) {
  $(listId).replaceChildren(...items.map((item) => el("li", { class: "chip", text: item })));
  $(boxId).hidden = items.length === 0;
}

/** Sets up the Persona screen once. Returns `show()` (the screen opened: load it afresh) and `reset()`. */
export function setUpPersona() {
  // ticket: the load still wanted; generation: the signed-in session; dirty: fields the user typed in since
  // they were filled (a poll must not overwrite them).
  const state = { ticket: 0, generation: 0, persona: null, timer: null, dirty: new Set() };
  const view = $("persona-view");

  function render(persona) {
    state.persona = persona;
    $("persona-status").textContent = statusText(persona);
    $("persona-rebuild").hidden = persona.status === "building";
    const learned = !!persona.profile.style?.messages;
    $("persona-empty").hidden = learned || persona.status === "building";
    $("persona-profile").hidden = !learned;
    if (learned) {
      const facts = styleFacts(persona.profile.style);
      $("persona-style").replaceChildren(...facts.flatMap(([term, text]) => [el("dt", { text: term }),
        el("dd", { text })]));
      chips("persona-interests", "persona-interests-box", persona.profile.interests);
      chips("persona-people", "persona-people-box", persona.profile.people);
      chips("persona-places", "persona-places-box", persona.profile.places);
      $("persona-about").textContent = persona.profile.self_description;
      $("persona-about-box").hidden = !persona.profile.self_description;
    }
    $("persona-prompt").textContent = persona.prompt;
    for (const [key, id] of Object.entries(FIELDS)) {
      if (!state.dirty.has(key)) $(id).value = persona.edits[key] || "";
    }
    $("persona-self").placeholder = persona.profile.self_description || "";
  }

  function poll() {
    clearTimeout(state.timer);
    state.timer = null;
    if (state.persona?.status !== "building") return;
    state.timer = setTimeout(() => {
      state.timer = null;
      if (!view.hidden) load(); // asked again only while the screen is open; opening it loads anyway
    }, POLL_MS);
  }

  async function load() {
    const ticket = ++state.ticket;
    $("persona-error").textContent = "";
    view.setAttribute("aria-busy", "true");
    try {
      const persona = await api("/v1/persona");
      if (ticket !== state.ticket) return;
      render(persona);
      poll();
    } catch (error) {
      if (ticket !== state.ticket) return;
      $("persona-error").textContent = `Your persona could not be loaded: ${problem(error)}`;
    } finally {
      if (ticket === state.ticket) view.removeAttribute("aria-busy");
    }
  }

  function problem(error) {
    return error instanceof ApiError ? error.message : "no connection to your Soma server.";
  }

  for (const [key, id] of Object.entries(FIELDS)) $(id).addEventListener("input", () => state.dirty.add(key));

  $("persona-rebuild").addEventListener("click", async () => {
    const generation = state.generation;
    $("persona-error").textContent = "";
    try {
      await api("/v1/persona/rebuild", { method: "POST" });
    } catch (error) {
      if (generation !== state.generation) return;
      $("persona-error").textContent = error instanceof ApiError && error.status === 429
        ? "Your server is busy building other personas. Try again in a minute."
        : `Not rebuilt: ${problem(error)}`;
      return;
    }
    if (generation !== state.generation) return;
    await load();
    focusIfIdle($("persona-title"), $("persona-rebuild"));
  });

  $("persona-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const generation = state.generation;
    const edits = state.persona?.edits || {};
    const changes = {};
    for (const [key, id] of Object.entries(FIELDS)) {
      const value = $(id).value.trim();
      if (value !== (edits[key] || "")) changes[key] = value || null; // null removes that edit
    }
    $("persona-edit-error").textContent = "";
    if (!Object.keys(changes).length) {
      $("persona-edit-status").textContent = "Nothing to save: no field changed.";
      return;
    }
    $("persona-form").setAttribute("aria-busy", "true");
    $("persona-save").disabled = true;
    try {
      const persona = await api("/v1/persona", { method: "PATCH", body: JSON.stringify(changes) });
      if (generation !== state.generation) return;
      state.dirty.clear();
      state.ticket += 1; // a load sent before this answer would show the persona without the edit
      render(persona);
      poll();
      $("persona-edit-status").textContent = "Saved. Your avatar uses the new prompt from your next conversation.";
    } catch (error) {
      if (generation !== state.generation) return;
      $("persona-edit-error").textContent = `Not saved: ${problem(error)}`;
    } finally {
      $("persona-form").removeAttribute("aria-busy");
      $("persona-save").disabled = false;
    }
  });

  return {
    show: () => load(),
    reset() {
      state.ticket += 1;
      state.generation += 1;
      clearTimeout(state.timer);
      state.timer = null;
      state.persona = null;
      state.dirty.clear();
      $("persona-form").reset();
      for (const id of ["persona-status", "persona-error", "persona-edit-status", "persona-edit-error",
        "persona-about", "persona-prompt"]) $(id).textContent = "";
      for (const id of ["persona-style", "persona-interests", "persona-people", "persona-places"]) {
        $(id).replaceChildren();
      }
      $("persona-self").placeholder = "";
      $("persona-profile").hidden = $("persona-empty").hidden = $("persona-rebuild").hidden = true;
      $("persona-prompt-box").open = false;
    },
  };
}
