// The reaching page: an action-expert model file takes obs [7] = start (x, y), goal (x, y),
// obstacle centre (x, y), radius and samples chunks of 16 waypoints [16, 2]. Drag the start, the
// goal or the obstacle (pointer events) or move the radius slider; after each change (debounced,
// one sample call in flight at most) the page samples 32 paths on onnxruntime-web (wasm) and
// redraws them. ?model=URL names the file (default: reach.onnx next to this page; /reach.onnx: the served root's).
//
// For tests and the console, window.fmReach = {
//   ready:    a Promise, settled after the first model load and draw (rejects if loading fails),
//   obs():    the current obs, number[7],
//   last():   {obs, paths} of the last drawn sample (paths: number[32][16][2]), or null,
//   toCanvas([x, y]): the viewport (CSS pixel) position of a world point, as page.mouse takes it,
//   sampled:  how many samples have been drawn (incremented after each completed redraw),
// }

import { load, ModelError } from 'fm-runtime';

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const N = 32, WORLD = 1.2, DEBOUNCE_MS = 30, HIT_PX = 16;
const COLORS = { left: '#3056d3', right: '#e8590c' };
const canvas = $('canvas'), g = canvas.getContext('2d'), SIZE = canvas.width;
const state = { sampler: null, obs: [-1, -0.15, 1, 0.15, 0, 0, 0.3], last: null, message: 'loading the model…', seed: 0, drag: null, sampled: 0 };

// world <-> canvas (CSS pixels, y up in the world)
const scale = SIZE / (2 * WORLD);
const X = (x) => (x + WORLD) * scale, Y = (y) => (WORLD - y) * scale;
const toWorld = (px, py) => [px / scale - WORLD, WORLD - py / scale];
const clamp = (v) => Math.max(-WORLD, Math.min(WORLD, v));

/** Scores each path as the training code does (training/tasks/reach.py, metrics). */
function score(obs, paths) {
  const [sx, sy, gx, gy, cx, cy, r] = obs, len = Math.hypot(gx - sx, gy - sy);
  const [nx, ny] = [-(gy - sy) / len, (gx - sx) / len];          // the left normal, start to goal
  const progress = ((cx - sx) * (gx - sx) + (cy - sy) * (gy - sy)) / (len * len);
  const k = Math.max(0, Math.min(15, Math.round(progress * 16) - 1));
  return paths.map((p) => {
    const pts = [[sx, sy], ...p];
    let clear = Infinity;
    for (let i = 1; i < pts.length; i++) clear = Math.min(clear, segmentDistance(pts[i - 1], pts[i], cx, cy) - r);
    const end = Math.hypot(p[15][0] - gx, p[15][1] - gy);
    return { ok: end <= 0.1 && clear > 0, left: (p[k][0] - cx) * nx + (p[k][1] - cy) * ny > 0, end };
  });
}

function segmentDistance([ax, ay], [bx, by], cx, cy) {
  const dx = bx - ax, dy = by - ay, l2 = dx * dx + dy * dy;
  const s = l2 > 1e-12 ? Math.max(0, Math.min(1, ((cx - ax) * dx + (cy - ay) * dy) / l2)) : 0;
  return Math.hypot(ax + s * dx - cx, ay + s * dy - cy);
}

function draw() {
  const dpr = window.devicePixelRatio || 1;
  if (canvas.width !== Math.round(SIZE * dpr)) canvas.width = canvas.height = Math.round(SIZE * dpr);
  g.setTransform(dpr, 0, 0, dpr, 0, 0);
  g.fillStyle = '#fff'; g.fillRect(0, 0, SIZE, SIZE);
  g.lineWidth = 1; g.font = '11px system-ui, sans-serif'; g.fillStyle = '#8a93a6';
  for (let v = -1; v <= 1; v += 0.5) {
    g.strokeStyle = v === 0 ? '#dfe3ea' : '#eef0f4';
    g.beginPath(); g.moveTo(X(v), 0); g.lineTo(X(v), SIZE); g.moveTo(0, Y(v)); g.lineTo(SIZE, Y(v)); g.stroke();
    g.textAlign = 'left'; g.fillText(v, X(v) + 3, SIZE - 5);
    if (v) g.fillText(v, 4, Y(v) - 3);
  }
  const [sx, sy, gx, gy, cx, cy, r] = state.obs;
  disc(cx, cy, r * scale, '#c3c8d2');
  disc(cx, cy, 3, '#8a93a6');
  const last = state.last;
  if (last) {
    const stale = last.obs.some((v, i) => v !== state.obs[i]);
    g.globalAlpha = stale ? 0.25 : 0.6; g.lineWidth = 1.4; g.lineJoin = 'round';
    last.paths.forEach((p, i) => {
      g.strokeStyle = last.scores[i].left ? COLORS.left : COLORS.right;
      g.beginPath(); g.moveTo(X(last.obs[0]), Y(last.obs[1]));
      for (const [x, y] of p) g.lineTo(X(x), Y(y));
      g.stroke();
    });
    g.globalAlpha = 1;
  } else {
    g.fillStyle = '#5b6478'; g.font = '15px system-ui, sans-serif'; g.textAlign = 'center';
    g.fillText(state.message, SIZE / 2, 40);
  }
  disc(sx, sy, 7, '#111');
  star(X(gx), Y(gy), 12, '#d62828');
}

