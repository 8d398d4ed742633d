// The vary-region mask editor. The mask lives in an offscreen canvas at the picture's natural size:
// opaque white where the picture is redrawn, transparent elsewhere. The view draws the picture, the
// mask tinted in the overlay colour, the shape being drawn and the brush's outline. Every stroke or
// shape is one undo step. The server (same origin, under the token in this page's path) checks,
// re-thresholds and stores the mask: this page holds no credential.
"use strict";

const api = (path) => new URL("api/" + path, document.baseURI.replace(/[^/]*$/, "")).toString();
const $ = (id) => document.getElementById(id);
const HISTORY_LIMIT = 40;
const TOOLS = { b: "brush", e: "eraser", r: "rect", o: "ellipse", l: "lasso", h: "pan" };

const state = {
  info: null,
  picture: new Image(),
  mask: document.createElement("canvas"),
  tinted: document.createElement("canvas"),
  tool: "brush",
  size: 40,
  colour: "#ff2d55",
  opacity: 0.55,
  scale: 1,
  offset: { x: 0, y: 0 },
  pointer: null, // the cursor in image coordinates
  drag: null, // the gesture under way: {kind, start, last, points}
  polygon: [], // clicked lasso points, closed by a double-click or Enter
  undo: [],
  redo: [],
  spaceHeld: false,
};
const view = $("view");
const ctx = view.getContext("2d");
const maskCtx = state.mask.getContext("2d", { willReadFrequently: true });

// --- geometry -------------------------------------------------------------------------------------
function toImage(event) {
  const box = view.getBoundingClientRect();
  return {
    x: (event.clientX - box.left - state.offset.x) / state.scale,
    y: (event.clientY - box.top - state.offset.y) / state.scale,
  };
}
function screenPoint(x, y) {
  // Where image point (x, y) is on the screen, in client coordinates (the browser test uses it).
  const box = view.getBoundingClientRect();
  return { x: box.left + state.offset.x + x * state.scale, y: box.top + state.offset.y + y * state.scale };
}
function fit() {
  const box = view.getBoundingClientRect();
  const { width, height } = state.info;
  state.scale = Math.min((box.width - 20) / width, (box.height - 20) / height);
  state.offset = { x: (box.width - width * state.scale) / 2, y: (box.height - height * state.scale) / 2 };
  state.fitted = true;
  render();
}
function zoomAt(factor, cx, cy) {
  const next = Math.min(32, Math.max(0.05, state.scale * factor));
  state.offset.x = cx - ((cx - state.offset.x) * next) / state.scale;
  state.offset.y = cy - ((cy - state.offset.y) * next) / state.scale;
  state.scale = next;
  state.fitted = false;
  render();
}
function zoomCentre(factor) {
  const box = view.getBoundingClientRect();
  zoomAt(factor, box.width / 2, box.height / 2);
}

