// The wavar page: plain JS, no build step, nothing fetched but this server's own API.
"use strict";

const $ = (id) => document.getElementById(id);
const FRAME_MS = 180;     // each streamed frame stays at least this long: the eye sees planes
const TILE_PX = 112;      // images are drawn upscaled to about this many pixels a side

const state = {
  models: {},             // name -> /api/models entry
  model: null,            // the chosen entry
  controller: null,       // AbortController of the running generation
  upload: null,           // /api/uploads answer for the current file and model
  file: null,             // the chosen File (uploaded again when the model changes)
  mask: null,             // rows of 0/1 at the model's size: 1 = keep
  log: [],                // every stream event in order (read by the browser test)
};
window.wavar = state;          // for the console, and for the browser test
window.wavarLog = state.log;

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function api(path, options) {
  const r = await fetch(path, options);
  const body = await r.json().catch(() => ({}));
  if (!r.ok) throw new Error(body.error || `${r.status} ${r.statusText}`);
  return body;
}

function setStatus(text, error = false) {
  const s = $("status");
  s.textContent = text;
  s.classList.toggle("error", error);
}

function scaleOf(shape) { return Math.max(1, Math.floor(TILE_PX / Math.max(shape[0], shape[1]))); }

function fmt(x, digits = 0) {
  return x === null || x === undefined ? "n/a" : Number(x).toLocaleString("en", {
    maximumFractionDigits: digits, minimumFractionDigits: digits });
}

// ---------------------------------------------------------------- models and classes

async function loadModels() {
  const answer = await api("/api/models");
  const select = $("model");
  select.innerHTML = "";
  for (const m of answer.models) {
    state.models[m.name] = m;
    select.add(new Option(m.name, m.name));
  }
  $("n").max = answer.limits.max_images;
  state.limits = answer.limits;
  if (!answer.limits.live_frames) {
    $("frames-hint").textContent = "This server samples in one go, then sends the frames: the "
      + "finished sequences cut at the end of each bit-plane.";
  }
  chooseModel(select.value);
}

function chooseModel(name) {
  const m = state.models[name];
  state.model = m;
  const [h, w, c] = m.image_shape;
  $("model-info").textContent = `${m.description || m.name}. ${h}x${w}${c === 3 ? " colour" : " grey"}, `
    + `${m.language}${m.wavelet ? " / " + m.wavelet : ""}.`;
  const box = $("classes");
  box.innerHTML = "";
  m.classes.forEach((cls, i) => {
    const label = document.createElement("label");
    const input = document.createElement("input");
    input.type = "checkbox";
    input.value = cls;
    input.checked = i === 0;
    label.append(input, " " + cls);
    box.append(label);
  });
  // the model's recommended sampling fills the fields (plain sampling where it names none)
  const rec = m.sampling || {};
  const shown = (v, plain) => (v === undefined || v === null ? plain : [].concat(v).join(","));
  $("cfg").value = shown(rec.cfg, "1");
  $("temperature").value = shown(rec.temperature, "1");
  $("top-p").value = shown(rec.top_p, "");
  const raster = m.language === "raster";
  $("sampling-hint").textContent = (Object.keys(rec).length
    ? "Filled in: the sampling this model recommends. " : "")
    + (raster ? "One value each (a raster model has no bit-planes)."
      : "One value, or one per bit-plane separated by commas (the last holds for the planes after it).");
  for (const id of ["complete-prefix", "complete-region"]) $(id).disabled = raster;
  if (state.file) uploadFile(state.file);
}

function chosenClasses() {
  return [...document.querySelectorAll("#classes input:checked")].map((i) => i.value);
}

// "1" -> 1, "1, 1.5, 2" -> [1, 1.5, 2] (one per bit-plane); the server checks the ranges
function planeValues(id, name) {
  const parts = $(id).value.split(",").map((x) => x.trim());
  const values = parts.map(Number);
  if (parts.some((x) => x === "") || values.some((v) => !Number.isFinite(v))) {
    throw new Error(`${name}: a number, or numbers separated by commas`);
  }
  return values.length === 1 ? values[0] : values;
}

