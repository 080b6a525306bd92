// Recording for the Voice screen (voice.js): the microphone through an AudioWorklet (voice-capture.js), the
// live quality measures of the take (`LiveQuality`) and the clip as a 16-bit mono WAV (`encodeWav`).
//
// The measures follow the server's (models/speaker.py `clip_quality`) closely enough to guide the speaker while
// they read — 30 ms frames, background noise as the RMS of the quietest tenth of them — but they only guide:
// the server measures the uploaded clip again, and its verdict is the one the page shows.
const FRAME_S = 0.03; // the server's frame length for its noise and speech measures
const SPEECH_DBFS = -50; // a frame quieter than this is never speech
const SPEECH_OVER_NOISE_DB = 10; // nor one within this much of the room's noise
const CLIP_LEVEL = 0.99; // the server's "clipped sample"
// The browser's processing off: echo cancellation, noise suppression and gain control would change the very
// voice and levels being measured (gain control would hide "too quiet", suppression a "noisy room").
const RECORD_CONSTRAINTS = { audio: { echoCancellation: false, noiseSuppression: false, autoGainControl: false,
  channelCount: 1 } };

/** RMS (0..1) in dBFS, never below -100. */
export function dbfs(rms) {
  return rms > 1e-5 ? 20 * Math.log10(rms) : -100;
}

const meanSquareDb = (squares) => dbfs(Math.sqrt(squares.reduce((s, m) => s + m, 0) / squares.length));

/**
 * Running quality measures of one recording, fed sample batches as they arrive. Pure arithmetic, no audio
 * objects: `push(samples)` any number of times; `level()` at every batch; `summary()` a few times a second
 * (it sorts the frames).
 */
export class LiveQuality {
  /** @param {number} rate the samples' rate in Hz. */
  constructor(rate) {
    this.rate = rate;
    this.frameLength = Math.round(FRAME_S * rate);
    this.frames = []; // mean square of each complete frame
    this.sum = 0; // of squares, the frame being filled
    this.filled = 0;
    this.samples = 0;
    this.peak = 0;
    this.clipped = 0;
    this.lastClipAt = -Infinity; // sample index
  }

  push(samples) {
    for (let i = 0; i < samples.length; i += 1) {
      const x = samples[i];
      const a = Math.abs(x);
      if (a > this.peak) this.peak = a;
      if (a >= CLIP_LEVEL) { this.clipped += 1; this.lastClipAt = this.samples + i; }
      this.sum += x * x;
      this.filled += 1;
      if (this.filled === this.frameLength) {
        this.frames.push(this.sum / this.frameLength);
        this.sum = 0;
        this.filled = 0;
      }
    }
    this.samples += samples.length;
  }

  /** dBFS of the last ~90 ms. */
  level() {
    const recent = this.frames.slice(-3);
    return recent.length ? meanSquareDb(recent) : -100;
  }

  /**
   * What the meter shows: `level` (dBFS of the last ~90 ms), `peak`, `clipped` (samples) and `clippedRecently`
   * (in the last second), `noise` (RMS of the quietest 10 % of frames, null before 0.3 s), `speechRatio` and
   * `speechSeconds` (frames above both -50 dBFS and noise + 10 dB), `speechLevel` (RMS of those frames, null
   * without any), `seconds`.
   */
  summary() {
    const n = this.frames.length;
    let noise = null;
    let voiced = [];
    if (n >= 10) {
      const sorted = [...this.frames].sort((a, b) => a - b);
      noise = meanSquareDb(sorted.slice(0, Math.max(1, Math.floor(n / 10))));
      const threshold = Math.max(SPEECH_DBFS, noise + SPEECH_OVER_NOISE_DB);
      voiced = this.frames.filter((m) => dbfs(Math.sqrt(m)) > threshold);
    }
    return {
      seconds: this.samples / this.rate,
      level: this.level(),
      peak: dbfs(this.peak),
      clipped: this.clipped,
      clippedRecently: this.samples - this.lastClipAt < this.rate,
      noise,
      speechRatio: n ? voiced.length / n : 0,
      speechSeconds: voiced.length * FRAME_S,
      speechLevel: voiced.length ? meanSquareDb(voiced) : null,
    };
  }
}

/** ``chunks`` of float samples (-1..1) as a 16-bit mono PCM WAV file. */
export function encodeWav(chunks, rate) {
  const count = chunks.reduce((n, c) => n + c.length, 0);
  const view = new DataView(new ArrayBuffer(44 + 2 * count));
  const text = (offset, s) => { for (let i = 0; i < s.length; i += 1) view.setUint8(offset + i, s.charCodeAt(i)); };
  text(0, "RIFF");
  view.setUint32(4, 36 + 2 * count, true);
  text(8, "WAVE");
  text(12, "fmt ");
  view.setUint32(16, 16, true); // format chunk size
  view.setUint16(20, 1, true); // PCM
  view.setUint16(22, 1, true); // mono
  view.setUint32(24, rate, true);
  view.setUint32(28, rate * 2, true); // bytes per second
  view.setUint16(32, 2, true); // bytes per frame
  view.setUint16(34, 16, true); // bits per sample
  text(36, "data");
  view.setUint32(40, 2 * count, true);
  let offset = 44;
  for (const chunk of chunks) {
    for (let i = 0; i < chunk.length; i += 1) {
      const x = Math.max(-1, Math.min(1, chunk[i]));
      view.setInt16(offset, Math.round(x < 0 ? x * 32768 : x * 32767), true);
      offset += 2;
    }
  }
  return new Blob([view.buffer], { type: "audio/wav" });
}

/**
 * One microphone recording. `start()` from a click handler (it opens the microphone and the audio context);
 * then `quality` measures the take and ``onData(quality)`` runs after each batch of samples; `stop()` lets go of
 * the microphone and returns the clip as a WAV `Blob`, or `cancel()` drops it. Each object records once.
 */
export class Recording {
  /** @param {(quality: LiveQuality) => void} onData */
  constructor(onData) {
    this.onData = onData;
    this.chunks = [];
    this.quality = null;
  }

  async start() {
    if (!navigator.mediaDevices?.getUserMedia || !window.AudioWorkletNode) {
      throw new Error("Recording needs a secure page: open Soma over https:// (or on localhost).");
    }
    this.context = new AudioContext();
    try {
      this.stream = await navigator.mediaDevices.getUserMedia(RECORD_CONSTRAINTS);
      await this.context.audioWorklet.addModule("/voice-capture.js");
    } catch (error) {
      this.cancel();
      throw error.name === "NotAllowedError" ? new Error("Microphone access was denied.") : error;
    }
    this.quality = new LiveQuality(this.context.sampleRate);
    this.source = this.context.createMediaStreamSource(this.stream);
    this.node = new AudioWorkletNode(this.context, "voice-capture", { numberOfInputs: 1, numberOfOutputs: 1,
      channelCount: 1, channelCountMode: "explicit" });
    this.node.port.onmessage = ({ data }) => {
      this.chunks.push(data);
      this.quality.push(data);
      this.onData(this.quality);
    };
    // A silent path to the output: the browser renders only nodes that lead to the destination.
    const mute = this.context.createGain();
    mute.gain.value = 0;
    this.source.connect(this.node).connect(mute).connect(this.context.destination);
    await this.context.resume();
  }

  stop() {
    const rate = this.context.sampleRate;
    this.cancel();
    return encodeWav(this.chunks, rate);
  }

  cancel() {
    if (this.node) this.node.port.onmessage = null;
    this.source?.disconnect();
    for (const track of this.stream?.getTracks() || []) track.stop();
    this.context?.close().catch(() => {});
  }
}
