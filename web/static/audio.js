// Audio in and out through AudioWorklets, both at the protocol's 24 kHz (the browser resamples the mic).
export const RATE = 24000;

export class Audio {
  constructor() {
    this.ctx = null;
    this.player = null;
    this.mic = null;
    this.stream = null;
    this.played = {}; // itemId -> samples played (reported by the player worklet)
    this.onFrame = null; // (ArrayBuffer of Int16) => void
    this.onFlushed = null; // (played) => void
  }

  async start() {
    this.ctx = new AudioContext({ sampleRate: RATE, latencyHint: "interactive" });
    await this.ctx.audioWorklet.addModule("/web/player-worklet.js");
    await this.ctx.audioWorklet.addModule("/web/mic-worklet.js");
    this.player = new AudioWorkletNode(this.ctx, "player-processor", { outputChannelCount: [1] });
    this.player.connect(this.ctx.destination);
    this.player.port.onmessage = (e) => {
      this.played = e.data.played;
      if (e.data.type === "flushed" && this.onFlushed) this.onFlushed(e.data.played);
    };
    await this.ctx.resume();
  }

  async startMic() {
    this.stream = await navigator.mediaDevices.getUserMedia({
      audio: { echoCancellation: true, noiseSuppression: true, autoGainControl: true, channelCount: 1 },
    });
    const src = this.ctx.createMediaStreamSource(this.stream);
    this.mic = new AudioWorkletNode(this.ctx, "mic-processor");
    this.mic.port.onmessage = (e) => this.onFrame && this.onFrame(e.data);
    src.connect(this.mic);
  }

  stopMic() {
    if (this.stream) this.stream.getTracks().forEach((t) => t.stop());
    if (this.mic) this.mic.disconnect();
    this.stream = this.mic = null;
  }

  play(itemId, pcm) {
    this.player.port.postMessage({ type: "push", itemId, pcm }, [pcm.buffer]);
  }

  end(itemId) {
    this.player.port.postMessage({ type: "end", itemId });
  }

  // Stops playback now; resolves with the samples played per item at that moment.
  flush() {
    return new Promise((resolve) => {
      this.onFlushed = (played) => {
        this.onFlushed = null;
        resolve(played);
      };
      this.player.port.postMessage({ type: "flush" });
    });
  }

  playedMs(itemId) {
    return Math.floor(((this.played[itemId] || 0) * 1000) / RATE);
  }
}
