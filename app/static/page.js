// wbvae page: pick or drop a photo, POST it to /correct, show before/after, adjust strength and light, download.
// No external resources: everything here talks only to the server that served the page.
"use strict";

const $ = (id) => document.getElementById(id);
let photo = null;          // the File being corrected
let beforeUrl = null;      // object URLs, revoked when replaced
let afterUrl = null;
let inflight = null;       // AbortController of the running correction
let beforeRequest = null;  // AbortController of the "before" image's own request (HEIC), apart from the correction
let strengthSupported = true;
let kelvin = null;         // the light to render at (?temperature=), null: the neutral correction (none sent)
let timer = 0;

function setStatus(text) { $("status").textContent = text; }
function setError(text) { $("error").textContent = text; }

function strength() { return Number($("strength").value) / 100; }

function replaceUrl(old, blob) {
  if (old) URL.revokeObjectURL(old);
  return URL.createObjectURL(blob);
}

// A new AbortController in place of `previous` (aborted): a newer request replaces the one it controlled.
function replaceRequest(previous) {
  if (previous) previous.abort();
  return new AbortController();
}

function post(file, params, signal) {
  const body = new FormData();
  body.append("file", file, file.name);
  const headers = {};
  const key = $("key").value.trim();
  if (key) headers.Authorization = "Bearer " + key;
  const query = new URLSearchParams(params).toString();
  return fetch("/correct?" + query, { method: "POST", body, headers, signal });
}

async function detail(response) {
  try {
    const data = await response.json();
    return typeof data.detail === "string" ? data.detail : JSON.stringify(data.detail);
  } catch (_) {
    return response.statusText || "error " + response.status;
  }
}

async function correct() {
  if (!photo) return;
  const fmt = $("format").value;
  const s = strength();
  const params = { format: fmt };
  if (strengthSupported) params.strength = s.toFixed(2);
  if (kelvin !== null) params.temperature = String(kelvin);
  setError("");
  setStatus(`Correcting ${photo.name}…`);
  $("result").classList.add("busy");
  $("form").setAttribute("aria-busy", "true");
  const request = (inflight = replaceRequest(inflight));
  let response;
  let blob = null;
  let text = "";
  try {
    response = await post(photo, params, request.signal);
    if (response.ok) blob = await response.blob();
    else text = await detail(response);
  } catch (err) {
    if (err.name === "AbortError") return;  // a newer request replaced this one
    setStatus("");
    setError("The server could not be reached: " + err.message);
    return;
  } finally {
    if (request === inflight) $("form").removeAttribute("aria-busy");
  }
  if (request !== inflight) return;  // replaced while its answer was being read
  if (response.status === 422 && strengthSupported && /strength/i.test(text)) {
    // an older server without ?strength=: fall back to full strength
    strengthSupported = false;
    $("strength").disabled = true;
    setStatus("This server applies the full correction only.");
    return correct();
  }
  if (response.status === 401) {
    $("key-row").hidden = false;
    return fail(401, text + " Enter the key and pick the photo again.");
  }
  if (!response.ok) return fail(response.status, text);
  // What the server rendered at ("none": neutral); an older server without ?temperature= sends no header.
  const rendered = response.headers.get("X-WB-Temperature");
  afterUrl = replaceUrl(afterUrl, blob);
  $("after").src = afterUrl;
  $("after").dataset.temperature = rendered || "none";
  const link = $("download");
  link.href = afterUrl;
  const stem = photo.name.replace(/\.[^.]*$/, "") || "photo";
  link.download = `${stem}-wb.${$("format").selectedOptions[0].dataset.ext}`;
  link.textContent = `Download ${link.download}`;
  $("result").hidden = false;
  $("result").classList.remove("busy");
  let light = rendered && rendered !== "none" ? `rendered at ${rendered} K` : "neutral";
  if (kelvin !== null && !rendered) {  // an older server ignores ?temperature=
    $("light").disabled = true;
    light = "neutral (this server renders no other light)";
  }
  setStatus(`Done: ${photo.name} corrected at ${Math.round(s * 100)} % strength, ${light}.`);
}

function fail(status, text) {
  $("result").classList.remove("busy");
  setStatus("");
  setError(`Could not correct the photo (${status}): ${text}`);
}

// The "before" image. One the browser cannot show (HEIC) is asked of the server unchanged (?strength=0), beside
// the correction and never in its place: for a file the server cannot read either, the correction reports why.
function showBefore(file) {
  beforeUrl = replaceUrl(beforeUrl, file);
  beforeRequest = replaceRequest(beforeRequest);
  const signal = beforeRequest.signal;
  const img = $("before");
  img.onerror = async () => {
    img.onerror = null;
    try {
      const response = await post(file, { format: "png", strength: "0" }, signal);
      if (!response.ok) return;
      beforeUrl = replaceUrl(beforeUrl, await response.blob());
      img.src = beforeUrl;
    } catch (_) {
      // aborted (another photo was picked) or unreachable: the correction's own request says so
    }
  };
  img.onload = () => {
    $("compare").style.setProperty("--ratio", img.naturalWidth / Math.max(1, img.naturalHeight));
  };
  img.src = beforeUrl;
}

function choose(file) {
  if (!file) return;
  photo = file;
  $("result").hidden = true;
  showBefore(file);
  correct();
}

function setSplit() {
  $("compare").style.setProperty("--split", $("split").value + "%");
}

$("file").addEventListener("change", (e) => choose(e.target.files[0]));
$("strength").addEventListener("input", () => {
  $("strength-value").textContent = $("strength").value + " %";
  clearTimeout(timer);
  timer = setTimeout(correct, 350);  // one request once the slider rests
});

// Light: the neutral box (default: no ?temperature=), the slider and the presets; each change asks again.
function setLight(k) {
  kelvin = k;
  $("neutral").checked = k === null;
  if (k !== null) $("temperature").value = k;  // a preset off the 100 K grid (2850) shows at its nearest step
  else $("temperature").value = 6500;          // about the neutral output's own light (D65, 6504 K)
  $("temperature").classList.toggle("off", k === null);
  const preset = document.querySelector(`.presets button[data-kelvin="${k}"]`);
  $("temperature-value").textContent =
    k === null ? "neutral" : `${k} K` + (preset ? ` (${preset.textContent.toLowerCase()})` : "");
  for (const button of document.querySelectorAll(".presets button")) {
    button.setAttribute("aria-pressed", String(button === preset));
  }
}
function lightChanged(k, wait) {
  setLight(k);
  clearTimeout(timer);
  timer = setTimeout(correct, wait);
}
$("temperature").addEventListener("input", () => lightChanged(Number($("temperature").value), 350));
$("neutral").addEventListener("change", () =>
  lightChanged($("neutral").checked ? null : Number($("temperature").value), 0));
for (const button of document.querySelectorAll(".presets button")) {
  button.addEventListener("click", () => lightChanged(Number(button.dataset.kelvin), 0));
}
$("format").addEventListener("change", correct);
$("split").addEventListener("input", setSplit);

const drop = $("drop");
for (const type of ["dragenter", "dragover"]) {
  drop.addEventListener(type, (e) => { e.preventDefault(); drop.classList.add("over"); });
}
for (const type of ["dragleave", "drop"]) {
  drop.addEventListener(type, () => drop.classList.remove("over"));
}
drop.addEventListener("drop", (e) => {
  e.preventDefault();
  choose(e.dataTransfer.files[0]);
});
// Dropping anywhere else must not navigate away from the page.
window.addEventListener("dragover", (e) => e.preventDefault());
window.addEventListener("drop", (e) => e.preventDefault());
setSplit();
setLight(null);
