// The Import screen: upload exported histories, follow each job's progress, show its report, list past imports.
//
// Each chosen file is one `ImportRun` (one list item): it uploads the file (`POST /v1/imports`, raw body, with
// upload progress), then follows `GET /v1/imports/{id}/events` with the fetch-based SSE reader until the job's
// `done` or `failed` event, and shows the report or the error. Files go one after another: the server runs one
// import at a time anyway, and the user reads the reports in the order they chose the files. When the error
// says the name given is not in the chat, the participants it lists are offered as one-click retries. What
// happened is kept as `window.somaImport` for the tests (like `window.somaCall`).
import { ApiError, api, uploadFile } from "./api.js";
import { count, el, focusIfIdle, plural, size, when } from "./dom.js";
import { openEvents } from "./sse.js";

const $ = (id) => document.getElementById(id);
const FORMAT_NAMES = {
  whatsapp: "WhatsApp chat",
  telegram: "Telegram export",
  generic: "Messages (JSON/CSV)",
  notes: "Notes",
  meta_messages: "Facebook/Instagram messages",
  meta_posts: "Facebook/Instagram posts",
  twitter: "X (Twitter) posts",
};
const SKIP_REASONS = {
  system: "system notices",
  deleted: "deleted messages",
  empty: "empty",
  bad_date: "unreadable dates",
  bad_record: "unreadable entries",
  retweet: "reposts of others",
};
const STATUS_NAMES = { queued: "Waiting", running: "Importing", done: "Imported", failed: "Failed" };
const PARTICIPANTS = /its participants are: (.+)$/s;
const PARTICIPANT = /(.+?) \((\d+)\)(?:, |$)/gy;
const FOLLOW_RETRIES = 5; // reconnects of a dropped progress stream (1, 2, 4, 8, 16 s apart)
const IDLE_MS = 45_000; // the server comments every 15 s: this much silence is a dead connection
const MAX_EVENTS = 2000; // per run, in window.somaImport
const HISTORY_LIMIT = 50;
const NAME_KEY = "soma-import-me:"; // + user id: the name last imported with, per account on this device

/** The participants an import error lists ("… its participants are: Ana (3), Me (1)"): [{name, messages}]. */
export function participantsIn(error) {
  const listed = PARTICIPANTS.exec(error || "");
  if (!listed) return [];
  const found = [];
  PARTICIPANT.lastIndex = 0;
  for (let m = PARTICIPANT.exec(listed[1]); m; m = PARTICIPANT.exec(listed[1])) {
    found.push({ name: m[1], messages: Number(m[2]) });
  }
  return found;
}

/** "12 skipped (10 system notices, 2 deleted messages)". */
function skippedText(row) {
  const reasons = Object.entries(row.skip_reasons || {})
    .filter(([, n]) => n > 0)
    .map(([reason, n]) => `${count(n)} ${SKIP_REASONS[reason] || reason.replaceAll("_", " ")}`);
  return reasons.length ? `${count(row.skipped)} (${reasons.join(", ")})` : count(row.skipped);
}

/** The report of a finished import as a description list. */
function reportList(row) {
  const rows = [
    ["Messages read", count(row.read)],
    ["New", count(row.created)],
    ["Skipped", skippedText(row)],
    ["Memories created", count(row.memories)],
  ];
  const pairs = rows.flatMap(([term, value]) => [el("dt", { text: term }), el("dd", { text: value })]);
  return el("dl", { class: "report" }, ...pairs);
}

/** What to tell the user when an upload or its progress stream failed, and whether trying again can help. */
function failureOf(error, file) {
  if (error instanceof ApiError) {
    switch (error.status) {
      case 413:
        return {
          text: `“${file.name}” (${size(file.size)}) is larger than this server accepts. Split the export into `
            + "smaller files, or ask whoever runs your Soma server to raise SOMA_MEDIA_MAX_BYTES.",
          retry: false,
        };
      case 429:
        if (error.code === "imports_quota") {
          return { text: "You have as many imports in progress as this server allows one person. Try again when "
            + "one of them has finished.", retry: true };
        }
        return { text: "Your server is busy: too many imports are waiting. Try again when they have finished.",
          retry: true };
      case 401:
        return { text: "Your sign-in has expired. Sign in again, then import the file.", retry: false };
      case 403:
        return { text: "This sign-in may not import files (it needs the memories:write permission).", retry: false };
      default:
        return { text: error.message, retry: error.status >= 500 };
    }
  }
  return { text: "No connection to your Soma server: the file was not imported. Check the connection and try again.",
    retry: true };
}