function samplingBody() {
  const classes = chosenClasses();
  if (!classes.length) throw new Error("choose at least one class");
  const body = { model: state.model.name, classes, n: Number($("n").value),
                 cfg: planeValues("cfg", "guidance (cfg)"),
                 temperature: planeValues("temperature", "temperature") };
  if ($("top-p").value.trim() !== "") body.top_p = planeValues("top-p", "top-p");
  for (const [id, key] of [["seed", "seed"], ["max-plane", "max_plane"], ["max-tokens", "max_tokens"]]) {
    if ($(id).value !== "") body[key] = Number($(id).value);
  }
  return body;
}

// ---------------------------------------------------------------- generation (a stream)

function makeTiles(count, names, shape) {
  const s = scaleOf(shape);
  const tiles = $("images");
  tiles.innerHTML = "";
  $("batch-links").innerHTML = "";
  const out = [];
  for (let i = 0; i < count; i++) {
    const tile = document.createElement("div");
    tile.className = "tile";
    const canvas = document.createElement("canvas");
    canvas.width = shape[1] * s;
    canvas.height = shape[0] * s;
    const caption = document.createElement("div");
    caption.className = "caption";
    caption.innerHTML = `<b>${names[i] ?? ""}</b><br><span class="numbers"></span>`;
    const links = document.createElement("div");
    links.className = "links";
    tile.append(canvas, caption, links);
    tiles.append(tile);
    out.push({ canvas, numbers: caption.querySelector(".numbers"), links });
  }
  return out;
}

async function drawDataUrl(canvas, url) {
  const img = new Image();
  img.src = url;
  await img.decode();
  const ctx = canvas.getContext("2d");
  ctx.imageSmoothingEnabled = false;
  ctx.drawImage(img, 0, 0, canvas.width, canvas.height);
}

async function showFrame(run, frame) {
  if (!run.tiles) run.tiles = makeTiles(frame.images.length, run.names, state.model.image_shape);
  await Promise.all(frame.images.map((url, i) => drawDataUrl(run.tiles[i].canvas, url)));
  frame.tokens.forEach((t, i) => {
    run.tiles[i].numbers.textContent = `${fmt(t)} tok · ${fmt(frame.bits[i])} bits`;
  });
  $("progress").value = frame.final ? 1 : (frame.index + 1) / frame.of;
  setStatus(`${frame.label}: ${fmt(frame.total_tokens)} tokens, ${fmt(frame.total_bits)} bits so far`);
  state.log.push({ event: "drawn", index: frame.index, final: frame.final, t: performance.now() });
}

function showDone(run, done) {
  const base = `/api/results/${done.result}`;
  const raster = state.model.language === "raster";
  run.tiles.forEach((tile, i) => {
    tile.links.innerHTML = `<a href="${base}/${i}.png" download>PNG</a>`
      + `<a href="${base}/${i}.gif" download>GIF</a>`
      + (raster ? "" : `<a href="${base}/${i}.wvr" download>.wvr</a>`);
  });
  $("batch-links").innerHTML = `<a href="${base}/grid.png" download>all as PNG</a>`
    + `<a href="${base}/grid.gif" download>all as GIF (coarse to fine)</a>`;
  const tokens = done.tokens.reduce((a, b) => a + b, 0);
  const bits = done.bits.reduce((a, b) => a + b, 0);
  const batched = done.batched_with ? `, in a batch with ${done.batched_with} other request(s)` : "";
  const calls = done.stages > 1 ? ` (${done.stages} sampler calls, a frame after each)` : "";
  setStatus(`${done.images} images in ${fmt(done.seconds, 1)} s${calls}${batched}: `
    + `${fmt(tokens)} tokens, ${fmt(bits)} bits`);
}

function finishRun(outcome) {
  document.body.dataset.run = outcome;
  document.body.dataset.runs = String(Number(document.body.dataset.runs) + 1);
  $("stop").disabled = true;
  $("sample").disabled = false;
}

// Server-sent events over a POST: fetch's stream, cut at blank lines.
async function readEvents(response, onEvent) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const chunk = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      let kind = "message", data = "";
      for (const line of chunk.split("\n")) {
        if (line.startsWith("event: ")) kind = line.slice(7);
        else if (line.startsWith("data: ")) data += line.slice(6);
      }
      onEvent(kind, data ? JSON.parse(data) : {});
    }
  }
}

