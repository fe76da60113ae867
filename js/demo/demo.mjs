// The demo page: load a model file (the shipped moons model by default, or one chosen on disk),
// sample it with the chosen solver, steps, class and guidance, and draw the samples: a scatter for
// 2-D data, an image grid for image models. window.fmDemo lets a test drive the same sampler.

import { load, DEFAULT_MODEL } from 'fm-runtime';

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const PALETTE = ['#3056d3', '#e8590c', '#2b8a3e', '#ae3ec9', '#c92a2a', '#1098ad', '#5c940d', '#d6336c', '#495057', '#f59f00'];
const state = { sampler: null, loadMs: 0, bytes: 0 };

function showError(e) {
  $('error').hidden = false;
  $('error').textContent = `${e.name ?? 'Error'}: ${e.message ?? e}`;
}

function clearCanvas(message) {
  const c = $('canvas'), g = c.getContext('2d');
  g.setTransform(1, 0, 0, 1, 0, 0);
  g.clearRect(0, 0, c.width, c.height);
  g.fillStyle = '#8a93a6';
  g.font = '15px system-ui, sans-serif';
  g.textAlign = 'center';
  g.fillText(message, c.width / 2, c.height / 2);
  $('caption').textContent = '';
}

function setStats(rows) {
  $('stats').innerHTML = '';
  for (const [k, v] of rows) {
    const dt = document.createElement('dt'), dd = document.createElement('dd');
    dt.textContent = k; dd.textContent = v;
    $('stats').append(dt, dd);
  }
}

function describe(s) {
  const sp = s.spec, rest = [`data shape [${sp.dataShape.join(', ')}]`];
  if (sp.numClasses) rest.push(`${sp.numClasses} classes`);
  if (sp.training?.dataset) rest.push(`trained on ${sp.training.dataset}${sp.training.steps ? ` (${sp.training.steps} steps)` : ''}`);
  const a = sp.architecture ?? {};
  if (a.type) rest.push([a.type, a.depth && a.width ? `${a.depth}×${a.width}` : '', a.activation ?? ''].filter(Boolean).join(' '));
  const kind = document.createElement('b');   // text from the file goes in as text, never as markup
  kind.textContent = sp.kind === 'baked' ? `baked ${sp.baked.solver}:${sp.baked.steps}` : sp.sName ? 'flow map' : 'velocity model';
  $('model').replaceChildren(`${state.name}: `, kind, `, ${rest.join(' · ')}`);
}

async function loadModel(source, name) {
  $('error').hidden = true;
  $('go').disabled = true;
  state.sampler = null;
  state.name = name;
  $('model').textContent = `loading ${name}…`;
  const t0 = performance.now();
  try {
    state.sampler = await load(source, { backend: $('backend').value, threads: Number(params.get('threads') ?? 1) });
  } catch (e) {
    $('model').textContent = `${name}: not loaded`;
    $('shipped').hidden = false;     // a refused file: one click back to the shipped model
    showError(e);
    clearCanvas('no model loaded');
    setStats([]);
    throw e;
  }
  state.loadMs = performance.now() - t0;
  const s = state.sampler, sp = s.spec;
  describe(s);
  $('steps').value = params.get('steps') ?? sp.defaultSteps;
  // a flow map also jumps (its default): the methods this file can run
  $('solver').replaceChildren(...['euler', 'midpoint', 'heun', 'rk4', ...(sp.sName ? ['jump'] : [])]
    .map((m) => Object.assign(document.createElement('option'), { textContent: m })));
  $('solver').value = params.get('solver') ?? sp.defaultSolver;
  $('steps').disabled = $('solver').disabled = $('schedule').disabled = s.baked;
  $('schedule').value = params.get('schedule') ?? '';
  // a count that suits the data: a scatter of 2000 points, or a grid of images big enough to see
  $('n').value = params.get('n') ?? defaultCount(sp);
  $('shipped').hidden = source === DEFAULT_MODEL;
  const text = textInput(sp);
  document.querySelector('.cond').hidden = !sp.numClasses && !text;
  document.querySelector('.classes').hidden = !sp.numClasses;
  document.querySelector('.prompt').hidden = !text;
  if (text && params.get('prompt')) $('prompt').value = params.get('prompt');
  $('label').replaceChildren(...['none', ...(sp.numClasses > 1 ? ['all'] : []), ...Array.from({ length: sp.numClasses }, (_, i) => String(i))]
    .map((v) => Object.assign(document.createElement('option'), { value: v, textContent: v === 'all' ? 'each class' : v === 'none' ? 'no label' : `class ${v}` })));
  if (sp.numClasses) $('label').value = params.get('label') ?? 'all';
  $('go').disabled = false;
  return s;
}

/** Samples drawn by default: 2000 points of 2-D data, 8 images per class (or 64) of an image
 * model, so that each image stays large enough to see. */
