// MooER web page: record (MediaRecorder) or upload audio, POST it to /v1/mooer/transcribe, show the
// transcript and translation. Streaming mode reads the server-sent events with fetch + ReadableStream.
// Live mode streams the microphone to /v1/realtime (WebSocket, OpenAI's realtime transcription events):
// an AudioWorklet (pcm-worklet.js) turns it into 16 kHz PCM16 chunks, final sentences and the provisional
// text of the current one are shown as they arrive.
"use strict";

const $ = (id) => document.getElementById(id);
const el = {
  record: $("record"), recordLabel: $("record-label"), recordTime: $("record-time"), micNote: $("mic-note"),
  file: $("file-input"), fileLabel: $("file-label"), drop: $("drop"), preview: $("preview"),
  task: $("task"), stream: $("stream"), hotwords: $("hotwords"), apiKey: $("api-key"), go: $("transcribe"),
  status: $("status"),
  result: $("result"), error: $("error"), asrBox: $("asr-box"), astBox: $("ast-box"),
  asr: $("asr-text"), ast: $("ast-text"), meta: $("meta"), info: $("server-info"),
  live: $("live"), liveLabel: $("live-label"), liveStatus: $("live-status"),
};

const state = { audio: null, name: null, recorder: null, timer: null, busy: false };

// ------------------------------------------------------------------------------------------- server info
async function loadInfo() {
  try {
    const r = await fetch("/health");
    const h = await r.json();
    el.info.textContent = `${h.model} · ${h.device} · max ${h.limits.max_audio_seconds} s`;
    for (const option of [...el.task.options]) option.disabled = !h.tasks.includes(option.value);
    if (el.task.selectedOptions[0]?.disabled || !localStorage.getItem("mooer.task")) el.task.value = h.default_task;
    if (h.limits.api_key) el.apiKey.closest("details").open = !el.apiKey.value;
  } catch (e) {
    el.info.textContent = "server unreachable";
  }
}

function restorePrefs() {
  el.apiKey.value = localStorage.getItem("mooer.key") || "";
  el.task.value = localStorage.getItem("mooer.task") || el.task.value;
  el.stream.checked = localStorage.getItem("mooer.stream") === "1";
  el.hotwords.value = localStorage.getItem("mooer.hotwords") || "";
  el.hotwords.addEventListener("change", () => localStorage.setItem("mooer.hotwords", el.hotwords.value));
  el.apiKey.addEventListener("change", () => localStorage.setItem("mooer.key", el.apiKey.value));
  el.task.addEventListener("change", () => { localStorage.setItem("mooer.task", el.task.value); layout(); });
  el.stream.addEventListener("change", () => localStorage.setItem("mooer.stream", el.stream.checked ? "1" : "0"));
}

// ------------------------------------------------------------------------------------------------- input
function setAudio(blob, name) {
  state.audio = blob;
  state.name = name;
  if (el.preview.src) URL.revokeObjectURL(el.preview.src);
  el.preview.src = URL.createObjectURL(blob);
  el.preview.hidden = false;
  el.go.disabled = state.busy;
  setStatus(`Ready: ${name} (${(blob.size / 1024).toFixed(0)} KB).`);
}

el.file.addEventListener("change", () => {
  const f = el.file.files[0];
  if (!f) return;
  el.fileLabel.textContent = f.name;
  el.drop.classList.add("chosen");
  setAudio(f, f.name);
});
for (const ev of ["dragenter", "dragover"]) {
  el.drop.addEventListener(ev, (e) => { e.preventDefault(); el.drop.classList.add("over"); });
}
for (const ev of ["dragleave", "drop"]) {
  el.drop.addEventListener(ev, (e) => { e.preventDefault(); el.drop.classList.remove("over"); });
}
el.drop.addEventListener("drop", (e) => {
  const f = e.dataTransfer.files[0];
  if (!f) return;
  el.fileLabel.textContent = f.name;
  el.drop.classList.add("chosen");
  setAudio(f, f.name);
});

function micAvailable() {
  return window.isSecureContext && navigator.mediaDevices && typeof MediaRecorder !== "undefined";
}

function liveAvailable() {
  return window.isSecureContext && navigator.mediaDevices && typeof AudioWorkletNode !== "undefined";
}

function recorderType() {
  const types = ["audio/webm;codecs=opus", "audio/ogg;codecs=opus", "audio/mp4", "audio/webm"];
  return types.find((t) => MediaRecorder.isTypeSupported(t)) || "";
}

