// Audio levels from WebAudio: the microphone and the avatar's voice, sampled every 20 ms.
//
// They drive the on-screen meters and the browser's own voice-to-voice measurement: the last moment the
// microphone was above the speech threshold, and the first moment the avatar's reply was audible.

export const POLL_MS = 20;
export const SPEECH_RMS = 0.02; // about -34 dBFS: speech, not room noise
export const TRACE_LIMIT = 3000; // one minute of samples
const ONSET_GAP_MS = 300; // loud after this much quiet: a new utterance starts

/** RMS level of one stream through an AnalyserNode. The stream is only analysed, never played here. */
export class LevelMonitor {
  constructor(context, stream) {
    this.source = context.createMediaStreamSource(stream);
    this.analyser = context.createAnalyser();
    this.analyser.fftSize = 1024; // 21 ms at 48 kHz: one poll's worth of samples
    this.buffer = new Float32Array(this.analyser.fftSize);
    this.source.connect(this.analyser);
  }

  /** Current RMS level, 0..1. */
  level() {
    this.analyser.getFloatTimeDomainData(this.buffer);
    let sum = 0;
    for (const x of this.buffer) sum += x * x;
    return Math.sqrt(sum / this.buffer.length);
  }

  disconnect() {
    this.source.disconnect();
  }
}

/** Samples both monitors on a timer; remembers when each was last loud, and keeps a bounded trace. */
export class LevelSampler {
  /**
   * @param {(sample: {t: number, mic: number, bot: number}) => void} onSample called at every poll.
   */
  constructor(onSample) {
    this.onSample = onSample;
    this.mic = null;
    this.bot = null;
    this.micLoudAt = null; // performance.now() of the last mic sample above SPEECH_RMS
    this.micOnsetAt = null; // when the mic last went loud after a pause
    this.botLoudAt = null;
    this.trace = [];
    this.timer = null;
  }

  start() {
    if (this.timer === null) this.timer = setInterval(() => this.poll(), POLL_MS);
  }

  poll() {
    const t = performance.now();
    const mic = this.mic ? this.mic.level() : 0;
    const bot = this.bot ? this.bot.level() : 0;
    if (mic > SPEECH_RMS) {
      if (this.micLoudAt === null || t - this.micLoudAt > ONSET_GAP_MS) this.micOnsetAt = t;
      this.micLoudAt = t;
    }
    if (bot > SPEECH_RMS) this.botLoudAt = t;
    const sample = { t: Math.round(t), mic: round(mic), bot: round(bot) };
    this.trace.push(sample);
    if (this.trace.length > TRACE_LIMIT) this.trace.splice(0, this.trace.length - TRACE_LIMIT);
    this.onSample(sample);
  }

  /** Stops polling and lets go of both streams. */
  stop() {
    clearInterval(this.timer);
    this.timer = null;
    this.mic?.disconnect();
    this.bot?.disconnect();
    this.mic = this.bot = null;
  }
}

const round = (x) => Math.round(x * 10000) / 10000;

/** Paints a level meter element (`role="meter"`): width from the level, aria-valuenow a few times a second. */
export class MeterView {
  constructor(element) {
    this.element = element;
    this.bar = element.querySelector(".bar");
    this.lastAria = 0;
  }

  show(level) {
    // Speech sits around 0.05..0.3 RMS: a square root spreads it over the bar.
    const fraction = Math.min(1, Math.sqrt(level / 0.3));
    this.bar.style.transform = `scaleX(${fraction.toFixed(3)})`;
    const now = performance.now();
    if (now - this.lastAria > 250) {
      this.lastAria = now;
      this.element.setAttribute("aria-valuenow", String(Math.round(fraction * 100)));
    }
  }
}