// --- drawing ----------------------------------------------------------------------------------------
function render() {
  const ratio = window.devicePixelRatio || 1;
  const box = view.getBoundingClientRect();
  if (view.width !== Math.round(box.width * ratio) || view.height !== Math.round(box.height * ratio)) {
    view.width = Math.round(box.width * ratio);
    view.height = Math.round(box.height * ratio);
  }
  ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
  ctx.clearRect(0, 0, box.width, box.height);
  if (!state.info) return;
  ctx.save();
  ctx.translate(state.offset.x, state.offset.y);
  ctx.scale(state.scale, state.scale);
  ctx.imageSmoothingEnabled = state.scale < 1;
  ctx.drawImage(state.picture, 0, 0);
  const tctx = state.tinted.getContext("2d");
  tctx.globalCompositeOperation = "source-over";
  tctx.clearRect(0, 0, state.tinted.width, state.tinted.height);
  tctx.drawImage(state.mask, 0, 0);
  tctx.globalCompositeOperation = "source-in";
  tctx.fillStyle = state.colour;
  tctx.fillRect(0, 0, state.tinted.width, state.tinted.height);
  ctx.globalAlpha = state.opacity;
  ctx.drawImage(state.tinted, 0, 0);
  ctx.globalAlpha = 1;
  drawPreview();
  ctx.restore();
  drawCursor();
  $("zoom").textContent = Math.round(state.scale * 100) + "%";
}
function shapePath(target, kind, a, b) {
  target.beginPath();
  if (kind === "rect") {
    target.rect(Math.min(a.x, b.x), Math.min(a.y, b.y), Math.abs(b.x - a.x), Math.abs(b.y - a.y));
  } else {
    target.ellipse((a.x + b.x) / 2, (a.y + b.y) / 2, Math.abs(b.x - a.x) / 2, Math.abs(b.y - a.y) / 2, 0, 0, 2 * Math.PI);
  }
}
function polygonPath(target, points) {
  target.beginPath();
  points.forEach((p, i) => (i ? target.lineTo(p.x, p.y) : target.moveTo(p.x, p.y)));
  target.closePath();
}
function drawPreview() {
  ctx.lineWidth = 1.5 / state.scale;
  ctx.strokeStyle = "#fff";
  ctx.setLineDash([6 / state.scale, 4 / state.scale]);
  const drag = state.drag;
  if (drag && (drag.kind === "rect" || drag.kind === "ellipse")) {
    shapePath(ctx, drag.kind, drag.start, drag.last);
    ctx.stroke();
  }
  const points = drag && drag.kind === "lasso" ? drag.points : state.polygon;
  if (points.length > 1 || (points.length && state.pointer)) {
    ctx.beginPath();
    points.forEach((p, i) => (i ? ctx.lineTo(p.x, p.y) : ctx.moveTo(p.x, p.y)));
    if (!drag && state.pointer) ctx.lineTo(state.pointer.x, state.pointer.y);
    ctx.stroke();
  }
  ctx.setLineDash([]);
}
function drawCursor() {
  const p = state.pointer;
  if (!p || state.tool === "pan" || state.spaceHeld) return;
  const c = { x: state.offset.x + p.x * state.scale, y: state.offset.y + p.y * state.scale };
  ctx.lineWidth = 1;
  if (state.tool === "brush" || state.tool === "eraser") {
    const r = Math.max(1, (state.size / 2) * state.scale);
    for (const [colour, extra] of [["#000", 1], ["#fff", 0]]) {
      ctx.strokeStyle = colour;
      ctx.beginPath();
      ctx.arc(c.x, c.y, r + extra, 0, 2 * Math.PI);
      ctx.stroke();
    }
  } else {
    ctx.strokeStyle = "#fff";
    ctx.beginPath();
    ctx.moveTo(c.x - 8, c.y); ctx.lineTo(c.x + 8, c.y);
    ctx.moveTo(c.x, c.y - 8); ctx.lineTo(c.x, c.y + 8);
    ctx.stroke();
  }
}
function paintSegment(a, b, erase) {
  maskCtx.globalCompositeOperation = erase ? "destination-out" : "source-over";
  maskCtx.strokeStyle = "#fff";
  maskCtx.fillStyle = "#fff";
  maskCtx.lineWidth = state.size;
  maskCtx.lineCap = "round";
  maskCtx.lineJoin = "round";
  maskCtx.beginPath();
  if (a.x === b.x && a.y === b.y) {
    maskCtx.arc(a.x, a.y, state.size / 2, 0, 2 * Math.PI);
    maskCtx.fill();
  } else {
    maskCtx.moveTo(a.x, a.y);
    maskCtx.lineTo(b.x, b.y);
    maskCtx.stroke();
  }
  maskCtx.globalCompositeOperation = "source-over";
}
function fillPath(draw) {
  maskCtx.globalCompositeOperation = "source-over";
  maskCtx.fillStyle = "#fff";
  draw(maskCtx);
  maskCtx.fill();
}

// --- history: one snapshot of the mask before each stroke or shape --------------------------------
function remember() {
  state.undo.push(maskCtx.getImageData(0, 0, state.mask.width, state.mask.height));
  if (state.undo.length > HISTORY_LIMIT) state.undo.shift();
  state.redo = [];
  updateButtons();
}
function step(from, to) {
  if (!from.length) return;
  to.push(maskCtx.getImageData(0, 0, state.mask.width, state.mask.height));
  maskCtx.putImageData(from.pop(), 0, 0);
  updateButtons();
  render();
}
const undo = () => step(state.undo, state.redo);
const redo = () => step(state.redo, state.undo);
function clearMask() {
  remember();
  maskCtx.clearRect(0, 0, state.mask.width, state.mask.height);
  render();
}
function invertMask() {
  remember();
  const { width, height } = state.mask;
  const pixels = maskCtx.getImageData(0, 0, width, height);
  const data = pixels.data;
  for (let i = 0; i < data.length; i += 4) {
    const painted = data[i + 3] >= 128;
    data[i] = data[i + 1] = data[i + 2] = 255;
    data[i + 3] = painted ? 0 : 255;
  }
  maskCtx.putImageData(pixels, 0, 0);
  render();
}
function updateButtons() {
  $("undo").disabled = !state.undo.length;
  $("redo").disabled = !state.redo.length;
}