async function toggleRecording() {
  if (state.recorder) { state.recorder.stop(); return; }
  let stream;
  try {
    stream = await navigator.mediaDevices.getUserMedia({ audio: true });
  } catch (e) {
    showError(`Microphone unavailable: ${e.message}`);
    return;
  }
  const type = recorderType();
  const recorder = new MediaRecorder(stream, type ? { mimeType: type } : undefined);
  const chunks = [];
  const started = Date.now();
  recorder.ondataavailable = (e) => { if (e.data.size) chunks.push(e.data); };
  recorder.onstop = () => {
    stream.getTracks().forEach((t) => t.stop());
    clearInterval(state.timer);
    state.recorder = null;
    el.record.classList.remove("recording");
    el.record.setAttribute("aria-pressed", "false");
    el.recordLabel.textContent = "Record again";
    const mime = recorder.mimeType || type || "audio/webm";
    const ext = mime.includes("ogg") ? "ogg" : mime.includes("mp4") ? "m4a" : "webm";
    setAudio(new Blob(chunks, { type: mime }), `recording.${ext}`);
  };
  recorder.start();
  state.recorder = recorder;
  el.record.classList.add("recording");
  el.record.setAttribute("aria-pressed", "true");
  el.recordLabel.textContent = "Stop recording";
  state.timer = setInterval(() => {
    el.recordTime.textContent = `${((Date.now() - started) / 1000).toFixed(1)} s`;
  }, 100);
}

// ------------------------------------------------------------------------------------------------ output
function setStatus(text) { el.status.textContent = text; }

function showError(message) {
  el.error.textContent = message;
  el.error.hidden = false;
}

function layout() {
  const task = el.task.value;
  el.asrBox.hidden = task === "ast";
  el.astBox.hidden = task === "asr";
  el.asrBox.parentElement.classList.toggle("single", task !== "asr_ast");
}

function show(task, asr, ast) {
  if (task === "ast") { el.ast.textContent = ast ?? ""; return; }
  el.asr.textContent = asr ?? "";
  if (task === "asr_ast") el.ast.textContent = ast ?? "";
}

// Streamed text of asr_ast is "transcript\ntranslation": split at the first newline, as the server does.
function showPartial(task, text) {
  if (task !== "asr_ast") { show(task, text, text); return; }
  const i = text.indexOf("\n");
  show(task, i < 0 ? text : text.slice(0, i), i < 0 ? "" : text.slice(i + 1));
}

async function errorOf(response) {
  try {
    const body = await response.json();
    return body.error?.message || JSON.stringify(body);
  } catch (e) {
    return `${response.status} ${response.statusText}`;
  }
}

// Parse a text/event-stream body: events are separated by a blank line; "data:" lines carry JSON.
async function* sseEvents(response) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    buffer += decoder.decode(value || new Uint8Array(), { stream: !done });
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      const data = block.split("\n").filter((l) => l.startsWith("data:")).map((l) => l.slice(5).trimStart());
      if (data.length) yield JSON.parse(data.join("\n"));
    }
    if (done) return;
  }
}

async function transcribe() {
  if (!state.audio || state.busy) return;
  const task = el.task.value;
  const streaming = el.stream.checked;
  const form = new FormData();
  form.append("file", state.audio, state.name);
  form.append("task", task);
  form.append("stream", streaming ? "true" : "false");
  if (el.hotwords.value.trim()) form.append("hotwords", el.hotwords.value.trim());
  const headers = {};
  if (el.apiKey.value) headers.Authorization = `Bearer ${el.apiKey.value}`;

  state.busy = true;
  el.go.disabled = true;
  el.error.hidden = true;
  el.meta.textContent = "";
  show(task, "", "");
  el.asr.textContent = "";
  el.ast.textContent = "";
  layout();
  el.result.dataset.state = "running";
  setStatus(streaming ? "Streaming…" : "Transcribing…");
  const t0 = performance.now();
  try {
    const response = await fetch("/v1/mooer/transcribe", { method: "POST", body: form, headers });
    if (!response.ok) throw new Error(await errorOf(response));
    let final;
    if (streaming) {
      let text = "";
      for await (const event of sseEvents(response)) {
        if (event.error) throw new Error(event.error.message);
        if (event.delta !== undefined) { text += event.delta; showPartial(task, text); }
        if (event.done) final = event;
      }
      if (!final) throw new Error("the stream ended early");
    } else {
      final = await response.json();
    }
    show(task, final.asr, final.ast);
    const secs = ((performance.now() - t0) / 1000).toFixed(2);
    const listed = final.hotwords ? ` · ${final.hotwords} hotword${final.hotwords === 1 ? "" : "s"}` : "";
    el.meta.textContent = `${final.duration} s of audio · ${final.preset} decoding${listed} · ${secs} s`;
    el.result.dataset.state = "done";
    setStatus("Done.");
  } catch (e) {
    el.result.dataset.state = "error";
    showError(e.message);
    setStatus("Failed.");
  } finally {
    state.busy = false;
    el.go.disabled = !state.audio;
  }
}

