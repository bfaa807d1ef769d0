// The page: wires the transport (realtime.js) and the audio path (audio.js) to the UI.
// window.omni exposes what happened (events, playback, truncations) for the browser tests.
import { Audio, RATE } from "/web/audio.js";
import { Realtime, base64ToFloat32, pcm16ToBase64 } from "/web/realtime.js";

const $ = (id) => document.getElementById(id);
const state = (window.omni = { events: [], sent: [], truncations: [], playedMs: {}, receivedMs: {}, responses: [] });
let rt = null;
const audio = new Audio();
const bubbles = new Map(); // item id -> element
const received = {}; // item id -> samples received
let audioItem = null; // the assistant item whose audio is playing or queued
let lastPrompt = "";
let cameraTimer = null;

function bubble(itemId, role, text = "") {
  let el = itemId && bubbles.get(itemId);
  if (!el) {
    el = document.createElement("div");
    el.className = `msg ${role}`;
    el.textContent = text;
    $("transcript").append(el);
    if (itemId) bubbles.set(itemId, el);
  }
  $("transcript").scrollTop = $("transcript").scrollHeight;
  return el;
}

function setPill(id, text, cls = "") {
  $(id).textContent = text;
  $(id).className = `pill ${cls}`;
}

// ------------------------------------------------------------------ connection

$("connect-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  if (rt) return;
  const key = $("key").value.trim();
  sessionStorage.setItem("omni-key", key); // kept for this tab only; never put in a URL
  rt = new Realtime(key);
  rt.addEventListener("event", (e) => onEvent(e.detail));
  rt.addEventListener("sent", (e) => state.sent.push(e.detail));
  rt.addEventListener("close", (e) => {
    setPill("status", `closed (${e.detail.code}${e.detail.reason ? ": " + e.detail.reason : ""})`);
    audio.stopMic();
    rt = null;
    $("mic").disabled = true;
  });
  try {
    await audio.start();
    await rt.connect();
  } catch (err) {
    setPill("status", String(err.message || err));
    rt = null;
    return;
  }
  audio.onFrame = (buf) => rt && rt.send({ type: "input_audio_buffer.append", audio: pcm16ToBase64(buf) });
  $("mic").disabled = false;
});

$("mic").addEventListener("click", async () => {
  if (audio.stream) {
    audio.stopMic();
    $("mic").textContent = "Start microphone";
    return;
  }
  try {
    await audio.startMic();
    $("mic").textContent = "Stop microphone";
  } catch (err) {
    bubble(null, "error", `microphone: ${err.message || err}`);
  }
});

function configureSession() {
  const language = $("dialect").value || null;
  rt.send({
    type: "session.update",
    session: {
      type: "realtime",
      output_modalities: ["audio"],
      omni_events: true, // tool progress, artifacts and confirmation requests for the agent view
      audio: {
        input: {
          format: { type: "audio/pcm", rate: RATE },
          transcription: { model: "omni-asr", language },
          turn_detection: { type: "server_vad" },
        },
        output: { format: { type: "audio/pcm", rate: RATE }, voice: $("voice").value },
      },
    },
  });
}

// ------------------------------------------------------------------ server events

async function bargeIn() {
  // Stop what the user hears now, then truncate the item at the audio actually played.
  const itemId = audioItem;
  if (!itemId) return;
  const played = await audio.flush();
  const ms = Math.floor(((played[itemId] || 0) * 1000) / RATE);
  audioItem = null;
  if ((played[itemId] || 0) >= (received[itemId] || 0)) return; // it had finished: nothing to cut
  state.truncations.push({ item_id: itemId, audio_end_ms: ms, received_ms: state.receivedMs[itemId] });
  rt.send({ type: "conversation.item.truncate", item_id: itemId, content_index: 0, audio_end_ms: ms });
}