function disc(x, y, radiusPx, color) {
  g.fillStyle = color; g.beginPath(); g.arc(X(x), Y(y), radiusPx, 0, 2 * Math.PI); g.fill();
}

function star(x, y, R, color) {
  g.beginPath();
  for (let i = 0; i < 10; i++) {
    const a = -Math.PI / 2 + (i * Math.PI) / 5, rr = i % 2 ? R * 0.45 : R;
    g.lineTo(x + rr * Math.cos(a), y + rr * Math.sin(a));
  }
  g.closePath(); g.fillStyle = color; g.fill(); g.strokeStyle = '#fff'; g.lineWidth = 1.5; g.stroke();
}

function setStats(rows) {
  $('stats').replaceChildren(...rows.flatMap(([k, v]) => [
    Object.assign(document.createElement('dt'), { textContent: k }),
    Object.assign(document.createElement('dd'), { textContent: v })]));
}

function showError(e) {
  $('error').hidden = false;
  $('error').textContent = `${e.name ?? 'Error'}: ${e.message ?? e}`;
}

/** Sample N paths for the current obs, score them and redraw. */
async function sampleOnce() {
  const obs = state.obs.slice(), sampler = state.sampler, t0 = performance.now();
  const r = await sampler.sample({ n: N, cond: { obs: { data: Float32Array.from(obs), dims: [7] } }, seed: state.seed });
  const ms = performance.now() - t0;
  if (sampler !== state.sampler) return;                            // another file was loaded meanwhile
  const paths = Array.from({ length: N }, (_, i) => Array.from({ length: 16 }, (_, k) => [r.data[i * 32 + 2 * k], r.data[i * 32 + 2 * k + 1]]));
  const scores = score(obs, paths), share = (f) => `${Math.round((100 * scores.filter(f).length) / N)}%`;
  state.last = { obs, paths, scores };
  $('error').hidden = true;
  draw();
  setStats([
    ['success', `${share((s) => s.ok)} reach the goal (within 0.1) clear of the obstacle`],
    ['left', `${share((s) => s.left)} pass left of it, seen from start to goal`],
    ['sampling', `${ms.toFixed(1)} ms per call: ${N} paths, ${r.nfe} network evals each`],
  ]);
  state.sampled++;
}

// debounced, and never two sample calls at once: changes during a call resample once it is done
let timer = 0, running = false, again = false;
function schedule() {
  clearTimeout(timer);
  timer = setTimeout(kick, DEBOUNCE_MS);
}
async function kick() {
  if (!state.sampler) return;
  if (running) { again = true; return; }
  running = true;
  try {
    do { again = false; await sampleOnce(); } while (again && state.sampler);
  } catch (e) { showError(e); } finally { running = false; }
}

function changed() {
  const [sx, sy, gx, gy, cx, cy, r] = state.obs;
  const mid = [(sx + gx) / 2, (sy + gy) / 2];
  const outside = Math.abs(sx + 1) > 0.02 || Math.abs(gx - 1) > 0.02 || Math.abs(sy) > 0.5 || Math.abs(gy) > 0.5
    || Math.hypot(cx - mid[0], cy - mid[1]) > 0.15 || r < 0.2 || r > 0.4;
  $('note').hidden = !outside;
  draw();
  schedule();
}

