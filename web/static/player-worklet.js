// Playback with a small jitter buffer. Counts the samples actually played per assistant item, so that
// a barge-in truncates the item at what the user heard, not at what was received.
const START_SAMPLES = 2400; // 100 ms buffered before playback starts (absorbs network jitter)

class PlayerProcessor extends AudioWorkletProcessor {
  constructor() {
    super();
    this.queue = []; // [{itemId, pcm: Float32Array, pos}]
    this.buffered = 0;
    this.playing = false;
    this.played = {}; // itemId -> samples played
    this.ended = new Set(); // items whose last delta arrived: play them out even under START_SAMPLES
    this.port.onmessage = (e) => this.onMessage(e.data);
  }

  onMessage(msg) {
    if (msg.type === "push") {
      this.queue.push({ itemId: msg.itemId, pcm: msg.pcm, pos: 0 });
      this.buffered += msg.pcm.length;
    } else if (msg.type === "end") {
      this.ended.add(msg.itemId);
    } else if (msg.type === "flush") {
      // Barge-in: stop at once; report what was played so the client truncates there.
      this.queue = [];
      this.buffered = 0;
      this.playing = false;
      this.port.postMessage({ type: "flushed", played: { ...this.played } });
    }
  }

  process(_inputs, outputs) {
    const out = outputs[0][0];
    out.fill(0);
    const tailReady = this.queue.length && this.ended.has(this.queue[this.queue.length - 1].itemId);
    if (!this.playing && (this.buffered >= START_SAMPLES || (tailReady && this.buffered > 0))) this.playing = true;
    if (!this.playing) return true;
    let i = 0;
    while (i < out.length && this.queue.length) {
      const head = this.queue[0];
      const n = Math.min(out.length - i, head.pcm.length - head.pos);
      out.set(head.pcm.subarray(head.pos, head.pos + n), i);
      head.pos += n;
      i += n;
      this.buffered -= n;
      this.played[head.itemId] = (this.played[head.itemId] || 0) + n;
      if (head.pos === head.pcm.length) this.queue.shift();
    }
    if (!this.queue.length) {
      this.playing = false; // underrun: wait for START_SAMPLES again
      this.port.postMessage({ type: "idle", played: { ...this.played } });
    } else if (currentFrame % 2400 < 128) {
      this.port.postMessage({ type: "progress", played: { ...this.played } }); // about every 100 ms
    }
    return true;
  }
}

registerProcessor("player-processor", PlayerProcessor);
