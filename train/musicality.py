"""`python -m train.musicality`: how the answers sound, beside the music itself.

Held-out tunes: a package's test split (its own corpora, the split of its card) or all
melodies of another corpus. Each call is a tune's first ``--beats`` beats (from its first
onset, which the engine's beat grid starts on too). Four continuations of it are described
by the same features (after Yang & Lerch 2018, "On the evaluation of generative models in
music"):

- ``answer``: the companion's answer, by `companion respond`'s engine on a fixed tempo;
- ``ngram``: a Kneser-Ney 5-gram sampler trained on the package's training split (what a
  variable-order Markov companion plays), from the answer's first onset, as many beats;
- ``real``: what the tune really plays next, over as many beats as the call;
- ``other``: the tune's next passage of that length: how much two stretches of the same
  music differ, the ceiling an answer can be held to.

Overlap of a set with ``real``, per feature: the overlapping area of the two
distributions, Gaussian kernel density estimates (each set's bandwidth by Silverman's
rule); for a yes/no feature, one minus the difference of the two shares.
1 means alike, 0 disjoint. Endings are also compared with the real phrase ends of the
same tunes: each tune's last note.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import math
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from companion import config as config_mod
from companion.config import Config, ConfigError
from companion.encoding.curves import MIN_TIME, curves_from_notes, write_atomic
from companion.encoding.key import STABLE, KeyEstimator
from companion.encoding.melody import Melody
from companion.encoding.names import parse_key
from companion.encoding.phrases import Phrase, PhraseNote
from companion.engine.model import ModelError, StepModel
from train.corpus import CorpusError
from train.evaluate import held_out_data
from train.ngram import KneserNey

log = logging.getLogger("train.musicality")

#: The features of a passage, in the order of the table.
FEATURES = ("note_density", "pitch_range", "unique_pitches", "mean_interval",
            "largest_interval", "repeated_notes", "mean_ioi", "note_values", "pitch_drift")
#: The features of a passage's ending (yes/no).
ENDINGS = ("end_on_beat", "end_stable", "end_held")
SOURCES = ("answer", "ngram", "real", "other")
#: A held last note sounds at least this many beats: a beat as the answers articulate it
#: (answer.articulation 0.9 of the time to the next onset).
HELD_BEATS = 0.9
#: An onset this close to a whole beat is on it.
ON_BEAT = 1e-3
#: Note values are told apart on a grid of a twelfth of a beat (triplets and sixteenths).
VALUE_GRID = 12
#: N-gram order of the sampler.
NGRAM_ORDER = 5
#: Points of the grid the kernel density estimates are compared on.
KDE_POINTS = 2048
#: A kernel is at least this fraction of both sets' span wide (a set of one value is a
#: narrow bump, not a spike the grid misses).
KDE_FLOOR = 100
#: Goals: the answers' overlap with the real continuations at least that of another real
#: passage, on average, and on every feature within this of it.
FEATURE_SLACK = 0.05
#: Goal: no one ending degree in more than this share of the answers.
MAX_ONE_ENDING = 0.6


@dataclass
class Note:
    pitch: int
    start: float  # beats from the call's first onset
    duration: float  # beats


def features(notes: Sequence[Note], length: float, call_mean: float,
             key: tuple[int, int]) -> dict[str, float]:
    """The features of a passage of ``length`` beats (at least one note); ``call_mean`` is
    the call's mean pitch, ``key`` (tonic pitch class, mode) the call's key."""
    p = np.array([n.pitch for n in notes], np.float64)
    on = np.array([n.start for n in notes], np.float64)
    iv = np.abs(np.diff(p))
    ioi = np.diff(on)
    last = notes[-1]
    tonic, mode = key
    return {
        "note_density": len(notes) / length,
        "pitch_range": float(p.max() - p.min()),
        "unique_pitches": float(len(set(p.tolist()))),
        "mean_interval": float(iv.mean()) if len(iv) else 0.0,
        "largest_interval": float(iv.max()) if len(iv) else 0.0,
        "repeated_notes": float((iv == 0).mean()) if len(iv) else 0.0,
        "mean_ioi": float(ioi.mean()) if len(ioi) else length,
        "note_values": float(len({round(x * VALUE_GRID) for x in ioi.tolist()})),
        "pitch_drift": float(p.mean() - call_mean),
        "end_on_beat": float(abs(last.start - round(last.start)) < ON_BEAT),
        "end_stable": float((last.pitch - tonic) % 12 in STABLE[mode]),
        "end_held": float(last.duration >= HELD_BEATS - 1e-9),
    }


def overlap(a: Sequence[float], b: Sequence[float]) -> float:
    """Overlapping area of the distributions of ``a`` and ``b`` (see the module docstring)."""
    x, y = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if not len(x) or not len(y):
        return math.nan
    both = np.concatenate([x, y])
    if set(np.unique(both).tolist()) <= {0.0, 1.0}:
        return 1.0 - abs(float(x.mean()) - float(y.mean()))
    span = float(both.max() - both.min())
    if span == 0.0:
        return 1.0

    def bandwidth(v: np.ndarray) -> float:  # Silverman's rule, at least a grid step or two
        return max(1.06 * float(v.std()) * len(v) ** -0.2, span / KDE_FLOOR)

    bx, by = bandwidth(x), bandwidth(y)
    pad = 4 * max(bx, by)
    grid = np.linspace(both.min() - pad, both.max() + pad, KDE_POINTS)

    def kde(v: np.ndarray, bw: float) -> np.ndarray:
        z = (grid[:, None] - v[None, :]) / bw
        return np.exp(-0.5 * z * z).sum(axis=1) / (len(v) * bw * math.sqrt(2 * math.pi))

    return float(np.trapezoid(np.minimum(kde(x, bx), kde(y, by)), grid))


def _notes(m: Melody) -> list[Note]:
    t0 = float(m.onsets[0])
    return [Note(int(p), float(s) - t0, float(d))
            for p, s, d in zip(m.pitches, m.onsets, m.durations, strict=True)]


def _window(notes: Sequence[Note], a: float, b: float) -> list[Note]:
    return [n for n in notes if a - 1e-9 <= n.start < b - 1e-9]


def tune_key(notes: Sequence[Note]) -> tuple[int, int] | None:
    """The key of notes by the engine's estimator (each note weighted by its length)."""
    est = KeyEstimator(math.inf)
    for n in notes:
        est.add(n.pitch, n.start, min(max(n.duration, 0.0), 4.0))
    return est.estimate()


