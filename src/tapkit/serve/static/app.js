// tapkit page: upload an image, prompt with clicks, boxes and sketches, draw the regions
// the API returns. Plain JS, no build step. Masks arrive as COCO compressed RLE.
"use strict";

const TOP_K = 5;
const DRAG_PX = 5;            // a press that moves further than this (screen px) is a drag
const MAX_SKETCH_POINTS = 512;

const $ = (id) => document.getElementById(id);
const canvas = $("canvas");
const ctx = canvas.getContext("2d");

const state = {
  file: null,          // the uploaded Blob, kept to re-upload if the server forgot the image
  bitmap: null,
  imageId: null,
  width: 0,
  height: 0,
  mode: "click",
  regions: [],         // kept regions: {data, mask, layer, colour}
  current: emptyCurrent(),
  colourIndex: 0,
  hover: -1,           // index in displayed(); -1 for none
  seq: 0,              // request counter; stale answers are dropped
  busy: 0,
  labels: [],          // the labels last drawn on the canvas: {text, x, y, w, h}
  health: null,
  semantic: null,      // the last label map (Classes mode): [{index, name, area, score, colour, layer}]
};

let drag = null;  // the press in progress: {button, kind: click|box|sketch, start, end, path, sx, sy, shift}

function emptyCurrent() {
  return { prompt: { points: [], box: null, sketch: null }, history: [], result: null };
}

// ---------- COCO RLE ----------

// The compressed counts string of pycocotools: each count is a little-endian run of
// 5-bit groups (character - 48, bit 0x20 = more follows, bit 0x10 of the last = negative);
// from the third count on, each is stored as a difference to the count two before.
function decodeRleCounts(s) {
  const counts = [];
  let p = 0;
  while (p < s.length) {
    let x = 0, k = 0, more = 1;
    while (more) {
      const c = s.charCodeAt(p) - 48;
      x |= (c & 0x1f) << (5 * k);
      more = c & 0x20;
      p++; k++;
      if (!more && (c & 0x10)) x |= -1 << (5 * k);
    }
    if (counts.length > 2) x += counts[counts.length - 2];
    counts.push(x);
  }
  return counts;
}

// {size: [h, w], counts} -> Uint8Array(h * w), row-major, 1 inside the mask.
// Runs are column-major and start with background.
function decodeRle(rle) {
  const [h, w] = rle.size;
  const mask = new Uint8Array(h * w);
  let index = 0, value = 0;
  for (const run of decodeRleCounts(rle.counts)) {
    if (value) {
      for (let i = index; i < index + run; i++) {
        const col = (i / h) | 0;
        mask[(i - col * h) * w + col] = 1;
      }
    }
    index += run;
    value ^= 1;
  }
  return mask;
}

// ---------- colours and mask layers ----------

function colourFor(i) {
  const hue = ((0.07 + i * 0.618034) % 1) * 360;
  return { css: `hsl(${hue.toFixed(0)} 80% 55%)`, rgb: hslToRgb(hue / 360, 0.8, 0.55) };
}

function hslToRgb(h, s, l) {
  const f = (n) => {
    const k = (n + h * 12) % 12;
    const a = s * Math.min(l, 1 - l);
    return Math.round(255 * (l - a * Math.max(-1, Math.min(k - 3, 9 - k, 1))));
  };
  return [f(0), f(8), f(4)];
}

// An image-sized canvas: the mask filled translucent, its outline opaque.
function maskLayer(mask, w, h, rgb) {
  const layer = document.createElement("canvas");
  layer.width = w; layer.height = h;
  const img = new ImageData(w, h);
  const px = img.data;
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      const i = y * w + x;
      if (!mask[i]) continue;
      const edge = x === 0 || y === 0 || x === w - 1 || y === h - 1 ||
        !mask[i - 1] || !mask[i + 1] || !mask[i - w] || !mask[i + w];
      px[4 * i] = rgb[0]; px[4 * i + 1] = rgb[1]; px[4 * i + 2] = rgb[2];
      px[4 * i + 3] = edge ? 255 : 115;
    }
  }
  layer.getContext("2d").putImageData(img, 0, 0);
  return layer;
}

