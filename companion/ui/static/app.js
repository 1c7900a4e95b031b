// The companion's control surface: a live piano roll with the answer coming next, what the
// companion waits for in words, the controls, the session's timeline; the answers heard
// through the page's own piano (synth.js), a MIDI keyboard plugged into this computer as the
// companion's input (Web MIDI). Plain JS and canvas, no dependencies. Every control goes to
// the server over the WebSocket and comes back as a "control" event: the page shows what the
// engine kept, as a CC does.
"use strict";
const token = new URLSearchParams(location.search).get("token");
const q = token ? "?token=" + encodeURIComponent(token) : "";
const ROLL_PAST_S = 6;      // seconds of the live roll behind now
const ROLL_NEXT_S = 2;      // and ahead of it: the "next" lane
const HISTORY_VIEW_S = 40;  // seconds shown by the session roll
const SEND_EVERY_MS = 80;   // a slider being moved sends at most this often
const LOOKAHEAD_S = 0.2;    // answer notes are handed to WebAudio / Web MIDI this far ahead
const TICK_MS = 25;         // and looked at this often
const OFFSET_WINDOW_S = 10; // the clocks' offset: the best frame of the last 10 s

const notes = [];           // {pitch, start, end, who}
const sounding = {performer: new Map(), companion: new Map(), chords: new Map()};
const phraseEnds = [];
const planned = [];         // the answers' notes as decided: {answer, index, pitch, start, dur, velocity, ...}
let offset = null;          // the server's clock minus ours, seconds
const offsets = [];         // [our time, offset seen] of the last OFFSET_WINDOW_S
let status = {}, settings = {}, controls = {};
let ws = null, nextId = 1, dragging = null, connected = false;
const counts = {performer: 0, companion: 0, chords: 0};
// the roll's colours: you, the answers, the accompaniment (answer 0: its chords and bass)
const COLOURS = {performer: "#4fa3ff", companion: "#ffae3d", chords: "#b58cff"};
const synth = new window.Synth();
let soundOn = false;        // the page's piano plays the answers
let view = null;            // the session roll's end time; null: follows now

const $ = (id) => document.getElementById(id);
const serverNow = () => performance.now() / 1000 + (offset ?? 0);
const perfOfServer = (t) => (t - (offset ?? 0)) * 1000;   // server seconds -> performance.now() ms

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

// When the performer's notes and the answers reached this page (performance.now), for the
// latency figures (bench/page.py): [kind, server time, arrival, pitch or answer id].
const arrivals = [];
function arrived(kind, t, what) {
  arrivals.push([kind, t, performance.now(), what]);
  if (arrivals.length > 2000) arrivals.shift();
}

function onEvent([kind, t, d], live) {
  if (live && (kind === "heard" || kind === "answer")) arrived(kind, t, kind === "heard" ? d.pitch : d.answer);
  if (kind === "heard") {
    if (d.velocity > 0) noteOn("performer", d.pitch, t); else noteOff("performer", d.pitch, t);
    heardNote(d.pitch, d.velocity);
  } else if (kind === "note_on") noteOn(d.answer === 0 ? "chords" : "companion", d.pitch, t);
  else if (kind === "note_off") noteOff(d.answer === 0 ? "chords" : "companion", d.pitch, t);
  else if (kind === "phrase_end") phraseEnds.push(d.deadline);
  else if (kind === "answer") plan(d.answer, d.notes);
  else if (kind === "barge_in") cancelAnswers((a) => a === d.answer);
  else if (kind === "control") {
    if (d.name === "mute") { settings.mute = d.value; if (d.value) cancelAnswers(() => true); }
    else if (d.name === "panic") {
      cancelAnswers(() => true);
      for (const w in sounding) for (const p of [...sounding[w].keys()]) noteOff(w, p, t);
    } else if (d.name === "input" || d.name === "output" || d.name === "model") { status[d.name] = d.value; }
    else settings[d.name] = d.value;
    showSettings();
  }
}

// -- the answers, heard: the page's piano and a Web MIDI output ------------------------

// A new answer: its notes in the "next" lane, and to be played at their times (an earlier
// answer's notes still to come stop, as the companion's player does).
function plan(answer, list) {
  cancelAnswers((a) => a !== answer);
  list.forEach(([pitch, start, dur, velocity], index) => {
    planned.push({answer, index, pitch, start, dur, velocity, handed: false, late: null,
                  shownAt: null, heardAt: serverNow()});
  });
  tick();
}

