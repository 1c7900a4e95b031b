// The companion's control surface: a live piano roll, the status, the controls, the session.
// Plain JS and canvas, no dependencies. Every control goes to the server over the WebSocket
// and comes back as a "control" event: the page shows what the engine kept, as a CC does.
"use strict";
const token = new URLSearchParams(location.search).get("token");
const q = token ? "?token=" + encodeURIComponent(token) : "";
const ROLL_S = 8;           // seconds of the live roll
const HISTORY_VIEW_S = 40;  // seconds shown by the session roll
const SEND_EVERY_MS = 80;   // a slider being moved sends at most this often
const NAMES = ["C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B"];

const notes = [];           // {pitch, start, end, who}
const sounding = {performer: new Map(), companion: new Map()};
const phraseEnds = [];
let offset = null;          // the server's clock minus ours, seconds
let status = {}, settings = {}, controls = {};
let ws = null, nextId = 1, dragging = null;
const counts = {performer: 0, companion: 0};

const $ = (id) => document.getElementById(id);
const serverNow = () => performance.now() / 1000 + (offset ?? 0);

function noteOn(who, pitch, t) {
  noteOff(who, pitch, t);
  const n = {pitch, start: t, end: null, who};
  notes.push(n);
  sounding[who].set(pitch, n);
  counts[who] += 1;
  document.body.dataset[who] = counts[who];
}
function noteOff(who, pitch, t) {
  const n = sounding[who].get(pitch);
  if (n) { n.end = t; sounding[who].delete(pitch); }
}

function onEvent([kind, t, d]) {
  if (kind === "heard") {
    if (d.velocity > 0) noteOn("performer", d.pitch, t); else noteOff("performer", d.pitch, t);
  } else if (kind === "note_on") noteOn("companion", d.pitch, t);
  else if (kind === "note_off") noteOff("companion", d.pitch, t);
  else if (kind === "phrase_end") phraseEnds.push(d.deadline);
  else if (kind === "control") {
    if (d.name === "mute") settings.mute = d.value;
    else if (d.name === "panic") { for (const w in sounding) for (const p of [...sounding[w].keys()]) noteOff(w, p, t); }
    else if (d.name === "input" || d.name === "output" || d.name === "model") { status[d.name] = d.value; }
    else settings[d.name] = d.value;
    showSettings();
  }
}

// -- status ------------------------------------------------------------------------------

function showStatus(s) {
  Object.assign(status, s);
  const st = status.state || "listening";
  $("state").textContent = st; $("state").className = "badge " + st;
  $("key").textContent = status.key || "–";
  $("tempo").textContent = status.tempo_bpm ? status.tempo_bpm.toFixed(1) + " BPM" : "–";
  $("tempo-source").textContent = status.tempo_source ? "from " + status.tempo_source : "";
  $("port-in").textContent = (status.input || "–") + (status.input_connected === false ? " (gone)" : "");
  $("port-out").textContent = (status.output || "–") + (status.output_connected === false ? " (gone)" : "");
  $("held").textContent = status.held && status.held.length ? status.held.join(" ") : "–";
  $("heard").textContent = status.notes_heard ?? 0;
  $("answers").textContent = status.answers ?? 0;
  $("dropped").textContent = (status.dropped ?? 0) + " / " + (status.frames_dropped ?? 0) + " frames";
  if (status.model) $("model").textContent = status.model;
}

// -- controls ----------------------------------------------------------------------------

function fmt(v) { return typeof v === "number" ? (Math.round(v * 100) / 100).toString() : String(v); }

