// The inbox: the avatar's own messages ("Messages from your avatar" on the Call screen) and the unread badge.
//
// Signed in, the page lists the newest messages (`GET /v1/notifications`), then stays subscribed to
// `GET /v1/events` (`NotificationStream`: sse.js, so the bearer token goes in a header). New ones appear at the
// top as they are sent and are announced to screen readers; the server replays on connect whatever is unread,
// or with `Last-Event-ID` whatever came after the last one this page saw, so a dropped stream loses nothing.
// Sign-out stops the stream. A message counts as read once it was on screen for `SEEN_MS` while the page was
// visible, or when clicked, or with "Mark all as read". With the user's permission (asked only from the
// button), a message that arrives while the page is in the background also shows as a system notification
// through the service worker. What happened is kept as `window.somaInbox` for the tests.
import { ApiError, api } from "./api.js";
import { el, focusIfIdle, plural, when } from "./dom.js";
import { SseParser, openEvents } from "./sse.js";

const $ = (id) => document.getElementById(id);
const LIST_LIMIT = 50;
const MAX_ITEMS = 100; // kept and shown: past it the oldest read ones go first
const MAX_LOG = 500; // entries of window.somaInbox.events and .reads
const IDLE_MS = 45_000; // the server comments every 15 s: this much silence is a dead connection
const RETRY_FIRST_MS = 1000;
const RETRY_MAX_MS = 60_000;
const SEEN_MS = 1000; // on screen this long (half of it at least, the page visible): read
const KIND_NAMES = {
  greeting: "Good morning",
  checkin: "Checking in",
  on_this_day: "On this day",
  milestone: "Milestone",
};

/** Waits ``ms``, or less when ``signal`` aborts or one of the ``wake`` set's resolvers is called. */
function sleep(ms, signal, wake) {
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      signal.removeEventListener("abort", done);
      wake.delete(done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal.addEventListener("abort", done, { once: true });
    wake.add(done);
  });
}

/**
 * Keeps `GET /v1/events` open between `start()` and `stop()`, handing each message to ``onNotification``.
 *
 * A stream that ends or breaks is opened again, with `Last-Event-ID` once an event was seen: after the
 * server's `retry` pause (1 s if it sent none) when it had been open, after a pause that doubles (1 s up to a minute, with jitter)
 * while it cannot be opened, at once when the browser comes back online. It gives up only when the server
 * refuses the token (401/403): ``onState("refused")``. ``onState`` also gets "connecting", "live" and
 * "retrying" (with how many attempts in a row failed).
 */
export class NotificationStream {
  constructor({ onNotification, onState = () => {} }) {
    this.onNotification = onNotification;
    this.onState = onState;
    this.controller = null;
    this.lastEventId = "";
    this.connects = 0;
    this.wake = new Set(); // resolvers of the pause before a reconnect
    window.addEventListener("online", () => this.wakeUp());
  }

  /** Opens the stream (a no-op while it runs); it starts afresh: every unread message is replayed. */
  start() {
    if (this.controller) return;
    this.controller = new AbortController();
    this.lastEventId = "";
    this.run(this.controller.signal);
  }

  /** Closes the stream; nothing is delivered after this returns. */
  stop() {
    this.controller?.abort();
    this.controller = null;
    this.wakeUp();
  }

  wakeUp() {
    const waiting = [...this.wake];
    this.wake.clear();
    for (const resolve of waiting) resolve();
  }

  async run(signal) {
    let failures = 0;
    while (!signal.aborted) {
      let opened = false;
      let retryMs = null;
      const parser = new SseParser();
      try {
        this.onState("connecting");
        const events = openEvents("/v1/events", {
          signal, lastEventId: this.lastEventId, idleMs: IDLE_MS, parser,
          onOpen: () => { opened = true; failures = 0; this.connects += 1; this.onState("live"); },
        });
        for await (const { event, data, id } of events) {
          if (signal.aborted) return;
          if (event === "notification") this.deliver(data);
          if (id) this.lastEventId = id;
        }
      } catch (error) {
        if (signal.aborted) return;
        if (error instanceof ApiError && (error.status === 401 || error.status === 403)) {
          if (this.controller?.signal === signal) this.controller = null;
          this.onState("refused");
          return;
        }
        if (error instanceof ApiError && error.status === 400) this.lastEventId = ""; // not an id it knows
        if (error instanceof ApiError && error.status === 429) retryMs = RETRY_MAX_MS / 2;
      }
      if (signal.aborted) return;
      if (!opened) failures += 1;
      const backoff = Math.min(RETRY_FIRST_MS * 2 ** Math.max(failures - 1, 0), RETRY_MAX_MS);
      const pause = retryMs ?? (opened ? parser.retry ?? RETRY_FIRST_MS : backoff);
      this.onState("retrying", failures);
      await sleep(pause * (0.5 + Math.random() / 2), signal, this.wake);
    }
  }