function makeRegion(data, colour) {
  const mask = decodeRle(data.mask);
  const [h, w] = data.mask.size;
  return { data, mask, colour, layer: maskLayer(mask, w, h, colour.rgb) };
}

// ---------- API ----------

class ApiError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

async function api(path, options = {}) {
  const response = await fetch(path, options);
  let body = null;
  try { body = await response.json(); } catch (_) { /* an empty or non-JSON body */ }
  if (!response.ok) {
    throw new ApiError(response.status, (body && body.detail) || `${response.status} ${response.statusText}`);
  }
  return body;
}

async function uploadFile(file) {
  const form = new FormData();
  form.append("file", file, file.name || "image");
  return api("/v1/images", { method: "POST", body: form });
}

// Runs a request on the current image; if the server has evicted it, uploads it again once.
async function onImage(request) {
  try {
    return await request(state.imageId);
  } catch (err) {
    if (!(err instanceof ApiError) || err.status !== 404 || !state.file) throw err;
    const info = await uploadFile(state.file);
    state.imageId = info.id;
    return await request(state.imageId);
  }
}

function postJson(path, body) {
  return api(path, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) });
}

// ---------- opening images ----------

async function openFile(file) {
  if (!file) return;
  setStatus(`Uploading ${file.name || "image"}…`, true);
  try {
    const info = await uploadFile(file);
    const bitmap = await createImageBitmap(file, { imageOrientation: "from-image" });
    state.file = file;
    state.bitmap = bitmap;
    state.imageId = info.id;
    state.width = info.width;
    state.height = info.height;
    state.regions = [];
    state.current = emptyCurrent();
    state.colourIndex = 0;
    state.hover = -1;
    state.semantic = null;
    state.seq++;
    $("drop").hidden = true;
    setStatus(`${info.width}×${info.height} ${info.format} ready: click on an object`);
  } catch (err) {
    setStatus(`Could not open the image: ${err.message}`, false, true);
  } finally {
    done();
  }
  refresh();
}

// A generated picture of a few shapes, for trying the page without a file at hand.
function sampleImage() {
  const c = document.createElement("canvas");
  c.width = 640; c.height = 420;
  const g = c.getContext("2d");
  const sky = g.createLinearGradient(0, 0, 0, 420);
  sky.addColorStop(0, "#cfe3f5"); sky.addColorStop(1, "#f4efe4");
  g.fillStyle = sky; g.fillRect(0, 0, 640, 420);
  g.fillStyle = "#8fbf6a"; g.fillRect(0, 330, 640, 90);
  g.fillStyle = "#d9412b"; g.beginPath(); g.arc(150, 200, 80, 0, 2 * Math.PI); g.fill();
  g.fillStyle = "#2b6cd9"; g.fillRect(300, 120, 140, 190);
  g.fillStyle = "#f2c230"; g.beginPath(); g.moveTo(540, 110); g.lineTo(615, 300); g.lineTo(465, 300); g.closePath(); g.fill();
  return new Promise((resolve) => c.toBlob((blob) => resolve(new File([blob], "sample.png", { type: "image/png" })), "image/png"));
}

// ---------- prompts ----------

function promptIsEmpty(p) {
  return p.points.length === 0 && !p.box && !p.sketch;
}

function apiPrompt(p) {
  const out = {};
  if (p.points.length) out.points = p.points.map(([x, y, l]) => [round1(x), round1(y), l]);
  if (p.box) out.box = p.box.map(round1);
  if (p.sketch) out.sketch = p.sketch.map(([x, y]) => [round1(x), round1(y)]);
  return out;
}

const round1 = (v) => Math.round(v * 10) / 10;

function changePrompt(update) {
  const cur = state.current;
  cur.history.push(structuredClone(cur.prompt));
  update(cur.prompt);
  predictCurrent();
}

