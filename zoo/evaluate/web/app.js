// The offline app: runs the run's ONNX model in the browser with onnxruntime-web (WebAssembly) on
// photos prepared exactly as `zoo predict` prepares them (preprocess.js). model.json, written by
// `zoo export --format web`, says which model, classes, preprocessing and trust thresholds.
import * as ort from './ort/ort.wasm.min.mjs';
import { PhotoError, preparePhoto } from './preprocess.js';

const TOP_K = 3;
const $ = (id) => document.getElementById(id);
const percent = (p) => `${(p * 100).toFixed(1)}%`;
const label = (name) => name.replace(/[_-]+/g, ' ');

// confident / unsure / unknown from the top two probabilities, with the run's validation-fitted
// thresholds (model.json "trust"; null when the run has none): unknown when 1 - top exceeds
// unknown_above (the exported model gives probabilities only, not the pooled features of
// `zoo serve`'s OOD score), confident from confidence_threshold on (null: never), else unsure.
export function trustStatus(top, second, trust) {
  if (!trust) return null;
  if (trust.unknown_above !== null && 1 - top > trust.unknown_above) return 'unknown';
  if (trust.confidence_threshold !== null && top >= trust.confidence_threshold && second < top) return 'confident';
  return 'unsure';
}

const TRUST_TEXT = {
  confident: 'Confident',
  unsure: 'Unsure: compare with the other candidates',
  unknown: 'Unknown: probably none of the minerals this model knows',
};

let config;
let session;

// Top classes, probabilities, status and timings for the photo `blob`.
export async function identify(blob) {
  const start = performance.now();
  const { input, width, height } = await preparePhoto(blob, config.preprocessing);
  const prepared = performance.now();
  const output = await session.run({ [config.input]: new ort.Tensor('float32', input, [1, 3, height, width]) });
  const done = performance.now();
  const probabilities = Array.from(output[config.output].data);
  const order = probabilities.map((p, i) => i).sort((a, b) => probabilities[b] - probabilities[a] || a - b);
  return {
    probabilities,
    top: order.slice(0, TOP_K).map((i) => ({ class: config.classes[i], probability: probabilities[i] })),
    status: trustStatus(probabilities[order[0]], probabilities[order[1]] ?? 0, config.trust),
    prepare_ms: prepared - start,
    inference_ms: done - prepared,
  };
}

function showError(message) {
  $('error').textContent = message;
  $('error').hidden = false;
  $('status').textContent = 'Could not identify this photo.';
}

function renderResult(result) {
  const list = $('prediction-list');
  list.replaceChildren();
  for (const { class: name, probability } of result.top) {
    const item = document.createElement('li');
    item.className = 'prediction';
    const row = document.createElement('div');
    row.className = 'prediction-row';
    const title = document.createElement('span');
    title.className = 'prediction-name';
    title.textContent = label(name);
    const value = document.createElement('span');
    value.className = 'prediction-prob';
    value.textContent = percent(probability);
    row.append(title, value);
    const bar = document.createElement('div');
    bar.className = 'bar';
    const fill = document.createElement('div');
    fill.className = 'bar-fill';
    fill.style.width = `${Math.max(0, Math.min(1, probability)) * 100}%`;
    bar.append(fill);
    item.append(row, bar);
    list.append(item);
  }
  const trust = $('trust');
  trust.className = `trust ${result.status || 'none'}`;
  trust.textContent = result.status ? TRUST_TEXT[result.status]
    : 'No confidence status: this model has no trust thresholds. Treat a low top probability with care.';
  trust.hidden = false;
  $('status').textContent = `Most likely ${label(result.top[0].class)}.`;
  $('timing').textContent = `Prepared in ${Math.round(result.prepare_ms)} ms, identified in ${Math.round(result.inference_ms)} ms on this device.`;
}

async function onPhoto(event) {
  const file = event.target.files[0];
  event.target.value = '';
  if (!file) return;
  $('error').hidden = true;
  $('trust').hidden = true;
  $('prediction-list').replaceChildren();
  $('timing').textContent = '';
  $('status').textContent = 'Identifying…';
  const preview = $('preview');
  if (preview.src) URL.revokeObjectURL(preview.src);
  preview.src = URL.createObjectURL(file);
  $('preview-box').hidden = false;
  try {
    renderResult(await identify(file));
  } catch (err) {
    showError(err instanceof PhotoError ? err.message : `Something went wrong: ${err.message || err}`);
  }
}

async function keepOffline() {
  const note = $('offline');
  if (!('serviceWorker' in navigator)) {
    note.textContent = 'This browser cannot keep the app for offline use here (service workers need https or localhost).';
    return;
  }
  try {
    await navigator.serviceWorker.register('sw.js');
    await navigator.serviceWorker.ready;  // active only once every file is cached
    note.textContent = 'Saved on this device: works without a network.';
    note.classList.add('ready');
  } catch (err) {
    note.textContent = `Offline use is not available: ${err.message || err}`;
  }
}

async function start() {
  config = await (await fetch('model.json')).json();
  $('model-name').textContent = config.run;
  $('model-accuracy').textContent =
    typeof config.test_accuracy === 'number' ? `· test accuracy ${percent(config.test_accuracy)}` : '';
  $('known-list').replaceChildren(...config.classes.map((name) => {
    const item = document.createElement('li');
    item.textContent = label(name);
    return item;
  }));
  ort.env.wasm.wasmPaths = new URL('ort/', document.baseURI).href;
  session = await ort.InferenceSession.create('model.onnx', { executionProviders: ['wasm'] });
  for (const id of ['camera-input', 'file-input']) {
    $(id).disabled = false;
    $(id).addEventListener('change', onPhoto);
  }
  $('status').textContent = 'Ready: take or choose a photo.';
}

const ready = start().catch((err) => {
  showError(`The model could not be loaded: ${err.message || err}`);
  throw err;
});
keepOffline();
// For scripts and tests (tests/test_webapp_browser.py, benchmarks/webapp.py).
window.mineralZoo = { ready, identify: async (blob) => { await ready; return identify(blob); } };
