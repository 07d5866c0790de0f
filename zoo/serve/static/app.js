"use strict";

const LOW_CONFIDENCE = 0.5;

const $ = (id) => document.getElementById(id);
const percent = (p) => `${(p * 100).toFixed(1)}%`;
const label = (name) => name.replace(/[_-]+/g, " ");

async function loadModel() {
  try {
    const response = await fetch("/api/model");
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    const info = await response.json();
    $("model-name").textContent = info.name;
    const accuracy = info.metrics && info.metrics.test_accuracy;
    $("model-accuracy").textContent =
      typeof accuracy === "number" ? `· test accuracy ${percent(accuracy)}` : "";
    showKnown(info.classes || []);
  } catch (err) {
    $("model-name").textContent = "unavailable";
  }
}

function either(names) {
  return names.length < 2 ? names.join("") : `${names.slice(0, -1).join(", ")} or ${names[names.length - 1]}`;
}

// Which minerals the model knows: anything else is answered "unknown", never one of these.
function showKnown(classes) {
  if (!classes.length) return;
  $("known").textContent = `This model knows ${classes.length} minerals: ${classes.map(label).join(", ")}. ` +
    "A photo of anything else should be answered “not one of these”.";
  $("known").hidden = false;
}

// The answer in plain words, from the API's status (confident | unsure | unknown).
function verdictText(result) {
  const names = (result.candidates || []).map(label);
  if (result.status === "confident") {
    return `This is ${names[0]} (${percent(result.confidence)} sure).`;
  }
  if (result.status === "unsure") {
    return `Not sure: it could be ${either(names)}.`;
  }
  const known = $("known").hidden ? "the minerals this model knows" : "the minerals listed above";
  return `This does not look like any of ${known}. The nearest are ${either(names)}.`;
}

function showVerdict(result) {
  const verdict = $("verdict");
  verdict.textContent = verdictText(result);
  verdict.className = `verdict verdict-${result.status}`;
  verdict.hidden = false;
}

function showError(message) {
  $("error").textContent = message;
  $("error").hidden = false;
  $("status").textContent = "Could not identify this photo.";
}

function renderHeatmap(result) {
  const top = result.predictions[0];
  if (!result.heatmap || !top) return;
  $("heatmap").src = result.heatmap;
  $("heatmap-caption").textContent = `Where the model saw ${label(top.class)} (red: most).`;
  $("heatmap-box").hidden = false;
}

function renderPredictions(result) {
  const list = $("prediction-list");
  list.replaceChildren();
  for (const { class: name, probability } of result.predictions) {
    const item = document.createElement("li");
    item.className = "prediction";
    const row = document.createElement("div");
    row.className = "prediction-row";
    const title = document.createElement("span");
    title.className = "prediction-name";
    title.textContent = label(name);
    const value = document.createElement("span");
    value.className = "prediction-prob";
    value.textContent = percent(probability);
    row.append(title, value);
    const bar = document.createElement("div");
    bar.className = "bar";
    bar.setAttribute("aria-hidden", "true");
    const fill = document.createElement("div");
    fill.className = "bar-fill";
    fill.style.width = `${Math.max(0, Math.min(1, probability)) * 100}%`;
    bar.append(fill);
    item.append(row, bar);
    list.append(item);
  }
  const top = result.predictions[0];
  const note = $("low-confidence");
  if (result.status) {
    showVerdict(result);
    note.hidden = true;
    $("status").textContent = result.status === "unknown"
      ? `Unknown mineral, by ${result.model}: the closest matches are below.`
      : `Most likely ${label(top.class)} (${percent(top.probability)}), by ${result.model}.`;
    return;
  }
  if (top && top.probability < LOW_CONFIDENCE) {
    const guesses = result.predictions.map((p) => `${label(p.class)} (${percent(p.probability)})`);
    note.textContent = `Not sure — top guesses are ${guesses.join(", ")}.`;
    note.hidden = false;
  } else {
    note.hidden = true;
  }
  $("status").textContent = top
    ? `Most likely ${label(top.class)} (${percent(top.probability)}), by ${result.model}.`
    : "No prediction.";
}

async function identify(file) {
  if (!file) return;
  const preview = $("preview");
  if (preview.src) URL.revokeObjectURL(preview.src);
  preview.src = URL.createObjectURL(file);
  $("preview-box").hidden = false;
  $("error").hidden = true;
  $("heatmap-box").hidden = true;
  $("prediction-list").replaceChildren();
  $("low-confidence").hidden = true;
  $("verdict").hidden = true;
  $("status").textContent = "Identifying…";
  const body = new FormData();
  body.append("file", file);
  try {
    const response = await fetch("/api/predict?explain=true", { method: "POST", body });
    const result = await response.json().catch(() => ({}));
    if (!response.ok) {
      showError(result.detail ? String(result.detail) : `The server answered ${response.status}.`);
      return;
    }
    renderPredictions(result);
    renderHeatmap(result);
  } catch (err) {
    showError("The server could not be reached. Is `zoo serve` still running?");
  }
}

function setUpDropZone() {
  const zone = $("drop-zone");
  const input = $("file-input");
  input.addEventListener("change", () => identify(input.files[0]));
  for (const type of ["dragenter", "dragover"]) {
    zone.addEventListener(type, (event) => {
      event.preventDefault();
      zone.classList.add("dragging");
    });
  }
  for (const type of ["dragleave", "drop"]) {
    zone.addEventListener(type, () => zone.classList.remove("dragging"));
  }
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    identify(event.dataTransfer.files[0]);
  });
  $("upload-form").addEventListener("submit", (event) => event.preventDefault());
}

setUpDropZone();
loadModel();
