// The Memories screen: what the avatar knows about the user — list (paged), search, correct, forget, add.
//
// The list is `GET /v1/memories` newest first, a page at a time ("Show more" follows `next_cursor`); a search
// (`/v1/memories/search`) replaces it with the best matches until "Show all memories". Editing happens in
// place; forgetting asks first in a modal dialog. Each answer is checked against the request that is still
// wanted (`ticket`), so a slow answer never overwrites a newer one, nor shows after sign-out.
import { ApiError, api } from "./api.js";
import { day, el, focusIfIdle, plural, when } from "./dom.js";

const $ = (id) => document.getElementById(id);
const PAGE = 50;
const SEARCH_LIMIT = 20;
const SOURCES = { conversation: "From a conversation", import: "From an import", user: "Added by you" };

function problem(error) {
  if (error instanceof ApiError && error.status === 503) {
    return "Memories are unavailable: your server has not loaded its embedding model.";
  }
  if (error instanceof ApiError) return error.message;
  return "No connection to your Soma server. Try again when it is back.";
}

/**
 * Sets up the Memories screen once. Returns `show()` (the screen opened: load it afresh) and `reset()`
 * (sign-out: forget everything shown).
 */
export function setUpMemories() {
  const list = $("memory-list");
  // ticket: the list request still wanted; generation: the signed-in session (reset() starts a new one).
  const state = { ticket: 0, generation: 0, mode: "list", query: "", next: null, shown: 0, pending: null, ids: 0 };

  function status(text) { $("memories-status").textContent = text; }
  function error(text) { $("memories-error").textContent = text; }

  function describe() {
    const shown = plural(state.shown, "memory", "memories");
    if (state.mode === "search") {
      const query = `“${state.query}”`;
      status(state.shown ? `${shown} match ${query}, best first.` : `No memory matches ${query}.`);
    } else if (state.shown) {
      status(`${shown}, newest first${state.next ? " (more below)" : ""}.`);
    } else {
      status("Your avatar knows nothing about you yet. Talk to it, import your history, or add a memory.");
    }
    $("memories-all").hidden = state.mode !== "search";
    $("memories-more").hidden = !(state.mode === "list" && state.next);
  }

  function meta(memory) {
    const parts = [SOURCES[memory.source] || memory.source, `saved ${when(memory.created_at)}`];
    // An imported message's memory was said long before it was saved: show when.
    if (memory.said_at && Date.parse(memory.created_at) - Date.parse(memory.said_at) > 86400000) {
      parts.push(`said ${when(memory.said_at)}`);
    }
    if (memory.event_date) parts.push(`dated ${day(memory.event_date)}`);
    if (memory.updated_at && Date.parse(memory.updated_at) - Date.parse(memory.created_at) > 1000) {
      parts.push(`edited ${when(memory.updated_at)}`);
    }
    const kind = el("span", { class: "chip", text: memory.kind });
    return el("p", { class: "memory-meta" }, kind, ` ${parts.join(" · ")}`);
  }

  /** Where the memory came from: the message or call turn it was taken from, quoted (none: added by hand). */
  function origin(memory) {
    const from = memory.origin;
    if (!from) return null;
    const who = from.is_user ? "you" : from.speaker === "avatar" ? "your avatar" : from.speaker;
    const where = from.source === "import" ? `a message from ${who} in “${from.thread}”` : `what ${who} said in a conversation`;
    return el("p", { class: "memory-origin" }, `From ${where}, ${when(from.said_at)}: `,
      el("q", { text: from.text }));
  }

  /** One memory's list item; its buttons edit and forget it. */
  function item(memory) {
    const textId = `memory-text-${++state.ids}`;
    const li = el("li", { class: "memory", "data-id": memory.id });
    const render = (m) => {
      const edit = el("button", { class: "secondary-button small", type: "button", text: "Edit",
        "aria-describedby": textId, on: { click: () => editing(m) } });
      const forget = el("button", { class: "secondary-button small", type: "button", text: "Delete",
        "aria-describedby": textId, on: { click: () => confirmForget(m, li, forget) } });
      li.replaceChildren(...[el("p", { class: "memory-text", id: textId, text: m.text }), meta(m), origin(m),
        el("div", { class: "memory-actions" }, edit, forget)].filter(Boolean));
      return edit;
    };
    const editing = (m) => {
      const boxId = `${textId}-edit`;
      const box = el("textarea", { id: boxId, rows: 3, required: true, maxLength: 2000, value: m.text });
      const problemLine = el("p", { class: "error", role: "alert" });
      const cancel = el("button", { class: "secondary-button small", type: "button", text: "Cancel",
        on: { click: () => render(m).focus() } });
      const save = el("button", { class: "primary small", type: "submit", text: "Save" });
      const form = el("form", { class: "memory-edit" }, el("label", { htmlFor: boxId, text: "Memory text" }), box,
        el("div", { class: "memory-actions" }, save, cancel), problemLine);
      box.addEventListener("keydown", (e) => {
        if (e.key === "Escape") { e.preventDefault(); render(m).focus(); }
      });
      form.addEventListener("submit", async (e) => {
        e.preventDefault();
        const text = box.value.trim();
        if (!text) {
          problemLine.textContent = "A memory cannot be empty. To make the avatar forget it, use Delete.";
          return;
        }
        if (text === m.text) { render(m).focus(); return; }
        form.setAttribute("aria-busy", "true");
        try {
          const updated = await api(`/v1/memories/${m.id}`, { method: "PATCH", body: JSON.stringify({ text }) });
          focusIfIdle(render(updated)); // the form that had focus is gone: its Edit button takes it
          status("Memory updated.");
        } catch (err) {
          problemLine.textContent = `Not saved: ${problem(err)}`;
        } finally {
          form.removeAttribute("aria-busy");
        }
      });
      li.replaceChildren(form);
      box.focus();
    };
    render(memory);
    return li;
  }

  /**
   * Asks in the dialog, then forgets ``memory``: focus then moves to the next memory (or the list's heading);
   * kept, it goes back to the ``opener`` button.
   */
  function confirmForget(memory, li, opener) {
    const dialog = $("memory-confirm");
    $("memory-confirm-text").textContent = memory.text;
    dialog.returnValue = "";
    state.pending = { memory, li, opener };
    dialog.showModal();
  }

  $("memory-confirm").addEventListener("close", async () => {
    const dialog = $("memory-confirm");
    const pending = state.pending;
    state.pending = null;
    if (!pending) return;
    const { memory, li, opener } = pending;
    if (dialog.returnValue !== "forget") { opener.focus(); return; }
    try {
      await api(`/v1/memories/${memory.id}`, { method: "DELETE" });
    } catch (err) {
      if (!(err instanceof ApiError && err.status === 404)) { // 404: already gone, as wanted
        error(`Not deleted: ${problem(err)}`);
        focusIfIdle(opener, li);
        return;
      }
    }
    const next = li.nextElementSibling || li.previousElementSibling;
    const hadFocus = li.contains(document.activeElement); // the dialog gave focus back to the Delete button
    li.remove();
    state.shown -= 1;
    describe();
    status("Memory forgotten.");
    if (hadFocus) focusIfIdle(next?.querySelector("button") || $("memories-title"));
  });

  async function load({ more = false } = {}) {
    const ticket = ++state.ticket;
    error("");
    list.setAttribute("aria-busy", "true");
    try {
      let rows;
      if (state.mode === "search") {
        const params = new URLSearchParams({ q: state.query, limit: String(SEARCH_LIMIT) });
        ({ data: rows } = await api(`/v1/memories/search?${params}`));
        if (ticket !== state.ticket) return;
        state.next = null;
      } else {
        const params = new URLSearchParams({ limit: String(PAGE) });
        if (more && state.next) params.set("cursor", state.next);
        const page = await api(`/v1/memories?${params}`);
        if (ticket !== state.ticket) return;
        rows = page.data;
        state.next = page.has_more ? page.next_cursor : null;
      }
      const items = rows.map(item);
      if (more) list.append(...items);
      else list.replaceChildren(...items);
      state.shown = more ? state.shown + items.length : items.length;
      describe();
      if (more) focusIfIdle(items[0]?.querySelector("button"), $("memories-more"));
    } catch (err) {
      if (ticket === state.ticket) error(problem(err));
    } finally {
      if (ticket === state.ticket) list.removeAttribute("aria-busy");
    }
  }

  $("memory-search").addEventListener("submit", (e) => {
    e.preventDefault();
    const query = $("memory-q").value.trim();
    state.mode = query ? "search" : "list";
    state.query = query;
    load();
  });
  $("memory-q").addEventListener("search", () => { // the field's clear (×) button
    if (!$("memory-q").value && state.mode === "search") $("memories-all").click();
  });
  $("memories-all").addEventListener("click", () => {
    $("memory-q").value = "";
    state.mode = "list";
    state.query = "";
    load().then(() => focusIfIdle($("memory-q"), $("memories-all")));
  });
  $("memories-more").addEventListener("click", () => load({ more: true }));
  $("memories-add-jump").addEventListener("click", () => { // on a phone the form is below the list
    $("memory-add").scrollIntoView({ block: "center" });
    $("memory-new").focus();
  });

  $("memory-add").addEventListener("submit", async (e) => {
    e.preventDefault();
    const text = $("memory-new").value.trim();
    const kind = $("memory-kind").value;
    $("memory-add-error").textContent = "";
    if (!text) { $("memory-add-error").textContent = "Write what your avatar should remember."; return; }
    const generation = state.generation;
    try {
      const memory = await api("/v1/memories", { method: "POST", body: JSON.stringify({ text, kind }) });
      if (generation !== state.generation) return; // signed out meanwhile
      $("memory-new").value = "";
      // The newest memory heads the full list: reload it (a list request sent before this answer, still on
      // its way, would otherwise replace the list without it).
      $("memory-q").value = "";
      state.mode = "list";
      state.query = "";
      await load();
      if (generation === state.generation) status(`Remembered: “${memory.text}”.`);
    } catch (err) {
      $("memory-add-error").textContent = `Not saved: ${problem(err)}`;
    }
  });

  return {
    show: () => load(),
    reset() {
      state.ticket += 1;
      state.generation += 1;
      state.mode = "list";
      state.query = "";
      state.next = null;
      state.shown = 0;
      if ($("memory-confirm").open) { state.pending = null; $("memory-confirm").close(); }
      list.replaceChildren();
      $("memory-q").value = "";
      $("memory-new").value = "";
      $("memory-add-error").textContent = "";
      status("");
      error("");
      $("memories-all").hidden = $("memories-more").hidden = true;
    },
  };
}
