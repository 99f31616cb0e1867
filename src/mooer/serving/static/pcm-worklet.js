// AudioWorklet of the live mode (loaded by app.js): microphone samples -> 16-bit PCM chunks for
// /v1/realtime. The page asks for an AudioContext at 16 kHz, so the browser resamples the microphone and
// this node only converts. A browser that cannot run the context at 16 or 24 kHz gets linear
// interpolation down to targetRate here (no anti-alias filter: speech keeps well enough at 16 kHz).
"use strict";

class Pcm16Chunker extends AudioWorkletProcessor {
  constructor(options) {
    super();
    const opts = options.processorOptions || {};
    this.target = opts.targetRate || sampleRate;
    this.step = sampleRate / this.target; // input samples per output sample
    this.size = Math.round((this.target * (opts.chunkMs || 100)) / 1000);
    this.chunk = new Int16Array(this.size);
    this.filled = 0;
    this.t = 0; // position of the next output sample in the current block (may be in [-1, 0))
    this.prev = 0; // the last input sample of the previous block
  }

  emit(x) {
    const s = Math.max(-32768, Math.min(32767, Math.round(x * 32768)));
    this.chunk[this.filled++] = s;
    if (this.filled === this.size) {
      this.port.postMessage(this.chunk.buffer, [this.chunk.buffer]);
      this.chunk = new Int16Array(this.size);
      this.filled = 0;
    }
  }

  process(inputs) {
    const block = inputs[0] && inputs[0][0];
    if (!block || block.length === 0) return true;
    if (this.step === 1) {
      for (let i = 0; i < block.length; i++) this.emit(block[i]);
      return true;
    }
    let t = this.t;
    for (; t < block.length - 1; t += this.step) {
      const i = Math.floor(t);
      const a = i < 0 ? this.prev : block[i];
      this.emit(a + (block[i + 1] - a) * (t - i));
    }
    this.t = t - block.length;
    this.prev = block[block.length - 1];
    return true;
  }
}

registerProcessor("pcm16-chunker", Pcm16Chunker);
