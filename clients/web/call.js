// A call to the avatar over WebRTC: the microphone out, the avatar's voice in, events on the `oai-events`
// data channel. `CallSession` owns the microphone, the audio analysis and the current `Connection`, and
// places a new connection by itself when the network drops (reconnecting…).
//
// Signalling is the OpenAI Realtime WebRTC shape: POST the complete offer (no trickle ICE) as
// application/sdp to /v1/realtime/calls, get the answer back (201) and a Location to DELETE on hang-up.
import { auth, errorFrom } from "./api.js";
import { LevelMonitor, LevelSampler } from "./meter.js";

export const MIC_CONSTRAINTS = { audio: { echoCancellation: true, noiseSuppression: true, autoGainControl: true } };
const CALLS_URL = "/v1/realtime/calls";
const ICE_GATHER_MS = 2000; // send what was gathered by then; host candidates come in milliseconds
const RECONNECT_AFTER_MS = 3000; // a connection "disconnected" or "failed" this long is replaced
const RETRY_DELAYS_MS = [0, 1000, 2000, 4000, 8000]; // then give up and show the error

/** Resolves when ICE gathering is complete, or after `limitMs`. */
function gathered(pc, limitMs) {
  if (pc.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      pc.removeEventListener("icegatheringstatechange", check);
      resolve();
    };
    const check = () => pc.iceGatheringState === "complete" && done();
    const timer = setTimeout(done, limitMs);
    pc.addEventListener("icegatheringstatechange", check);
  });
}

/** One peer connection to the server. Create, `open()`, then `close()` exactly once. */
class Connection {
  /**
   * @param {MediaStream} mic the microphone stream (kept by the session across connections).
   * @param {{onEvent, onTrack, onTrouble, onRecovered}} handlers
   */
  constructor(mic, handlers) {
    this.handlers = handlers;
    this.location = null;
    this.closed = false;
    this.pc = new RTCPeerConnection({ iceServers: [] });
    for (const track of mic.getAudioTracks()) this.pc.addTrack(track, mic);
    // The channel must exist before the offer so that the offer negotiates SCTP.
    this.channel = this.pc.createDataChannel("oai-events");
    this.channel.addEventListener("message", (e) => {
      let event;
      try {
        event = JSON.parse(e.data);
      } catch {
        return;
      }
      handlers.onEvent(event, performance.now());
    });
    this.channel.addEventListener("close", () => this.closed || handlers.onTrouble("channel closed"));
    this.pc.addEventListener("track", (e) => handlers.onTrack(e.streams[0] || new MediaStream([e.track])));
    this.pc.addEventListener("connectionstatechange", () => {
      if (this.closed) return;
      const state = this.pc.connectionState;
      if (state === "connected") handlers.onRecovered();
      else if (state === "disconnected" || state === "failed") handlers.onTrouble(state);
    });
  }

  /** Places the call. Throws `ApiError` (with the server's message) when the server refuses it. */
  async open(sessionId) {
    await this.pc.setLocalDescription(await this.pc.createOffer());
    await gathered(this.pc, ICE_GATHER_MS);
    const params = new URLSearchParams({ model: "soma" });
    // Continues the same conversation (its context) after a reconnect.
    if (sessionId) params.set("session_id", sessionId);
    const response = await fetch(`${CALLS_URL}?${params}`, {
      method: "POST",
      headers: { "Content-Type": "application/sdp", Authorization: `Bearer ${auth.token}` },
      body: this.pc.localDescription.sdp,
    });
    if (response.status !== 201) throw await errorFrom(response);
    this.location = response.headers.get("Location");
    const sdp = await response.text();
    if (this.closed) return;
    await this.pc.setRemoteDescription({ type: "answer", sdp });
  }

  /** Sends one client event; false when the channel is not open. */
  send(event) {
    if (this.channel.readyState !== "open") return false;
    this.channel.send(JSON.stringify(event));
    return true;
  }

  /** Hangs up: DELETE the call (best effort; the server also ends calls whose peer goes away) and close. */
  close() {
    if (this.closed) return;
    this.closed = true;
    if (this.location) {
      fetch(this.location, {
        method: "DELETE", keepalive: true, headers: { Authorization: `Bearer ${auth.token}` },
      }).catch(() => {});
    }
    this.pc.close();
  }
}

/**
 * A call from "Call" to "Hang up", across reconnections. Dispatches:
 * - `phase` (detail: {phase, message}): idle | connecting | connected | reconnecting, with an error message
 *   when the call ended because of one;
 * - `server-event` (detail: {event, at}) for every data-channel event;
 * - `sample` (detail: {t, mic, bot}) every 20 ms while in a call.
 */