// -------------------------------------------------------------------------------------------------- live
const LIVE_RATE = 16000;
const live = { ws: null, ctx: null, mic: null, task: null, pending: 0, segments: 0, interims: 0,
               stopping: false, updates: 0, queue: [], failed: null };

function base64(buffer) {
  const bytes = new Uint8Array(buffer);
  let text = "";
  for (let i = 0; i < bytes.length; i += 0x8000) text += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
  return btoa(text);
}

function liveUrl() {
  return `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/v1/realtime?intent=transcription`;
}

// The provisional text of the current sentence: one grey paragraph at the end of each box in use.
function showInterim(text) {
  const parts = live.task === "asr_ast" ? splitTwo(text) : [text, text];
  for (const [box, part, used] of [[el.asr, parts[0], live.task !== "ast"], [el.ast, parts[1], live.task !== "asr"]]) {
    if (!used) continue;
    let p = box.querySelector("p.interim");
    if (!p) { p = document.createElement("p"); p.className = "interim"; box.appendChild(p); }
    p.textContent = part;
  }
}

function splitTwo(text) {
  const i = text.indexOf("\n");
  return i < 0 ? [text, ""] : [text.slice(0, i), text.slice(i + 1)];
}

function addFinal(event) {
  const asr = live.task === "asr_ast" ? event.asr : event.transcript;
  const ast = live.task === "asr_ast" ? event.ast : event.transcript;
  for (const [box, text, used] of [[el.asr, asr, live.task !== "ast"], [el.ast, ast, live.task !== "asr"]]) {
    if (!used) continue;
    box.querySelector("p.interim")?.remove();
    const p = document.createElement("p");
    p.className = "seg";
    p.textContent = text ?? "";
    box.appendChild(p);
  }
  live.segments += 1;
  el.meta.textContent = `live · ${live.segments} sentence${live.segments === 1 ? "" : "s"}`;
}

function onLiveEvent(event) {
  switch (event.type) {
    case "transcription_session.updated":
      live.updates += 1;
      break;
    case "input_audio_buffer.speech_started":
      el.liveStatus.textContent = "Hearing speech…";
      break;
    case "input_audio_buffer.speech_stopped":
      el.liveStatus.textContent = "Listening…";
      break;
    case "input_audio_buffer.committed":
      live.pending += 1;
      break;
    case "conversation.item.input_audio_transcription.delta":
      live.interims += 1;
      el.result.dataset.interims = String(live.interims);
      showInterim(event.transcript ?? event.delta ?? "");
      break;
    case "conversation.item.input_audio_transcription.completed":
      live.pending -= 1;
      addFinal(event);
      break;
    case "conversation.item.input_audio_transcription.failed":
      live.pending -= 1;
      showError(`A sentence could not be transcribed: ${event.error?.message}`);
      break;
    case "error":
      if (event.error?.code !== "input_audio_buffer_commit_empty") showError(event.error?.message || "server error");
      break;
  }
  // stopping: the second 'updated' answers the update sent after the last commit, so every sentence is
  // committed by then; the session ends when their results are in
  if (live.stopping && live.updates >= 2 && live.pending <= 0) endLive("done");
}