function sleep(ms, signal) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(resolve, ms);
    signal.addEventListener("abort", () => { clearTimeout(timer); reject(signal.reason); }, { once: true });
  });
}

let runIds = 0;

/** One file's import, shown as one item of the runs list. */
class ImportRun {
  /**
   * @param {File} file the export.
   * @param {{format: string, signal: AbortSignal, onEnd: (run: ImportRun, ok: boolean) => void}} options
   *   `onEnd` is called once per attempt that reached an end (imported, failed, or refused).
   */
  constructor(file, { format, signal, onEnd }) {
    this.file = file;
    this.format = format;
    this.signal = signal;
    this.onEnd = onEnd;
    this.id = `import-run-${++runIds}`;
    this.record = { name: file.name, me: "", status: "uploading", events: [], phases: [], final: null, reconnects: 0 };
    this.title = el("p", { class: "run-title" }, el("strong", { id: `${this.id}-name`, text: file.name }),
      el("span", { class: "muted", text: ` · ${size(file.size)}` }));
    this.bar = el("progress", { class: "run-bar", max: 1, value: 0, "aria-labelledby": `${this.id}-name` });
    this.phase = el("p", { class: "run-phase", role: "status" });
    this.detail = el("p", { class: "run-detail muted" });
    this.outcome = el("div", { class: "run-outcome" });
    // Shown while the server holds the job (waiting or running): stopping it keeps nothing of the file.
    this.stop = el("button", {
      class: "secondary-button run-stop", type: "button", text: "Stop this import", hidden: true,
      "aria-describedby": `${this.id}-name`, on: { click: () => this.cancel() },
    });
    this.item = el("li", { class: "run", id: this.id }, this.title, this.bar, this.phase, this.detail, this.stop,
      this.outcome);
  }

  setPhase(text) {
    if (this.phase.textContent === text) return;
    this.phase.textContent = text;
    this.record.phases.push(text);
  }

  setBar(value, max) {
    if (max > 0) {
      this.bar.max = max;
      this.bar.value = Math.min(value, max);
    } else {
      this.bar.removeAttribute("value"); // indeterminate: the size is not known yet
    }
  }

  /** Uploads and follows the file as participant ``me``; resolves when this attempt ended (never rejects). */
  async start(me) {
    this.me = me;
    this.importId = null;
    this.stop.hidden = true;
    this.stop.disabled = false;
    this.record.me = me;
    this.record.status = "uploading";
    this.item.setAttribute("aria-busy", "true");
    this.outcome.replaceChildren();
    this.bar.hidden = false;
    this.setBar(0, this.file.size || 1);
    this.setPhase("Uploading…");
    this.detail.textContent = `0 of ${size(this.file.size)} sent`;
    const params = new URLSearchParams({ me, name: this.file.name });
    if (this.format) params.set("format", this.format);
    let row;
    try {
      row = await uploadFile(`/v1/imports?${params}`, this.file, {
        signal: this.signal,
        onProgress: (sent, total) => {
          this.setBar(sent, total);
          const percent = Math.floor((100 * sent) / (total || 1));
          this.detail.textContent = `${size(sent)} of ${size(total)} sent (${percent}%)`;
        },
      });
      this.importId = row.id;
      this.record.id = row.id;
      this.stop.hidden = false;
      const final = await this.follow();
      this.finish(final);
    } catch (error) {
      if (this.signal.aborted) return;
      if (this.importId) { // uploaded, then the progress stream could not be followed: the job goes on
        this.refused(`Lost touch with this import (${error.message}). Your server goes on with it: its result `
          + "appears under Past imports.", false, "Progress unknown");
      } else {
        const failure = failureOf(error, this.file);
        this.refused(failure.text, failure.retry);
      }
    }
  }

