"""How the accompanist plays along: `python -m bench.accompany [--json]`.

Held-out Nottingham tunes with their own chord symbols (the harmony package's test split,
read from its card: tunes it never trained on; the ABC files are read from
``../shared/data/nottingham-chords``, never copied) are played into the accompanist
(companion.engine.accompany, driven as `companion accompany` drives it: a virtual clock at
``--tempo``, each chord decided ``--lookahead-ms`` before its beat) with human timing: every
onset moved by up to ``--jitter-ms`` (uniform). The same figures are computed for three
sources of chords over each tune, from its first slot (the first beat after its first note)
to its end:

- ``companion``: the accompanist's chords, decided from the melody heard so far;
- ``own``: the tune's own chord symbols;
- ``rule``: per bar (every four beats where the bar is unknown), the diatonic triad among
  I, IV, V, vi, ii (in minor i, iv, V, VI, III) of the key of the whole melody that covers
  most of the bar's melody time: a baseline that sees the whole bar, and the whole tune's
  key, before it is played.

Figures (pooled over the tunes):

- ``note_in_chord``: the share of the melody's time during which its note belongs to the
  chord sounding; ``note_in_chord_strong``: the share of strong beats (a bar's first beat,
  the middle of a bar of four quarters) whose sounding melody note belongs to the chord;
- ``agreement``: the share of strong beats (where the tune has a chord) on which the chord
  sounding has the tune's own chord's pitch classes (a seventh chord counts as its triad);
- ``changes_per_bar`` (the chord read at each beat; a change where it differs from the
  beat before), and ``rhythm_ratio``, that over the tunes' own; ``distinct``: chords per
  tune;
- ``decided_before``: the share of chords decided before their beat (goal 1.0).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from companion.encoding.chords import Chord
from companion.encoding.harmony import EPS, chords_at, slots
from companion.encoding.key import KeyEstimator
from companion.encoding.melody import Melody
from companion.encoding.names import MAJOR

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data" / "nottingham-chords"
#: The rule baseline's triads (semitones above the tonic, quality), in order of preference
#: on a tie: I, V, IV, vi, ii in major; i, V, iv, VI, III in minor.
RULE_TRIADS = {True: ((0, "maj"), (7, "maj"), (5, "maj"), (9, "min"), (2, "min")),
               False: ((0, "min"), (7, "maj"), (5, "min"), (8, "maj"), (3, "maj"))}
#: The accompanist's settings that choose its chords (each an option of its own).
TUNING = ("change_bias", "temperature", "fit_weight", "fit_beats", "key_weight", "form_weight",
          "form_beats", "common_weight")
FIGURES = ("note_in_chord", "note_in_chord_strong", "agreement", "changes_per_bar",
           "rhythm_ratio", "distinct", "decided_before")

Changes = list[tuple[float, Chord | None]]


@dataclass
class Tally:
    """Sums over tunes, for pooled figures."""

    in_time: float = 0.0
    all_time: float = 0.0
    strong_in: int = 0
    strong_n: int = 0
    agree: int = 0
    agree_n: int = 0
    changes: int = 0
    bars: float = 0.0
    distinct: list[int] = field(default_factory=list)
    before: int = 0
    decided: int = 0

    def add(self, other: Tally) -> None:
        for k in ("in_time", "all_time", "strong_in", "strong_n", "agree", "agree_n",
                  "changes", "bars", "before", "decided"):
            setattr(self, k, getattr(self, k) + getattr(other, k))
        self.distinct += other.distinct

    def figures(self, real_changes_per_bar: float | None = None) -> dict:
        cpb = self.changes / self.bars if self.bars else None
        return {
            "note_in_chord": self.in_time / self.all_time if self.all_time else None,
            "note_in_chord_strong": self.strong_in / self.strong_n if self.strong_n else None,
            "agreement": self.agree / self.agree_n if self.agree_n else None,
            "changes_per_bar": cpb,
            "rhythm_ratio": cpb / real_changes_per_bar if cpb is not None
            and real_changes_per_bar else None,
            "distinct": float(np.mean(self.distinct)) if self.distinct else None,
            "decided_before": self.before / self.decided if self.decided else None,
        }


def _same(a: Chord | None, b: Chord | None) -> bool:
    return a is not None and b is not None and a.triad() == b.triad()


def measure(m: Melody, changes: Changes, own: Changes,
            decisions: Sequence[tuple[float, float]] = ()) -> Tally:
    """The figures' sums for one tune: its melody ``m``, the chords measured (``changes``:
    (beat, chord) sorted), the tune's own (``own``), and the (beat, decided) of each
    decision (none for sources that are not decided as they play)."""
    t = Tally()
    sl = slots(m)
    if not len(sl):
        return t
    on = np.asarray(m.onsets, np.float64)
    off = on + np.asarray(m.durations, np.float64)
    start, end = float(sl.times[0]), float(max(off.max(), sl.times[-1]))
    # note-in-chord over time: each note cut at the chord changes inside the window
    cuts = sorted({start, end, *(b for b, _ in changes if start < b < end)})
    mids = np.array([(a + b) / 2 for a, b in zip(cuts[:-1], cuts[1:], strict=True)])
    sounding = chords_at(mids, changes)
    for (a, b), c in zip(zip(cuts[:-1], cuts[1:], strict=True), sounding, strict=True):
        over = np.clip(np.minimum(off, b) - np.maximum(on, a), 0, None)
        pcs = set(c.pitch_classes()) if c is not None else set()
        inside = np.array([int(p) % 12 in pcs for p in m.pitches])
        t.in_time += float(over[inside].sum())
        t.all_time += float(over.sum())
    at = chords_at(sl.times, changes)
    real = chords_at(sl.times, own)
    for i in np.flatnonzero(sl.strong()):
        s = float(sl.times[i])
        now = np.flatnonzero((on <= s + EPS) & (off > s + EPS))
        if len(now):
            t.strong_n += 1
            t.strong_in += at[i] is not None and int(m.pitches[now[-1]]) % 12 in \
                at[i].pitch_classes()
        if real[i] is not None:
            t.agree_n += 1
            t.agree += _same(at[i], real[i])
    t.changes = sum(1 for a, b in zip(at[:-1], at[1:], strict=True) if a != b)
    lens = sl.bar_lengths
    bar = float(np.nanmedian(lens)) if np.isfinite(lens).any() else 4.0
    t.bars = (end - start) / bar
    t.distinct = [len({c for c in at if c is not None})]
    t.decided = len(decisions)
    t.before = sum(1 for beat, when in decisions if when < beat - EPS)
    return t


def rule_changes(m: Melody) -> Changes:
    """The rule baseline's chords (module docstring) at each bar's first slot."""
    sl = slots(m)
    key = KeyEstimator(half_life_beats=0)
    for p, o, d in zip(m.pitches, m.onsets, m.durations, strict=True):
        key.add(int(p), float(o), float(d))
    tonic, mode = key.estimate() or (int(m.pitches[0]) % 12, MAJOR)
    triads = [Chord((tonic + r) % 12, q) for r, q in RULE_TRIADS[mode == MAJOR]]
    q = sl.positions // 12
    starts = [i for i in range(len(sl)) if i == 0 or (q[i] == 0 if q[i] < 8 else i % 4 == 0)]
    on = np.asarray(m.onsets, np.float64)
    off = on + np.asarray(m.durations, np.float64)
    end = float(off.max())
    out: Changes = []
    for k, a in enumerate(starts):
        t0 = float(sl.times[a])
        t1 = float(sl.times[starts[k + 1]]) if k + 1 < len(starts) else max(end, t0)
        over = np.clip(np.minimum(off, t1) - np.maximum(on, t0), 0, None)
        cover = [sum(o for o, p in zip(over, m.pitches, strict=True)
                     if int(p) % 12 in c.pitch_classes()) for c in triads]
        out.append((t0, triads[int(np.argmax(cover))]))
    return out


def held_out(package: Path) -> list[str]:
    """The names of the harmony package's test tunes (its card)."""
    card = json.loads((package / "card.json").read_text())
    return list(card["split"]["test_tunes"])