function cancelAnswers(pred) {
  const now = serverNow();
  for (let i = planned.length - 1; i >= 0; i--) {
    const n = planned[i];
    if (!pred(n.answer)) continue;
    if (n.start + n.dur > now) { planned.splice(i, 1); if (n.handed) midiOutCancel(n, now); }
  }
  synth.cancel((tag) => tag && tag.answer !== undefined && pred(tag.answer));
}

// Every TICK_MS: what starts within LOOKAHEAD_S goes to the synth and the MIDI output, at its
// time on their clocks; a note whose start has passed (its answer came late) plays now.
function tick() {
  const now = serverNow();
  for (const n of planned) {
    if (n.handed || n.start - now > LOOKAHEAD_S) continue;
    n.handed = true;
    const end = n.start + n.dur;
    if (end <= now) { n.late = now - n.start; continue; }  // too late: over already
    const at = Math.max(n.start, now);
    n.late = Math.max(0, now - n.start);
    const tag = {answer: n.answer, index: n.index, server: n.start};
    if (soundOn && synth.started) {
      const when = synth.timeOf(perfOfServer(at));
      n.audioAt = when;
      synth.play(n.pitch, n.velocity, when, end - at, tag);
    }
    midiOutPlay(n, at, end);
  }
  // forget what has ended a while ago
  while (planned.length && planned[0].start + planned[0].dur < now - ROLL_PAST_S) planned.shift();
}
setInterval(tick, TICK_MS);

// The performer's notes, as the companion heard them: on the page's piano when asked for,
// unless the keyboard is this page's own Web MIDI input (played at once, see webMidiIn).
const heldVoices = new Map();
function heardNote(pitch, velocity) {
  if (!$("my-notes").checked || webIn || !soundOn || !synth.started) return;
  localNote(pitch, velocity);
}
function localNote(pitch, velocity) {
  const v = heldVoices.get(pitch);
  if (v) { v.off(synth.now()); heldVoices.delete(pitch); }
  if (velocity > 0) heldVoices.set(pitch, synth.on(pitch, velocity, synth.now(), {who: "performer"}));
}

// -- sound: started by the first tap, as browsers require ------------------------------

let starting = null;
function startSound() {  // once at a time: a tap's pointerdown and its click may both ask
  starting = starting || (async () => {
    soundOn = await synth.start();
    showSound();
    initMidi();
    starting = null;
  })();
  return starting;
}
function showSound() {
  const b = $("sound");
  b.classList.toggle("on", soundOn && !synth.muted);
  b.textContent = !soundOn ? "tap for sound" : synth.muted ? "sound off" : "sound on";
  document.body.dataset.sound = soundOn && !synth.muted ? "on" : "off";
  if (synth.ctx) {  // what the browser says its audio output adds
    const ms = 1000 * ((synth.ctx.baseLatency || 0) + (synth.ctx.outputLatency || 0));
    $("audio-latency").textContent = ms > 0 ? Math.round(ms) + " ms" : "–";
  }
}
$("sound").addEventListener("click", async () => {
  if (!soundOn) { await startSound(); return; }
  synth.setMuted(!synth.muted);
  showSound();
});
$("volume").addEventListener("input", (e) => synth.setVolume(Number(e.target.value)));
// any first tap or key starts it (the sound button's own tap is its click's)
document.addEventListener("pointerdown", (e) => { if (!soundOn && e.target !== $("sound")) startSound(); }, {capture: true});
document.addEventListener("keydown", () => { if (!soundOn) startSound(); }, {capture: true});

// -- Web MIDI: a keyboard on this computer in, the answers out -------------------------

let midi = null, webIn = null, webOut = null;
const outSounding = new Map();  // note key -> {pitch, end}: what went to the output

let midiAsked = false;
async function initMidi() {
  if (midiAsked || !navigator.requestMIDIAccess) {
    if (!navigator.requestMIDIAccess) $("webmidi-note").textContent = !window.isSecureContext
      ? "a keyboard here needs the page opened on this computer as 127.0.0.1 or localhost: browsers give Web MIDI to local or secure pages only"
      : "this browser has no Web MIDI (Chrome and Edge have it): play into the companion's MIDI input instead";
    return;
  }
  midiAsked = true;
  try {
    midi = await navigator.requestMIDIAccess({sysex: false});
  } catch (e) {
    $("webmidi-note").textContent = "Web MIDI refused: " + (e.message || e.name);
    return;
  }
  midi.onstatechange = showMidiPorts;
  showMidiPorts();
}