// dragging: the start (obs 0-1), the goal (2-3) or the obstacle centre (4-5, also from inside the disc);
// moving the start or the goal carries the obstacle with their midpoint
function handleAt(px, py) {
  const o = state.obs, d = (i) => Math.hypot(X(o[i]) - px, Y(o[i + 1]) - py);
  const near = [0, 2, 4].map((i) => [d(i), i]).sort((a, b) => a[0] - b[0])[0];
  if (near[0] <= HIT_PX) return near[1];
  return Math.hypot(...toWorld(px, py).map((v, j) => v - o[4 + j])) <= o[6] ? 4 : null;
}
const local = (e) => { const b = canvas.getBoundingClientRect(), k = SIZE / b.width; return [(e.clientX - b.left) * k, (e.clientY - b.top) * k]; };
canvas.addEventListener('pointerdown', (e) => {
  const [px, py] = local(e), i = handleAt(px, py);
  if (i === null) return;
  const [wx, wy] = toWorld(px, py);
  state.drag = { i, dx: state.obs[i] - wx, dy: state.obs[i + 1] - wy };
  canvas.setPointerCapture(e.pointerId);
  canvas.classList.add('dragging');
});
canvas.addEventListener('pointermove', (e) => {
  const [px, py] = local(e), drag = state.drag;
  canvas.classList.toggle('over', handleAt(px, py) !== null);
  if (!drag) return;
  const [wx, wy] = toWorld(px, py), next = [clamp(wx + drag.dx), clamp(wy + drag.dy)];
  const other = drag.i === 0 ? 2 : drag.i === 2 ? 0 : -1;        // keep start and goal apart
  if (other >= 0 && Math.hypot(next[0] - state.obs[other], next[1] - state.obs[other + 1]) < 0.1) return;
  const o = state.obs, before = [(o[0] + o[2]) / 2, (o[1] + o[3]) / 2];
  [o[drag.i], o[drag.i + 1]] = next;
  if (drag.i !== 4) {      // the obstacle keeps its place beside the start-goal midpoint, as in training
    o[4] = clamp(o[4] + (o[0] + o[2]) / 2 - before[0]);
    o[5] = clamp(o[5] + (o[1] + o[3]) / 2 - before[1]);
  }
  changed();
});
const endDrag = () => { state.drag = null; canvas.classList.remove('dragging'); };
canvas.addEventListener('pointerup', endDrag);
canvas.addEventListener('pointercancel', endDrag);
$('radius').addEventListener('input', () => {
  state.obs[6] = Number($('radius').value);
  $('radius-value').textContent = state.obs[6].toFixed(2);
  changed();
});
$('noise').addEventListener('click', () => { state.seed++; schedule(); });

async function loadModel(source, name) {
  $('error').hidden = true;
  $('noise').disabled = true;
  state.sampler = null; state.last = null;
  $('model').textContent = `loading ${name}…`;
  state.message = 'loading the model…';
  draw();
  try {
    const s = await load(source, { backend: 'wasm' });
    if (s.spec.dataShape.join() !== '16,2') throw new ModelError(`${name} samples data of shape [${s.spec.dataShape}], not a chunk of 16 waypoints [16, 2]`);
    state.sampler = s;
  } catch (e) {
    $('model').textContent = `${name}: not loaded`;
    state.message = 'no model loaded: choose a model file';
    showError(e);
    if (/not found/.test(e.message ?? '')) {     // the usual first visit: nothing trained yet, or a path off the served root
      $('error').textContent += ' — train and export the reach model first (fm-train fit --data reach --out reach.ckpt && '
        + 'fm-export reach.ckpt --out reach.onnx, in the repository folder), then open reach.html?model=/reach.onnx '
        + '(a path from the folder js/serve.mjs serves), or choose the file above';
    }
    setStats([]);
    draw();
    throw e;
  }
  const sp = state.sampler.spec, t = sp.training ?? {};
  const unit = `${sp.sName ? 'jump' : 'step'}${sp.defaultSteps === 1 ? '' : 's'}`;     // a flow map jumps: one evaluation each
  $('model').textContent = `${name}: ${sp.sName ? 'flow map, ' : ''}${sp.defaultSolver}, ${sp.defaultSteps} ${unit}${t.dataset ? ` · trained on ${t.dataset}${t.steps ? ` (${t.steps} steps)` : ''}` : ''}`;
  $('noise').disabled = false;
  await kick();
}

$('file').addEventListener('change', () => {
  const f = $('file').files[0];
  if (f) loadModel(f, f.name).catch(() => {});
});

const url = params.get('model') ?? new URL('reach.onnx', location.href).href;
changed();
const ready = loadModel(url, url.split('/').pop());
ready.catch(() => {});

window.fmReach = {
  ready,
  obs: () => state.obs.slice(),
  last: () => state.last && { obs: state.last.obs.slice(), paths: state.last.paths },
  toCanvas: ([x, y]) => { const b = canvas.getBoundingClientRect(), k = b.width / SIZE; return [b.left + X(x) * k, b.top + Y(y) * k]; },
  get sampled() { return state.sampled; },
};