function buildControls(list) {
  const box = $("sliders");
  box.textContent = "";
  for (const c of list) {
    controls[c.name] = c;
    if (c.kind !== "range" && c.kind !== "choice") continue;
    const div = document.createElement("div");
    div.className = "control";
    const cc = c.cc == null ? "" : ` · CC ${c.cc}`;
    const unit = c.unit ? " " + c.unit : "";
    const range = c.kind === "range" ? `${c.min}..${c.max}${unit}${c.word ? " or " + c.word : ""}` : c.choices.join(" / ");
    div.title = c.description;
    div.innerHTML = `<label><span>${c.label}</span><output></output></label>`;
    let input;
    if (c.kind === "range") {
      input = document.createElement("input");
      input.type = "range"; input.min = c.min; input.max = c.max;
      input.step = c.step ?? (c.whole ? 1 : (c.max - c.min) / 200);
      if (c.name === "answer.length") input.max = 32;  // beats
      if (c.word) input.min = c.min - Number(input.step);  // one step below: the word ("call")
    } else {
      input = document.createElement("select");
      for (const ch of c.choices) input.add(new Option(String(ch), String(ch)));
    }
    input.id = "ctl-" + c.name;
    input.dataset.name = c.name;
    const info = document.createElement("div");
    info.innerHTML = `<span class="range">${range}</span><span class="cc">${cc}</span>`;
    div.append(input, info);
    box.append(div);
    let last = 0, timer = null;
    const value = () => {
      if (c.kind !== "range") {
        const ch = c.choices.find((x) => String(x) === input.value);
        return ch === undefined ? input.value : ch;  // true/false stay booleans
      }
      const v = Number(input.value);
      return c.word && v < c.min ? c.word : v;
    };
    input.addEventListener("pointerdown", () => { dragging = c.name; });
    input.addEventListener("input", () => {
      dragging = c.name;
      div.querySelector("output").textContent = fmt(value());
      clearTimeout(timer);
      const wait = SEND_EVERY_MS - (Date.now() - last);
      timer = setTimeout(() => { last = Date.now(); send(c.name, value()); }, Math.max(0, wait));
    });
    input.addEventListener("change", () => { dragging = null; clearTimeout(timer); send(c.name, value()); });
  }
  showSettings();
}

function showSettings() {
  for (const [name, v] of Object.entries(settings)) {
    const el = $("ctl-" + name);
    if (!el) continue;
    const out = el.parentElement.querySelector("output");
    out.textContent = fmt(v);
    if (dragging === name) continue;  // the finger on it wins until it lets go
    const c = controls[name];
    el.value = c && c.word && v === c.word ? el.min : String(v);
  }
  $("mute").classList.toggle("on", !!settings.mute);
  $("mute").textContent = settings.mute ? "muted" : "mute";
}

function fill(select, names, current, none) {
  const want = [none, ...names].join("\n");
  if (select.dataset.names !== want) {
    select.dataset.names = want;
    select.textContent = "";
    if (none) select.add(new Option(none, ""));
    for (const n of names) select.add(new Option(n, n));
  }
  if (document.activeElement !== select) select.value = names.includes(current) ? current : "";
}

function showChoices(state) {
  const p = state.ports || {};
  fill($("input-select"), p.inputs || [], status.input, "own port (companion:in)");
  fill($("output-select"), p.outputs || [], status.output, "own port (companion:out)");
  $("input-select").disabled = $("output-select").disabled = !status.switchable;
  fill($("model-select"), state.models || [], state.model, null);
  $("model-select").disabled = !(state.models || []).length;
}

for (const [id, name] of [["input-select", "input"], ["output-select", "output"], ["model-select", "model"]]) {
  $(id).addEventListener("change", (e) => send(name, e.target.value || null));
}
for (const b of document.querySelectorAll("button[data-control]")) {
  b.addEventListener("click", () => {
    const name = b.dataset.control;
    send(name, name === "mute" ? !settings.mute : null);
  });
}

function send(name, value) {
  if (ws && ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify({id: nextId++, name, value}));
}

// -- the connection ----------------------------------------------------------------------