async function generate(extra = {}) {
  if (state.controller) state.controller.abort();
  let body;
  try {
    body = { ...samplingBody(), ...extra };
  } catch (e) {
    setStatus(e.message, true);
    return;
  }
  const controller = new AbortController();
  state.controller = controller;
  const run = { names: body.classes.flatMap((c) => Array(body.n).fill(c)), tiles: null, label: "" };
  document.body.dataset.run = "running";
  $("stop").disabled = false;
  $("progress").removeAttribute("value");
  setStatus("Sending...");
  // frames are drawn in order, each held FRAME_MS, whatever the pace they arrive at
  let chain = Promise.resolve();
  let outcome = "error";
  try {
    const response = await fetch("/api/generate?stream=true", {
      method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body), signal: controller.signal });
    if (!response.ok) {
      const err = await response.json().catch(() => ({}));
      throw new Error(err.error || `${response.status} ${response.statusText}`);
    }
    await readEvents(response, (kind, data) => {
      // t: when it came (for the order of things); wall: the epoch clock the server's
      // started_at uses (the browser test checks that frames come while sampling goes on)
      state.log.push({ event: kind, index: data.index, final: data.final, stage: data.stage,
                       t: performance.now(), wall: Date.now(), started_at: data.started_at,
                       stage_starts: data.stage_starts });
      if (kind === "queued") setStatus(data.ahead ? `Waiting: ${data.ahead} request(s) ahead` : "Starting...");
      else if (kind === "started") setStatus("Sampling..." + (data.batched_with ? ` (sharing a batch with ${data.batched_with} other request(s))` : ""));
      else if (kind === "progress") setStatus(`Sampling${run.label ? " after " + run.label : ""}: step ${fmt(data.step)} (${fmt(data.seconds, 1)} s)`);
      else if (kind === "frame") {
        run.label = data.label;
        chain = chain.then(() => showFrame(run, data)).then(() => sleep(FRAME_MS));
      }
      else if (kind === "done") { outcome = "done"; chain = chain.then(() => showDone(run, data)); }
      else if (kind === "error") chain = chain.then(() => { throw new Error(data.error); });
    });
    await chain;
  } catch (e) {
    outcome = "error";
    setStatus(e.name === "AbortError" ? "Stopped." : `Error: ${e.message}`, e.name !== "AbortError");
  } finally {
    if (state.controller === controller) state.controller = null;
    finishRun(outcome);
  }
}

// ---------------------------------------------------------------- uploads

async function uploadFile(file) {
  state.file = file;
  const form = new FormData();
  form.append("file", file);
  form.append("model", state.model.name);
  const classes = chosenClasses();
  if (classes.length) form.append("class", classes[0]);
  $("upload-info").textContent = `Coding ${file.name}...`;
  $("upload-info").classList.remove("error");
  try {
    const up = await api("/api/uploads", { method: "POST", body: form });
    state.upload = up;
    showUpload(up);
  } catch (e) {
    state.upload = null;
    $("upload-view").hidden = true;
    $("upload-info").textContent = `Upload refused: ${e.message}`;
    $("upload-info").classList.add("error");
  }
}

function showUpload(up) {
  const s = scaleOf([up.height, up.width]);
  for (const id of ["upload-original", "upload-decoded", "mask-canvas"]) {
    $(id).width = up.width * s;
    $(id).height = up.height * s;
  }
  drawDataUrl($("upload-original"), up.image);
  const resized = up.original.height !== up.height || up.original.width !== up.width;
  $("upload-info").textContent = `${up.tokens} tokens in ${up.plane_ends.length} planes, `
    + `${fmt(up.bits)} bits under class ${up.class}`
    + (up.bits_tokens < up.tokens ? ` (first ${up.bits_tokens} tokens, the model's context)` : "")
    + (resized ? `; fitted from ${up.original.width}x${up.original.height}.` : ".");
  const slider = $("slider");
  slider.max = up.tokens;
  slider.value = up.tokens;
  $("plane-ticks").innerHTML = up.plane_ends.map((k) => `<option value="${k}"></option>`).join("");
  $("keep-planes").max = up.plane_ends.length;
  state.mask = Array.from({ length: up.height }, () => Array(up.width).fill(0));
  drawMask();
  $("upload-view").hidden = false;
  showPrefix();
}

