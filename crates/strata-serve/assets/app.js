// strata serve: the page. Plain JavaScript, no build step, no outside resources.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { knowledge: null, info: null, job: null, es: null, upload: null,
  ds: { id: null, offset: 0, limit: 50, total: 0, current: null } };

async function api(method, url, body, headers) {
  const opt = { method, headers: headers || {}, credentials: "same-origin" };
  if (body !== undefined) {
    if (body instanceof Blob || body instanceof ArrayBuffer) { opt.body = body; }
    else { opt.body = JSON.stringify(body); opt.headers["Content-Type"] = "application/json"; }
  }
  const r = await fetch(url, opt);
  let data = null;
  const ct = r.headers.get("Content-Type") || "";
  if (ct.includes("json")) data = await r.json();
  else data = { error: (await r.text()) || r.statusText };
  if (!r.ok) { const e = new Error(data.error || r.statusText); e.status = r.status; e.data = data; throw e; }
  return data;
}

function el(tag, attrs, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v; else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v);
  }
  for (const k of kids) e.append(k);
  return e;
}

function debounce(f, ms) { let t; return (...a) => { clearTimeout(t); t = setTimeout(() => f(...a), ms); }; }
const splitElements = (s) => s.split(",").map((x) => x.trim()).filter((x) => x);

// ---------- tabs ----------
for (const b of document.querySelectorAll(".tab")) {
  b.addEventListener("click", () => {
    for (const t of document.querySelectorAll(".tab")) t.classList.toggle("active", t === b);
    $("page-generate").hidden = b.dataset.tab !== "generate";
    $("page-caption").hidden = b.dataset.tab !== "caption";
    if (b.dataset.tab === "caption" && state.ds.id === null) loadDatasets();
  });
}

// ---------- autocomplete ----------
function fillDatalist(list, values) {
  list.replaceChildren(...values.map((v) => el("option", { value: v })));
}
function elementsAutocomplete(input, list) {
  const update = () => {
    if (!state.knowledge) return;
    const parts = input.value.split(",");
    const last = parts.pop().trim().toLowerCase();
    const head = parts.map((p) => p.trim()).filter((p) => p);
    const used = new Set(head.map((h) => h.toLowerCase()));
    const prefix = head.length ? head.join(", ") + ", " : "";
    const names = state.knowledge.elements.filter((e) => !used.has(e) && e.startsWith(last));
    fillDatalist(list, names.slice(0, 30).map((n) => prefix + n));
  };
  input.addEventListener("input", update);
  input.addEventListener("focus", update);
}
function relationAutocomplete(area, box, onChange) {
  const update = () => {
    box.replaceChildren();
    if (!state.knowledge) return;
    const before = area.value.slice(0, area.selectionStart ?? area.value.length);
    // the phrase being typed may span the last two words ("surrounded b") or one ("surr")
    const m2 = before.match(/([A-Za-z]+ [A-Za-z]*)$/);
    const m1 = before.match(/([A-Za-z]+)$/);
    const tries = [m2, m1].filter((m) => m && m[1].trim().length >= 2);
    let m = null, hits = [];
    for (const t of tries) {
      hits = state.knowledge.relations.filter((p) => p.startsWith(t[1].toLowerCase()) && p !== t[1].toLowerCase()).slice(0, 8);
      if (hits.length) { m = t; break; }
    }
    if (!m) { m = tries[tries.length - 1]; }
    if (!m) return;
    const w = m[1].toLowerCase();
    const vert = state.knowledge.vertical.filter((p) => p.startsWith(w)).slice(0, 3);
    for (const p of hits) {
      box.append(el("button", { type: "button", class: "chip", onclick: () => {
        const pos = before.length - m[1].length;
        area.value = area.value.slice(0, pos) + p + " " + area.value.slice(before.length);
        area.focus(); box.replaceChildren(); onChange();
      } }, p));
    }
    for (const p of vert) box.append(el("span", { class: "chip warn", title: "vertical relation: not visible from above" }, p));
  };
  area.addEventListener("input", update);
}