@dataclass
class Trial:
    """One held-out tune: its call, and the features of each continuation that it has."""

    name: str
    key: tuple[int, int]
    rows: dict[str, dict[str, float]] = field(default_factory=dict)
    end_degree: int | None = None  # the answer's last pitch above the tonic


class NgramSampler:
    """Continuations sampled from a Kneser-Ney model over the package's vocabulary."""

    def __init__(self, model: StepModel, train: Sequence[np.ndarray], seed: int):
        self.vocab = model.vocab
        self.kn = KneserNey(NGRAM_ORDER, model.vocab.size).fit(train)
        n = len(self.vocab.curves)
        self.pitch_diff = np.zeros(self.vocab.size, np.int64)
        self.pitch_diff[:n] = self.vocab.curves[:, 0].astype(np.int64)
        self.time_diff = np.zeros(self.vocab.size)
        self.time_diff[:n] = self.vocab.curves[:, 1]
        self.playable = self.time_diff >= MIN_TIME
        self.rng = np.random.default_rng(seed)

    def _next(self, history: list[int]) -> int:
        p = self.kn.distribution(history) * self.playable
        return int(self.rng.choice(len(p), p=p / p.sum()))

    def continue_call(self, call: Sequence[Note], start: float, length: float,
                      articulation: float, max_note: float) -> list[Note]:
        """Notes from ``start`` for ``length`` beats after ``call``; each sounds
        ``articulation`` of the time to the next onset, at most ``max_note`` beats."""
        curves = curves_from_notes([n.pitch for n in call], [n.start for n in call])
        history = [int(t) for t in self.vocab.encode(curves)]
        pitch, onset = call[-1].pitch, start
        history.append(self._next(history))  # the curve to the first note: its pitch only
        pitch += int(self.pitch_diff[history[-1]])
        out: list[Note] = []
        while True:
            tok = self._next(history)
            ioi = float(self.time_diff[tok])
            out.append(Note(pitch, onset, min(articulation * ioi, max_note)))
            onset += ioi
            if onset >= start + length - 1e-9:
                return out
            history.append(tok)
            pitch += int(self.pitch_diff[tok])