function showMidiPorts() {
  const fillPorts = (select, ports, current) => {
    const list = [...ports.values()];
    const want = list.map((p) => p.id + "\t" + p.name).join("\n");
    if (select.dataset.ports !== want) {
      select.dataset.ports = want;
      select.textContent = "";
      select.add(new Option("none", ""));
      for (const p of list) select.add(new Option(p.name || p.id, p.id));
    }
    select.value = current && list.some((p) => p.id === current.id) ? current.id : "";
    select.disabled = false;
  };
  fillPorts($("webmidi-in"), midi.inputs, webIn);
  fillPorts($("webmidi-out"), midi.outputs, webOut);
  $("webmidi-note").textContent = midi.inputs.size ? "" : "no MIDI keyboard found: plug one in";
}

$("webmidi-in").addEventListener("change", (e) => {
  if (webIn) webIn.onmidimessage = null;
  webIn = (midi && midi.inputs.get(e.target.value)) || null;
  if (webIn) {
    webIn.onmidimessage = onWebMidi;
    $("my-notes").checked = true;  // a keyboard on the laptop is often one with no sound of its own
  }
  document.body.dataset.webmidiIn = webIn ? webIn.name : "";
});
$("webmidi-out").addEventListener("change", (e) => {
  midiOutAllOff();
  webOut = (midi && midi.outputs.get(e.target.value)) || null;
});

// A message from the keyboard: to the companion (its input, as a port's messages go), and
// on the page's piano at once when "my notes" is on. Clock, SysEx and the like stay here.
function onWebMidi(e) {
  const data = Array.from(e.data);
  if (!data.length || data[0] >= 0xF0) return;
  if (ws && ws.readyState === WebSocket.OPEN) {
    ws.send(JSON.stringify({type: "midi", data}));
    sentMidi.push([performance.now(), data]);
    if (sentMidi.length > 1000) sentMidi.shift();
  }
  const kind = data[0] & 0xF0;
  if ((kind === 0x90 || kind === 0x80) && $("my-notes").checked && soundOn && synth.started) {
    localNote(data[1], kind === 0x90 ? data[2] : 0);
  }
}
const sentMidi = [];  // [when sent (performance.now), bytes] of the last 1000, for the latency figures

function midiOutPlay(n, at, end) {
  if (!webOut) return;
  const key = n.answer + ":" + n.index;
  try {
    webOut.send([0x90, n.pitch, n.velocity], perfOfServer(at));
    webOut.send([0x80, n.pitch, 0], perfOfServer(end));
    outSounding.set(key, {pitch: n.pitch, start: at, end});
  } catch (err) { $("error").textContent = "MIDI out: " + err.message; }
}
// A cancelled note: its note-off now, or just after its note-on where that is still to come.
function midiOutCancel(n, now) {
  const key = n.answer + ":" + n.index, s = outSounding.get(key);
  if (!webOut || !s) return;
  outSounding.delete(key);
  try { webOut.send([0x80, s.pitch, 0], perfOfServer(Math.max(now, s.start)) + 1); } catch (err) { /* port gone */ }
}
function midiOutAllOff() {
  if (!webOut) return;
  try { webOut.send([0xB0, 123, 0]); } catch (err) { /* port gone */ }
  outSounding.clear();
}
setInterval(() => {  // forget the output's notes that have ended
  const now = serverNow();
  for (const [k, s] of outSounding) if (s.end < now) outSounding.delete(k);
}, 1000);

// -- status, in words ---------------------------------------------------------------------

