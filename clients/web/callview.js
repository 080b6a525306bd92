// The call screen: wires `CallSession` to the buttons, the state indicator, the meter, the captions and the
// text box, and exposes what happened as `window.somaCall` (turns, latencies, the level trace).
import { CallSession } from "./call.js";
import { MeterView, SPEECH_RMS } from "./meter.js";
import { Turns } from "./turns.js";

const $ = (id) => document.getElementById(id);
const PHASE_TEXT = { idle: "Ready to call", connecting: "Calling…", reconnecting: "Reconnecting…" };
const AVATAR_TEXT = { listening: "Listening", thinking: "Thinking…", speaking: "Speaking" };
const LATENCY_HINT = "Voice-to-voice latency appears after each reply.";
const MAX_EVENTS = 500; // event log kept for `window.somaCall.events`

/** Latency text for one turn, or "" before its reply was heard. */
function latencyText(turn) {
  const parts = [];
  if (turn.browserV2vMs !== null) parts.push(`${turn.browserV2vMs} ms voice-to-voice`);
  if (turn.serverV2vMs !== null) parts.push(`${turn.serverV2vMs} ms at the server`);
  return parts.join(" · ");
}

/** One caption line ("You" or the avatar), created once and updated in place. */
function captionLine(kind, who) {
  const line = document.createElement("p");
  line.className = `line ${kind}`;
  const name = document.createElement("span");
  name.className = "who";
  name.textContent = who;
  const text = document.createElement("span");
  text.className = "text";
  line.append(name, " ", text);
  return { line, text };
}

class Captions {
  constructor(list, empty) {
    this.list = list;
    this.empty = empty;
    this.rows = new Map();
  }

  render(turns) {
    for (const turn of turns) {
      if (!turn.userText && !turn.responseId) continue; // a false start: nothing to caption
      let row = this.rows.get(turn);
      if (!row) {
        row = this.row();
        this.rows.set(turn, row);
        this.list.append(row.item);
      }
      row.you.line.hidden = !turn.userText;
      row.you.text.textContent = turn.userText;
      row.you.line.classList.toggle("partial", !turn.userFinal);
      row.avatar.line.hidden = !turn.responseId;
      row.avatar.text.textContent = turn.replyText || (turn.done ? "" : "…");
      row.tag.hidden = !turn.interrupted;
      row.latency.textContent = latencyText(turn);
      row.latency.hidden = !row.latency.textContent;
    }
    this.empty.hidden = this.rows.size > 0;
    this.list.scrollTop = this.list.scrollHeight;
  }

  row() {
    const item = document.createElement("li");
    item.className = "turn";
    const you = captionLine("you", "You");
    const avatar = captionLine("avatar", "Soma");
    const tag = document.createElement("span");
    tag.className = "tag";
    tag.textContent = "interrupted";
    avatar.line.append(" ", tag);
    const latency = document.createElement("p");
    latency.className = "turn-latency";
    item.append(you.line, avatar.line, latency);
    return { item, you, avatar, tag, latency };
  }

  clear() {
    this.list.replaceChildren();
    this.rows.clear();
    this.empty.hidden = false;
  }
}