function connect() {
  ws = new WebSocket((location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/ws" + q);
  ws.onmessage = (m) => {
    const msg = JSON.parse(m.data);
    if (msg.type === "hello") {
      const s = msg.state;
      settings = Object.assign({mute: s.muted}, s.settings);
      status = {}; showStatus(Object.assign({model: s.model}, s.status, s.ports));
      sync(s.status.now);
      buildControls(s.controls);
      showChoices(s);
      notes.length = 0; phraseEnds.length = 0; counts.performer = counts.companion = 0;
      sounding.performer.clear(); sounding.companion.clear();
      msg.history.forEach(onEvent);
      document.body.dataset.connected = "yes";
    } else if (msg.type === "frame") {
      sync(msg.now);
      msg.events.forEach(onEvent);
      if (msg.status) showStatus(msg.status);
      if (msg.settings) { Object.assign(settings, msg.settings, {mute: msg.muted}); showSettings(); }
    } else if (msg.type === "reply") {
      $("error").textContent = msg.error || "";
    }
  };
  ws.onclose = () => { document.body.dataset.connected = "no"; $("state").textContent = "disconnected";
    $("state").className = "badge"; setTimeout(connect, 1000); };
}

function sync(now) {  // the least delayed frame tells the clocks' offset best
  const o = now - performance.now() / 1000;
  if (offset === null || o > offset || o < offset - 1) offset = o;
}

setInterval(async () => {  // ports and models change rarely: looked at every few seconds
  try {
    const r = await fetch("api/state" + q);
    if (r.ok) { const s = await r.json(); showStatus(Object.assign({model: s.model}, s.ports)); showChoices(s); }
  } catch (e) { /* the socket says when the server is gone */ }
}, 3000);

// -- drawing -----------------------------------------------------------------------------

function fit(canvas) {
  const r = canvas.getBoundingClientRect(), k = window.devicePixelRatio || 1;
  if (canvas.width !== Math.round(r.width * k) || canvas.height !== Math.round(r.height * k)) {
    canvas.width = Math.round(r.width * k); canvas.height = Math.round(r.height * k);
  }
  return canvas.getContext("2d");
}

function pitchRange(t0, t1) {
  let lo = 60, hi = 84;
  for (const n of notes) if ((n.end ?? t1) >= t0 && n.start <= t1) { lo = Math.min(lo, n.pitch - 2); hi = Math.max(hi, n.pitch + 2); }
  return [lo, hi];
}

function draw(canvas, t0, t1, opts) {
  const g = fit(canvas), W = canvas.width, H = canvas.height;
  const [lo, hi] = pitchRange(t0, t1);
  const rows = hi - lo + 1, rh = H / rows;
  const x = (t) => (t - t0) / (t1 - t0) * W;
  const y = (p) => H - (p - lo + 1) * rh;
  g.fillStyle = "#000"; g.fillRect(0, 0, W, H);
  const scale = status.scale || null;
  for (let p = lo; p <= hi; p++) {  // the key's scale rows shaded, C rows marked
    const pc = ((p % 12) + 12) % 12;
    if (scale && scale.includes(pc)) { g.fillStyle = pc === status.tonic ? "#1f2a1f" : "#15181c"; g.fillRect(0, y(p), W, rh); }
    if (pc === 0) { g.fillStyle = "#2a2f38"; g.fillRect(0, y(p) + rh - 1, W, 1); }
  }
  if (opts.grid && status.beat_s > 0.05) {  // the beat grid
    const b = status.beat_s, a = status.beat_anchor ?? 0;
    g.fillStyle = "#262b33";
    for (let k = Math.ceil((t0 - a) / b); a + k * b <= t1; k++) g.fillRect(x(a + k * b), 0, 1, H);
  }
  g.fillStyle = "#ff4f6a";
  for (const e of phraseEnds) if (e >= t0 && e <= t1) g.fillRect(x(e) - 1, 0, 2, H);
  for (const n of notes) {
    const end = n.end ?? opts.now;
    if (end < t0 || n.start > t1) continue;
    g.fillStyle = n.who === "performer" ? "#4fa3ff" : "#ffae3d";
    g.fillRect(x(n.start), y(n.pitch) + 1, Math.max(2, x(end) - x(n.start)), Math.max(2, rh - 2));
  }
  if (opts.labels) {
    g.fillStyle = "#8b93a1"; g.font = `${Math.max(10, Math.min(14, rh)) * (window.devicePixelRatio || 1)}px system-ui`;
    for (let p = lo; p <= hi; p++) if (((p % 12) + 12) % 12 === 0) g.fillText("C" + (Math.floor(p / 12) - 1), 4, y(p) + rh - 3);
  }
}

function frame() {
  const now = serverNow();
  draw($("roll"), now - ROLL_S, now, {now, grid: true, labels: true});
  const first = notes.length ? notes[0].start : now;
  const span = Math.max(HISTORY_VIEW_S, now - first);
  const at = Number($("scroll").value) / 1000;  // 1: the latest
  const t1 = first + HISTORY_VIEW_S + (span - HISTORY_VIEW_S) * at;
  draw($("history"), t1 - HISTORY_VIEW_S, t1, {now, grid: false, labels: false});
  document.body.dataset.frames = (Number(document.body.dataset.frames || 0) + 1).toString();
  requestAnimationFrame(frame);
}

connect();
requestAnimationFrame(frame);
