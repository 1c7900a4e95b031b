// The page's own instrument: a small polyphonic electric piano in WebAudio (two-operator FM,
// a tine's bright attack fading to a mellow tone), so that the companion can be heard with
// nothing but the browser. No samples, nothing loaded: every voice is made of oscillators.
//
// Times are AudioContext seconds. A voice is started at a time of its own (`on`), and ends
// at one (`off`, or `play` with a duration): WebAudio plays it then, whatever the page's
// main thread is doing. `log` keeps what was scheduled (for the tests and the latency
// figures): pitch, velocity, when it starts and ends, its tag, and when it was made.
"use strict";

const MAX_VOICES = 16;      // the oldest voice gives way beyond this
const RELEASE_S = 0.25;     // the fade after a note's end
const LOG_MAX = 2000;

class Synth {
  constructor() {
    this.ctx = null;
    this.master = null;
    this.volume = 0.7;
    this.muted = false;
    this.voices = [];         // sounding or scheduled: {pitch, start, end, tag, stop()}
    this.log = [];            // {pitch, velocity, start, end, tag}
  }

  get started() { return this.ctx !== null && this.ctx.state === "running"; }

  // From a user gesture (a tap): browsers start audio only then.
  async start() {
    if (this.ctx === null) {
      const AC = window.AudioContext || window.webkitAudioContext;
      if (!AC) return false;
      this.ctx = new AC({latencyHint: "interactive"});
      this.master = this.ctx.createGain();
      const comp = this.ctx.createDynamicsCompressor();  // many voices never clip
      comp.threshold.value = -12; comp.ratio.value = 4;
      this.master.connect(comp).connect(this.ctx.destination);
      this.setVolume(this.volume);
    }
    if (this.ctx.state !== "running") await this.ctx.resume();
    return this.started;
  }

  setVolume(v) {
    this.volume = v;
    if (this.master) this.master.gain.setTargetAtTime(this.muted ? 0 : v * v, this.ctx.currentTime, 0.02);
  }
  setMuted(m) { this.muted = m; this.setVolume(this.volume); }

  now() { return this.ctx ? this.ctx.currentTime : 0; }

  // performance.now() milliseconds -> this context's time at which a sound scheduled then
  // leaves the speakers (the output's own timestamp where the browser gives one).
  timeOf(perfMs) {
    const ctx = this.ctx;
    const ts = ctx.getOutputTimestamp ? ctx.getOutputTimestamp() : null;
    if (ts && ts.performanceTime > 0) return ts.contextTime + (perfMs - ts.performanceTime) / 1000;
    return ctx.currentTime + (perfMs - performance.now()) / 1000;
  }
  perfOf(ctxTime) {  // the inverse of timeOf
    const ctx = this.ctx;
    const ts = ctx.getOutputTimestamp ? ctx.getOutputTimestamp() : null;
    if (ts && ts.performanceTime > 0) return ts.performanceTime + (ctxTime - ts.contextTime) * 1000;
    return performance.now() + (ctxTime - ctx.currentTime) * 1000;
  }

  // A voice from `when` until `off` is called (a held key).
  on(pitch, velocity, when, tag) {
    if (!this.ctx) return null;
    const ctx = this.ctx, t = Math.max(when, ctx.currentTime);
    while (this.voices.length >= MAX_VOICES) this.voices.shift().stop(t);
    const f = 440 * Math.pow(2, (pitch - 69) / 12);
    const v = Math.max(0.05, velocity / 127);
    const car = ctx.createOscillator(), mod = ctx.createOscillator();
    const modGain = ctx.createGain(), amp = ctx.createGain();
    car.frequency.value = f; mod.frequency.value = f;  // ratio 1: the tine
    const index = f * (0.6 + 2.2 * v);                  // brighter when played harder
    modGain.gain.setValueAtTime(index, t);
    modGain.gain.setTargetAtTime(f * 0.15, t, 0.25);
    const peak = 0.32 * v;
    amp.gain.setValueAtTime(0, t);
    amp.gain.linearRampToValueAtTime(peak, t + 0.004);
    amp.gain.setTargetAtTime(peak * 0.35, t + 0.004, 0.9);  // the slow decay of a struck note
    mod.connect(modGain).connect(car.frequency);
    car.connect(amp).connect(this.master);
    car.start(t); mod.start(t);
    const voice = {pitch, start: t, end: null, tag, entry: null, stopped: false, stopAt: null,
      off: (at) => {  // again with an earlier time: it ends then instead
        const e = Math.max(at, t + 0.01);
        if (voice.stopped || (voice.end !== null && e >= voice.end)) return;
        voice.end = e; voice.entry.end = e;
        amp.gain.cancelScheduledValues(e);
        amp.gain.setTargetAtTime(0, e, RELEASE_S / 4);
        if (!voice.stopAt) { voice.stopAt = e + RELEASE_S; car.stop(voice.stopAt); mod.stop(voice.stopAt); }
      },
      stop: (at) => {  // at once (a voice stolen, a cancelled note)
        if (voice.stopped) return;
        voice.stopped = true;
        const e = Math.max(at ?? ctx.currentTime, ctx.currentTime);
        if (voice.end === null || voice.end > e) { voice.end = e; voice.entry.end = e; }
        amp.gain.cancelScheduledValues(e);
        amp.gain.setTargetAtTime(0, e, 0.01);
        if (!voice.stopAt) { voice.stopAt = e + 0.05; car.stop(voice.stopAt); mod.stop(voice.stopAt); }
      }};
    car.onended = () => { const i = this.voices.indexOf(voice); if (i >= 0) this.voices.splice(i, 1); };
    voice.entry = {pitch, velocity, start: t, end: null, tag, made: ctx.currentTime};
    this.log.push(voice.entry);
    if (this.log.length > LOG_MAX) this.log.splice(0, this.log.length - LOG_MAX);
    this.voices.push(voice);
    return voice;
  }

  // A note with a known duration (an answer's).
  play(pitch, velocity, when, duration, tag) {
    const voice = this.on(pitch, velocity, when, tag);
    if (voice) voice.off(when + duration);
    return voice;
  }

  // Voices whose tag passes `pred` stop now: a scheduled one never sounds, a sounding one fades.
  cancel(pred) {
    if (!this.ctx) return;
    const now = this.ctx.currentTime;
    for (const v of [...this.voices]) {
      if (!pred(v.tag)) continue;
      if (v.start > now) v.stop(now); else v.off(now);
    }
  }
}

window.Synth = Synth;
