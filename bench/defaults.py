"""Which time settings serve a performer at 60..180 BPM: `python -m bench.defaults [--json]`.

The phrase-end silence (``answer.start: beat``, and free playing when trading bars;
trading bars itself is measured by ``bench.trading``). Tune openings the default model
never trained on (music21's Aird's Airs and American fife tunes; the Nottingham melodies
when present) are performed into the live engine on the virtual clock (``Engine`` with a
``VirtualClock`` and a ``VirtualScheduler``, as ``companion respond`` drives it) at each
tempo of ``--tempi``: every onset and release moved by up to ``--jitter-ms`` (uniform),
each note sounding ``LEGATO`` of its written length. Each performance is played once as
written and once with a mid-phrase pause (the note at the middle of the call held
``PAUSE_LONG_BEATS`` longer, then ``PAUSE_REST_BEATS`` of rest before the call goes on),
under each candidate setting of ``time.tempo``,
``time.phrase_end`` and their parameters. Figures, per tempo:

- ``in_tempo``: share of answers whose beat (the engine's beat when it answered: the answer's
  onsets are placed in it) is within 5% of the played one; ``octave``: at double or half
  speed (within 5%); the rest is some other tempo;
- ``wait_s`` / ``wait_beats``: median time from the call's last note-off to the answer's
  first onset (seconds; beats of the played tempo), and ``wait_p90_s``;
- ``cut``: share of paused calls whose pause was taken for the end of the call.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import mido
import numpy as np

from companion import config as config_mod
from companion.commands.respond import answer_phrase_end, deliver
from companion.config import Config
from companion.encoding.phrases import Phrase, PhraseNote, read_call
from companion.engine.engine import Engine
from companion.engine.model import StepModel
from companion.realtime.clock import VirtualClock
from companion.realtime.scheduler import VirtualScheduler

TEMPI = (60, 80, 100, 120, 140, 160, 180)
JITTER_MS = 15.0
#: Each note sounds this share of its written length (a legato performer).
LEGATO = 0.95
#: The mid-phrase pause: the middle note held this many beats longer, then a rest.
PAUSE_LONG_BEATS = 2.0
PAUSE_REST_BEATS = 1.0
#: A tempo is the played one within this share (octave: double or half within it).
TOLERANCE = 0.05
CALL_BEATS = 8.0
MIN_NOTES = 6
#: Held-out tunes that ship with music21 (neither is a training corpus of models/default,
#: which trained on oneills1850 and ryansMammoth; essenFolksong is kept for other uses).
MUSIC21_SOURCES = ("music21:airdsAirs/book1.abc", "music21:miscFolk/americanfifeopus.abc")
CLOCK_PERIODS_PER_BEAT = 24


@dataclass(frozen=True)
class Setting:
    """A candidate: config keys (``section.key``) over the base config."""

    name: str
    keys: dict = field(default_factory=dict)

    def config(self, base: Config) -> Config:
        cfg = copy.deepcopy(base)
        for key, value in self.keys.items():
            config_mod.override(cfg, key, value)
        return cfg


#: The candidates measured; "shipped" is the base config as it is.
CANDIDATES = (
    Setting("fixed 110, end fixed 1.5", {"time.tempo": "fixed", "time.phrase_end": "fixed",
                                         "listen.tempo_bpm": 110.0}),
    Setting("auto, end fixed 1.5", {"time.tempo": "auto", "time.phrase_end": "fixed",
                                    "listen.tempo_bpm": 110.0}),
    Setting("auto, adaptive x2.0", {"time.tempo": "auto", "time.phrase_end": "adaptive",
                                    "time.phrase_end_ioi": 2.0, "listen.tempo_bpm": 110.0}),
    Setting("auto, adaptive x2.5", {"time.tempo": "auto", "time.phrase_end": "adaptive",
                                    "time.phrase_end_ioi": 2.5, "listen.tempo_bpm": 110.0}),
    Setting("auto, adaptive x3.0", {"time.tempo": "auto", "time.phrase_end": "adaptive",
                                    "time.phrase_end_ioi": 3.0, "listen.tempo_bpm": 110.0}),
    Setting("auto prior 100, adaptive x2.5", {"time.tempo": "auto",
                                              "time.phrase_end": "adaptive",
                                              "time.phrase_end_ioi": 2.5,
                                              "listen.tempo_bpm": 100.0}),
    Setting("auto prior 120, adaptive x2.5", {"time.tempo": "auto",
                                              "time.phrase_end": "adaptive",
                                              "time.phrase_end_ioi": 2.5,
                                              "listen.tempo_bpm": 120.0}),
)


# -- calls ---------------------------------------------------------------------------------


def opening(notes: Sequence[PhraseNote], name: str, beats: float = CALL_BEATS) -> Phrase | None:
    """The notes starting in the first ``beats`` beats (from the first onset), clipped to end
    there; None with fewer than ``MIN_NOTES``."""
    if not notes:
        return None
    t0 = notes[0].start
    cut = [PhraseNote(n.pitch, n.start - t0, min(n.duration, t0 + beats - n.start), n.velocity)
           for n in notes if n.start - t0 < beats]
    cut = [n for n in cut if n.duration > 0]
    return Phrase(name, cut) if len(cut) >= MIN_NOTES else None


def _source_files(spec: str) -> list[Path]:
    if spec.startswith("music21:"):
        from music21 import corpus

        return [Path(corpus.getWork(spec.split(":", 1)[1]))]
    p = Path(spec)
    if p.is_dir():
        return sorted(f for f in p.iterdir() if f.suffix.lower() in (".mid", ".midi", ".json"))
    if p.is_file():
        return [p]
    raise FileNotFoundError(f"{spec}: no such file or folder (expected a file, a folder or "
                            f"music21:WORK)")


def _phrases(f: Path) -> list[Phrase]:
    """Every tune of a file (a JSON call, a MIDI file, an opus of many)."""
    from companion.encoding.melody import read_melodies

    if f.suffix.lower() == ".json":
        return [read_call(f)]
    return [Phrase(m.name, [PhraseNote(int(p), float(s), float(d), int(v)) for p, s, d, v in
                            zip(m.pitches, m.onsets, m.durations, m.velocities, strict=True)])
            for m in read_melodies(f)]


def _spread(items: list, n: int) -> list:
    """Items spread evenly over the list, the first first (all when there are no more)."""
    return items[::max(1, len(items) // max(n, 1))]


def calls_from(spec: str, n: int) -> list[Phrase]:
    """Up to ``n`` openings from one source, spread evenly over its files and tunes."""
    files = _source_files(spec)
    out: list[Phrase] = []
    for f in _spread(files, n) + [f for f in files if f not in _spread(files, n)]:
        tunes = _phrases(f)
        for ph in _spread(tunes, n) if len(files) == 1 else tunes[:1]:
            c = opening(ph.notes, ph.name)
            if c is not None:
                out.append(c)
            if len(out) == n:
                return out
    return out


def with_pause(call: Phrase) -> Phrase:
    """The call with a mid-phrase pause: its middle note held ``PAUSE_LONG_BEATS`` longer,
    then ``PAUSE_REST_BEATS`` of rest; the notes after it move by both."""
    mid = len(call.notes) // 2
    shift = PAUSE_LONG_BEATS + PAUSE_REST_BEATS
    notes = []
    for i, n in enumerate(call.notes):
        if i < mid:
            notes.append(n)
        elif i == mid:
            nxt = call.notes[i + 1].start if i + 1 < len(call.notes) else n.start + n.duration
            notes.append(PhraseNote(n.pitch, n.start, nxt - n.start + PAUSE_LONG_BEATS,
                                    n.velocity))
        else:
            notes.append(PhraseNote(n.pitch, n.start + shift, n.duration, n.velocity))
    return Phrase(call.name + " (paused)", notes)


# -- performing ----------------------------------------------------------------------------


def performance(call: Phrase, bpm: float, jitter_s: float, rng: np.random.Generator,
                legato: float = LEGATO, at: float | None = None,
                ) -> tuple[list[tuple[float, mido.Message]], float]:
    """The call as a performer plays it at ``bpm``: messages at times (seconds, in order)
    and the time of the last note-off. Onsets and releases move by up to ``jitter_s``; a
    key is released before it is struck again. The call's first onset is at ``jitter_s``;
    with ``at``, its beat 0 is at ``at`` seconds instead (every onset keeps its jitter)."""
    beat = 60.0 / bpm
    notes = sorted(call.notes, key=lambda n: n.start)
    ons = [n.start * beat + rng.uniform(-jitter_s, jitter_s) for n in notes]
    if at is None:
        t0 = min(ons)
        ons = [t - t0 + jitter_s for t in ons]
    else:
        ons = [t + at for t in ons]
    events: list[tuple[float, int, mido.Message]] = []
    next_on: dict[int, float] = {}
    for i in range(len(notes) - 1, -1, -1):
        n, on = notes[i], ons[i]
        off = on + max(legato * n.duration * beat + rng.uniform(-jitter_s, jitter_s), 0.02)
        if n.pitch in next_on:
            off = min(off, next_on[n.pitch] - 0.001)
        next_on[n.pitch] = on
        events.append((on, 1, mido.Message("note_on", note=n.pitch, velocity=n.velocity)))
        events.append((off, 0, mido.Message("note_off", note=n.pitch, velocity=0)))
    events.sort(key=lambda e: (e[0], e[1]))
    return [(t, m) for t, _, m in events], max(t for t, k, _ in events if k == 0)


@dataclass
class Outcome:
    """One performed call: how the engine answered it."""

    cut: bool  # a phrase end was decided before the call's last note
    bpm: float | None = None  # the beat the answer was placed in
    wait_s: float | None = None  # call's last note-off to the answer's first onset
    start: float | None = None  # the answer's first onset (seconds of the performance)


def play(model: StepModel, cfg: Config, events: list[tuple[float, mido.Message]],
         call_end: float, seed: int = 0, clock_bpm: float | None = None) -> Outcome:
    """The performance into a fresh engine on the virtual clock, polled at every deadline as
    the live loop does; with ``clock_bpm``, MIDI clock ticks (Start, then 24 a beat) arrive
    on the input from a beat before the call on."""
    clock = VirtualClock()
    player = VirtualScheduler(lambda m: None, clock, cfg.midi.output_channel - 1)
    engine = Engine(model, cfg, player, clock, seed)
    if clock_bpm is not None:
        tick = 60.0 / clock_bpm / CLOCK_PERIODS_PER_BEAT
        lead = 60.0 / clock_bpm
        ticks = [(0.0, mido.Message("start"))] + [
            (k * tick, mido.Message("clock")) for k in range(int((call_end + lead + 8.0) / tick))]
        events = sorted(ticks + [(t + lead, m) for t, m in events], key=lambda e: e[0])
        call_end += lead
    for t, msg in events:
        d = engine.next_deadline()
        if d is not None and d < t:
            if t <= call_end:  # notes of the call are still to come
                return Outcome(cut=True)
            break  # only clock ticks after the phrase end
        deliver(engine, player, clock, t, msg)
    answer = answer_phrase_end(engine, clock)
    if answer is None or not answer.notes:
        return Outcome(cut=False)
    start = answer.notes[0].start
    return Outcome(cut=False, bpm=60.0 / engine.beat_s, wait_s=start - call_end, start=start)


# -- figures -------------------------------------------------------------------------------


def tempo_class(answered: float, played: float) -> str:
    """"in" (within TOLERANCE), "octave" (double or half, within it) or "off"."""
    r = answered / played
    if abs(r - 1) <= TOLERANCE:
        return "in"
    if abs(r / 2 - 1) <= TOLERANCE or abs(r * 2 - 1) <= TOLERANCE:
        return "octave"
    return "off"


@dataclass
class Row:
    setting: str
    bpm: float
    calls: int
    in_tempo: float
    octave: float
    wait_s: float
    wait_p90_s: float
    wait_beats: float
    cut: float


def measure(model: StepModel, base: Config, settings: Iterable[Setting], calls: list[Phrase],
            tempi: Sequence[float] = TEMPI, jitter_ms: float = JITTER_MS,
            seed: int = 0) -> list[Row]:
    """Every setting at every tempo over every call (played as written, and paused)."""
    rows = []
    jitter_s = jitter_ms / 1000.0
    for setting in settings:
        cfg = setting.config(base)
        for bpm in tempi:
            classes: list[str] = []
            waits: list[float] = []
            cuts = 0
            for i, call in enumerate(calls):
                rng = np.random.default_rng((seed, int(bpm), i))
                events, end = performance(call, bpm, jitter_s, rng)
                o = play(model, cfg, events, end, seed + i)
                if o.bpm is not None and o.wait_s is not None:
                    classes.append(tempo_class(o.bpm, bpm))
                    waits.append(o.wait_s)
                events, end = performance(with_pause(call), bpm, jitter_s, rng)
                cuts += play(model, cfg, events, end, seed + i).cut
            n = max(len(classes), 1)
            w = np.array(waits) if waits else np.array([np.nan])
            rows.append(Row(setting.name, float(bpm), len(calls),
                            classes.count("in") / n, classes.count("octave") / n,
                            float(np.median(w)), float(np.percentile(w, 90)),
                            float(np.median(w)) * bpm / 60.0, cuts / max(len(calls), 1)))
    return rows


def table(rows: list[Row]) -> str:
    lines = ["| setting | BPM | in tempo | octave | wait (median s) | wait (p90 s) | "
             "wait (beats) | pause cut |", "| --- | ---: | ---: | ---: | ---: | ---: | ---: | "
             "---: |"]
    for r in rows:
        lines.append(f"| {r.setting} | {r.bpm:g} | {r.in_tempo:.0%} | {r.octave:.0%} | "
                     f"{r.wait_s:.2f} | {r.wait_p90_s:.2f} | {r.wait_beats:.1f} | {r.cut:.0%} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from bench.data import nottingham_dir

    p = argparse.ArgumentParser(prog="python -m bench.defaults",
                                description=__doc__.split("\n")[0])
    p.add_argument("--config", metavar="F", help="base config (default: the shipped defaults)")
    p.add_argument("--model", metavar="DIR", help="model package (default: the config's)")
    p.add_argument("--source", action="append", metavar="SPEC",
                   help="calls: a MIDI/JSON file, a folder of them, or music21:WORK "
                        "(repeatable; default: Aird's Airs book 1, the American fife tunes "
                        "and the Nottingham melodies when present)")
    p.add_argument("--tunes", type=int, default=20, help="calls taken from each source")
    p.add_argument("--tempi", type=float, nargs="+", default=list(TEMPI), metavar="BPM")
    p.add_argument("--jitter-ms", type=float, default=JITTER_MS)
    p.add_argument("--shipped-only", action="store_true",
                   help="measure the base config only, not the candidates")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    args = p.parse_args(argv)
    try:
        base = config_mod.load(args.config) if args.config else config_mod.from_dict({})
        if args.model:
            config_mod.override(base, "model", str(Path(args.model).resolve()))
        config_mod.override(base, "answer.start", "beat")  # the silence is what is measured
        model = StepModel(base.model_dir())
        sources = args.source
        if sources is None:
            sources = list(MUSIC21_SOURCES)
            if any(nottingham_dir().glob("*.mid")):
                sources.append(str(nottingham_dir()))
        calls = [c for s in sources for c in calls_from(s, args.tunes)]
    except (config_mod.ConfigError, OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if not calls:
        print("error: no call of 6 notes or more in the sources", file=sys.stderr)
        return 2
    settings = [Setting("shipped")] + ([] if args.shipped_only else list(CANDIDATES))
    rows = measure(model, base, settings, calls, args.tempi, args.jitter_ms, args.seed)
    if args.json:
        print(json.dumps({"calls": len(calls), "sources": sources, "jitter_ms": args.jitter_ms,
                          "rows": [r.__dict__ for r in rows]}))
    else:
        print(f"{len(calls)} calls ({CALL_BEATS:g} beats each) from {', '.join(sources)}; "
              f"jitter +-{args.jitter_ms:g} ms, legato {LEGATO:g}; model {base.model_dir()}")
        print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