async function startLive() {
  const task = el.task.value;
  el.error.hidden = true;
  el.asr.textContent = "";
  el.ast.textContent = "";
  el.meta.textContent = "live";
  layout();
  Object.assign(live, { task, pending: 0, segments: 0, interims: 0, stopping: false, updates: 0, queue: [] });
  el.result.dataset.state = "live";
  el.result.dataset.interims = "0";
  el.live.disabled = true;
  el.task.disabled = true;
  el.go.disabled = true;
  try {
    live.mic = await navigator.mediaDevices.getUserMedia({ audio: { channelCount: 1, echoCancellation: true } });
    try {
      live.ctx = new AudioContext({ sampleRate: LIVE_RATE });
    } catch (e) {
      live.ctx = new AudioContext(); // the worklet then resamples
    }
    const rate = [16000, 24000].includes(live.ctx.sampleRate) ? live.ctx.sampleRate : LIVE_RATE;
    await live.ctx.audioWorklet.addModule("/static/pcm-worklet.js");
    const source = live.ctx.createMediaStreamSource(live.mic);
    const node = new AudioWorkletNode(live.ctx, "pcm16-chunker", { processorOptions: { targetRate: rate, chunkMs: 100 } });
    source.connect(node);
    node.connect(live.ctx.destination); // silent output: keeps the node in the rendered graph
    const protocols = ["realtime"];
    if (el.apiKey.value) protocols.push(`openai-insecure-api-key.${el.apiKey.value}`);
    const ws = new WebSocket(liveUrl(), protocols);
    live.ws = ws;
    node.port.onmessage = (e) => {
      const event = JSON.stringify({ type: "input_audio_buffer.append", audio: base64(e.data) });
      if (ws.readyState === WebSocket.OPEN) ws.send(event);
      else if (ws.readyState === WebSocket.CONNECTING) live.queue.push(event);
    };
    ws.onopen = () => {
      ws.send(JSON.stringify({ type: "transcription_session.update", session: {
        input_audio_format: { type: "audio/pcm", rate }, input_audio_transcription: { task } } }));
      for (const event of live.queue.splice(0)) ws.send(event);
      el.liveStatus.textContent = "Listening…";
    };
    ws.onmessage = (e) => onLiveEvent(JSON.parse(e.data));
    ws.onclose = (e) => {
      if (live.ws !== ws) return;
      if (live.stopping && e.code === 1000) endLive("done");
      else endLive("error", `The live connection closed (${e.code}${e.reason ? `: ${e.reason}` : ""}).`);
    };
    el.live.classList.add("recording");
    el.live.setAttribute("aria-pressed", "true");
    el.liveLabel.textContent = "Stop";
    el.liveStatus.textContent = "Connecting…";
    el.live.disabled = false;
  } catch (e) {
    endLive("error", `Live transcription unavailable: ${e.message}`);
  }
}

function releaseMic() {
  live.mic?.getTracks().forEach((t) => t.stop());
  live.ctx?.close().catch(() => {});
  live.mic = null;
  live.ctx = null;
}

// Stop: no more audio; commit the sentence being spoken and wait for the last results.
function stopLive() {
  releaseMic();
  live.stopping = true;
  el.live.disabled = true;
  el.liveStatus.textContent = "Finishing…";
  const ws = live.ws;
  if (!ws || ws.readyState !== WebSocket.OPEN) { endLive("done"); return; }
  ws.send(JSON.stringify({ type: "input_audio_buffer.commit" }));
  ws.send(JSON.stringify({ type: "transcription_session.update", session: {} }));
  setTimeout(() => { if (live.ws === ws) endLive("done"); }, 30000);
}

function endLive(outcome, message) {
  releaseMic();
  const ws = live.ws;
  live.ws = null;
  if (ws && ws.readyState <= WebSocket.OPEN) ws.close(1000);
  el.asr.querySelector("p.interim")?.remove();
  el.ast.querySelector("p.interim")?.remove();
  if (message) showError(message);
  el.result.dataset.state = outcome;
  el.live.classList.remove("recording");
  el.live.setAttribute("aria-pressed", "false");
  el.liveLabel.textContent = "Start live transcription";
  el.liveStatus.textContent = outcome === "done" ? "Stopped." : "Failed.";
  el.live.disabled = false;
  el.task.disabled = false;
  el.go.disabled = !state.audio;
}

// ------------------------------------------------------------------------------------------------- start
restorePrefs();
layout();
loadInfo().then(layout);
if (micAvailable()) {
  el.record.addEventListener("click", toggleRecording);
} else {
  el.record.disabled = true;
  el.micNote.hidden = false;
}
if (liveAvailable()) {
  el.live.addEventListener("click", () => (live.ws || live.mic ? stopLive() : startLive()));
} else {
  el.live.disabled = true;
  el.micNote.hidden = false;
}
el.go.addEventListener("click", transcribe);
