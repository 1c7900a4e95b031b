"""How the companion hears a call's tempo without a clock (``time.tempo: auto``):
`python -m bench.tempo [--tunes 20] [--json]`.

Tunes none of the models trained on (the sources of bench.defaults: Aird's Airs book 1, the
American fife tunes, the Nottingham melodies when present) are cut into successive phrases
of ``CALL_BEATS`` beats from their first onset, and performed as bench.defaults does (every
onset and release moved by up to ``--jitter-ms``, legato) into the live engine on the virtual
clock, at each tempo of ``--tempi``. Six kinds of call, each tune giving one of each:

- ``opening``: the tune's first phrase, into a fresh engine (a performer's first call);
- ``quarters``: the first ``QUARTERS`` pitches of the tune, each a quarter note, into a
  fresh engine;
- ``eighths``: the first ``2 * QUARTERS`` pitches, each an eighth note, into a fresh engine
  (alone, a run of eighths at 60 BPM is the same sound as quarters at 120);
- ``sequence``: the tune's first ``PHRASES`` phrases into one engine, each call a beat after
  the answer to the one before has played; counted: the calls after the first (what the
  performer's tempo held so far brings);
- ``held``: the tune's first two phrases, then its run of eighths, into one engine;
  counted: the run;
- ``change``: the tune's first ``PHRASES`` phrases, the first two at ``CHANGE`` times the
  tempo (or its inverse where that is over the highest tempo): counted, the last two, at
  the tempo.

Per tempo and kind: ``in_tempo``, the share of calls whose answer's beat (the engine's beat
when it answered) is the played quarter note's within 5%; ``octave``, at double or half; the
rest is at some other tempo. ``short``: the share of calls with no interval as long as a
beat (eighths and shorter: at 60 BPM the same sound as eighths and quarters, or a run of
quarters, at 120); ``heard``: in tempo, or a short call at double its tempo.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass

import mido
import numpy as np

from bench import defaults as bd
from companion import config as config_mod
from companion.commands.respond import answer_phrase_end, deliver
from companion.config import Config
from companion.encoding.phrases import Phrase, PhraseNote
from companion.engine import tempo
from companion.engine.engine import Engine
from companion.engine.model import StepModel
from companion.realtime.clock import VirtualClock
from companion.realtime.scheduler import VirtualScheduler

CALL_BEATS = 8.0
PHRASES = 4
QUARTERS = 8
#: The tempo of the first two calls of ``change``, as a multiple of the measured one.
CHANGE = 1.25
KINDS = ("opening", "quarters", "eighths", "sequence", "held", "change")


# -- calls ---------------------------------------------------------------------------------


def phrases(tune: Phrase, count: int = PHRASES, beats: float = CALL_BEATS) -> list[Phrase]:
    """The tune's successive phrases of ``beats`` beats from its first onset (notes cut at
    the phrase's end), as long as each has ``bd.MIN_NOTES`` notes; at most ``count``."""
    notes = sorted(tune.notes, key=lambda n: n.start)
    if not notes:
        return []
    t0 = notes[0].start
    out = []
    for k in range(count):
        lo, hi = t0 + k * beats, t0 + (k + 1) * beats
        cut = [PhraseNote(n.pitch, n.start - lo, min(n.duration, hi - n.start), n.velocity)
               for n in notes if lo <= n.start < hi]
        if len(cut) < bd.MIN_NOTES:
            break
        out.append(Phrase(f"{tune.name} [{k + 1}]", cut))
    return out


def run(tune: Phrase, count: int, value: float) -> Phrase:
    """The tune's first ``count`` pitches, each a note of ``value`` beats."""
    notes = sorted(tune.notes, key=lambda n: n.start)[:count]
    return Phrase(f"{tune.name} (run of {value:g})",
                  [PhraseNote(n.pitch, i * value, value, n.velocity)
                   for i, n in enumerate(notes)])


