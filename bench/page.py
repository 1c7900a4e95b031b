"""The path of a keyboard played into the page: keyboard -> page (Web MIDI) -> companion ->
page -> sound (the page's WebAudio piano), measured in headless Chromium as far as it can be
without a keyboard or a sound card.

    python -m bench.page [--calls N] [--tempo BPM] [--json]

A Live on the in-process loopback with its control surface (the real web process); a page
in Debian's Chromium whose Web MIDI is a scripted keyboard (FAKE_MIDI): it plays calls of 4
notes, timed in the page as hands would, into the page's Web MIDI input, and the page sends
them to the companion as it does a real keyboard's. From the page's own record
(``window.companion``) and the companion's output port:

- ``page_to_companion_ms``: a note sent by the page -> heard by the companion (its input
  queue's stamp), on the server's clock as the page estimates it (``offset``: the least
  delayed frame of the last 10 s, so at most that frame's delay, some 0.1-1 ms, too high).
- ``round_trip_ms``: a note sent -> the page told that the companion heard it (a frame of
  the roll: the bridge sends 60 a second, so up to 17 ms of it is waiting for the frame).
- ``answer_to_page_ms``: the answer decided -> its notes on the page.
- ``lead_ms``: how long before its first note must sound the page had the answer (the
  answer starts on the beat after the phrase end: positive is in time to schedule it).
- ``sound_vs_midi_ms``: each answer note's WebAudio voice (its start, AudioContext time
  mapped to the server's clock through the output's timestamp) minus when the companion
  sent that note on its MIDI output.
- the browser's ``baseLatency`` and ``outputLatency`` (headless: of its fake output).

So an answer sounds ``page_to_companion_ms`` later on the performer's beat than one played
from a MIDI port would (the companion hears the call that much later, and answers on the
grid of what it heard), plus ``sound_vs_midi_ms``, plus the audio output's latency; the
keyboard's own Web MIDI latency (the OS and the browser's, ~1-5 ms) cannot be seen here.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import time
from pathlib import Path

#: The browser's Web MIDI, replaced: one keyboard ("Test Keyboard") whose messages a script
#: plays with ``__midi.play(bytes)`` or ``__midi.phrase([[pitch, onset_ms], ...])`` (each
#: note held 100 ms), one output ("Test Synth") keeping what the page sends it. Used by
#: tests/test_ui_page.py too.
FAKE_MIDI = """
(() => {
  const input = {id: "kbd-1", name: "Test Keyboard", manufacturer: "test", type: "input",
                 state: "connected", connection: "open", onmidimessage: null};
  const sent = [];
  const output = {id: "synth-1", name: "Test Synth", manufacturer: "test", type: "output",
                  state: "connected", connection: "open",
                  send(data, ts) { sent.push({data: Array.from(data), ts: ts ?? performance.now(),
                                               at: performance.now()}); }};
  const access = {inputs: new Map([[input.id, input]]), outputs: new Map([[output.id, output]]),
                  sysexEnabled: false, onstatechange: null};
  Object.defineProperty(navigator, "requestMIDIAccess", {value: async () => access});
  const play = (bytes) => {
    if (input.onmidimessage) input.onmidimessage({data: new Uint8Array(bytes),
                                                  timeStamp: performance.now()});
  };
  const phrase = (notes) => new Promise((done) => {
    for (const [p, at] of notes) {
      setTimeout(() => play([0x90, p, 80]), at);
      setTimeout(() => play([0x80, p, 0]), at + 100);
    }
    setTimeout(done, Math.max(...notes.map(([, at]) => at)) + 120);
  });
  window.__midi = {play, phrase, sent};
})();
"""

#: The calls: 4 notes each, on eighth notes.
CALLS = ([67, 69, 71, 72], [72, 71, 69, 67], [60, 64, 67, 72], [65, 64, 62, 60])


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(q / 100 * (len(xs) - 1)))]


def summary(xs: list[float]) -> dict[str, float | int]:
    return {"n": len(xs), "p50": round(pct(xs, 50), 2), "p99": round(pct(xs, 99), 2),
            "max": round(max(xs), 2), "mean": round(statistics.fmean(xs), 2)}


def measure(calls: int, tempo: float, browser_path: str) -> dict:
    from playwright.sync_api import sync_playwright

    from companion import config
    from companion.engine.model import StepModel
    from companion.midi.loopback import LoopbackIn, LoopbackOut
    from companion.realtime.live import Live
    from companion.ui.server import UiServer

    beat = 60.0 / tempo
    cfg = config.from_dict({
        "listen": {"tempo_bpm": tempo, "phrase_end_beats": 1},
        "time": {"tempo": "fixed", "phrase_end": "fixed"},
        "answer": {"seed": 1, "min_beats": 2, "max_beats": 2, "length": 2},
        "session": {"enabled": False}})
    model = StepModel(cfg.model_dir())
    inport, outport = LoopbackIn(), LoopbackOut()
    live = Live(cfg, model, inport, outport, seed=1)
    live.start()
    server = UiServer(live, "127.0.0.1", 0)
    url = server.start()
    try:
        with sync_playwright() as p:
            b = p.chromium.launch(executable_path=browser_path, args=["--no-sandbox"])
            ctx = b.new_context()
            ctx.add_init_script(FAKE_MIDI)
            page = ctx.new_page()
            page.goto(url)
            page.wait_for_function("document.body.dataset.connected === 'yes'")
            page.click("#sound")
            page.wait_for_function("document.body.dataset.sound === 'on'")
            page.wait_for_function("[...document.getElementById('webmidi-in').options]"
                                   ".some(o => o.text === 'Test Keyboard')")
            page.select_option("#webmidi-in", label="Test Keyboard")
            page.uncheck("#my-notes")
            time.sleep(1.0)  # the clocks' offset settles over a few frames
            for i in range(calls):
                pitches = CALLS[i % len(CALLS)]
                page.evaluate("(notes) => __midi.phrase(notes)",
                              [[pp, round(k * beat / 2 * 1000)] for k, pp in enumerate(pitches)])
                end = time.monotonic() + 10
                while live.answers < i + 1 or live.answering:
                    if time.monotonic() > end:
                        raise RuntimeError(f"call {i + 1}: no answer")
                    time.sleep(0.02)
                time.sleep(beat)
            time.sleep(0.5)
            got = page.evaluate("""() => ({
                offset: companion.offset(), sent: companion.sentMidi,
                arrivals: companion.arrivals,
                answers: companion.planned.length,
                voices: companion.synth.log.filter(v => v.tag && v.tag.answer !== undefined)
                  .map(v => [v.tag.answer, v.tag.index, companion.serverOf(v.start)]),
                base: companion.synth.ctx.baseLatency, output: companion.synth.ctx.outputLatency,
                ua: navigator.userAgent})""")
            b.close()
        answers = {what: t for kind, t, _, what in got["arrivals"] if kind == "answer"}
        return analyse(got, outport.messages(), answers)
    finally:
        server.stop()
        live.stop()


def analyse(got: dict, out: list, answers: dict) -> dict:
    off = got["offset"]
    on = [(perf, d) for perf, d in got["sent"] if d[0] & 0xF0 == 0x90 and d[2] > 0]
    heard = [(t, at, pitch) for kind, t, at, pitch in got["arrivals"] if kind == "heard"]
    heard_on = []
    # heard events: note-ons and offs alike; pair each sent note-on with the next heard one
    # of its pitch, in order
    used = set()
    for perf, d in on:
        for j, (t, at, pitch) in enumerate(heard):
            if j not in used and pitch == d[1] and t > perf / 1000 + off - 0.5:
                used.add(j)
                heard_on.append((perf, t, at))
                break
    one_way = [(t - (perf / 1000 + off)) * 1000 for perf, t, _ in heard_on]
    round_trip = [at - perf for perf, _, at in heard_on]
    arrivals = {what: at for kind, _, at, what in got["arrivals"] if kind == "answer"}
    sent_on = [t for t, m in out if m.type == "note_on" and m.velocity > 0]
    to_page, lead = [], []
    for ident, t in answers.items():
        at = arrivals[ident] / 1000 + off
        to_page.append((at - t) * 1000)
    voices = sorted(got["voices"])
    by_answer: dict[int, list[float]] = {}
    for a, _, s in voices:
        by_answer.setdefault(a, []).append(s)
    # each voice against the companion's MIDI note it doubles (same order, same count)
    sound = [(s - t) * 1000 for (_, _, s), t in zip(voices, sent_on, strict=False)]
    for ident, starts in by_answer.items():
        lead.append((min(starts) - (arrivals[ident] / 1000 + off)) * 1000)
    return {
        "calls": len(answers), "notes_sent": len(on), "voices": len(voices),
        "midi_notes": len(sent_on),
        "page_to_companion_ms": summary(one_way), "round_trip_ms": summary(round_trip),
        "answer_to_page_ms": summary(to_page), "lead_ms": summary(lead),
        "sound_vs_midi_ms": summary(sound),
        "base_latency_ms": round(1000 * (got["base"] or 0), 2),
        "output_latency_ms": round(1000 * (got["output"] or 0), 2),
        "browser": got["ua"],
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.page", description=__doc__.split("\n")[0])
    ap.add_argument("--calls", type=int, default=20)
    ap.add_argument("--tempo", type=float, default=120.0)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        print("bench.page: needs chromium (apt-get install chromium) and playwright",
              file=sys.stderr)
        return 2
    res = measure(args.calls, args.tempo, browser)
    if args.json:
        print(json.dumps(res, indent=2))
        return 0
    print(f"{res['calls']} calls at {args.tempo:g} BPM, {res['notes_sent']} notes sent by the "
          f"page, {res['midi_notes']} answer notes, {res['voices']} voices ({res['browser']})")
    for key in ("page_to_companion_ms", "round_trip_ms", "answer_to_page_ms", "lead_ms",
                "sound_vs_midi_ms"):
        s = res[key]
        print(f"  {key:22} p50 {s['p50']:7.2f}  p99 {s['p99']:7.2f}  max {s['max']:7.2f}"
              f"  (n={s['n']})")
    print(f"  browser audio: baseLatency {res['base_latency_ms']} ms, outputLatency "
          f"{res['output_latency_ms']} ms")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    raise SystemExit(main())