async function predictCurrent() {
  const cur = state.current;
  const seq = ++state.seq;
  if (promptIsEmpty(cur.prompt)) {
    cur.result = null;
    refresh();
    return;
  }
  refresh();
  setStatus("Thinking…", true);
  try {
    const body = { prompts: [apiPrompt(cur.prompt)], top_k: TOP_K, captions: true };
    const answer = await onImage((id) => postJson(`/v1/images/${id}/regions`, body));
    if (seq !== state.seq || cur !== state.current) return;
    cur.result = makeRegion(answer.regions[0], colourFor(state.colourIndex));
    setStatus(describe(answer.regions[0]));
  } catch (err) {
    if (seq === state.seq) setStatus(err.message, false, true);
  } finally {
    done();
    refresh();
  }
}

function describe(r) {
  const name = r.concept ? `${r.concept} (${r.concept_score.toFixed(2)})` : "region";
  return r.caption ? `${name}: ${r.caption}` : name;
}

function keepCurrent() {
  const cur = state.current;
  if (!cur.result) return;
  state.regions.push(cur.result);
  state.colourIndex++;
  state.current = emptyCurrent();
  state.seq++;
  refresh();
}

function undo() {
  const cur = state.current;
  if (cur.history.length) {
    cur.prompt = cur.history.pop();
    predictCurrent();
  } else if (state.regions.length) {
    state.regions.pop();
    state.colourIndex = Math.max(0, state.colourIndex - 1);
    refresh();
  }
}

function dropCurrent() {
  state.current = emptyCurrent();
  state.seq++;
  refresh();
}

function clearAll() {
  state.regions = [];
  state.colourIndex = 0;
  dropCurrent();
}

async function everything() {
  setStatus("Finding everything…", true);
  const seq = ++state.seq;
  try {
    const answer = await onImage((id) => postJson(`/v1/images/${id}/everything`, {}));
    if (seq !== state.seq) return;
    for (const data of answer.regions) state.regions.push(makeRegion(data, colourFor(state.colourIndex++)));
    setStatus(`${answer.regions.length} regions found`);
  } catch (err) {
    setStatus(err.message, false, true);
  } finally {
    done();
    refresh();
  }
}

// Classes mode: every pixel labelled with one of the typed class names.
async function labelClasses() {
  const classes = $("classes").value.split(",").map((c) => c.trim()).filter((c) => c);
  if (!classes.length) { setStatus("Type class names, comma-separated", false, true); return; }
  setStatus(`Labelling with ${classes.length} classes…`, true);
  const seq = ++state.seq;
  try {
    const answer = await onImage((id) => postJson(`/v1/images/${id}/segment`, { classes }));
    if (seq !== state.seq) return;
    state.semantic = answer.classes.filter((c) => c.area > 0).sort((a, b) => b.area - a.area).map((c) => {
      const colour = colourFor(c.index);
      const [h, w] = c.segmentation.size;
      return { ...c, colour, layer: maskLayer(decodeRle(c.segmentation), w, h, colour.rgb) };
    });
    setStatus(`${state.semantic.length} of ${classes.length} classes in the image`);
  } catch (err) {
    setStatus(err.message, false, true);
  } finally {
    done();
    refresh();
  }
}

function renderLegend() {
  const items = state.mode === "classes" && state.semantic ? state.semantic : [];
  const legend = $("legend");
  legend.replaceChildren();
  const total = state.width * state.height || 1;
  for (const c of items) {
    const li = el("li", "legend-item");
    li.style.setProperty("--c", c.colour.css);
    li.append(el("span", "swatch"), el("b", "name", c.name), el("span", "share", `${(100 * c.area / total).toFixed(1)}%`),
              el("span", "score", c.score.toFixed(2)));
    legend.append(li);
  }
  legend.hidden = $("legend-title").hidden = !items.length;
}

// ---------- drawing ----------

function displayed() {
  return state.current.result ? [...state.regions, state.current.result] : state.regions;
}

// Where the image sits on the canvas, in canvas backing-store pixels.
function view() {
  const dpr = window.devicePixelRatio || 1;
  const cw = canvas.width, ch = canvas.height;
  const pad = 12 * dpr;
  const scale = Math.min((cw - 2 * pad) / state.width, (ch - 2 * pad) / state.height, 6 * dpr);
  return { scale, ox: (cw - state.width * scale) / 2, oy: (ch - state.height * scale) / 2, dpr };
}