def short(call: Phrase) -> bool:
    """No written interval of the call is as long as a beat."""
    starts = sorted({n.start for n in call.notes})
    return all(b - a < 1.0 - 1e-6 for a, b in zip(starts, starts[1:], strict=False))


def tunes_from(spec: str, n: int) -> list[Phrase]:
    """Up to ``n`` tunes of one source with ``PHRASES`` phrases each, spread over it."""
    files = bd._source_files(spec)
    out: list[Phrase] = []
    for f in bd._spread(files, n) + [f for f in files if f not in bd._spread(files, n)]:
        tunes = bd._phrases(f)
        for tune in bd._spread(tunes, n) if len(files) == 1 else tunes[:1]:
            if len(phrases(tune)) == PHRASES:
                out.append(tune)
            if len(out) == n:
                return out
    return out


# -- performing ----------------------------------------------------------------------------


class Performer:
    """One engine on the virtual clock, hearing calls one after the other."""

    def __init__(self, model: StepModel, cfg: Config, seed: int):
        self.clock = VirtualClock()
        self.player = VirtualScheduler(lambda m: None, self.clock, cfg.midi.output_channel - 1)
        self.engine = Engine(model, cfg, self.player, self.clock, seed)
        self.free_at = 0.0  # when the last answer has played

    def call(self, events: list[tuple[float, mido.Message]], gap_s: float) -> float | None:
        """The call (times from its start) played ``gap_s`` after the last answer: the BPM
        the engine answered it in; None when it did not answer."""
        t0 = max(self.free_at, self.clock.now()) + gap_s
        for t, msg in events:
            deliver(self.engine, self.player, self.clock, t0 + t, msg)
        answer = answer_phrase_end(self.engine, self.clock)
        if answer is None or not answer.notes:
            self.free_at = self.clock.now()
            return None
        self.free_at = max(n.end for n in answer.notes)
        return 60.0 / self.engine.beat_s


@dataclass
class Row:
    kind: str
    bpm: float
    calls: int
    in_tempo: float
    octave: float
    short: float
    heard: float


def _row(kind: str, bpm: float, got: list[tuple[str, bool, bool]]) -> Row:
    """(class, short, at double) of each call answered."""
    n = max(len(got), 1)
    return Row(kind, bpm, len(got), sum(c == "in" for c, _, _ in got) / n,
               sum(c == "octave" for c, _, _ in got) / n, sum(s for _, s, _ in got) / n,
               sum(c == "in" or (s and d) for c, s, d in got) / n)


def measure(model: StepModel, cfg: Config, tunes: list[Phrase],
            tempi: Sequence[float] = bd.TEMPI, jitter_ms: float = bd.JITTER_MS,
            seed: int = 0, hi_bpm: float = 180.0) -> list[Row]:
    """Every kind of call at every tempo over every tune."""
    jitter_s = jitter_ms / 1000.0
    rows = []
    for bpm in tempi:
        got: dict[str, list[tuple[str, bool, bool]]] = {k: [] for k in KINDS}

        def count(kind: str, call: Phrase, answered: float | None, played: float,
                  got: dict = got) -> None:
            if answered is not None:
                got[kind].append((bd.tempo_class(answered, played), short(call),
                                  bd.tempo_class(answered, 2 * played) == "in"))

        for i, tune in enumerate(tunes):
            rng = np.random.default_rng((seed, int(bpm), i))
            ps = phrases(tune)
            eighths = run(tune, 2 * QUARTERS, 0.5)
            for kind, call in (("opening", ps[0]), ("quarters", run(tune, QUARTERS, 1.0)),
                               ("eighths", eighths)):
                events, _ = bd.performance(call, bpm, jitter_s, rng)
                count(kind, call, Performer(model, cfg, seed + i).call(events, 0.0), bpm)
            other = bpm * CHANGE if bpm * CHANGE <= hi_bpm else bpm / CHANGE
            for kind, calls, played in (
                    ("sequence", ps, [bpm] * PHRASES),
                    ("held", ps[:2] + [eighths], [bpm] * 3),
                    ("change", ps, [other, other] + [bpm] * (PHRASES - 2))):
                perf = Performer(model, cfg, seed + i)
                for k, (call, b) in enumerate(zip(calls, played, strict=True)):
                    events, _ = bd.performance(call, b, jitter_s, rng)
                    answered = perf.call(events, 60.0 / b)
                    if k > (1 if kind == "held" else 0) and b == bpm:
                        count(kind, call, answered, b)
        rows += [_row(k, float(bpm), got[k]) for k in KINDS]
    return rows