/** Sets up the call screen once, after sign-in. Returns `hangUp` for sign-out. */
export function setUpCallScreen() {
  const session = new CallSession($("remote-audio"));
  const captions = new Captions($("captions"), $("captions-empty"));
  const turns = new Turns(() => {
    captions.render(turns.list);
    const last = turns.list.findLast((t) => latencyText(t));
    $("latency").textContent = last ? `Last turn: ${latencyText(last)}` : LATENCY_HINT;
  });
  const meter = new MeterView($("mic-meter"));
  const orb = $("orb");
  const events = [];
  const phases = [];
  const activeResponses = new Set();
  const typedQueue = [];
  let avatarState = null;
  let quietSince = null; // the avatar's audio has been quiet since (null while audible)

  function showStatus() {
    const phase = session.phase;
    const text = phase === "connected" ? AVATAR_TEXT[avatarState] || "Connected" : PHASE_TEXT[phase];
    $("call-status").textContent = text;
    orb.dataset.state = phase === "connected" ? avatarState || "listening" : phase;
    $("stop-talking").disabled = phase !== "connected" || activeResponses.size === 0;
  }

  function sendTyped(text) {
    const item = { type: "message", role: "user", content: [{ type: "input_text", text }] };
    if (session.send({ type: "conversation.item.create", item }) && session.send({ type: "response.create" })) {
      turns.typed(text);
    } else {
      $("call-error").textContent = "The message could not be sent: the call is not connected.";
    }
  }

  session.addEventListener("phase", ({ detail }) => {
    phases.push({ t: Math.round(performance.now()), phase: detail.phase });
    if (phases.length > MAX_EVENTS) phases.shift();
    const inCall = detail.phase !== "idle";
    const hadFocus = document.activeElement;
    $("call-button").hidden = inCall;
    $("hangup-button").hidden = !inCall;
    $("mute").disabled = !inCall;
    $("say").disabled = $("say-send").disabled = detail.phase !== "connected";
    $("say").placeholder = inCall ? "Type while you talk…" : "Start a call to type";
    if (detail.phase === "connecting") {
      $("call-error").textContent = "";
      captions.clear();
      turns.reset();
    }
    if (detail.phase === "reconnecting" || detail.phase === "idle") {
      turns.abandon();
      activeResponses.clear();
      typedQueue.length = 0;
      avatarState = null;
    }
    if (detail.message) $("call-error").textContent = detail.message;
    if (!inCall) meter.show(0);
    // The pressed button disappears: keep keyboard focus on its counterpart.
    if (hadFocus === $("call-button") && inCall) $("hangup-button").focus();
    if (hadFocus === $("hangup-button") && !inCall) $("call-button").focus();
    showStatus();
  });

  session.addEventListener("server-event", ({ detail: { event, at } }) => {
    events.push({ t: Math.round(at), type: event.type });
    if (events.length > MAX_EVENTS) events.shift();
    turns.handle(event, session.sampler, at);
    switch (event.type) {
      case "soma.turn_state":
        avatarState = event.state;
        break;
      case "response.created":
        activeResponses.add(event.response?.id);
        break;
      case "response.done":
        activeResponses.delete(event.response?.id);
        if (activeResponses.size === 0 && typedQueue.length) sendTyped(typedQueue.splice(0).join("\n"));
        break;
      case "error":
        $("call-error").textContent = event.error?.message || "The server reported an error.";
        break;
      default:
        break;
    }
    showStatus();
  });

  session.addEventListener("sample", ({ detail }) => {
    const loud = detail.bot > SPEECH_RMS;
    turns.sample(detail.t, loud);
    if (loud) quietSince = null;
    else if (quietSince === null) quietSince = detail.t;
    meter.show(session.muted ? 0 : detail.mic);
    orb.style.setProperty("--level", Math.min(1, Math.sqrt(detail.bot / 0.3)).toFixed(3));
  });

  $("call-button").addEventListener("click", () => session.start());
  $("hangup-button").addEventListener("click", () => session.hangUp());
  $("mute").addEventListener("click", () => {
    session.setMuted(!session.muted);
    $("mute").setAttribute("aria-pressed", String(session.muted));
  });
  $("stop-talking").addEventListener("click", () => session.send({ type: "response.cancel" }));
  $("say-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const text = $("say").value.trim();
    if (!text) return;
    $("say").value = "";
    if (activeResponses.size) {
      // One response at a time: the avatar stops, then answers the typed message.
      typedQueue.push(text);
      session.send({ type: "response.cancel" });
    } else {
      sendTyped(text);
    }
  });
  window.addEventListener("pagehide", () => session.hangUp());

  const lastAudibleAt = () => (quietSince === null ? null : turns.playing?.lastAudioAt ?? null);
  window.somaCall = {
    get phase() { return session.phase; },
    get avatarState() { return avatarState; },
    get muted() { return session.muted; },
    get sessionId() { return session.sessionId; },
    get callsPlaced() { return session.callsPlaced; },
    /** The live call's URL (DELETE hangs up), null between calls. */
    get callUrl() { return session.connection?.location ?? null; },
    get turns() {
      return turns.list.filter((t) => t.userText || t.responseId).map((t) => ({ ...t }));
    },
    /** The last audible sample of the avatar's voice, while it is quiet (null while it is audible). */
    get audioStoppedAt() { return lastAudibleAt(); },
    /** {t, mic, bot} RMS levels every 20 ms (the last minute). */
    get levelTrace() { return session.sampler.trace.slice(); },
    get events() { return events.slice(); },
    get phases() { return phases.slice(); },
  };
  showStatus();
  return { hangUp: () => session.phase !== "idle" && session.hangUp() };
}