function toCanvas(x, y) {
  const v = view();
  return [v.ox + x * v.scale, v.oy + y * v.scale];
}

function toImage(event) {
  const v = view();
  const rect = canvas.getBoundingClientRect();
  const cx = (event.clientX - rect.left) * v.dpr, cy = (event.clientY - rect.top) * v.dpr;
  return [(cx - v.ox) / v.scale, (cy - v.oy) / v.scale];
}

function resizeCanvas() {
  const dpr = window.devicePixelRatio || 1;
  const rect = canvas.getBoundingClientRect();
  canvas.width = Math.max(1, Math.round(rect.width * dpr));
  canvas.height = Math.max(1, Math.round(rect.height * dpr));
  draw();
}

function draw() {
  ctx.setTransform(1, 0, 0, 1, 0, 0);
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  state.labels = [];
  if (!state.bitmap) return;
  const v = view();
  const w = state.width * v.scale, h = state.height * v.scale;
  ctx.imageSmoothingEnabled = v.scale < 2;
  ctx.drawImage(state.bitmap, v.ox, v.oy, w, h);
  if (state.mode === "classes" && state.semantic) {
    for (const c of state.semantic) ctx.drawImage(c.layer, v.ox, v.oy, w, h);
  }
  const regions = displayed();
  regions.forEach((r, i) => {
    ctx.globalAlpha = state.hover === -1 || state.hover === i ? 1 : 0.45;
    ctx.drawImage(r.layer, v.ox, v.oy, w, h);
    if (state.hover === i) ctx.drawImage(r.layer, v.ox, v.oy, w, h);
  });
  ctx.globalAlpha = 1;
  drawPrompt(state.current.prompt, v);
  if (drag && drag.kind !== "click") drawDrag(v);
  regions.forEach((r, i) => drawLabel(r, v, i === state.hover || (state.hover === -1 && r === state.current.result)));
}

function drawPrompt(p, v) {
  const s = v.dpr;
  if (p.box) {
    const [x1, y1] = toCanvas(p.box[0], p.box[1]), [x2, y2] = toCanvas(p.box[2], p.box[3]);
    ctx.lineWidth = 2 * s; ctx.setLineDash([6 * s, 4 * s]); ctx.strokeStyle = "#fff";
    ctx.strokeRect(x1, y1, x2 - x1, y2 - y1);
    ctx.setLineDash([]);
  }
  if (p.sketch) strokePath(p.sketch, "rgba(255,255,255,0.9)", 3 * s);
  for (const [x, y, label] of p.points) {
    const [cx, cy] = toCanvas(x, y);
    ctx.beginPath(); ctx.arc(cx, cy, 6 * s, 0, 2 * Math.PI);
    ctx.fillStyle = label === 1 ? "#22c55e" : "#ef4444"; ctx.fill();
    ctx.lineWidth = 2 * s; ctx.strokeStyle = "#fff"; ctx.stroke();
  }
}

function strokePath(points, style, width) {
  if (points.length < 2) return;
  ctx.beginPath();
  points.forEach(([x, y], i) => { const [cx, cy] = toCanvas(x, y); i ? ctx.lineTo(cx, cy) : ctx.moveTo(cx, cy); });
  ctx.lineWidth = width; ctx.lineCap = "round"; ctx.lineJoin = "round"; ctx.strokeStyle = style; ctx.stroke();
}

function drawDrag(v) {
  if (drag.kind === "box") {
    const [x1, y1] = toCanvas(...drag.start), [x2, y2] = toCanvas(...drag.end);
    ctx.lineWidth = 2 * v.dpr; ctx.setLineDash([6 * v.dpr, 4 * v.dpr]); ctx.strokeStyle = "#fff";
    ctx.strokeRect(x1, y1, x2 - x1, y2 - y1);
    ctx.setLineDash([]);
  } else if (drag.kind === "sketch") {
    strokePath(drag.path, "rgba(255,255,255,0.9)", 3 * v.dpr);
  }
}