def table(rows: list[Row], heard: bool = False) -> str:
    """In tempo per kind (columns) and tempo (rows), octave errors in brackets; or (``heard``)
    in tempo as heard, the share of short calls in brackets."""
    bpms = sorted({r.bpm for r in rows})
    head = "| BPM | " + " | ".join(KINDS) + " |"
    lines = [head, "| ---: |" + " ---: |" * len(KINDS)]
    for b in bpms:
        cells = {r.kind: r for r in rows if r.bpm == b}
        lines.append(f"| {b:g} | " + " | ".join(
            f"{cells[k].heard:.0%} ({cells[k].short:.0%})" if heard else
            f"{cells[k].in_tempo:.0%} ({cells[k].octave:.0%})" for k in KINDS) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from bench.data import nottingham_dir

    p = argparse.ArgumentParser(prog="python -m bench.tempo",
                                description=__doc__.split("\n")[0])
    p.add_argument("--config", metavar="F", help="base config (default: the shipped defaults)")
    p.add_argument("--source", action="append", metavar="SPEC",
                   help="tunes: a MIDI/JSON file, a folder of them, or music21:WORK "
                        "(repeatable; default: as python -m bench.defaults)")
    p.add_argument("--tunes", type=int, default=20, help="tunes taken from each source")
    p.add_argument("--tempi", type=float, nargs="+", default=list(bd.TEMPI), metavar="BPM")
    p.add_argument("--jitter-ms", type=float, default=bd.JITTER_MS)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--prior-octaves", type=float, metavar="W",
                   help="width of the estimator's prior around listen.tempo_bpm, in octaves "
                        f"(default: tempo.PRIOR_OCTAVES, {tempo.PRIOR_OCTAVES:g})")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    args = p.parse_args(argv)
    try:
        cfg = config_mod.load(args.config) if args.config else config_mod.from_dict({})
        model = StepModel(cfg.model_dir())
        sources = args.source
        if sources is None:
            sources = list(bd.MUSIC21_SOURCES)
            if any(nottingham_dir().glob("*.mid")):
                sources.append(str(nottingham_dir()))
        tunes = [t for s in sources for t in tunes_from(s, args.tunes)]
    except (config_mod.ConfigError, OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if not tunes:
        print(f"error: no tune of {PHRASES} phrases in the sources", file=sys.stderr)
        return 2
    shipped = tempo.PRIOR_OCTAVES
    width = shipped if args.prior_octaves is None else args.prior_octaves
    tempo.PRIOR_OCTAVES = width
    try:
        rows = measure(model, cfg, tunes, args.tempi, args.jitter_ms, args.seed,
                       cfg.time.auto_max_bpm)
    finally:
        tempo.PRIOR_OCTAVES = shipped
    if args.json:
        print(json.dumps({"tunes": len(tunes), "sources": sources, "jitter_ms": args.jitter_ms,
                          "prior_octaves": width,
                          "rows": [r.__dict__ for r in rows]}))
    else:
        print(f"{len(tunes)} tunes from {', '.join(sources)}; phrases of {CALL_BEATS:g} "
              f"beats; jitter +-{args.jitter_ms:g} ms, legato {bd.LEGATO:g}; prior "
              f"{width:g} octaves wide")
        print("\nIn tempo (at double or half) per kind of call:\n")
        print(table(rows))
        print("\nIn tempo as heard: in tempo, or a call with no interval as long as a beat at "
              "double its tempo (the share of such calls):\n")
        print(table(rows, heard=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