function renderChecks(box, c) {
  box.replaceChildren();
  if (!c) return;
  const ok = c.golden;
  box.append(el("div", { class: ok ? "ok" : "warn" }, ok
    ? "golden rule: passes (" + c.relations.map((r) => r.relation).join(", ") + ")"
    : "golden rule: fails"));
  for (const m of c.messages) box.append(el("div", { class: "warn" }, m));
}

const liveCheck = (prefix) => debounce(async () => {
  const body = { scene: $(prefix + "-scene").value, relation: $(prefix + "-relation").value,
    elements: splitElements($(prefix + "-elements").value) };
  try {
    const c = await api("POST", "/api/check", body);
    renderChecks($(prefix + "-checks"), c);
    if (prefix === "c") state.ds.suggested = c.suggested;
  } catch (e) { $(prefix + "-checks").textContent = e.message; }
}, 200);

// ---------- generate ----------
const gCheck = liveCheck("g");
for (const id of ["g-scene", "g-relation", "g-elements"]) $(id).addEventListener("input", gCheck);
for (const r of document.querySelectorAll("input[name=mode]")) {
  r.addEventListener("change", () => {
    const flat = $("mode-flat").checked;
    $("hier-fields").hidden = flat; $("flat-fields").hidden = !flat;
  });
}
$("g-seed-random").addEventListener("click", () => { $("g-seed").value = -1; });
$("g-model").addEventListener("change", () => {
  const m = state.info.models.find((x) => x.id === $("g-model").value);
  if (m && m.side) { $("g-width").value = m.side; $("g-height").value = m.side; }
});
$("g-init").addEventListener("change", async () => {
  const f = $("g-init").files[0];
  $("g-error").textContent = "";
  if (!f) return;
  try {
    const u = await api("POST", "/api/uploads", f, { "Content-Type": "image/png" });
    state.upload = u.id;
    $("g-init-preview").src = URL.createObjectURL(f); $("g-init-preview").hidden = false;
  } catch (e) { $("g-error").textContent = e.message; $("g-init").value = ""; state.upload = null; }
});
$("g-init-clear").addEventListener("click", () => {
  state.upload = null; $("g-init").value = ""; $("g-init-preview").hidden = true;
});

function numberOf(id) {
  const v = $(id).value.trim();
  return v === "" ? null : Number(v);
}

function request() {
  const flat = $("mode-flat").checked;
  const emb = [...document.querySelectorAll("#g-embeddings input:checked")].map((i) => i.value);
  return {
    scene: flat ? "" : $("g-scene").value, relation: flat ? "" : $("g-relation").value,
    elements: flat ? [] : splitElements($("g-elements").value), prompt: flat ? $("g-prompt").value : "",
    model: $("g-model").value, lora: $("g-lora").value || null, lora_scale: numberOf("g-lora-scale"),
    embeddings: emb, steps: numberOf("g-steps"), cfg: numberOf("g-cfg"), seed: numberOf("g-seed"),
    width: numberOf("g-width"), height: numberOf("g-height"), batch: numberOf("g-batch"),
    init_image: state.upload, strength: numberOf("g-strength"),
  };
}

function applySettings(s) {
  const flat = !!s.prompt;
  $("mode-flat").checked = flat; $("mode-hier").checked = !flat;
  $("hier-fields").hidden = flat; $("flat-fields").hidden = !flat;
  $("g-scene").value = s.scene || ""; $("g-relation").value = s.relation || "";
  $("g-elements").value = (s.elements || []).join(", "); $("g-prompt").value = s.prompt || "";
  $("g-model").value = s.model; $("g-lora").value = s.lora || ""; $("g-lora-scale").value = s.lora_scale;
  $("g-steps").value = s.steps; $("g-cfg").value = s.cfg; $("g-seed").value = s.seed;
  $("g-width").value = s.width; $("g-height").value = s.height; $("g-batch").value = s.batch;
  $("g-strength").value = s.strength;
  for (const i of document.querySelectorAll("#g-embeddings input")) i.checked = (s.embeddings || []).includes(i.value);
  gCheck();
}

function setRunning(on) { $("g-generate").disabled = false; $("g-cancel").disabled = !on; }