  /** Reads the job's events to its final one, reconnecting a dropped stream; returns the final import row. */
  async follow() {
    const path = `/v1/imports/${this.importId}/events`;
    for (let attempt = 0; ; attempt += 1) {
      try {
        for await (const { event, data } of openEvents(path, { signal: this.signal, idleMs: IDLE_MS })) {
          const body = JSON.parse(data);
          if (this.record.events.length < MAX_EVENTS) this.record.events.push({ event, data: body });
          if (event === "progress") this.progress(body);
          else if (event === "done" || event === "failed") return body;
        }
      } catch (error) {
        if (this.signal.aborted) throw error;
        if (error instanceof ApiError && error.status < 500 && error.status !== 429) throw error;
      }
      if (attempt >= FOLLOW_RETRIES) throw new Error("lost the connection to the server");
      this.record.reconnects += 1;
      this.detail.textContent = "Connection lost; reconnecting…";
      await sleep(1000 * 2 ** attempt, this.signal);
    }
  }

  progress({ status, read, position, size: total }) {
    this.record.status = status;
    if (status === "queued") {
      this.setBar(0, 0);
      this.setPhase("Waiting for the server to start it…");
      this.detail.textContent = "Uploaded. Another import is running first.";
      return;
    }
    this.setBar(position, total);
    const done = total > 0 && position >= total;
    this.setPhase(done ? "Creating memories…" : "Reading messages…");
    const percent = total > 0 ? Math.floor((100 * position) / total) : 0;
    const where = total > 0 ? ` · ${size(position)} of ${size(total)} (${percent}%)` : "";
    this.detail.textContent = `${plural(read, "message")} read${where}`;
  }

  /** Asks the server to stop the job; its final `failed` event (with the reason) then ends `follow`. */
  async cancel() {
    if (!this.importId) return;
    this.stop.disabled = true;
    this.detail.textContent = "Stopping…";
    try {
      await api(`/v1/imports/${this.importId}/cancel`, { method: "POST", signal: this.signal });
    } catch (error) {
      if (this.signal.aborted) return;
      this.stop.disabled = false; // 409: it ended meanwhile, and its final event says how
      if (!(error instanceof ApiError && error.status === 409)) this.detail.textContent = `Could not stop it: ${error.message}`;
    }
  }

  finish(row) {
    this.stop.hidden = true;
    this.record.status = row.status || "failed";
    this.record.final = row;
    this.item.removeAttribute("aria-busy");
    this.bar.hidden = true;
    if (row.status === "done") {
      this.setPhase("Imported");
      this.detail.textContent = `Read as: ${FORMAT_NAMES[row.format] || row.format}.`;
      this.outcome.replaceChildren(reportList(row));
      this.onEnd(this, true);
      return;
    }
    this.setPhase("Not imported");
    this.detail.textContent = "Nothing of this file was kept.";
    const error = row.error || "the import stopped";
    const people = participantsIn(error);
    const reason = error[0].toUpperCase() + error.slice(1) + (error.endsWith(".") ? "" : ".");
    this.outcome.replaceChildren(el("p", { class: "error", role: "alert", text: reason }));
    if (people.length) this.offerParticipants(people);
    this.onEnd(this, false);
  }

  /** The upload was refused or never arrived (or its job was lost from sight): say why, and offer to try
   * again when that can help. */
  refused(text, retry, phase = "Not imported") {
    this.stop.hidden = true;
    this.record.status = "refused";
    this.item.removeAttribute("aria-busy");
    this.bar.hidden = true;
    this.setPhase(phase);
    this.detail.textContent = "";
    const again = retry && el("button", {
      class: "secondary-button", type: "button", text: "Try again", on: { click: () => this.start(this.me) },
    });
    this.outcome.replaceChildren(el("p", { class: "error", role: "alert", text }), again);
    this.onEnd(this, false);
  }