def measure(cfg: Config, model: StepModel, melodies: Sequence[Melody],
            train: Sequence[np.ndarray], beats: float = 8.0, calls: int = 150,
            seed: int = 0) -> dict:
    """The features of every source on up to ``calls`` held-out tunes (spread evenly over
    ``melodies``) long enough for a call and two real passages of ``beats`` each, their
    overlaps with the real continuations, and the endings."""
    from companion.commands.respond import respond

    cfg = copy.deepcopy(cfg)
    config_mod.override(cfg, "time.tempo", "fixed")  # beats in the call's own beat
    ac = cfg.answer
    sampler = NgramSampler(model, train, seed)
    usable = []
    for m in melodies:
        notes = _notes(m)
        parts = [_window(notes, i * beats, (i + 1) * beats) for i in range(3)]
        if len(parts[0]) >= 4 and all(len(p) >= 2 for p in parts[1:]):
            usable.append((m.name, notes, parts))
    step = max(1, len(usable) // max(calls, 1))
    trials: list[Trial] = []
    phrase_ends: list[dict[str, float]] = []
    for i, (name, notes, (call, real, other)) in enumerate(usable[::step][:calls]):
        call = [Note(n.pitch, n.start, min(n.duration, beats - n.start)) for n in call]
        phrase = Phrase(name, [PhraseNote(n.pitch, n.start, n.duration, 80) for n in call])
        r = respond(cfg, model, phrase, seed + i)
        key = parse_key(r.key) if r.key else tune_key(call) or (call[-1].pitch % 12, 0)
        t = Trial(name, key)
        cmean = float(np.mean([n.pitch for n in call]))
        t.rows["real"] = features(real, beats, cmean, key)
        t.rows["other"] = features(other, beats, cmean, key)
        answer = [Note(n.pitch, n.start, n.duration) for n in r.answer]
        if answer:
            start = answer[0].start
            t.rows["answer"] = features(answer, beats, cmean, key)
            t.end_degree = (answer[-1].pitch - key[0]) % 12
        else:
            start = math.ceil(call[-1].start + call[-1].duration)
        ng = sampler.continue_call(call, start, beats, ac.articulation, ac.max_note_beats)
        t.rows["ngram"] = features(ng, beats, cmean, key)
        trials.append(t)
        k = tune_key(notes)
        if k is not None:
            phrase_ends.append(features(notes[-2:], 1.0, cmean, k))
    return summarise(trials, phrase_ends)


def summarise(trials: Sequence[Trial], phrase_ends: Sequence[dict[str, float]]) -> dict:
    """Means and overlaps per feature and source, the endings, and the goals."""
    def values(src: str, feat: str) -> list[float]:
        return [t.rows[src][feat] for t in trials if src in t.rows]

    table: dict[str, dict] = {}
    for feat in FEATURES + ENDINGS:
        real = values("real", feat)
        row = {"mean": {s: _mean(values(s, feat)) for s in SOURCES},
               "overlap": {s: overlap(values(s, feat), real) for s in SOURCES if s != "real"}}
        table[feat] = row
    avg = {s: _mean([table[f]["overlap"][s] for f in FEATURES]) for s in ("answer", "ngram",
                                                                          "other")}
    ends = {s: {e: _mean(values(s, e)) for e in ENDINGS} for s in SOURCES}
    ends["phrase_ends"] = {e: _mean([p[e] for p in phrase_ends]) for e in ENDINGS}
    for s, rows in [(s, [t.rows[s] for t in trials if s in t.rows]) for s in SOURCES] + [
            ("phrase_ends", list(phrase_ends))]:
        ends[s]["all_three"] = _mean([float(all(r[e] for e in ENDINGS)) for r in rows])
    degrees = Counter(t.end_degree for t in trials if t.end_degree is not None)
    one = max(degrees.values()) / sum(degrees.values()) if degrees else math.nan
    shortfall = {f: table[f]["overlap"]["other"] - table[f]["overlap"]["answer"]
                 for f in FEATURES}
    goals = {
        "overlap": bool(avg["answer"] >= avg["other"]
                        and all(d <= FEATURE_SLACK for d in shortfall.values())),
        "endings": bool(ends["answer"]["all_three"] >= ends["phrase_ends"]["all_three"]
                        and one <= MAX_ONE_ENDING),
    }
    return {"calls": len(trials), "answers": sum("answer" in t.rows for t in trials),
            "features": table, "mean_overlap": avg, "endings": ends,
            "most_common_end_degree_share": one,
            "end_degrees": {str(k): v for k, v in sorted(degrees.items())}, "goals": goals}


def _mean(v: Sequence[float]) -> float:
    v = [x for x in v if not math.isnan(x)]
    return float(np.mean(v)) if v else math.nan


def format_table(result: dict) -> str:
    """The figures as plain-text tables."""
    lines = [f"{result['calls']} held-out calls, {result['answers']} answered",
             f"{'feature':<18}" + "".join(f"{s:>8}" for s in SOURCES)
             + "   overlap with real: " + "".join(f"{s:>8}" for s in ("answer", "ngram", "other"))]
    for feat in FEATURES:
        row = result["features"][feat]
        lines.append(f"{feat:<18}" + "".join(f"{row['mean'][s]:>8.2f}" for s in SOURCES)
                     + " " * 22 + "".join(f"{row['overlap'][s]:>8.2f}"
                                          for s in ("answer", "ngram", "other")))
    avg = result["mean_overlap"]
    lines.append(f"{'mean overlap':<18}" + " " * 32 + " " * 22
                 + "".join(f"{avg[s]:>8.2f}" for s in ("answer", "ngram", "other")))
    lines.append("")
    lines.append(f"{'endings':<18}" + "".join(f"{e[4:]:>10}" for e in ENDINGS)
                 + f"{'all three':>11}")
    for src, row in result["endings"].items():
        lines.append(f"{src:<18}" + "".join(f"{row[e]:>10.0%}" for e in ENDINGS)
                     + f"{row['all_three']:>11.0%}")
    lines.append(f"answers' most common ending degree: {result['most_common_end_degree_share']:.0%}"
                 f" of them (goal <= {MAX_ONE_ENDING:.0%}); degrees above the tonic: "
                 f"{result['end_degrees']}")
    g = result["goals"]
    lines.append(f"goals: overlap {'met' if g['overlap'] else 'not met'}, endings "
                 f"{'met' if g['endings'] else 'not met'}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m train.musicality",
                                description=__doc__.splitlines()[0])
    p.add_argument("--model", help="model package folder (default: the config's)")
    p.add_argument("--corpus", nargs="+", metavar="SPEC",
                   help="held-out corpora: the package's own (its test split, the default) "
                        "or any other")
    p.add_argument("--config", metavar="F", help="config file (default: ./config.yaml)")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                   help="config settings for the answers, e.g. answer.cadence=1")
    p.add_argument("--beats", type=float, default=8.0, help="length of a call, in beats")
    p.add_argument("--calls", type=int, default=150, help="most held-out calls")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=None, help="corpus parsing processes")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.add_argument("--card", action="store_true",
                   help="also write the figures into the package's card.json ('musicality')")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO,
                        format="%(message)s", stream=sys.stderr)
    try:
        if not args.beats > 0 or args.calls < 1:
            raise ConfigError("--beats and --calls: expected positive numbers")
        cfg = config_mod.load(args.config)
        if args.model:
            config_mod.override(cfg, "model", str(Path(args.model).resolve()))
        for item in args.set:
            key, eq, value = item.partition("=")
            if not eq:
                raise ConfigError(f"--set {item}: expected KEY=VALUE")
            config_mod.override(cfg, key, _value(value))
        model = StepModel(cfg.model_dir())
        specs = args.corpus or (model.card or {}).get("corpora") or []
        if not specs:
            raise ModelError(f"{cfg.model_dir()}: its card names no corpora; give --corpus")
        data = held_out_data(model, specs, workers=args.workers, progress=not args.quiet)
        result = measure(cfg, model, data.melodies, data.train, args.beats, args.calls,
                         args.seed)
    except (ConfigError, ModelError, CorpusError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 1
    result = {"model": str(cfg.model_dir()), "corpus": list(specs), "held_out": data.kind,
              **result}
    if args.card:
        write_card(cfg.model_dir(), result, argv if argv is not None else sys.argv[1:])
    print(json.dumps(result, indent=1) if args.json else
          f"{result['model']}, {data.kind} of {' '.join(specs)}\n" + format_table(result))
    return 0


def write_card(package: Path, result: dict, argv: Sequence[str]) -> None:
    """The figures into the package's card.json under ``musicality``, keyed by what was
    held out (a card keeps one entry per held-out set), with the command that made them;
    the rest of the card as it was. Written whole or not at all."""
    path = Path(package) / "card.json"
    try:
        card = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ModelError(f"{path}: cannot read the card to add the figures to ({e})") from e
    entry = {k: v for k, v in result.items() if k != "model"}
    entry["command"] = "python -m train.musicality " + " ".join(argv)
    key = "test_split" if result["held_out"].startswith("test split") else " ".join(
        result["corpus"])
    card.setdefault("musicality", {})[key] = entry
    write_atomic(path, json.dumps(card, indent=1).encode())


def _value(text: str) -> object:
    """A --set value as YAML reads it (numbers, true/false, null, text)."""
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


if __name__ == "__main__":
    sys.exit(main())