const handlers = {
  "session.created": () => {
    setPill("status", "connected", "on");
    configureSession();
  },
  "session.updated": (ev) => {
    $("model").textContent = ev.session.model || "";
  },
  "input_audio_buffer.speech_started": () => {
    setPill("vad", "you are speaking", "speaking");
    bargeIn();
  },
  "input_audio_buffer.speech_stopped": () => setPill("vad", "thinking", "on"),
  "conversation.item.input_audio_transcription.delta": (ev) => {
    const el = bubble(ev.item_id, "user");
    if (el.dataset.placeholder) {
      el.textContent = "";
      delete el.dataset.placeholder;
    }
    el.textContent += ev.delta;
  },
  "conversation.item.input_audio_transcription.completed": (ev) => {
    bubble(ev.item_id, "user").textContent = ev.transcript;
  },
  "conversation.item.added": (ev) => showItem(ev.item),
  "conversation.item.created": (ev) => showItem(ev.item),
  "response.output_audio.delta": (ev) => {
    const pcm = base64ToFloat32(ev.delta);
    received[ev.item_id] = (received[ev.item_id] || 0) + pcm.length;
    state.receivedMs[ev.item_id] = Math.floor((received[ev.item_id] * 1000) / RATE);
    audioItem = ev.item_id;
    audio.play(ev.item_id, pcm);
    setPill("vad", "speaking to you", "on");
  },
  "response.output_audio.done": (ev) => audio.end(ev.item_id),
  "response.output_audio_transcript.delta": (ev) => {
    bubble(ev.item_id, "assistant").textContent += ev.delta;
  },
  "response.output_text.delta": (ev) => {
    bubble(ev.item_id, "assistant").textContent += ev.delta;
  },
  "conversation.item.truncated": (ev) => {
    const el = bubbles.get(ev.item_id);
    if (el) el.classList.add("truncated");
  },
  "response.done": (ev) => {
    const r = ev.response;
    state.responses.push(r);
    setPill("vad", "listening", "");
    const lat = r.latency || {};
    const u = r.usage || {};
    const cached = (u.input_token_details || {}).cached_tokens || 0;
    const parts = [`${r.status}`];
    if (lat.turn_end_to_first_audio_ms != null) parts.push(`first audio ${Math.round(lat.turn_end_to_first_audio_ms)} ms after you stopped`);
    else if (lat.response_to_first_audio_ms != null) parts.push(`first audio ${Math.round(lat.response_to_first_audio_ms)} ms`);
    if (u.input_tokens != null) parts.push(`prompt ${u.input_tokens} tokens, ${cached} from cache`);
    $("latency").textContent = parts.join(" · ");
    if (r.status === "failed") bubble(null, "error", JSON.stringify(r.status_details || {}));
  },
  "omni.tool.progress": (ev) => {
    let li = document.querySelector(`#progress li[data-call="${ev.call_id}"]`);
    if (!li) {
      li = document.createElement("li");
      li.dataset.call = ev.call_id;
      li.append(document.createElement("span"), document.createElement("progress"));
      $("progress").prepend(li);
    }
    li.firstChild.textContent = ev.message;
    if (ev.fraction != null) li.lastChild.value = ev.fraction;
  },
  "omni.artifact": (ev) => showArtifact(ev),
  "omni.confirmation.request": (ev) => showConfirmation(ev),
  error: (ev) => bubble(null, "error", `${ev.error.code || ev.error.type}: ${ev.error.message}`),
};

function onEvent(ev) {
  state.events.push(ev);
  state.playedMs = Object.fromEntries(Object.keys(received).map((k) => [k, audio.playedMs(k)]));
  const h = handlers[ev.type];
  if (h) h(ev);
}

function showItem(item) {
  if (item.type !== "message" || bubbles.has(item.id)) return;
  const role = item.role === "user" ? "user" : "assistant";
  const el = bubble(item.id, role);
  for (const part of item.content || []) {
    if (part.type === "input_text" || part.type === "output_text" || part.type === "text") el.textContent += part.text || "";
    if (part.type === "input_audio") {
      el.textContent += part.transcript || "(speech)"; // replaced by the transcript when it arrives
      if (!part.transcript) el.dataset.placeholder = "1";
    }
    if (part.type === "input_image" && !part.image_url) el.append("[image]");
    if (part.type === "input_image" && part.image_url) {
      const img = document.createElement("img");
      img.src = part.image_url;
      el.append(img);
    }
    if (part.type === "input_video") el.append(` [video ${part.file_id || ""}]`);
  }
}

// ------------------------------------------------------------------ agent view and gallery

