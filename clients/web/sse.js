// Server-Sent Events read with fetch, because EventSource cannot send an Authorization header.
//
// `SseParser` is the event-stream grammar of the HTML standard as a sans-I/O class: text in, events out, no
// fetch and no timers, so it is tested by feeding it chunks cut anywhere. `readEvents` drives it from a
// fetch `Response`, and `openEvents` makes the authorized request (the import page follows a job with it, the
// inbox the avatar's messages on `/v1/events`).
import { authorizedFetch } from "./api.js";

export const MAX_LINE = 1 << 20; // a longer line means a broken or hostile stream: the buffer stays bounded
const DEFAULT_EVENT = "message";

/** A stream that broke the grammar's limits or went quiet: the caller decides whether to reconnect. */
export class SseError extends Error {}

/**
 * Incremental parser of `text/event-stream` text.
 *
 * Feed it decoded text with `push()` in any chunking (a CR at the end of one chunk and an LF at the start of
 * the next are one line break); it returns the events completed by that text, each `{event, data, id}`
 * where `id` is the last event id seen so far (what `Last-Event-ID` should send on a reconnect). Comments
 * (`: keep-alive`) and fields it does not know are skipped; an event without data is not dispatched, as in
 * EventSource. Call `end()` when the stream ends: an event not closed by a blank line is dropped.
 */
export class SseParser {
  constructor({ maxLine = MAX_LINE } = {}) {
    this.maxLine = maxLine;
    this.buffer = "";
    this.skipLf = false; // the previous chunk ended with CR: a leading LF belongs to that line break
    this.first = true; // a byte-order mark may start the stream
    this.lastEventId = "";
    this.retry = null;
    this.reset();
  }

  reset() {
    this.type = "";
    this.data = [];
  }

  /** The events completed by ``text``. Throws `SseError` on a line longer than `maxLine`. */
  push(text) {
    if (this.first && text) {
      this.first = false;
      if (text.charCodeAt(0) === 0xfeff) text = text.slice(1);
    }
    if (this.skipLf && text) {
      this.skipLf = false;
      if (text[0] === "\n") text = text.slice(1);
    }
    this.buffer += text;
    const events = [];
    let start = 0;
    for (;;) {
      const cr = this.buffer.indexOf("\r", start);
      const lf = this.buffer.indexOf("\n", start);
      const end = cr === -1 ? lf : lf === -1 ? cr : Math.min(cr, lf);
      if (end === -1) break;
      let next = end + 1;
      if (this.buffer[end] === "\r") {
        if (next === this.buffer.length) this.skipLf = true;
        else if (this.buffer[next] === "\n") next += 1;
      }
      const event = this.line(this.buffer.slice(start, end));
      if (event) events.push(event);
      start = next;
    }
    this.buffer = this.buffer.slice(start);
    if (this.buffer.length > this.maxLine) {
      throw new SseError(`an event-stream line is over ${this.maxLine} characters`);
    }
    return events;
  }

  /** The stream ended: whatever was not closed by a blank line is dropped (as EventSource does). */
  end() {
    this.buffer = "";
    this.reset();
  }

  line(line) {
    if (line === "") return this.dispatch();
    if (line[0] === ":") return null; // a comment: keep-alives
    const colon = line.indexOf(":");
    const field = colon === -1 ? line : line.slice(0, colon);
    let value = colon === -1 ? "" : line.slice(colon + 1);
    if (value[0] === " ") value = value.slice(1);
    switch (field) {
      case "event": this.type = value; break;
      case "data": this.data.push(value); break;
      case "id": if (!value.includes("\0")) this.lastEventId = value; break;
      case "retry": if (/^\d+$/.test(value)) this.retry = Number(value); break;
      default: break; // unknown fields are ignored, per the standard
    }
    return null;
  }

  dispatch() {
    const event = this.data.length
      ? { event: this.type || DEFAULT_EVENT, data: this.data.join("\n"), id: this.lastEventId }
      : null;
    this.reset();
    return event;
  }
}

/**
 * Yields the events of a `text/event-stream` response as they arrive.
 *
 * @param {Response} response an ok response whose body is the stream.
 * @param {{idleMs?: number, parser?: SseParser}} options `idleMs`: throw `SseError` when no byte arrived for
 *   that long (the server sends a comment every 15 s, so silence means a dead connection); `parser` to keep
 *   reading `lastEventId` after the loop.
 * Breaking out of the loop (or an abort of the request's signal) cancels the body.
 */
export async function* readEvents(response, { idleMs = 0, parser = new SseParser() } = {}) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder(); // UTF-8 only, as the standard says; streaming keeps split characters
  let timer = null;
  let quiet = false;
  const arm = () => {
    if (!idleMs) return;
    clearTimeout(timer);
    timer = setTimeout(() => { quiet = true; reader.cancel().catch(() => {}); }, idleMs);
  };
  try {
    for (;;) {
      arm();
      const { value, done } = await reader.read();
      if (quiet) throw new SseError(`the event stream was silent for ${idleMs / 1000} s`);
      if (done) break;
      yield* parser.push(decoder.decode(value, { stream: true }));
    }
    yield* parser.push(decoder.decode());
    parser.end();
  } finally {
    clearTimeout(timer);
    reader.cancel().catch(() => {});
  }
}

/**
 * GETs ``path`` with the bearer token and yields its events (see `readEvents`).
 *
 * Throws `ApiError` for a non-2xx answer, `SseError` if the answer is not an event stream. Pass an
 * AbortSignal to stop; `lastEventId` resumes a stream that supports it; `onOpen()` is called once the server
 * accepted the stream, before its first event (a stream that opened and later broke is worth reopening at
 * once, one that never opened calls for a longer pause).
 */
export async function* openEvents(path, { signal, lastEventId = "", idleMs = 0, parser, onOpen } = {}) {
  const headers = { Accept: "text/event-stream" };
  if (lastEventId) headers["Last-Event-ID"] = lastEventId;
  const response = await authorizedFetch(path, { headers, signal, cache: "no-store" });
  if (!(response.headers.get("Content-Type") || "").startsWith("text/event-stream")) {
    response.body?.cancel().catch(() => {});
    throw new SseError(`${path} did not answer with an event stream`);
  }
  onOpen?.();
  yield* readEvents(response, { idleMs, parser });
}