$("g-generate").addEventListener("click", async () => {
  $("g-error").textContent = "";
  try {
    const s = await api("POST", "/api/jobs", request());
    watchJob(s.id);
  } catch (e) { $("g-error").textContent = e.message; }
});
$("g-cancel").addEventListener("click", async () => {
  if (!state.job) return;
  try { await api("POST", "/api/jobs/" + state.job + "/cancel"); } catch (e) { $("g-error").textContent = e.message; }
});

function showStatus(s) {
  const txt = s.state === "queued" ? "job " + s.id + ": queued (position " + (s.position + 1) + ")"
    : s.state === "running" ? "job " + s.id + ": step " + s.step + " / " + s.total
    : "job " + s.id + ": " + s.state + (s.message ? " — " + s.message : "");
  $("g-status").textContent = txt;
  $("g-progress").max = Math.max(1, s.total); $("g-progress").value = s.step;
  if (s.preview > 0 && s.state === "running") {
    $("g-preview").src = "/api/jobs/" + s.id + "/preview?v=" + s.preview; $("g-preview").hidden = false;
  }
  if (s.state === "error") $("g-error").textContent = s.message || "error";
}

function watchJob(id) {
  if (state.es) state.es.close();
  state.job = id; setRunning(true);
  const es = new EventSource("/api/jobs/" + id + "/events");
  state.es = es;
  es.addEventListener("status", (ev) => {
    const s = JSON.parse(ev.data);
    showStatus(s);
    if (["done", "error", "cancelled"].includes(s.state)) {
      es.close(); state.es = null; setRunning(false); $("g-preview").hidden = true;
      if (s.state === "done") addToGallery(s);
    }
  });
  es.onerror = () => { /* the browser reconnects by itself; a finished job closes the stream */ };
}

function addToGallery(s) {
  for (let i = s.images.length - 1; i >= 0; i--) {
    const im = s.images[i];
    const card = el("div", { class: "card" },
      el("img", { src: im.url, alt: "result " + s.id + "-" + i }),
      el("pre", { class: "params" }, im.parameters),
      el("div", { class: "row" },
        el("button", { type: "button", class: "reuse", onclick: () => applySettings(s.settings) }, "reuse these settings"),
        el("a", { href: im.url, download: "strata-" + s.id + "-" + s.settings.seed + "-" + i + ".png", class: "button" }, "download")));
    $("gallery").prepend(card);
  }
}

// ---------- caption ----------
const cCheck = liveCheck("c");
for (const id of ["c-scene", "c-relation", "c-elements"]) $(id).addEventListener("input", cCheck);

async function loadDatasets() {
  const sel = $("c-dataset");
  const list = state.info ? state.info.datasets : [];
  sel.replaceChildren(...list.map((d) => el("option", { value: d.id }, d.name)));
  if (!list.length) { $("c-count").textContent = "no dataset: start strata serve with --data DIR"; return; }
  state.ds.id = list[0].id; state.ds.offset = 0;
  await loadRecords();
}
$("c-dataset").addEventListener("change", () => { state.ds.id = $("c-dataset").value; state.ds.offset = 0; loadRecords(); });
$("c-search").addEventListener("input", debounce(() => { state.ds.offset = 0; loadRecords(); }, 250));
$("c-prev").addEventListener("click", () => { state.ds.offset = Math.max(0, state.ds.offset - state.ds.limit); loadRecords(); });
$("c-next").addEventListener("click", () => {
  if (state.ds.offset + state.ds.limit < state.ds.total) { state.ds.offset += state.ds.limit; loadRecords(); }
});

async function loadRecords() {
  const q = encodeURIComponent($("c-search").value);
  try {
    const r = await api("GET", "/api/datasets/" + state.ds.id + "/records?offset=" + state.ds.offset + "&limit=" + state.ds.limit + "&q=" + q);
    state.ds.total = r.total;
    $("c-count").textContent = r.total + " records" + (r.total > r.records.length ? " (" + (r.offset + 1) + "–" + (r.offset + r.records.length) + ")" : "");
    $("c-records").replaceChildren(...r.records.map((rec) => el("li", {
      class: (rec.golden ? "" : "fails ") + (rec.corrected ? "corrected" : ""), "data-file": rec.file_name,
      onclick: () => openRecord(rec.file_name) }, el("b", {}, rec.file_name), " ", rec.scene)));
  } catch (e) { $("c-count").textContent = e.message; }
}