// --- pointer gestures --------------------------------------------------------------------------------
function closePolygon() {
  if (state.polygon.length >= 3) {
    remember();
    const points = state.polygon;
    fillPath((target) => polygonPath(target, points));
  }
  state.polygon = [];
  render();
}
view.addEventListener("pointerdown", (event) => {
  if (!state.info) return;
  view.setPointerCapture(event.pointerId);
  const p = toImage(event);
  const panning = state.tool === "pan" || state.spaceHeld || event.button === 1;
  if (panning) {
    state.drag = { kind: "pan", start: { x: event.clientX, y: event.clientY }, last: { x: event.clientX, y: event.clientY } };
    return;
  }
  if (event.button !== 0) return;
  state.drag = { kind: state.tool, start: p, last: p, points: [p], moved: false };
  if (state.tool === "brush" || state.tool === "eraser") {
    remember();
    paintSegment(p, p, state.tool === "eraser");
  }
  render();
});
view.addEventListener("pointermove", (event) => {
  state.pointer = toImage(event);
  const drag = state.drag;
  if (drag && drag.kind === "pan") {
    state.fitted = false;
    state.offset.x += event.clientX - drag.last.x;
    state.offset.y += event.clientY - drag.last.y;
    drag.last = { x: event.clientX, y: event.clientY };
  } else if (drag) {
    const p = state.pointer;
    drag.moved = drag.moved || Math.hypot((p.x - drag.start.x) * state.scale, (p.y - drag.start.y) * state.scale) > 3;
    if (drag.kind === "brush" || drag.kind === "eraser") paintSegment(drag.last, p, drag.kind === "eraser");
    if (drag.kind === "lasso") drag.points.push(p);
    drag.last = p;
  }
  render();
});
view.addEventListener("pointerup", (event) => {
  const drag = state.drag;
  state.drag = null;
  if (!drag || drag.kind === "pan") return render();
  const p = toImage(event);
  if ((drag.kind === "rect" || drag.kind === "ellipse") && drag.moved) {
    remember();
    fillPath((target) => shapePath(target, drag.kind, drag.start, p));
  } else if (drag.kind === "lasso" && drag.moved && state.polygon.length === 0) {
    if (drag.points.length >= 3) {
      remember();
      fillPath((target) => polygonPath(target, drag.points));
    }
  } else if (drag.kind === "lasso") {
    state.polygon.push(p); // a click: one more corner of a polygon
  }
  render();
});
view.addEventListener("dblclick", () => state.tool === "lasso" && closePolygon());
view.addEventListener("pointerleave", () => {
  state.pointer = null;
  render();
});
view.addEventListener(
  "wheel",
  (event) => {
    event.preventDefault();
    const box = view.getBoundingClientRect();
    zoomAt(event.deltaY < 0 ? 1.15 : 1 / 1.15, event.clientX - box.left, event.clientY - box.top);
  },
  { passive: false },
);

// --- tools and keys ---------------------------------------------------------------------------------
function setTool(tool) {
  if (tool !== "lasso") state.polygon = [];
  state.tool = tool;
  document.querySelectorAll("[data-tool]").forEach((b) => b.classList.toggle("active", b.dataset.tool === tool));
  view.classList.toggle("pan", tool === "pan");
  render();
}
function setSize(size) {
  state.size = Math.max(1, Math.min(400, Math.round(size)));
  $("size").value = state.size;
  $("size-out").textContent = state.size;
  render();
}
document.querySelectorAll("[data-tool]").forEach((b) => b.addEventListener("click", () => setTool(b.dataset.tool)));
$("size").addEventListener("input", (e) => setSize(Number(e.target.value)));
$("colour").addEventListener("input", (e) => { state.colour = e.target.value; render(); });
$("opacity").addEventListener("input", (e) => { state.opacity = Number(e.target.value) / 100; render(); });
$("undo").addEventListener("click", undo);
$("redo").addEventListener("click", redo);
$("clear").addEventListener("click", clearMask);
$("invert").addEventListener("click", invertMask);
$("zoom-in").addEventListener("click", () => zoomCentre(1.25));
$("zoom-out").addEventListener("click", () => zoomCentre(1 / 1.25));
$("fit").addEventListener("click", fit);
// The stage changes size without the window doing so (the variants strip appears under it): a canvas
// whose bitmap kept its old size would be drawn stretched, so every change of its box redraws it.
// A picture the user has not zoomed or panned is fitted again to the new box.
new ResizeObserver(() => (state.fitted && state.info ? fit() : render())).observe(view);
document.addEventListener("keydown", (event) => {
  if (event.target.closest("input, textarea, select")) return;
  const key = event.key.toLowerCase();
  const command = event.ctrlKey || event.metaKey;
  if (command && key === "z") { event.preventDefault(); return event.shiftKey ? redo() : undo(); }
  if (command && key === "y") { event.preventDefault(); return redo(); }
  if (command || event.altKey) return;
  if (TOOLS[key]) return setTool(TOOLS[key]);
  if (key === "[") return setSize(state.size * 0.8);
  if (key === "]") return setSize(state.size * 1.25 + 1);
  if (key === "i") return invertMask();
  if (key === "+" || key === "=") return zoomCentre(1.25);
  if (key === "-") return zoomCentre(1 / 1.25);
  if (key === "0") return fit();
  if (key === "enter" && state.polygon.length) return closePolygon();
  if (key === "escape") { state.polygon = []; return render(); }
  if (key === " ") { event.preventDefault(); state.spaceHeld = true; view.classList.add("pan"); }
});
document.addEventListener("keyup", (event) => {
  if (event.key === " ") { state.spaceHeld = false; view.classList.toggle("pan", state.tool === "pan"); }
});