def chords_from(package: Path) -> str:
    """How the harmony package's corpus gives its chords (its card: "symbols", "voices")."""
    card = json.loads((package / "card.json").read_text())
    return str(card.get("chords_from", ["symbols"])[0])


def corpus_of(package: Path) -> str:
    """The harmony package's corpus (its card's first; a path relative to the repository
    where it names one): the Nottingham tunes where the card names none."""
    card = json.loads((package / "card.json").read_text())
    spec = (card.get("corpora") or [str(DATA)])[0]
    return str(ROOT / spec) if spec.startswith("..") else spec


def run(package: Path, corpus: Path | str, tempo: float, jitter_ms: float, lookahead_ms: float,
        settings, limit: int | None = None, seed: int = 0,
        names: Sequence[str] | None = None) -> dict:
    from companion.commands.accompany import play_along
    from companion.engine.accompany import Accompanist
    from companion.engine.harmony import HarmonyModel
    from train.harmony_corpus import load_tunes

    want = list(names if names is not None else held_out(package))
    corpus_tunes = load_tunes([str(corpus)], chords_from(package), workers=1).tunes
    by_name = {}
    for t in corpus_tunes:
        by_name.setdefault(t.melody.name, t)
    tunes = [by_name[n] for n in want if n in by_name][:limit]
    acc = Accompanist(HarmonyModel(package), settings, seed)
    tallies = {k: Tally() for k in ("companion", "own", "rule")}
    for k, t in enumerate(tunes):
        a = play_along(acc, t.melody, tempo, lookahead_ms / 1000.0, jitter_ms / 1000.0,
                       seed + k)
        decided = [(d.beat, d.decided) for d in a.decisions if d.chord is not None]
        tallies["companion"].add(measure(t.melody, a.changes(), t.changes, decided))
        tallies["own"].add(measure(t.melody, t.changes, t.changes))
        tallies["rule"].add(measure(t.melody, rule_changes(t.melody), t.changes))
    real = tallies["own"].figures()["changes_per_bar"]
    return {"tunes": len(tunes), "missing": len(want) - len([n for n in want if n in by_name]),
            "tempo_bpm": tempo, "jitter_ms": jitter_ms, "lookahead_ms": lookahead_ms,
            "package": str(package),
            "figures": {k: v.figures(real) for k, v in tallies.items()}}