  offerParticipants(people) {
    const label = el("p", {
      id: `${this.id}-who`, class: "choose", text: "Which one is you? Choose your name to import the file again:",
    });
    const buttons = people.map(({ name, messages }) => el("button", {
      class: "choice", type: "button",
      on: { click: () => { $("import-me").value = name; this.start(name); } },
    }, name, el("span", { class: "choice-count", text: ` (${plural(messages, "message")})` })));
    const group = el("div", { class: "choices", role: "group", "aria-labelledby": label.id }, ...buttons);
    this.outcome.append(label, group);
    focusIfIdle(buttons[0], this.item, $("import-submit")); // the answer may come long after: focus only if free
  }
}

/** One past import (from `GET /v1/imports`). */
function historyItem(row) {
  const status = el("span", { class: `badge status-${row.status}`, text: STATUS_NAMES[row.status] || row.status });
  const meta = [FORMAT_NAMES[row.format] || row.format, when(row.created_at, { withTime: true }),
    row.bytes_total ? size(row.bytes_total) : null].filter(Boolean).join(" · ");
  let body = null;
  if (row.status === "done") body = reportList(row);
  else if (row.status === "failed") body = el("p", { class: "error", text: row.error || "failed" });
  return el("li", { class: "past" }, el("p", { class: "run-title" }, el("strong", { text: row.name }), " ", status),
    el("p", { class: "muted", text: meta }), body);
}

/**
 * Sets up the Import screen once. Returns `signIn(me)` (after sign-in: who imports, the name to prefill),
 * `show()` (the screen opened: refresh the past imports) and `reset()` (sign-out: stop everything, forget it all).
 */
export function setUpImports() {
  const state = { user: null, controller: new AbortController(), busy: false, runs: [] };
  window.somaImport = { get runs() { return state.runs.map((r) => r.record); } };

  const remembered = () => (state.user?.id ? localStorage.getItem(NAME_KEY + state.user.id) : null);
  const remember = (name) => { if (state.user?.id) localStorage.setItem(NAME_KEY + state.user.id, name); };

  async function loadHistory() {
    if (!state.user) return;
    $("import-history-error").textContent = "";
    const seenBy = state.user;
    try {
      const { data } = await api(`/v1/imports?limit=${HISTORY_LIMIT}`);
      if (state.user !== seenBy) return; // signed out meanwhile: not this page's data any more
      $("import-history").replaceChildren(...data.map(historyItem));
      $("import-history-empty").hidden = data.length > 0;
    } catch (error) {
      if (state.user !== seenBy) return;
      $("import-history-error").textContent = `Past imports could not be loaded: ${error.message}`;
    }
  }

  function onEnd(run, ok) {
    if (ok) remember(run.me);
    loadHistory();
  }

  $("import-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    if (state.busy) return;
    const files = [...$("import-files").files];
    const me = $("import-me").value.trim();
    $("import-error").textContent = "";
    if (!files.length) {
      $("import-error").textContent = "Choose one or more export files first.";
      $("import-files").focus();
      return;
    }
    if (!me) {
      $("import-error").textContent = "Say what your name is in the chat, so your own messages are known.";
      $("import-me").focus();
      return;
    }
    const { signal } = state.controller;
    const runs = files.map((file) => new ImportRun(file, { format: $("import-format").value, signal, onEnd }));
    state.runs.push(...runs);
    $("import-runs").prepend(...runs.map((r) => r.item).reverse());
    state.busy = true;
    $("import-submit").disabled = true;
    $("import-submit").textContent = files.length > 1 ? `Importing ${files.length} files…` : "Importing…";
    try {
      for (const run of runs) {
        if (signal.aborted) break;
        await run.start(me);
      }
    } finally {
      state.busy = false;
      $("import-submit").disabled = false;
      $("import-submit").textContent = "Import";
    }
    if (!signal.aborted) $("import-form").reset();
    $("import-me").value = remembered() || me;
  });

  return {
    signIn(me) {
      state.user = me;
      $("import-me").value = remembered() || me.display_name || "";
    },
    show: loadHistory,
    reset() {
      state.controller.abort(new DOMException("signed out", "AbortError"));
      state.controller = new AbortController();
      state.user = null;
      state.runs = [];
      $("import-form").reset();
      $("import-me").value = "";
      $("import-error").textContent = $("import-history-error").textContent = "";
      $("import-runs").replaceChildren();
      $("import-history").replaceChildren();
      $("import-history-empty").hidden = true;
    },
  };
}