// --- the job: check, submit, save, progress ---------------------------------------------------------
function exportMask() {
  // Black background, white where painted, at the natural size: the server re-thresholds it.
  const out = document.createElement("canvas");
  out.width = state.mask.width;
  out.height = state.mask.height;
  const octx = out.getContext("2d");
  octx.fillStyle = "#000";
  octx.fillRect(0, 0, out.width, out.height);
  octx.drawImage(state.mask, 0, 0);
  return out.toDataURL("image/png");
}
function formFields() {
  const fields = {};
  for (const name of ["parent_task_id", "prompt", "metadata", "job_id", "mask_fit"]) fields[name] = $(name).value;
  return fields;
}
function showErrors(error) {
  document.querySelectorAll(".error[data-field]").forEach((p) => (p.textContent = ""));
  if (!error) return;
  const target = document.querySelector(`.error[data-field="${error.field}"]`) || document.querySelector('.error[data-field="job"]');
  target.textContent = `${error.message} (${error.code})`;
}
async function post(path, body) {
  const response = await fetch(api(path), { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
  const answer = await response.json().catch(() => ({ error: { code: "EDITOR_ERROR", message: response.statusText } }));
  showErrors(answer.error);
  return answer.error ? null : answer;
}
async function send(path) {
  $("message").textContent = "";
  const answer = await post(path, { ...formFields(), mask: exportMask() });
  if (!answer) return;
  if (path === "save") {
    $("message").textContent = "saved " + answer.files.join(", ");
    return;
  }
  $("message").textContent = `submitted ${answer.job_id}`;
  follow(answer.job_id);
}
async function follow(jobId) {
  $("job").hidden = true;
  $("progress").hidden = false;
  $("job-name").textContent = jobId;
  $("job-error").textContent = "";
  document.body.dataset.jobStatus = "WAITING";
  for (;;) {
    const response = await fetch(api("jobs/" + encodeURIComponent(jobId)));
    const job = await response.json();
    const status = job.status || "WAITING";
    document.body.dataset.jobStatus = status;
    $("job-status").textContent = status;
    $("job-stage").textContent = job.stage ? `stage ${job.stage}` : "";
    $("job-bar").value = status === "COMPLETED" ? 100 : job.percentage || 0;
    if (job.error) $("job-error").textContent = `${job.error.code}: ${job.error.message}`;
    if (status === "COMPLETED") return showVariants(jobId);
    if (["FAILED", "REJECTED"].includes(status)) return;
    await new Promise((resolve) => setTimeout(resolve, 1000));
  }
}
function showVariants(jobId) {
  $("results").hidden = false;
  $("result-parent").src = api("parent");
  document.querySelectorAll("[data-variant]").forEach((img) => {
    img.src = api(`jobs/${encodeURIComponent(jobId)}/${img.dataset.variant}.png`);
  });
}
// Each field is checked by the server as it changes, with the CLI's and the pipeline's own rules.
for (const name of ["parent_task_id", "prompt", "metadata", "job_id", "mask_fit"]) {
  $(name).addEventListener("change", () => post("check", formFields()));
}
$("submit").addEventListener("click", () => send("submit"));
$("save").addEventListener("click", () => send("save"));
$("again").addEventListener("click", () => {
  $("progress").hidden = true;
  $("job").hidden = false;
  $("job_id").value = "";
});
$("done").addEventListener("click", async () => {
  await fetch(api("done"), { method: "POST" });
  document.body.innerHTML = "<p style='padding:20px'>The editor has stopped; you can close this tab.</p>";
});

// --- start -----------------------------------------------------------------------------------------
async function start() {
  const info = await (await fetch(api("session"))).json();
  state.info = info;
  $("label").textContent = `${info.label} · ${info.width}×${info.height}`;
  state.mask.width = state.tinted.width = info.width;
  state.mask.height = state.tinted.height = info.height;
  if (info.parent_task_id) {
    $("parent_task_id").value = info.parent_task_id + (info.index ? ` (image ${info.index})` : "");
    $("parent_task_id").readOnly = true;
  }
  $("submit").disabled = !info.can_submit;
  $("save").disabled = !info.can_save;
  state.picture.src = api("parent");
  await state.picture.decode();
  setTool("brush");
  updateButtons();
  fit();
  document.body.dataset.ready = "true";
}
window.vrEditor = { screenPoint, state };
start();
