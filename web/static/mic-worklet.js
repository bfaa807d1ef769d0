// Microphone capture: float samples at the AudioContext's rate (24 kHz) -> 40 ms Int16 frames.
const FRAME = 960; // 40 ms at 24 kHz: one input_audio_buffer.append per frame

class MicProcessor extends AudioWorkletProcessor {
  constructor() {
    super();
    this.buf = new Int16Array(FRAME);
    this.n = 0;
  }

  process(inputs) {
    const ch = inputs[0] && inputs[0][0];
    if (!ch) return true;
    for (let i = 0; i < ch.length; i++) {
      const s = Math.max(-1, Math.min(1, ch[i]));
      this.buf[this.n++] = s < 0 ? s * 0x8000 : s * 0x7fff;
      if (this.n === FRAME) {
        this.port.postMessage(this.buf.buffer, [this.buf.buffer]);
        this.buf = new Int16Array(FRAME);
        this.n = 0;
      }
    }
    return true;
  }
}

registerProcessor("mic-processor", MicProcessor);