// A label above the mask's box: concept and score, then the caption.
function drawLabel(r, v, full) {
  const d = r.data;
  if (!d.area) return;
  const s = v.dpr;
  const head = d.concept ? `${d.concept}  ${d.concept_score.toFixed(2)}` : `region  IoU ${d.score.toFixed(2)}`;
  const lines = [head];
  if (full && d.caption) lines.push(d.caption);
  const font = (bold) => `${bold ? 600 : 400} ${13 * s}px system-ui, sans-serif`;
  const lineH = 18 * s, padX = 7 * s;
  let width = 0;
  lines.forEach((text, i) => { ctx.font = font(i === 0); width = Math.max(width, ctx.measureText(text).width); });
  width = Math.min(width, canvas.width * 0.6);
  const boxW = width + 2 * padX, boxH = lines.length * lineH + 6 * s;
  let [x, top] = toCanvas(d.bbox[0], d.bbox[1]);
  let y = top - boxH - 4 * s;
  if (y < 2) y = top + 4 * s;  // no room above the box: inside its top-left corner
  x = Math.max(2, Math.min(x + (y > top ? 4 * s : 0), canvas.width - boxW - 2));
  // Step down past labels already drawn, so labels of overlapping regions stay readable.
  const overlaps = (l) => x < l.x + l.w && l.x < x + boxW && y < l.y + l.h && l.y < y + boxH;
  for (let tries = 0; tries < 20 && state.labels.some(overlaps); tries++) y += boxH + 3 * s;
  y = Math.max(2, Math.min(y, canvas.height - boxH - 2));
  ctx.fillStyle = "rgba(17, 24, 39, 0.86)";
  roundRect(x, y, boxW, boxH, 6 * s); ctx.fill();
  ctx.fillStyle = r.colour.css;
  ctx.fillRect(x, y + 4 * s, 3 * s, boxH - 8 * s);
  lines.forEach((text, i) => {
    ctx.font = font(i === 0);
    ctx.fillStyle = i === 0 ? "#fff" : "#d1d5db";
    ctx.fillText(fit(text, width), x + padX, y + 3 * s + (i + 0.75) * lineH);
  });
  state.labels.push({ text: lines.join("\n"), x, y, w: boxW, h: boxH });
}

function fit(text, width) {
  if (ctx.measureText(text).width <= width) return text;
  let out = text;
  while (out.length > 1 && ctx.measureText(out + "…").width > width) out = out.slice(0, -1);
  return out + "…";
}

function roundRect(x, y, w, h, r) {
  ctx.beginPath();
  ctx.moveTo(x + r, y); ctx.arcTo(x + w, y, x + w, y + h, r); ctx.arcTo(x + w, y + h, x, y + h, r);
  ctx.arcTo(x, y + h, x, y, r); ctx.arcTo(x, y, x + w, y, r); ctx.closePath();
}

// ---------- side list ----------

function renderList() {
  const list = $("regions");
  list.replaceChildren();
  const regions = displayed();
  regions.forEach((r, i) => {
    const d = r.data;
    const li = document.createElement("li");
    li.className = "region" + (i === state.hover ? " hover" : "") + (r === state.current.result ? " editing" : "");
    li.style.setProperty("--c", r.colour.css);
    li.addEventListener("mouseenter", () => setHover(i));
    li.addEventListener("mouseleave", () => setHover(-1));
    const head = el("div", "head");
    head.append(el("span", "swatch"), el("b", "concept", d.concept || "region"));
    if (d.concept_score != null) head.append(el("span", "prob", `${Math.round(d.concept_score * 100)}%`));
    head.append(el("span", "iou", `IoU ${d.score.toFixed(2)}`));
    if (r === state.current.result) head.append(el("span", "tag", "editing"));
    const remove = el("button", "remove", "×");
    remove.type = "button";
    remove.title = "Remove this region";
    remove.addEventListener("click", (e) => { e.stopPropagation(); removeRegion(r); });
    head.append(remove);
    li.append(head);
    if (d.caption) li.append(el("p", "caption", d.caption));
    if (d.concepts.length > 1) {
      const chips = el("div", "chips");
      for (const [name, p] of d.concepts.slice(1)) chips.append(el("span", "chip", `${name} ${Math.round(p * 100)}%`));
      li.append(chips);
    }
    li.append(el("div", "meta", `area ${d.area} px · box ${d.bbox.join(", ")}`));
    list.append(li);
  });
  $("count").textContent = regions.length ? String(regions.length) : "";
  $("empty").hidden = regions.length > 0;
}