async function showArtifact(ev) {
  const src = ev.data ? `data:${ev.mime_type};base64,${ev.data}` : await rt.blobUrl(ev.uri);
  if (ev.kind === "screenshot") {
    $("screen").hidden = false;
    $("screen").querySelector("img").src = src;
    return;
  }
  const id = (ev.uri || "").split("/").pop();
  const fig = document.createElement("figure");
  fig.dataset.artifact = id;
  fig.innerHTML = `<img alt=""><figcaption></figcaption><button data-op="edit">Edit</button> <button data-op="segment">Segment</button>`;
  fig.querySelector("img").src = src;
  fig.querySelector("figcaption").textContent = lastPrompt || ev.name || id;
  fig.addEventListener("click", (e) => {
    const op = e.target.dataset && e.target.dataset.op;
    if (!op) return;
    const what = prompt(op === "edit" ? "How should the image change?" : "What should be segmented?");
    if (!what) return;
    const text = op === "edit" ? `Edit the image [image id: ${id}]: ${what}` : `Segment ${what} in the image [image id: ${id}]`;
    sendText(text);
  });
  $("gallery").prepend(fig);
}

function showConfirmation(ev) {
  const card = document.createElement("div");
  card.className = "confirm";
  card.dataset.call = ev.call_id;
  card.innerHTML = `<div><b>Allow?</b> <code></code></div><div class="muted"></div>
    <button data-ok="1">Approve</button> <button data-ok="0">Deny</button>`;
  card.querySelector("code").textContent = ev.action;
  card.querySelector(".muted").textContent = ev.reason;
  card.addEventListener("click", (e) => {
    if (!e.target.dataset.ok) return;
    const approved = e.target.dataset.ok === "1";
    rt.send({ type: "conversation.item.create",
              item: { type: "function_call_output", call_id: ev.call_id, output: JSON.stringify({ approved }) } });
    rt.send({ type: "response.create" });
    card.replaceChildren(`${approved ? "Approved" : "Denied"}: ${ev.action}`);
  });
  $("confirmations").append(card);
}

// ------------------------------------------------------------------ text, media, camera

function sendText(text, extraParts = []) {
  if (!rt) return;
  lastPrompt = text;
  const content = [...extraParts];
  if (text) content.push({ type: "input_text", text });
  rt.send({ type: "conversation.item.create", item: { type: "message", role: "user", content } });
  rt.send({ type: "response.create" });
}

$("ask").addEventListener("submit", (e) => {
  e.preventDefault();
  const text = $("text").value.trim();
  if (!text) return;
  $("text").value = "";
  sendText(text, cameraFrames());
});

// A picked image goes into the conversation at once (data URL), a video is uploaded to /v1/files first;
// the next question, spoken or typed, is about it.
$("media").addEventListener("change", async () => {
  const file = $("media").files[0];
  if (!file || !rt) return;
  try {
    let part;
    if (file.type.startsWith("video/")) {
      const up = await rt.upload(file);
      part = { type: "input_video", file_id: up.id };
    } else {
      part = { type: "input_image", image_url: await readDataUrl(file) };
    }
    rt.send({ type: "conversation.item.create", item: { type: "message", role: "user", content: [part] } });
    $("attachments").textContent = `attached ${file.name}: ask about it`;
  } catch (err) {
    bubble(null, "error", String(err.message || err));
  }
  $("media").value = "";
});

function readDataUrl(file) {
  return new Promise((resolve, reject) => {
    const r = new FileReader();
    r.onload = () => resolve(r.result);
    r.onerror = () => reject(r.error);
    r.readAsDataURL(file);
  });
}

const frames = []; // camera frames since the last question: {image_url, timestamp_ms}
$("camera").addEventListener("click", async () => {
  const video = $("camera-view");
  if (cameraTimer) {
    clearInterval(cameraTimer);
    cameraTimer = null;
    video.srcObject.getTracks().forEach((t) => t.stop());
    video.hidden = true;
    return;
  }
  video.srcObject = await navigator.mediaDevices.getUserMedia({ video: { width: 640, height: 480 } });
  video.hidden = false;
  await video.play();
  const t0 = performance.now();
  const canvas = document.createElement("canvas");
  cameraTimer = setInterval(() => {
    canvas.width = video.videoWidth;
    canvas.height = video.videoHeight;
    canvas.getContext("2d").drawImage(video, 0, 0);
    frames.push({ type: "input_image", image_url: canvas.toDataURL("image/jpeg", 0.8),
                  timestamp_ms: Math.round(performance.now() - t0) });
    if (frames.length > 8) frames.shift(); // the last 4 s at 2 fps
  }, 500);
});

function cameraFrames() {
  return frames.splice(0, frames.length);
}
