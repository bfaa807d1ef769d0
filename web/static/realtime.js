// The protocol in one place: the OpenAI Realtime websocket (GA event names) and the HTTP calls the page makes.

export class Realtime extends EventTarget {
  constructor(key) {
    super();
    this.key = key || "";
    this.ws = null;
    this.seq = 0;
  }

  // Browsers cannot set headers on a websocket: the key travels as a subprotocol, never in the URL.
  connect() {
    const url = `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/v1/realtime`;
    const protocols = ["realtime"];
    if (this.key) protocols.push(`openai-insecure-api-key.${this.key}`);
    this.ws = new WebSocket(url, protocols);
    return new Promise((resolve, reject) => {
      this.ws.onopen = () => resolve();
      this.ws.onerror = () => reject(new Error("websocket error (server down, key or origin refused)"));
      this.ws.onclose = (e) => this.dispatchEvent(new CustomEvent("close", { detail: e }));
      this.ws.onmessage = (e) => {
        const ev = JSON.parse(e.data);
        this.dispatchEvent(new CustomEvent("event", { detail: ev }));
        this.dispatchEvent(new CustomEvent(ev.type, { detail: ev }));
      };
    });
  }

  send(event) {
    if (!this.ws || this.ws.readyState !== WebSocket.OPEN) return null;
    const ev = { event_id: `evt_web_${++this.seq}`, ...event };
    this.ws.send(JSON.stringify(ev));
    this.dispatchEvent(new CustomEvent("sent", { detail: ev }));
    return ev.event_id;
  }

  close() {
    if (this.ws) this.ws.close();
  }

  headers() {
    return this.key ? { Authorization: `Bearer ${this.key}` } : {};
  }

  async upload(file) {
    const form = new FormData();
    form.append("purpose", "vision");
    form.append("file", file);
    const r = await fetch("/v1/files", { method: "POST", body: form, headers: this.headers() });
    if (!r.ok) throw new Error(`upload failed: ${r.status} ${await r.text()}`);
    return r.json();
  }

  // Artifacts need the key too, so they are fetched, not linked.
  async blobUrl(uri) {
    const r = await fetch(uri, { headers: this.headers() });
    if (!r.ok) throw new Error(`${uri}: ${r.status}`);
    return URL.createObjectURL(await r.blob());
  }
}

export function pcm16ToBase64(buffer) {
  const bytes = new Uint8Array(buffer);
  let s = "";
  for (let i = 0; i < bytes.length; i += 0x8000) s += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return btoa(s);
}

export function base64ToFloat32(b64) {
  const bin = atob(b64);
  const n = bin.length >> 1;
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    let v = bin.charCodeAt(2 * i) | (bin.charCodeAt(2 * i + 1) << 8);
    if (v >= 0x8000) v -= 0x10000;
    out[i] = v / 0x8000;
  }
  return out;
}