  deliver(data) {
    let note;
    try {
      note = JSON.parse(data);
    } catch {
      return; // not this page's to fix: the next one will do
    }
    if (note && typeof note.id === "string" && typeof note.text === "string") this.onNotification(note);
  }
}

/** Whether this browser can show a system notification through the service worker. */
function canNotify() {
  return "Notification" in window && "serviceWorker" in navigator && window.isSecureContext;
}

/**
 * Sets up the inbox once. Returns `signIn()` (list the messages, then follow new ones) and `reset()`
 * (sign-out: stop following, forget everything shown).
 */
export function setUpInbox() {
  const list = $("messages");
  const entries = new Map(); // id → {note, li, timer}
  const onScreen = new Set(); // ids whose item is in view
  const record = { events: [], reads: [], state: "stopped" };
  const state = { generation: 0, signedIn: false, listed: false };
  const stream = new NotificationStream({ onNotification: (note) => arrived(note), onState: streamState });
  window.somaInbox = {
    get items() {
      return ordered().map(({ note }) => ({ id: note.id, kind: note.kind, text: note.text, read: !!note.read_at }));
    },
    get events() { return record.events; },
    get reads() { return record.reads; },
    get state() { return record.state; },
    get connects() { return stream.connects; },
  };

  const seen = new IntersectionObserver((observed) => {
    for (const { target, isIntersecting } of observed) {
      const entry = entries.get(target.dataset.id);
      if (!entry) continue;
      if (isIntersecting) {
        onScreen.add(entry.note.id);
        arm(entry);
      } else {
        onScreen.delete(entry.note.id);
        clearTimeout(entry.timer);
        entry.timer = null;
      }
    }
  }, { threshold: 0.5 });

  /** Starts ``entry``'s "seen" timer; it marks the message read if it is still in view, the page visible. */
  function arm(entry) {
    if (entry.note.read_at || entry.timer) return;
    entry.timer = setTimeout(() => {
      entry.timer = null;
      if (onScreen.has(entry.note.id) && document.visibilityState === "visible") markRead(entry.note.id, "seen");
    }, SEEN_MS);
  }

  document.addEventListener("visibilitychange", () => {
    if (document.visibilityState !== "visible") return;
    for (const id of onScreen) {
      const entry = entries.get(id);
      if (entry) arm(entry);
    }
  });

  function log(into, item) {
    into.push(item);
    if (into.length > MAX_LOG) into.shift();
  }

  function ordered() {
    return [...entries.values()].sort((a, b) => newer(b.note, a.note));
  }

  /** Positive when ``a`` is newer than ``b`` (the server's order: time, then id). The server's timestamps
   * carry microseconds, which `Date.parse` drops: equal milliseconds fall back to the text (one format). */
  function newer(a, b) {
    const [x, y] = [a.created_at, b.created_at];
    return Date.parse(x) - Date.parse(y) || (x > y ? 1 : x < y ? -1 : 0) || (a.id > b.id ? 1 : -1);
  }

  /** One message's list item; a click on it marks it read. */
  function itemOf(note) {
    return el("li", { class: "note", "data-id": note.id, on: { click: () => markRead(note.id, "clicked") } },
      el("p", { class: "note-head" },
        el("span", { class: "chip", text: KIND_NAMES[note.kind] || String(note.kind).replaceAll("_", " ") }), " ",
        el("time", { class: "note-time", dateTime: note.created_at, text: when(note.created_at, { withTime: true }) }),
        el("span", { class: "tag note-new", text: "New" })),
      el("p", { class: "note-text", text: note.text }));
  }

  function paint(entry) {
    const unread = !entry.note.read_at;
    entry.li.classList.toggle("unread", unread);
    entry.li.querySelector(".note-new").hidden = !unread;
  }

  /** Adds ``note`` in its place (newest first); false when it is already listed. */
  function add(note) {
    if (entries.has(note.id)) return false;
    const entry = { note: { ...note }, li: itemOf(note), timer: null };
    const before = ordered().find((other) => newer(note, other.note) > 0);
    entries.set(note.id, entry);
    list.insertBefore(entry.li, before ? before.li : null);
    paint(entry);
    seen.observe(entry.li);
    while (entries.size > MAX_ITEMS) {
      const all = ordered();
      remove((all.findLast((e) => e.note.read_at) || all.at(-1)).note.id);
    }
    return true;
  }

  function remove(id) {
    const entry = entries.get(id);
    if (!entry) return;
    clearTimeout(entry.timer);
    seen.unobserve(entry.li);
    entry.li.remove();
    entries.delete(id);
    onScreen.delete(id);
  }

  /** The unread count on the nav's Call link, in the inbox, and the "Mark all as read" button. */
  function summarize() {
    const unread = [...entries.values()].filter((e) => !e.note.read_at).length;
    const badge = $("nav-unread");
    badge.textContent = unread > 99 ? "99+" : String(unread);
    badge.hidden = unread === 0;
    const words = unread ? `${plural(unread, "unread message")} from your avatar` : "";
    $("nav-unread-text").textContent = words;
    $("inbox-summary").textContent = unread ? plural(unread, "unread message") : "";
    $("inbox-summary").hidden = unread === 0;
    $("inbox-read-all").hidden = unread === 0;
    $("messages-empty").hidden = entries.size > 0;
  }

  /** A message from the stream: listed if new (and then announced, and shown by the system if allowed). */
  function arrived(note) {
    const fresh = add(note);
    log(record.events, { id: note.id, kind: note.kind, fresh });
    if (!fresh) return;
    summarize();
    if (note.read_at) return;
    const live = $("inbox-live");
    live.textContent = `New message from your avatar: ${note.text}`;
    showBySystem(note);
  }

  function showBySystem(note) {
    if (!canNotify() || Notification.permission !== "granted" || document.visibilityState === "visible") return;
    navigator.serviceWorker.getRegistration().then((registration) => registration?.showNotification(
      "Message from your avatar",
      { body: note.text, tag: note.id, icon: "/icons/icon-192.png", data: { url: "/#/call" } },
    )).catch(() => {}); // the in-page inbox has it anyway
  }

  async function markRead(id, reason) {
    const entry = entries.get(id);
    if (!entry || entry.note.read_at) return;
    const generation = state.generation;
    entry.note.read_at = new Date().toISOString(); // at once: the badge follows the eye, the server follows
    clearTimeout(entry.timer);
    entry.timer = null;
    paint(entry);
    summarize();
    log(record.reads, { id, reason });
    try {
      await api(`/v1/notifications/${id}/read`, { method: "POST" });
    } catch (error) {
      if (generation !== state.generation) return;
      if (error instanceof ApiError && error.status === 404) {
        remove(id); // no longer on the server
      } else {
        entry.note.read_at = null;
        paint(entry);
        $("inbox-error").textContent = "Could not mark a message as read: "
          + (error instanceof ApiError ? error.message : "no connection to your Soma server.");
      }
      summarize();
    }
  }

  function streamState(name, failures = 0) {
    record.state = name;
    if (name === "live") {
      $("inbox-error").textContent = "";
      if (!state.listed) load(); // the first list failed (offline at sign-in): now it can come
    } else if (name === "retrying" && failures >= 2) {
      $("inbox-error").textContent = "Not connected to your Soma server: new messages appear when it is back.";
    } else if (name === "refused") {
      $("inbox-error").textContent = "New messages cannot be shown: sign in again.";
    }
  }

  async function load() {
    const generation = state.generation;
    try {
      const { data } = await api(`/v1/notifications?limit=${LIST_LIMIT}`);
      if (generation !== state.generation) return;
      for (const note of data) add(note);
      state.listed = true;
      $("inbox-error").textContent = "";
    } catch (error) {
      if (generation !== state.generation) return;
      $("inbox-error").textContent = "Your messages could not be loaded: "
        + (error instanceof ApiError ? error.message : "no connection to your Soma server.");
    }
    summarize();
  }

  function offerNotifications() {
    $("inbox-notify-row").hidden = !(state.signedIn && canNotify() && Notification.permission === "default");
  }

  $("inbox-read-all").addEventListener("click", () => {
    for (const entry of entries.values()) markRead(entry.note.id, "all");
    focusIfIdle(list, $("inbox-read-all"));
  });

  $("inbox-notify").addEventListener("click", async () => {
    const answer = await Notification.requestPermission(); // asked from this click only, never by itself
    offerNotifications();
    if (answer === "denied") {
      $("inbox-error").textContent = "Notifications are blocked for this page in your browser's settings.";
    }
    focusIfIdle(list, $("inbox-notify-row"));
  });

  return {
    async signIn() {
      if (state.signedIn) return;
      state.signedIn = true;
      offerNotifications();
      await load();
      if (state.signedIn) stream.start(); // after the list: what the replay adds is what the list did not have
    },
    reset() {
      stream.stop();
      state.generation += 1;
      state.signedIn = false;
      state.listed = false;
      for (const id of [...entries.keys()]) remove(id);
      record.events = [];
      record.reads = [];
      record.state = "stopped";
      $("inbox-live").textContent = "";
      $("inbox-error").textContent = "";
      summarize();
      offerNotifications();
    },
  };
}