function el(tag, cls, text) {
  const e = document.createElement(tag);
  e.className = cls;
  if (text != null) e.textContent = text;
  return e;
}

function removeRegion(r) {
  if (r === state.current.result) dropCurrent();
  else state.regions = state.regions.filter((x) => x !== r);
  state.hover = -1;
  refresh();
}

function setHover(i) {
  if (state.hover === i) return;
  state.hover = i;
  document.querySelectorAll("#regions .region").forEach((li, j) => li.classList.toggle("hover", j === i));
  draw();
}

function regionAt(x, y) {
  const regions = displayed();
  const xi = Math.floor(x), yi = Math.floor(y);
  if (xi < 0 || yi < 0 || xi >= state.width || yi >= state.height) return -1;
  for (let i = regions.length - 1; i >= 0; i--) if (regions[i].mask[yi * state.width + xi]) return i;
  return -1;
}

// ---------- UI state ----------

function refresh() {
  const has = !!state.bitmap;
  $("keep").disabled = !state.current.result;
  $("undo").disabled = !(state.current.history.length || state.regions.length);
  $("clear").disabled = !(state.regions.length || !promptIsEmpty(state.current.prompt));
  $("everything").hidden = !(state.health && state.health.model.everything);
  $("everything").disabled = !has;
  $("mode-classes").hidden = !(state.health && state.health.model.segmenter);
  $("label").disabled = !has;
  canvas.classList.toggle("ready", has);
  renderList();
  renderLegend();
  draw();
}

function setStatus(text, working = false, error = false) {
  if (working) state.busy++;
  const s = $("status");
  s.textContent = text;
  s.classList.toggle("error", error);
  s.classList.toggle("working", state.busy > 0);
}

function done() {
  state.busy = Math.max(0, state.busy - 1);
  $("status").classList.toggle("working", state.busy > 0);
}

function setMode(mode) {
  state.mode = mode;
  $("mode-click").setAttribute("aria-checked", String(mode === "click"));
  $("mode-sketch").setAttribute("aria-checked", String(mode === "sketch"));
  $("mode-classes").setAttribute("aria-checked", String(mode === "classes"));
  $("classes-form").hidden = mode !== "classes";
  canvas.classList.toggle("sketch", mode === "sketch");
  if (mode === "classes") $("classes").focus();
  refresh();
}

// ---------- pointer input ----------

const clampX = (x) => Math.max(0, Math.min(state.width, x));
const clampY = (y) => Math.max(0, Math.min(state.height, y));

canvas.addEventListener("contextmenu", (e) => e.preventDefault());

canvas.addEventListener("pointerdown", (e) => {
  if (!state.bitmap || state.mode === "classes" || (e.button !== 0 && e.button !== 2)) return;
  const [x, y] = toImage(e);
  if (x < 0 || y < 0 || x > state.width || y > state.height) return;
  canvas.setPointerCapture(e.pointerId);
  drag = { button: e.button, kind: "click", start: [x, y], end: [x, y], path: [[x, y]], sx: e.clientX, sy: e.clientY, shift: e.shiftKey };
});

canvas.addEventListener("pointermove", (e) => {
  if (!state.bitmap) return;
  const [x, y] = toImage(e);
  if (!drag) {
    setHover(regionAt(x, y));
    return;
  }
  const p = [clampX(x), clampY(y)];
  if (drag.kind === "click" && drag.button === 0 && Math.hypot(e.clientX - drag.sx, e.clientY - drag.sy) > DRAG_PX) {
    drag.kind = state.mode === "sketch" ? "sketch" : "box";
  }
  drag.end = p;
  if (drag.kind === "sketch") drag.path.push(p);
  if (drag.kind !== "click") draw();
});