export function defaultCount(spec) {
  if (spec.dataShape.length < 2) return 2000;
  return spec.numClasses ? 8 * spec.numClasses : 64;
}

/** The name of a file's text prompt: a condition stage whose one input is int64 [L], the prompt's
 * UTF-8 bytes (0 = padding), as the digits-text model takes it; null for any other file. */
export function textInput(spec) {
  const inputs = spec.stage?.inputs ?? [];
  return inputs.length === 1 && inputs[0].dtype === 'int64' && inputs[0].shape.length === 1
    && typeof inputs[0].shape[0] === 'string' ? inputs[0].name : null;
}

/** The request's conditions from the prompt field: its UTF-8 bytes as the stage's input. */
function promptCond(name) {
  const bytes = new TextEncoder().encode($('prompt').value || ' ');
  return { [name]: { data: BigInt64Array.from(bytes, (b) => BigInt(b)), dims: [bytes.length] } };
}

function labelsFor(n) {
  const v = $('label').value, sp = state.sampler.spec;
  if (!sp.numClasses || v === 'none') return null;
  return v === 'all' ? Array.from({ length: n }, (_, i) => i % sp.numClasses) : Number(v);
}

async function run() {
  const s = state.sampler;
  if (!s) return;
  $('error').hidden = true;
  $('go').disabled = true;
  try {
    const n = Number($('n').value), labels = labelsFor(n), text = textInput(s.spec);
    const guidance = labels === null && !text ? 1 : Number($('guidance').value);
    const opts = { n, labels, guidance, ...(s.baked ? {} : { steps: Number($('steps').value), solver: $('solver').value }) };
    if (text) opts.cond = promptCond(text);
    if (!s.baked && $('schedule').value) opts.schedule = $('schedule').value;
    if ($('fixed').checked) opts.seed = 0;
    const t0 = performance.now();
    const r = await s.sample(opts);
    const ms = performance.now() - t0;
    draw(r, labels);
    setStats([
      ['model load', `${state.loadMs.toFixed(0)} ms (incl. self-test)`],
      ['sampling', `${ms.toFixed(1)} ms for ${n.toLocaleString('en')} samples`],
      ['rate', `${Math.round(n / (ms / 1000)).toLocaleString('en')} samples/s`],
      ['network evals', `${r.nfe} per sample (${s.baked ? 'baked graph' : `${opts.solver}, ${opts.steps} steps${opts.schedule ? `, ${opts.schedule}` : ''}`})`],
      ['backend', `onnxruntime-web ${$('backend').value}, ${params.get('threads') ?? 1} thread(s)`],
    ]);
    return r;
  } catch (e) {
    showError(e);
    throw e;
  } finally {
    $('go').disabled = false;
  }
}

function draw(r, labels) {
  const shape = r.dims.slice(1);
  if (shape.length >= 2) drawImages(r, shape, labels);
  else drawScatter(r, labels);
}

function drawScatter(r, labels) {
  const c = $('canvas'), g = c.getContext('2d'), dim = r.dims.slice(1).reduce((a, b) => a * b, 1);
  const W = c.width, pad = 44, n = r.dims[0];
  const xs = [], ys = [];
  for (let i = 0; i < n; i++) { xs.push(r.data[i * dim]); ys.push(dim > 1 ? r.data[i * dim + 1] : 0); }
  const q = (a, p) => { const s = a.filter(Number.isFinite).sort((u, v) => u - v); return s[Math.floor(p * (s.length - 1))] ?? 0; };
  const cx = (q(xs, 0.005) + q(xs, 0.995)) / 2, cy = (q(ys, 0.005) + q(ys, 0.995)) / 2;
  const half = 0.6 * Math.max(q(xs, 0.995) - q(xs, 0.005), q(ys, 0.995) - q(ys, 0.005), 1e-3);
  const X = (v) => pad + ((v - cx + half) / (2 * half)) * (W - 2 * pad), Y = (v) => W - pad - ((v - cy + half) / (2 * half)) * (W - 2 * pad);
  g.setTransform(1, 0, 0, 1, 0, 0);
  g.fillStyle = '#fff'; g.fillRect(0, 0, W, W);
  const step = 10 ** Math.floor(Math.log10(half)) * (half / 10 ** Math.floor(Math.log10(half)) > 2.5 ? 1 : 0.5);
  g.strokeStyle = '#eef0f4'; g.fillStyle = '#8a93a6'; g.font = '12px system-ui, sans-serif'; g.lineWidth = 1;
  for (let v = Math.ceil((cx - half) / step) * step; v <= cx + half; v += step) {
    g.beginPath(); g.moveTo(X(v), pad); g.lineTo(X(v), W - pad); g.stroke();
    g.textAlign = 'center'; g.fillText(+v.toFixed(2), X(v), W - pad + 18);
  }
  for (let v = Math.ceil((cy - half) / step) * step; v <= cy + half; v += step) {
    g.beginPath(); g.moveTo(pad, Y(v)); g.lineTo(W - pad, Y(v)); g.stroke();
    g.textAlign = 'right'; g.fillText(+v.toFixed(2), pad - 8, Y(v) + 4);
  }
  g.strokeStyle = '#c9ced8'; g.strokeRect(pad, pad, W - 2 * pad, W - 2 * pad);
  const size = n > 20000 ? 1.2 : n > 3000 ? 1.8 : 2.6;
  g.globalAlpha = n > 20000 ? 0.35 : 0.6;
  for (let i = 0; i < n; i++) {
    const lab = labels === null ? null : typeof labels === 'number' ? labels : labels[i];
    g.fillStyle = lab === null ? PALETTE[0] : PALETTE[(lab + 1) % PALETTE.length];
    g.beginPath(); g.arc(X(xs[i]), Y(ys[i]), size, 0, 2 * Math.PI); g.fill();
  }
  g.globalAlpha = 1;
  $('caption').textContent = `${n.toLocaleString('en')} samples${labels === null ? '' : ', coloured by class'}`;
}