export class CallSession extends EventTarget {
  /** @param {HTMLAudioElement} audio plays the avatar's voice (also needed for WebAudio to see it). */
  constructor(audio) {
    super();
    this.audio = audio;
    this.phase = "idle";
    this.mic = null;
    this.context = null;
    this.connection = null;
    this.sampler = new LevelSampler((sample) => this.emit("sample", sample));
    this.sessionId = null;
    this.muted = false;
    this.callsPlaced = 0;
    this.troubleTimer = null;
    this.wentOffline = false;
    this.attempt = 0;
    this.reconnecting = false;
    window.addEventListener("offline", () => {
      this.wentOffline = true;
    });
    window.addEventListener("online", () => {
      if (this.wentOffline && this.phase !== "idle") this.reconnect("back online");
      this.wentOffline = false;
    });
  }

  /** Starts a call. Call it from a click handler: it asks for the microphone and starts audio playback. */
  async start() {
    if (this.phase !== "idle") return;
    this.setPhase("connecting");
    this.sessionId = null;
    try {
      if (!navigator.mediaDevices?.getUserMedia) {
        throw new Error("The microphone needs a secure page: open Soma over https:// (or on localhost).");
      }
      this.context = new AudioContext();
      const mic = await navigator.mediaDevices.getUserMedia(MIC_CONSTRAINTS);
      if (this.phase !== "connecting") { // hung up while the browser asked for the microphone
        for (const track of mic.getTracks()) track.stop();
        return;
      }
      this.mic = mic;
      this.setMuted(this.muted);
      this.sampler.mic = new LevelMonitor(this.context, this.mic);
      this.sampler.start();
      await this.connect();
    } catch (error) {
      this.end(error.name === "NotAllowedError" ? "Microphone access was denied." : error.message);
    }
  }

  /** Ends the call (the user pressed "Hang up"). */
  hangUp() {
    this.end(null);
  }

  setMuted(muted) {
    this.muted = muted;
    for (const track of this.mic?.getAudioTracks() || []) track.enabled = !muted;
  }

  /** Sends a client event on the data channel; false when there is no open channel. */
  send(event) {
    return this.connection ? this.connection.send(event) : false;
  }

  async connect() {
    const connection = new Connection(this.mic, {
      onEvent: (event, at) => this.onEvent(connection, event, at),
      onTrack: (stream) => connection === this.connection && this.onRemote(stream),
      onTrouble: (why) => connection === this.connection && this.onTrouble(why),
      onRecovered: () => connection === this.connection && this.onRecovered(),
    });
    this.connection = connection;
    this.callsPlaced += 1;
    await connection.open(this.sessionId);
  }

  onEvent(connection, event, at) {
    if (connection !== this.connection) return;
    if (event.type === "session.created") {
      this.sessionId = event.session?.id || this.sessionId;
      this.attempt = 0;
      this.setPhase("connected");
    }
    this.emit("server-event", { event, at });
  }

  onRemote(stream) {
    this.audio.srcObject = stream;
    this.audio.play().catch(() => {}); // autoplay is allowed: the call started from a click
    this.sampler.bot?.disconnect();
    this.sampler.bot = new LevelMonitor(this.context, stream);
  }

  onTrouble(why) {
    if (this.troubleTimer !== null || this.phase === "idle") return;
    this.troubleTimer = setTimeout(() => {
      this.troubleTimer = null;
      this.reconnect(why);
    }, RECONNECT_AFTER_MS);
  }

  onRecovered() {
    clearTimeout(this.troubleTimer);
    this.troubleTimer = null;
  }

  /** Replaces the connection with a new call, retrying with back-off; gives up after a few tries. While the
   * browser is offline it waits for the network without using up tries. One loop at a time. */
  async reconnect(why) {
    if (this.phase === "idle" || this.reconnecting) return;
    this.reconnecting = true;
    try {
      this.onRecovered();
      this.connection?.close();
      this.connection = null;
      this.setPhase("reconnecting", why);
      while (this.phase === "reconnecting") {
        if (!navigator.onLine) {
          await new Promise((resolve) => window.addEventListener("online", resolve, { once: true }));
          continue;
        }
        if (this.attempt >= RETRY_DELAYS_MS.length) {
          this.end("Could not reconnect. Check your connection and call again.");
          return;
        }
        await new Promise((resolve) => setTimeout(resolve, RETRY_DELAYS_MS[this.attempt]));
        this.attempt += 1;
        if (this.phase !== "reconnecting") return;
        try {
          await this.connect();
          return; // session.created moves the phase on; trouble on the new connection comes back here
        } catch (error) {
          this.connection?.close();
          this.connection = null;
          if (error.status === 401) {
            this.end("Your sign-in has expired. Sign in again to call.");
            return;
          }
          // The conversation expired on the server: continue in a new one rather than failing every try.
          if (error.code === "session_not_found") this.sessionId = null;
        }
      }
    } finally {
      this.reconnecting = false;
    }
  }

  end(message) {
    this.onRecovered();
    this.connection?.close();
    this.connection = null;
    this.sampler.stop();
    for (const track of this.mic?.getTracks() || []) track.stop();
    this.mic = null;
    this.context?.close();
    this.context = null;
    this.audio.srcObject = null;
    this.attempt = 0;
    this.setPhase("idle", message);
  }

  setPhase(phase, message = null) {
    this.phase = phase;
    this.emit("phase", { phase, message });
  }

  emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }
}