canvas.addEventListener("pointerup", (e) => {
  if (!drag) return;
  const d = drag;
  drag = null;
  if (d.shift && state.current.result) keepCurrent();
  if (d.kind === "click") {
    const [x, y] = d.start;
    changePrompt((p) => p.points.push([x, y, d.button === 0 ? 1 : 0]));
  } else if (d.kind === "box") {
    const [x1, y1] = d.start, [x2, y2] = d.end;
    const box = [Math.min(x1, x2), Math.min(y1, y2), Math.max(x1, x2), Math.max(y1, y2)];
    changePrompt((p) => { p.box = box; });
  } else if (d.kind === "sketch") {
    const path = simplify(d.path);
    changePrompt((p) => { p.sketch = path; });
  }
});

canvas.addEventListener("pointercancel", () => { drag = null; draw(); });
canvas.addEventListener("pointerleave", () => { if (!drag) setHover(-1); });

// Keeps points at least a pixel apart, and at most MAX_SKETCH_POINTS of them.
function simplify(path) {
  const out = [];
  for (const p of path) {
    const last = out[out.length - 1];
    if (!last || Math.hypot(p[0] - last[0], p[1] - last[1]) >= 1) out.push(p);
  }
  if (out.length <= MAX_SKETCH_POINTS) return out;
  const step = out.length / MAX_SKETCH_POINTS;
  return Array.from({ length: MAX_SKETCH_POINTS }, (_, i) => out[Math.floor(i * step)]);
}

// ---------- wiring ----------

$("file").addEventListener("change", (e) => { openFile(e.target.files[0]); e.target.value = ""; });
$("sample").addEventListener("click", async () => openFile(await sampleImage()));
$("mode-click").addEventListener("click", () => setMode("click"));
$("mode-sketch").addEventListener("click", () => setMode("sketch"));
$("mode-classes").addEventListener("click", () => setMode("classes"));
$("classes-form").addEventListener("submit", (e) => { e.preventDefault(); labelClasses(); });
$("keep").addEventListener("click", keepCurrent);
$("undo").addEventListener("click", undo);
$("clear").addEventListener("click", clearAll);
$("everything").addEventListener("click", everything);

window.addEventListener("keydown", (e) => {
  if (e.target instanceof HTMLInputElement) return;
  if ((e.ctrlKey || e.metaKey) && e.key.toLowerCase() === "z") { e.preventDefault(); undo(); }
  else if (e.key === "Enter") keepCurrent();
  else if (e.key === "Escape") dropCurrent();
  else if (e.key === "s" || e.key === "S") setMode("sketch");
  else if (e.key === "b" || e.key === "B") setMode("click");
  else if ((e.key === "c" || e.key === "C") && state.health && state.health.model.segmenter) setMode("classes");
});

window.addEventListener("dragover", (e) => { e.preventDefault(); document.body.classList.add("dragging"); });
window.addEventListener("dragleave", (e) => { if (!e.relatedTarget) document.body.classList.remove("dragging"); });
window.addEventListener("drop", (e) => {
  e.preventDefault();
  document.body.classList.remove("dragging");
  const file = e.dataTransfer && e.dataTransfer.files[0];
  if (file) openFile(file);
});
window.addEventListener("paste", (e) => {
  const item = [...(e.clipboardData ? e.clipboardData.items : [])].find((i) => i.kind === "file");
  if (item) openFile(item.getAsFile());
});

new ResizeObserver(resizeCanvas).observe(canvas);

api("/healthz").then((health) => {
  state.health = health;
  const m = health.model;
  setStatus(`Model ready (${m.device}${m.captions ? ", captions" : ""}${m.concepts ? `, ${m.concepts} concepts` : ""}${m.segmenter ? ", classes" : ""}). Open an image.`);
  refresh();
}).catch((err) => setStatus(`Server not reachable: ${err.message}`, false, true));

// For debugging from the console, and for the browser test.
window.tapkit = { state, decodeRle, toCanvas, view };