function drawImages(r, shape, labels) {
  const c = $('canvas'), g = c.getContext('2d'), n = r.dims[0];
  const [h, w] = shape.slice(-2), channels = shape.length > 2 ? shape[0] : 1, size = h * w * channels;
  const [lo, hi] = state.sampler.spec.valueRange ?? [-1, 1];
  // with a label per row: one row per class, every sample of it in that row (up to 64 columns);
  // otherwise a near-square grid of up to 64 x 64; the cells fit both the width and the height
  const classes = Array.isArray(labels) ? state.sampler.spec.numClasses : 0;
  const cols = Math.min(64, classes ? Math.ceil(n / classes) : Math.ceil(Math.sqrt(n)));
  const shown = Math.min(n, classes ? cols * classes : cols * cols), rows = classes || Math.ceil(shown / cols);
  const cell = Math.max(1, Math.floor(Math.min((c.width - 8) / cols, (c.height - 8) / rows)));
  const gap = cell >= 4 ? Math.max(1, Math.floor(cell / 10)) : 0;
  g.setTransform(1, 0, 0, 1, 0, 0);
  g.fillStyle = '#fff'; g.fillRect(0, 0, c.width, c.height);
  const img = g.createImageData(w, h), tmp = document.createElement('canvas');
  tmp.width = w; tmp.height = h;
  g.imageSmoothingEnabled = false;
  // with a label per row (i % classes), image i goes to row (i % classes), column floor(i / classes)
  for (let i = 0; i < shown; i++) {
    for (let p = 0; p < h * w; p++) {
      for (let ch = 0; ch < 3; ch++) {
        const v = r.data[i * size + (channels === 3 ? ch * h * w : 0) + p];
        img.data[4 * p + ch] = Math.max(0, Math.min(255, Math.round(((v - lo) / (hi - lo)) * 255)));
      }
      img.data[4 * p + 3] = 255;
    }
    tmp.getContext('2d').putImageData(img, 0, 0);
    const row = classes ? i % classes : Math.floor(i / cols), col = classes ? Math.floor(i / classes) : i % cols;
    g.drawImage(tmp, 4 + col * cell, 4 + row * cell, cell - gap, cell - gap);
  }
  $('caption').textContent = `${shown} of ${n} samples, ${shape.join('×')}${classes ? ', one row per class' : ''}`;
}

// the page's wiring
if (navigator.gpu) $('backend').append(Object.assign(document.createElement('option'), { textContent: 'webgpu' }));
$('backend').value = params.get('backend') ?? 'wasm';
if (params.get('guidance')) $('guidance').value = params.get('guidance');
$('go').addEventListener('click', () => run().catch(() => {}));
$('file').addEventListener('change', () => {
  const f = $('file').files[0];
  if (f) {
    state.source = f;
    loadModel(f, f.name).then(run).catch(() => {});
  }
});
$('backend').addEventListener('change', () => loadModel(state.source, state.name).then(run).catch(() => {}));
$('shipped').addEventListener('click', () => {
  $('file').value = '';
  state.source = DEFAULT_MODEL;
  loadModel(DEFAULT_MODEL, DEFAULT_MODEL.split('/').pop()).then(run).catch(() => {});
});

const url = params.get('model') ?? DEFAULT_MODEL;
state.source = url;
const ready = loadModel(url, url.split('/').pop()).then(run);

window.fmDemo = {
  ready,
  /** The loaded sampler's sample() (the same call the page makes), for tests and the console. */
  sample: (opts) => state.sampler.sample(opts),
  /** Load bytes (or a URL) as if chosen in the file picker; resolves after the first draw. */
  loadBytes: (bytes, name = 'model.onnx') => {
    state.source = bytes instanceof Uint8Array ? bytes : new Uint8Array(bytes);
    return loadModel(state.source, name).then(run);
  },
  get sampler() { return state.sampler; },
};