function showStatus(s) {
  Object.assign(status, s);
  const st = status.state || "listening";
  $("state").textContent = st; $("state").className = "badge " + st;
  $("key").textContent = status.key || "–";
  $("chord").textContent = status.chord || "–";
  $("chord-box").hidden = !status.accompany || status.accompany === "off";
  $("tempo").textContent = status.tempo_bpm ? Math.round(status.tempo_bpm) + " BPM" : "–";
  $("tempo-box").title = status.tempo_source ? "tempo from " + status.tempo_source : "";
  $("tempo-source").textContent = status.tempo_source || "–";
  $("port-in").textContent = (status.input || "–") + (status.input_connected === false ? " (gone)" : "");
  $("port-out").textContent = (status.output || "–") + (status.output_connected === false ? " (gone)" : "");
  $("heard").textContent = status.notes_heard ?? 0;
  $("answers").textContent = status.answers ?? 0;
  $("dropped").textContent = (status.dropped ?? 0) + " / " + (status.frames_dropped ?? 0) + " frames";
  if (status.model) $("model").textContent = status.model;
}

// What the companion waits for, in its own words (the status, 4 times a second).
function waitingWords() {
  if (!connected) return "not connected: the companion is not running, or the page lost it";
  return status.waiting || "listening: play a phrase";
}

// -- controls ----------------------------------------------------------------------------

function fmt(v) { return typeof v === "number" ? (Math.round(v * 100) / 100).toString() : String(v); }

// A setting's value as the page says it: its unit, its word ("call"), null's word.
function say(c, v) {
  if (v === null || v === undefined) return c.none || "–";
  if (v === "call") return "as long as yours";
  if (typeof v !== "number") return String(v);
  const unit = c.unit ? " " + (Math.abs(v) === 1 ? c.unit.replace(/s$/, "") : c.unit) : "";
  return fmt(v) + unit;
}

// The slider's stop nearest a value (its word or null: the bottom stop).
function stopOf(c, v) {
  const st = c.stops;
  if (!st || !st.length) return 0;
  if (v === null || typeof v === "string") { const i = st.indexOf(v); return i >= 0 ? i : 0; }
  let best = 0, bestD = Infinity;
  st.forEach((s, i) => {
    if (typeof s !== "number") return;
    const d = c.scale === "log" && s > 0 && v > 0 ? Math.abs(Math.log(s / v)) : Math.abs(s - v);
    if (d < bestD) { bestD = d; best = i; }
  });
  return best;
}