let prefixRequest = 0;
async function showPrefix() {
  const up = state.upload;
  if (!up) return;
  const k = Number($("slider").value);
  const ticket = ++prefixRequest;
  try {
    const f = await api(`/api/uploads/${up.upload}/frame?tokens=${k}`);
    if (ticket !== prefixRequest) return;  // the slider has moved on
    await drawDataUrl($("upload-decoded"), f.image);
    const planes = up.plane_ends.filter((e) => e <= f.tokens).length;
    const quality = f.exact ? "exact" : `PSNR ${fmt(f.psnr, 2)} dB`;
    const readout = $("slider-readout");
    readout.textContent = `${fmt(f.tokens)} / ${fmt(f.of)} tokens (${planes} planes) · `
      + `${f.bits === null ? "bits n/a" : fmt(f.bits) + " bits"} · ${quality}`;
    readout.dataset.tokens = String(f.tokens);
    const base = `/api/uploads/${up.upload}`;
    $("upload-links").innerHTML = `<a href="${base}/image.png?tokens=${f.tokens}" download>PNG of this prefix</a>`
      + `<a href="${base}/prefix.wvc?tokens=${f.tokens}" download title="range-coded with the model: wavar decompress reads it">.wvc of this prefix</a>`
      + (state.model.language === "raster" ? "" : `<a href="${base}/prefix.wvr?tokens=${f.tokens}" download>.wvr of this prefix</a>`);
  } catch (e) {
    $("slider-readout").textContent = `Error: ${e.message}`;
  }
}

// ---------------------------------------------------------------- the mask

function drawMask() {
  const canvas = $("mask-canvas");
  const ctx = canvas.getContext("2d");
  const up = state.upload;
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  if (!up || !state.mask) return;
  const s = canvas.width / up.width;
  ctx.fillStyle = getComputedStyle(document.documentElement).getPropertyValue("--keep");
  state.mask.forEach((row, y) => row.forEach((v, x) => { if (v) ctx.fillRect(x * s, y * s, s, s); }));
}

function paintAt(event) {
  const up = state.upload;
  if (!up) return;
  const rect = $("mask-canvas").getBoundingClientRect();
  const x = (event.clientX - rect.left) / rect.width * up.width;
  const y = (event.clientY - rect.top) / rect.height * up.height;
  const r = Number($("brush").value) / 2;
  for (let row = 0; row < up.height; row++) {
    for (let col = 0; col < up.width; col++) {
      if ((row + 0.5 - y) ** 2 + (col + 0.5 - x) ** 2 <= r * r) state.mask[row][col] = 1;
    }
  }
  drawMask();
}

// ---------------------------------------------------------------- wiring

function wire() {
  $("model").addEventListener("change", (e) => chooseModel(e.target.value));
  $("classes-all").addEventListener("click", () => {
    document.querySelectorAll("#classes input").forEach((i) => { i.checked = true; });
  });
  $("classes-none").addEventListener("click", () => {
    document.querySelectorAll("#classes input").forEach((i) => { i.checked = false; });
  });
  $("sample").addEventListener("click", () => generate());
  $("stop").addEventListener("click", () => state.controller && state.controller.abort());
  $("upload-file").addEventListener("change", (e) => e.target.files[0] && uploadFile(e.target.files[0]));
  $("slider").addEventListener("input", showPrefix);
  $("complete-prefix").addEventListener("click", () => {
    if (!state.upload) return;
    generate({ upload: state.upload.upload, keep_planes: Number($("keep-planes").value) });
  });
  $("complete-region").addEventListener("click", () => {
    if (!state.upload) return;
    generate({ upload: state.upload.upload, mask: state.mask });
  });
  $("mask-clear").addEventListener("click", () => { state.mask = state.mask.map((r) => r.map(() => 0)); drawMask(); });
  $("mask-invert").addEventListener("click", () => { state.mask = state.mask.map((r) => r.map((v) => 1 - v)); drawMask(); });
  const mask = $("mask-canvas");
  mask.addEventListener("pointerdown", (e) => { mask.setPointerCapture(e.pointerId); paintAt(e); });
  mask.addEventListener("pointermove", (e) => { if (e.buttons & 1) paintAt(e); });
}

wire();
loadModels().catch((e) => setStatus(`Cannot list the models: ${e.message}`, true));