function showRecord(r) {
  state.ds.current = r;
  const rec = r.record;
  $("c-empty").hidden = true; $("c-editor").hidden = false;
  $("c-file").textContent = rec.file_name;
  $("c-image").src = "/api/datasets/" + state.ds.id + "/image?file=" + encodeURIComponent(rec.file_name);
  $("c-scene").value = rec.scene; $("c-relation").value = rec.relation;
  $("c-elements").value = rec.elements.join(", "); $("c-note").value = "";
  $("c-provenance").textContent = JSON.stringify(rec.provenance || {}, null, 2);
  renderChecks($("c-checks"), r.checks); state.ds.suggested = r.checks.suggested;
}

async function openRecord(file) {
  $("c-message").textContent = ""; $("c-message").className = "";
  try { showRecord(await api("GET", "/api/datasets/" + state.ds.id + "/record?file=" + encodeURIComponent(file))); }
  catch (e) { $("c-message").textContent = e.message; $("c-message").className = "error"; }
}

$("c-revert").addEventListener("click", () => { if (state.ds.current) showRecord(state.ds.current); });
$("c-apply-suggested").addEventListener("click", () => {
  const s = state.ds.suggested; if (!s) return;
  $("c-scene").value = s.scene; $("c-relation").value = s.relation; $("c-elements").value = s.elements.join(", ");
  cCheck();
});
$("c-save").addEventListener("click", async () => {
  const cur = state.ds.current; if (!cur) return;
  const body = { file_name: cur.record.file_name, version: cur.version, scene: $("c-scene").value,
    relation: $("c-relation").value, elements: splitElements($("c-elements").value), note: $("c-note").value };
  $("c-message").className = "";
  try {
    const r = await api("PUT", "/api/datasets/" + state.ds.id + "/record", body);
    showRecord(r);
    $("c-message").textContent = r.unchanged ? "Nothing changed." : "Saved to metadata.jsonl.";
    $("c-message").className = "ok";
    loadRecords();
  } catch (e) {
    $("c-message").textContent = e.message; $("c-message").className = "error";
    if (e.status === 409 && e.data && e.data.current) {
      // keep the user's edit in the form, but base the next save on the current version
      state.ds.current = e.data.current;
      $("c-provenance").textContent = JSON.stringify(e.data.current.record.provenance || {}, null, 2);
    }
  }
});

// ---------- start ----------
async function start() {
  try {
    const [info, k] = await Promise.all([api("GET", "/api/info"), api("GET", "/api/knowledge")]);
    state.info = info; state.knowledge = k;
    fillDatalist($("scene-list"), k.scenes);
    elementsAutocomplete($("g-elements"), $("g-elements-list"));
    elementsAutocomplete($("c-elements"), $("c-elements-list"));
    relationAutocomplete($("g-relation"), $("g-relation-suggest"), gCheck);
    relationAutocomplete($("c-relation"), $("c-relation-suggest"), cCheck);
    $("g-model").replaceChildren(...info.models.map((m) => el("option", { value: m.id }, m.id + (m.side ? " (" + m.side + " px)" : ""))));
    for (const l of info.loras) $("g-lora").append(el("option", { value: l.id }, l.id));
    $("g-embeddings").replaceChildren(...info.embeddings.map((e) =>
      el("label", {}, el("input", { type: "checkbox", value: e.id }), " " + e.id)));
    $("g-embeddings-box").hidden = info.embeddings.length === 0;
    const m = info.models[0];
    const side = (m && m.side) || 512;
    $("g-width").value = side; $("g-height").value = side;
    $("server-info").textContent = "strata " + info.version + " · knowledge: " + k.name;
    if (!info.models.length) $("g-error").textContent = "no model: start strata serve with --models DIR";
    const jobs = await api("GET", "/api/jobs");
    for (const s of jobs.slice().reverse()) if (s.state === "done") addToGallery(s);
    document.body.dataset.ready = "1";
  } catch (e) { $("g-error").textContent = "could not load the server's settings: " + e.message; }
}
start();