function buildControls(list) {
  const box = $("sliders");
  box.textContent = "";
  for (const c of list) {
    controls[c.name] = c;
    if (c.kind !== "range" && c.kind !== "choice") continue;
    const div = document.createElement("div");
    div.className = "control";
    div.title = c.description;
    const label = document.createElement("label");
    const name = document.createElement("span");
    name.textContent = c.label;
    const out = document.createElement("output");
    label.append(name, out);
    let input;
    if (c.kind === "range") {
      input = document.createElement("input");
      input.type = "range"; input.min = 0; input.max = c.stops.length - 1; input.step = 1;
      input.setAttribute("aria-label", c.label);
    } else {
      input = document.createElement("select");
      for (const ch of c.choices) input.add(new Option(String(ch), String(ch)));
    }
    label.htmlFor = input.id = "ctl-" + c.name;
    input.dataset.name = c.name;
    const hint = document.createElement("div");
    hint.className = "hint";
    hint.textContent = c.description;
    if (c.cc != null) {
      const cc = document.createElement("span");
      cc.className = "cc"; cc.textContent = "CC " + c.cc;
      hint.append(cc);
    }
    div.append(label, input, hint);
    box.append(div);
    let last = 0, timer = null;
    const value = () => {
      if (c.kind !== "range") {
        const ch = c.choices.find((x) => String(x) === input.value);
        return ch === undefined ? input.value : ch;  // true/false stay booleans
      }
      return c.stops[Number(input.value)];
    };
    input.addEventListener("pointerdown", () => { dragging = c.name; });
    input.addEventListener("input", () => {
      dragging = c.name;
      out.textContent = say(c, value());
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
    const c = controls[name];
    el.parentElement.querySelector("output").textContent = say(c, v);
    if (dragging === name) continue;  // the finger on it wins until it lets go
    el.value = c.kind === "range" ? String(stopOf(c, v)) : String(v);
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

function showTablet(url) {
  if (!url) return;
  $("url").textContent = url;
  const img = $("qr");
  if (img.hidden) { img.src = "api/qr.svg" + q; img.hidden = false; }
  const local = /^http:\/\/(127\.|localhost|\[::1\])/.test(url);
  $("tablet-note").textContent = local
    ? "This address is this computer's own: for a tablet, start with --ui 0.0.0.0:8765 (same network)."
    : "Same network only. Pin ui.token in config.yaml to keep this address from run to run.";
}

for (const [id, name] of [["input-select", "input"], ["output-select", "output"], ["model-select", "model"]]) {
  $(id).addEventListener("change", (e) => send(name, e.target.value || null));
}
for (const b of document.querySelectorAll("button[data-control]")) {
  b.addEventListener("click", () => {
    const name = b.dataset.control;
    if (name === "panic") { cancelAnswers(() => true); midiOutAllOff(); }
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
      offsets.length = 0; offset = null;
      sync(s.status.now);
      buildControls(s.controls);
      showChoices(s);
      showTablet(s.url);
      notes.length = 0; phraseEnds.length = 0; planned.length = 0;
      counts.performer = counts.companion = 0;
      sounding.performer.clear(); sounding.companion.clear();
      for (const e of msg.history) onEvent(e, false);
      connected = true;
      document.body.dataset.connected = "yes";
    } else if (msg.type === "frame") {
      sync(msg.now);
      for (const e of msg.events) onEvent(e, true);
      if (msg.status) showStatus(msg.status);
      if (msg.settings) { Object.assign(settings, msg.settings, {mute: msg.muted}); showSettings(); }
    } else if (msg.type === "reply") {
      $("error").textContent = msg.error || "";
    }
  };
  ws.onclose = () => {
    connected = false;
    document.body.dataset.connected = "no"; $("state").textContent = "disconnected";
    $("state").className = "badge"; setTimeout(connect, 1000);
  };
}

// The server's clock seen from here: each frame says the server's time as it left; the least
// delayed frame of the last OFFSET_WINDOW_S tells the offset best (a window, so that two
// clocks drifting apart are followed).
function sync(now) {
  const here = performance.now() / 1000, o = now - here;
  offsets.push([here, o]);
  while (offsets.length && offsets[0][0] < here - OFFSET_WINDOW_S) offsets.shift();
  let best = -Infinity;
  for (const [, x] of offsets) if (x > best) best = x;
  offset = best;
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
  for (const n of planned) if (n.start + n.dur >= t0 && n.start <= t1) { lo = Math.min(lo, n.pitch - 2); hi = Math.max(hi, n.pitch + 2); }
  return [lo, hi];
}

function draw(canvas, t0, t1, opts) {
  const g = fit(canvas), W = canvas.width, H = canvas.height, k = window.devicePixelRatio || 1;
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
  if (opts.next) {  // the lane ahead of now: the answer coming
    g.fillStyle = "rgba(255,174,61,0.07)"; g.fillRect(x(opts.now), 0, W - x(opts.now), H);
    g.fillStyle = "#8b93a1"; g.font = `${12 * k}px system-ui`;
    g.fillText("next", x(opts.now) + 6 * k, 14 * k);
  }
  if (opts.grid && status.beat_s > 0.05) {  // the beat grid
    const b = status.beat_s, a = status.beat_anchor ?? 0;
    g.fillStyle = "#262b33";
    for (let j = Math.ceil((t0 - a) / b); a + j * b <= t1; j++) g.fillRect(x(a + j * b), 0, 1, H);
  }
  g.fillStyle = "#ff4f6a";
  for (const e of phraseEnds) if (e >= t0 && e <= t1) g.fillRect(x(e) - 1, 0, 2, H);
  for (const n of notes) {
    const end = n.end ?? opts.now;
    if (end < t0 || n.start > t1) continue;
    g.fillStyle = COLOURS[n.who];
    g.fillRect(x(n.start), y(n.pitch) + 1, Math.max(2, x(end) - x(n.start)), Math.max(2, rh - 2));
  }
  if (opts.next) {  // what is still to sound, outlined
    g.strokeStyle = "#ffae3d"; g.lineWidth = 2 * k; g.setLineDash([5 * k, 3 * k]);
    let shown = 0;
    for (const n of planned) {
      const end = n.start + n.dur;
      if (end <= opts.now || n.start > t1) continue;
      const a = Math.max(n.start, opts.now);
      g.strokeRect(x(a) + k, y(n.pitch) + 1 + k, Math.max(2, x(end) - x(a) - 2 * k), Math.max(2, rh - 2 - 2 * k));
      if (n.start > opts.now && n.shownAt === null) n.shownAt = opts.now;
      if (n.start > opts.now) shown++;
    }
    g.setLineDash([]);
    document.body.dataset.next = shown;
    g.fillStyle = "#e8e8e8"; g.fillRect(x(opts.now) - 1, 0, 2, H);  // now
  }
  if (opts.labels) {
    g.fillStyle = "#8b93a1"; g.font = `${Math.max(10, Math.min(14, rh)) * k}px system-ui`;
    for (let p = lo; p <= hi; p++) if (((p % 12) + 12) % 12 === 0) g.fillText("C" + (Math.floor(p / 12) - 1), 4, y(p) + rh - 3);
  }
}

const clock = (s) => `${Math.floor(s / 60)}:${String(Math.floor(s % 60)).padStart(2, "0")}`;

// The whole session as a timeline: minutes marked, the notes as ticks, the part the roll
// above shows as a window. Dragging along it looks back; to the end, it follows again.
function drawTimeline(canvas, first, now, t0, t1) {
  const g = fit(canvas), W = canvas.width, H = canvas.height, k = window.devicePixelRatio || 1;
  const span = Math.max(HISTORY_VIEW_S, now - first);
  const x = (t) => (t - first) / span * W;
  g.fillStyle = "#11141a"; g.fillRect(0, 0, W, H);
  for (const n of notes) {
    g.fillStyle = COLOURS[n.who];
    g.fillRect(x(n.start), n.who === "performer" ? H * 0.35 : H * 0.55, Math.max(1, x(n.end ?? now) - x(n.start)), H * 0.12);
  }
  const step = span > 600 ? 60 : span > 120 ? 30 : 10;
  g.fillStyle = "#8b93a1"; g.font = `${11 * k}px system-ui`;
  for (let s = 0; s <= span; s += step) {
    g.fillRect(x(first + s), 0, 1, H * 0.25);
    g.fillText(clock(s), x(first + s) + 3 * k, 11 * k);
  }
  g.strokeStyle = "#e8e8e8"; g.lineWidth = 2 * k;
  g.strokeRect(x(t0) + k, k, Math.max(4, x(t1) - x(t0) - 2 * k), H - 2 * k);
  g.fillText(view === null ? "now" : clock(t1 - first), Math.min(W - 40 * k, x(t1) + 4 * k), H - 5 * k);
}

function timelineAt(ev) {
  const r = $("timeline").getBoundingClientRect(), now = serverNow();
  const first = notes.length ? notes[0].start : now;
  const span = Math.max(HISTORY_VIEW_S, now - first);
  const at = first + (ev.clientX - r.left) / r.width * span + HISTORY_VIEW_S / 2;
  view = at >= now - 0.5 ? null : Math.max(first + HISTORY_VIEW_S, at);
}
let scrubbing = false;
$("timeline").addEventListener("pointerdown", (e) => { scrubbing = true; $("timeline").setPointerCapture(e.pointerId); timelineAt(e); });
$("timeline").addEventListener("pointermove", (e) => { if (scrubbing) timelineAt(e); });
$("timeline").addEventListener("pointerup", () => { scrubbing = false; });

let words = "";
function frame() {
  const now = serverNow();
  draw($("roll"), now - ROLL_PAST_S, now + ROLL_NEXT_S, {now, grid: true, labels: true, next: true});
  const first = notes.length ? notes[0].start : now;
  const t1 = view ?? Math.max(now, first + HISTORY_VIEW_S);
  draw($("history"), t1 - HISTORY_VIEW_S, t1, {now, grid: false, labels: false});
  drawTimeline($("timeline"), first, now, t1 - HISTORY_VIEW_S, t1);
  const w = waitingWords();
  if (w !== words) { words = w; $("waiting").textContent = w; $("waiting").title = w; }
  $("waiting").className = "waiting " + (connected ? status.state || "" : "");
  document.body.dataset.frames = (Number(document.body.dataset.frames || 0) + 1).toString();
  requestAnimationFrame(frame);
}

// For the tests and the latency figures: the page's state, read from outside.
window.companion = {synth, planned, controls, settings: () => settings, status: () => status,
  serverNow, perfOfServer, sentMidi, arrivals, stopOf, offset: () => offset,
  serverOf: (ctxTime) => synth.perfOf(ctxTime) / 1000 + (offset ?? 0)};

connect();
requestAnimationFrame(frame);
