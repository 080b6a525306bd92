// The call's turns, built from the server's data-channel events and the browser's own audio levels.
//
// A turn is what the user said (spoken or typed) and the avatar's reply. Captions render from it, and the
// page exposes the list as `window.somaCall.turns` so tests (and curious users) can read what happened and
// how fast: `serverV2vMs` is the server's `soma.turn_latency`, `browserV2vMs` is measured here, from the last
// moment the microphone was above the speech threshold to the first audible sample of the reply.

const STALE_SPEECH_MS = 5000; // a "last loud" mic moment older than this is not the end of this utterance

/** One exchange. Times are `performance.now()` milliseconds. */
function newTurn(typed) {
  return {
    userText: "",
    userFinal: false,
    typed,
    replyText: "", // streamed, then what was heard (response.done)
    streamedText: "", // every transcript delta, whether or not it was heard
    responseId: null,
    done: false,
    interrupted: false,
    serverV2vMs: null,
    browserV2vMs: null,
    speechStartAt: null, // the mic went loud (browser)
    speechEndAt: null, // the mic was last loud before the server's speech_stopped (browser)
    responseAt: null, // response.created arrived
    firstAudioAt: null, // first audible reply sample (browser)
    lastAudioAt: null, // last audible reply sample (browser)
  };
}

export class Turns {
  /**
   * @param {() => void} onChange called after every change, for the captions to re-render.
   */
  constructor(onChange) {
    this.onChange = onChange;
    this.list = [];
    this.byItem = new Map();
    this.byResponse = new Map();
    this.playing = null; // the turn whose reply audio was heard last
  }

  /** The user typed `text` (sent as conversation.item.create). */
  typed(text) {
    const turn = newTurn(true);
    turn.userText = text;
    turn.userFinal = true;
    this.list.push(turn);
    this.onChange();
  }

  /**
   * Applies one server event.
   * @param {object} event the parsed JSON event.
   * @param {{micLoudAt: number|null, micOnsetAt: number|null}} levels the sampler's view of the microphone.
   * @param {number} at when it arrived.
   */
  handle(event, levels, at) {
    switch (event.type) {
      case "input_audio_buffer.speech_started": {
        let turn = this.list.at(-1);
        if (!turn || turn.userText || turn.responseId || turn.typed) {
          turn = newTurn(false);
          this.list.push(turn);
        }
        turn.speechStartAt = levels.micOnsetAt;
        this.byItem.set(event.item_id, turn);
        break;
      }
      case "input_audio_buffer.speech_stopped": {
        const turn = this.byItem.get(event.item_id);
        const loud = levels.micLoudAt;
        if (turn) turn.speechEndAt = loud !== null && at - loud < STALE_SPEECH_MS ? loud : at;
        break;
      }
      case "conversation.item.input_audio_transcription.delta": {
        const turn = this.spokenTurn(event.item_id);
        turn.userText += event.delta || "";
        break;
      }
      case "conversation.item.input_audio_transcription.completed": {
        const turn = this.spokenTurn(event.item_id);
        turn.userText = event.transcript || "";
        turn.userFinal = true;
        break;
      }
      case "response.created": {
        const id = event.response?.id;
        let turn = this.list.findLast((t) => t.userFinal && !t.responseId);
        if (!turn) {
          turn = newTurn(false);
          this.list.push(turn);
        }
        turn.responseId = id;
        turn.responseAt = at;
        this.byResponse.set(id, turn);
        break;
      }
      case "response.output_audio_transcript.delta":
      case "response.output_text.delta": {
        const turn = this.byResponse.get(event.response_id);
        if (turn && !turn.done) {
          turn.replyText += event.delta || "";
          turn.streamedText += event.delta || "";
        }
        break;
      }
      case "response.output_audio_transcript.done": {
        const turn = this.byResponse.get(event.response_id);
        if (turn) turn.replyText = event.transcript ?? turn.replyText;
        break;
      }
      case "soma.turn_latency": {
        const turn = this.list.findLast((t) => t.responseId && t.serverV2vMs === null && !t.typed);
        if (turn) turn.serverV2vMs = event.voice_to_voice_ms;
        break;
      }
      case "response.done": {
        const response = event.response || {};
        const turn = this.byResponse.get(response.id);
        if (!turn) return;
        turn.done = true;
        turn.interrupted = response.status === "cancelled";
        // What was heard: an interrupted reply is cut to the words that were played.
        const part = response.output?.[0]?.content?.[0];
        const heard = part?.transcript ?? part?.text;
        if (heard !== undefined) turn.replyText = heard;
        break;
      }
      default:
        return;
    }
    this.onChange();
  }

  /** Follows the avatar's audio level: the first audible sample of a reply, and the last. */
  sample(t, botLoud) {
    if (!botLoud) return;
    const waiting = this.list.findLast((t2) => t2.responseAt !== null && t2.firstAudioAt === null && !t2.done);
    if (waiting && t >= waiting.responseAt) {
      waiting.firstAudioAt = t;
      if (waiting.speechEndAt !== null) waiting.browserV2vMs = Math.round(t - waiting.speechEndAt);
      this.playing = waiting;
      this.onChange();
    }
    if (this.playing) this.playing.lastAudioAt = t;
  }

  /** A new call: forget the previous one. */
  reset() {
    this.list.length = 0;
    this.byItem.clear();
    this.byResponse.clear();
    this.playing = null;
    this.onChange();
  }

  /** The connection was replaced: a reply in progress will never finish. */
  abandon() {
    for (const turn of this.list) {
      if (turn.responseId && !turn.done) {
        turn.done = true;
        turn.interrupted = true;
      }
    }
    this.byItem.clear();
    this.onChange();
  }

  spokenTurn(itemId) {
    let turn = this.byItem.get(itemId);
    if (!turn) {
      turn = newTurn(false);
      this.list.push(turn);
      this.byItem.set(itemId, turn);
    }
    return turn;
  }
}
