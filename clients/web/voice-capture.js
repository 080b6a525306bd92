// AudioWorklet processor for the Voice screen (voice.js): hands the microphone's samples to the page unchanged.
//
// A worklet rather than an AnalyserNode because the enrollment clip needs every sample, not snapshots. It runs in
// the AudioWorkletGlobalScope (no DOM): it copies channel 0 of each 128-frame render quantum into a batch and
// posts the batch (a transferred Float32Array) when it holds BATCH samples — about 21 ms at 48 kHz, few enough
// messages for the page, short enough that the live meter keeps up. Stopping loses at most one unsent batch.
const BATCH = 1024;

class VoiceCapture extends AudioWorkletProcessor {
  constructor() {
    super();
    this.batch = new Float32Array(BATCH);
    this.filled = 0;
  }

  process(inputs) {
    const channel = inputs[0]?.[0];
    if (channel) {
      let offset = 0;
      while (offset < channel.length) {
        const n = Math.min(channel.length - offset, BATCH - this.filled);
        this.batch.set(channel.subarray(offset, offset + n), this.filled);
        this.filled += n;
        offset += n;
        if (this.filled === BATCH) {
          this.port.postMessage(this.batch, [this.batch.buffer]);
          this.batch = new Float32Array(BATCH);
          this.filled = 0;
        }
      }
    }
    return true; // keep running until the page disconnects the node
  }
}

registerProcessor("voice-capture", VoiceCapture);