def table(r: dict) -> str:
    rows = [("companion", "the companion (heard so far)"), ("own", "the tunes' own chords"),
            ("rule", "rule baseline (whole bar)")]
    head = ("| chords | note-in-chord | on strong beats | agreement (strong beats) | "
            "changes per bar | vs the real rhythm | distinct per tune | decided before the "
            "beat |")
    lines = [head, "|" + " --- |" * 8]

    def pct(x):
        return "—" if x is None else f"{100 * x:.1f}%"

    def num(x):
        return "—" if x is None else f"{x:.2f}"

    for key, label in rows:
        f = r["figures"][key]
        lines.append(f"| {label} | {pct(f['note_in_chord'])} | {pct(f['note_in_chord_strong'])}"
                     f" | {pct(f['agreement'])} | {num(f['changes_per_bar'])} | "
                     f"{pct(f['rhythm_ratio'])} | {num(f['distinct'])} | "
                     f"{pct(f['decided_before'])} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from companion import config as config_mod
    from companion.engine.accompany import settings_from

    p = argparse.ArgumentParser(prog="python -m bench.accompany",
                                description=__doc__.splitlines()[0])
    p.add_argument("--harmony", default=str(ROOT / "models" / "harmony_nottingham"),
                   help="harmony package (its card names the held-out tunes)")
    p.add_argument("--corpus", default=None,
                   help="the tunes (default: the package card's corpus, e.g. "
                        "../shared/data/nottingham-chords or music21:bach)")
    p.add_argument("--config", help="config file whose accompany: settings are used")
    p.add_argument("--tempo", type=float, default=120.0)
    p.add_argument("--jitter-ms", type=float, default=15.0)
    p.add_argument("--lookahead-ms", type=float, default=None,
                   help="default: the config's accompany.lookahead_ms")
    p.add_argument("--change-bias", type=float, default=None)
    p.add_argument("--temperature", type=float, default=None)
    p.add_argument("--fit-weight", type=float, default=None)
    p.add_argument("--fit-beats", type=float, default=None)
    p.add_argument("--key-weight", type=float, default=None)
    p.add_argument("--form-weight", type=float, default=None)
    p.add_argument("--form-beats", type=float, default=None)
    p.add_argument("--common-weight", type=float, default=None)
    p.add_argument("--train-tunes", type=int, default=None, metavar="N",
                   help="measure on N tunes the package trained on instead (to choose "
                        "settings without looking at the held-out tunes)")
    p.add_argument("--limit", type=int, default=None, help="the first N held-out tunes only")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true")
    a = p.parse_args(argv)
    cfg = config_mod.load(a.config) if a.config else config_mod.Config()
    settings = settings_from(cfg)
    settings.mode = "chords_bass"
    for k in TUNING:
        if getattr(a, k) is not None:
            setattr(settings, k, getattr(a, k))
    look = cfg.accompany.lookahead_ms if a.lookahead_ms is None else a.lookahead_ms
    names = None
    corpus = a.corpus or corpus_of(Path(a.harmony))
    if a.train_tunes:
        from train.harmony_corpus import load_tunes

        test = set(held_out(Path(a.harmony)))
        names = [t.melody.name for t in load_tunes([corpus], chords_from(Path(a.harmony)),
                                                    workers=1).tunes
                 if t.melody.name not in test][::7][:a.train_tunes]
    r = run(Path(a.harmony), corpus, a.tempo, a.jitter_ms, look, settings, a.limit,
            a.seed, names)
    r.update({k: getattr(settings, k) for k in TUNING})
    if a.json:
        print(json.dumps(r, indent=1))
    else:
        print(f"{r['tunes']} held-out tunes of {r['package']} ({r['missing']} not found), "
              f"{r['tempo_bpm']:g} BPM, human timing ±{r['jitter_ms']:g} ms, chords decided "
              f"{r['lookahead_ms']:g} ms ahead, change bias {r['change_bias']:g}, "
              f"temperature {r['temperature']:g}, fit {r['fit_weight']:g} over "
              f"{r['fit_beats']:g} beats, key {r['key_weight']:g}, form {r['form_weight']:g} "
              f"over {r['form_beats']:g} beats, common {r['common_weight']:g}\n")
        print(table(r))
    return 0


if __name__ == "__main__":
    sys.exit(main())
