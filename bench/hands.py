"""Melody extraction from two hands: `python -m bench.hands [--json]`.

Two sets, each heard by the live Listener under the skyline rule (``listen.melody: auto``)
and under the top-of-onset rule (``top``); a heard melody note matches a true one of the
same pitch with its onset within 30 ms (one to one):

- (a) held-out monophonic tunes (the Nottingham melodies, bench.data; else music21's
  airdsAirs, in neither of the default model's corpora) played legato by the right hand
  over a generated left hand (a bass note on each beat, a chord on the off-beat, an
  octave and more below the melody), every onset jittered by up to +-15 ms and each
  melody note released 10-80 ms after the next one starts;
- (b) two-hand piano music from music21's corpus, both staves played with the same
  jitter; the truth is the right hand's top line as written (the highest right-hand note
  of each onset that no higher right-hand note still held covers).

Then the answers: the same calls answered by `companion respond`'s engine with and
without the left hand (same seeds): their mean interval and the share of answer notes a
fourth or more below the melody's lowest note.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from dataclasses import asdict, dataclass

import mido
import numpy as np

from bench.data import nottingham_files
from companion.config import Config
from companion.encoding.key import SCALES, KeyEstimator
from companion.encoding.phrases import Phrase, PhraseNote, read_call
from companion.engine.listener import Listener

MATCH_S = 0.03
JITTER_S = 0.015
LEGATO_S = (0.01, 0.08)
TEMPO_BPM = 100.0
GOAL_A, GOAL_B = 0.98, 0.90
#: Keyboard pieces of music21's corpus with two staves (right hand first).
PIANO = ("joplin/maple_leaf_rag.mxl", "mozart/k545/movement1_exposition.mxl",
         "schumann_clara/polonaise_op1n1.mxl", "schumann_clara/polonaise_op1n2.mxl",
         "schumann_clara/polonaise_op1n3.mxl", "schumann_clara/polonaise_op1n4.mxl",
         "chopin/mazurka06-2.krn", "cpebach/h186.mxl")
FALLBACK_TUNES = "music21:airdsAirs"

#: A played note: pitch, onset and release (seconds), channel (0: right hand, 1: left).
Played = tuple[int, float, float, int]


@dataclass
class Score:
    true: int = 0
    heard: int = 0
    matched: int = 0

    def add(self, truth: list[tuple[int, float]], heard: list[tuple[int, float]]) -> None:
        self.true += len(truth)
        self.heard += len(heard)
        self.matched += matches(truth, heard)

    @property
    def precision(self) -> float:
        return self.matched / max(self.heard, 1)

    @property
    def recall(self) -> float:
        return self.matched / max(self.true, 1)

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0

    def row(self) -> dict:
        return {"precision": round(self.precision, 4), "recall": round(self.recall, 4),
                "f1": round(self.f1, 4), "true": self.true, "heard": self.heard}


def matches(truth: list[tuple[int, float]], heard: list[tuple[int, float]]) -> int:
    """Heard notes matching a true note of the same pitch within MATCH_S, one to one."""
    used = [False] * len(truth)
    n = 0
    j0 = 0
    for pitch, t in heard:
        while j0 < len(truth) and truth[j0][1] < t - MATCH_S:
            j0 += 1
        j = j0
        while j < len(truth) and truth[j][1] <= t + MATCH_S:
            if not used[j] and truth[j][0] == pitch:
                used[j] = True
                n += 1
                break
            j += 1
    return n


def hear(notes: list[Played], melody: str, **listen) -> list[tuple[int, float]]:
    """The melody the live Listener hears in ``notes`` (pitch, onset)."""
    events = []
    for pitch, on, off, ch in notes:
        events.append((on, 1, pitch, ch))
        events.append((max(off, on + 0.001), 0, pitch, ch))
    events.sort()
    lst = Listener(60.0 / TEMPO_BPM, 1e6, melody=melody, **listen)
    for t, kind, pitch, ch in events:
        if kind:
            lst.feed(mido.Message("note_on", note=pitch, velocity=80, channel=ch), t)
        else:
            lst.feed(mido.Message("note_off", note=pitch, channel=ch), t)
    return [(n.pitch, n.time) for n in lst.notes]


def _key_of(melody: list[PhraseNote]) -> tuple[int, int]:
    est = KeyEstimator(0)
    for n in melody:
        est.add(n.pitch, n.start, n.duration)
    return est.estimate() or (0, 0)


def _above(pc_from: int, tonic: int, mode: int, steps: int) -> int:
    """Semitones from ``pc_from`` up ``steps`` scale tones of the key."""
    scale = sorted(SCALES[mode] - ({11} if mode == 1 else set()))  # natural minor
    deg = (pc_from - tonic) % 12
    up = 0
    for _ in range(steps):
        nxt = min((d for d in scale if d > deg), default=None)
        step = (nxt - deg) if nxt is not None else (scale[0] + 12 - deg)
        up += step
        deg = (deg + step) % 12
    return up


def two_hands(melody: list[PhraseNote], rng: np.random.Generator, beat_s: float,
              left: bool = True) -> tuple[list[Played], list[tuple[int, float]]]:
    """A monophonic melody (beats) played legato by the right hand, with jitter, over a
    generated left hand: the played notes and the true melody (pitch, onset)."""
    rh: list[Played] = []
    onsets = [n.start * beat_s + rng.uniform(-JITTER_S, JITTER_S) for n in melody]
    t0 = min(onsets)
    onsets = [t - t0 + 0.1 for t in onsets]
    for i, n in enumerate(melody):
        on = onsets[i]
        end = on + n.duration * beat_s
        if i + 1 < len(melody):
            nxt = onsets[i + 1]
            if melody[i + 1].pitch == n.pitch:
                end = min(end, nxt - 0.02)  # a key struck again is released first
            elif end >= nxt - 0.05 * beat_s:  # written legato: released after the next
                end = nxt + rng.uniform(*LEGATO_S)
        rh.append((n.pitch, on, max(end, on + 0.02), 0))
    truth = [(p, on) for p, on, _, _ in rh]
    if not left:
        return rh, truth
    tonic, mode = _key_of(melody)
    low = min(n.pitch for n in melody)
    lh: list[Played] = []
    first = melody[0].start
    last = max(n.start + n.duration for n in melody)
    beat = np.floor(first)
    while beat < last:
        sounding = [n for n in melody if n.start <= beat + 1e-6] or melody[:1]
        pc = sounding[-1].pitch % 12
        root = low - 12 - 7 - ((low - 12 - 7 - pc) % 12)  # fifth an octave below the melody
        third, fifth = root + _above(pc, tonic, mode, 2), root + _above(pc, tonic, mode, 4)
        bass = root - 12
        t = (beat - first) * beat_s + 0.1
        jit = rng.uniform
        lh.append((bass, t + jit(-JITTER_S, JITTER_S), t + 0.48 * beat_s, 1))
        tc = t + 0.5 * beat_s
        for p in (root, third, fifth):
            lh.append((p, tc + jit(-JITTER_S, JITTER_S), tc + 0.45 * beat_s, 1))
        beat += 1.0
    return sorted(rh + lh, key=lambda n: n[1]), truth


def folk_melodies(n: int, beats: float | None = None) -> tuple[str, list[list[PhraseNote]]]:
    """``n`` held-out monophonic melodies (the first ``beats`` beats of each, or all)."""
    files = nottingham_files()
    if files:
        step = max(1, len(files) // n)
        phrases = [read_call(f) for f in files[::step][:n]]
        source = "Nottingham melodies (bench.data)"
    else:
        from companion.encoding.melody import read_melodies
        from train.corpus import resolve

        mels = [m for f in resolve(FALLBACK_TUNES) for m in read_melodies(f)]
        step = max(1, len(mels) // n)
        phrases = [Phrase(m.name, [PhraseNote(int(p), float(s), float(d), int(v)) for p, s, d, v
                                   in zip(m.pitches, m.onsets, m.durations, m.velocities,
                                          strict=True)]) for m in mels[::step][:n]]
        source = FALLBACK_TUNES
    out = []
    for ph in phrases:
        notes = ph.notes
        if beats is not None:
            t0 = notes[0].start
            notes = [PhraseNote(x.pitch, x.start - t0, min(x.duration, t0 + beats - x.start),
                                x.velocity) for x in notes if x.start - t0 < beats]
        if len(notes) >= 4:
            out.append(notes)
    return source, out


def piano_piece(name: str) -> tuple[list[tuple[int, float, float, int]], list[tuple[int, float]]]:
    """Both staves' notes (pitch, onset, end in quarters, staff 0/1) and the right hand's
    top line as written (pitch, onset)."""
    from music21 import corpus

    score = corpus.parse(name)
    notes = []
    for staff, part in enumerate(score.parts[:2]):
        for el in part.stripTies(inPlace=False).flatten().notes:
            if el.duration.isGrace or not el.pitches:
                continue
            on = float(el.offset)
            for p in el.pitches:
                notes.append((p.midi, on, on + float(el.quarterLength), staff))
    rh = sorted((n for n in notes if n[3] == 0), key=lambda n: (n[1], -n[0]))
    top: list[tuple[int, float]] = []
    for i, (p, on, _end, _s) in enumerate(rh):
        if top and top[-1][1] == on:
            continue  # a lower note of the same onset
        if any(q > p and o < on < e for q, o, e, _ in rh[:i]):
            continue  # under a higher right-hand note still held
        top.append((p, on))
    return notes, top


def play_score(notes: list[tuple[int, float, float, int]], truth: list[tuple[int, float]],
               rng: np.random.Generator, beat_s: float) -> tuple[list[Played], list]:
    """Written notes played with jittered onsets (a chord's notes each their own) and
    releases; the truth on the same clock (each note's own jittered onset)."""
    played: list[Played] = []
    when: dict[tuple[int, float], float] = {}
    for p, on, end, staff in notes:
        t = on * beat_s + rng.uniform(-JITTER_S, JITTER_S) + 0.1
        off = end * beat_s + rng.uniform(-JITTER_S, JITTER_S) + 0.1
        played.append((p, t, max(off, t + 0.02), staff))
        if staff == 0:
            when[(p, on)] = t
    return played, [(p, when[(p, on)]) for p, on in truth]


def extraction(n_tunes: int, seed: int, pieces: tuple[str, ...] = PIANO,
               **listen) -> dict:
    """F1 of both rules on both sets."""
    beat_s = 60.0 / TEMPO_BPM
    rng = np.random.default_rng(seed)
    source, mels = folk_melodies(n_tunes)
    out: dict = {"a": {"source": source, "tunes": len(mels)}, "b": {"pieces": list(pieces)}}
    scores = {m: Score() for m in ("auto", "top")}
    for mel in mels:
        played, truth = two_hands(mel, rng, beat_s)
        for m, s in scores.items():
            s.add(truth, hear(played, m, **listen))
    out["a"].update({m: s.row() for m, s in scores.items()})
    scores = {m: Score() for m in ("auto", "top")}
    per_piece = {}
    for name in pieces:
        notes, top = piano_piece(name)
        played, truth = play_score(notes, top, rng, beat_s)
        for m, s in scores.items():
            one = Score()
            heard = hear(played, m, **listen)
            one.add(truth, heard)
            s.add(truth, heard)
            per_piece.setdefault(name, {})[m] = round(one.f1, 4)
    out["b"].update({m: s.row() for m, s in scores.items()})
    out["b"]["per_piece_f1"] = per_piece
    return out


@dataclass
class AnswerFigures:
    calls: int
    notes_alone: int
    notes_left: int
    interval_alone: float
    interval_left: float
    below_alone: float  # share of answer notes a fourth or more below the melody
    below_left: float

    def goals_met(self) -> bool:
        return (abs(self.interval_left - self.interval_alone) <= 0.15 * self.interval_alone
                and abs(self.below_left - self.below_alone) <= 0.02)


def answers(cfg: Config, model, melodies: list[list[PhraseNote]], seed: int = 0) -> AnswerFigures:
    """Each melody answered alone and with a generated left hand, same seed and same
    right-hand performance."""
    from companion.commands.respond import respond

    cfg = copy.deepcopy(cfg)
    cfg.midi.input_channel = "omni"
    beat_s = 60.0 / cfg.listen.tempo_bpm
    acc = {"alone": [0, 0.0, 0, 0], "left": [0, 0.0, 0, 0]}  # notes, |intervals|, n, below
    for i, mel in enumerate(melodies):
        low = min(n.pitch for n in mel)
        rng = np.random.default_rng(seed + i)
        both, _ = two_hands(mel, rng, beat_s)
        for name, notes in (("alone", [n for n in both if n[3] == 0]), ("left", both)):
            call = Phrase(f"call {i}", [PhraseNote(p, on / beat_s, (off - on) / beat_s, 80)
                                        for p, on, off, _ in notes])
            r = respond(cfg, model, call, seed + i)
            a = acc[name]
            ps = [n.pitch for n in r.answer]
            a[0] += len(ps)
            a[1] += float(np.abs(np.diff(ps)).sum()) if len(ps) > 1 else 0.0
            a[2] += max(len(ps) - 1, 0)
            a[3] += sum(p <= low - 5 for p in ps)
    return AnswerFigures(
        calls=len(melodies), notes_alone=acc["alone"][0], notes_left=acc["left"][0],
        interval_alone=acc["alone"][1] / max(acc["alone"][2], 1),
        interval_left=acc["left"][1] / max(acc["left"][2], 1),
        below_alone=acc["alone"][3] / max(acc["alone"][0], 1),
        below_left=acc["left"][3] / max(acc["left"][0], 1))


def table(ex: dict, ans: AnswerFigures | None) -> str:
    lines = ["| set | rule | precision | recall | F1 | true notes | heard notes |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for key, label in (("a", f"(a) {ex['a']['tunes']} folk tunes + generated left hand"),
                       ("b", f"(b) {len(ex['b']['pieces'])} piano pieces, both hands")):
        for m, rule in (("auto", "skyline (auto)"), ("top", "top of onset (top)")):
            r = ex[key][m]
            lines.append(f"| {label} | {rule} | {r['precision']:.3f} | {r['recall']:.3f} | "
                         f"{r['f1']:.3f} | {r['true']} | {r['heard']} |")
    lines.append("")
    lines.append("| piece | F1 skyline | F1 top of onset |")
    lines.append("| --- | --- | --- |")
    for name, f in ex["b"]["per_piece_f1"].items():
        lines.append(f"| {name} | {f['auto']:.3f} | {f['top']:.3f} |")
    if ans is not None:
        lines += ["", "| answers (same seeds) | melody alone | with the left hand |",
                  "| --- | --- | --- |",
                  f"| mean interval (semitones) | {ans.interval_alone:.2f} | "
                  f"{ans.interval_left:.2f} |",
                  f"| notes a fourth or more below the melody | {100 * ans.below_alone:.1f}% | "
                  f"{100 * ans.below_left:.1f}% |",
                  f"| answer notes | {ans.notes_alone} | {ans.notes_left} |"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.hands", description=__doc__.split("\n")[0])
    p.add_argument("--config", metavar="F", help="config file (default: ./config.yaml)")
    p.add_argument("--model", metavar="DIR", help="model package (default: the config's)")
    p.add_argument("--tunes", type=int, default=30, help="folk tunes in set (a) and answered")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-answers", action="store_true", help="the extraction figures only")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    args = p.parse_args(argv)
    from companion import config as config_mod
    from companion.config import ConfigError
    from companion.engine.model import ModelError, StepModel

    try:
        cfg = config_mod.load(args.config)
        if args.model:
            cfg.model = args.model
        lc = cfg.listen
        listen = {"overlap_s": lc.legato_overlap_ms / 1000.0,
                  "pedal_tone_beats": lc.pedal_tone_beats, "window_s": lc.chord_window_ms / 1000}
        ex = extraction(args.tunes, args.seed, **listen)
        ans = None
        if not args.no_answers:
            model = StepModel(cfg.model_dir())
            _, calls = folk_melodies(args.tunes, beats=8.0)
            ans = answers(cfg, model, calls, args.seed)
    except (ConfigError, ModelError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    ok = (ex["a"]["auto"]["f1"] >= GOAL_A and ex["b"]["auto"]["f1"] >= GOAL_B
          and (ans is None or ans.goals_met()))
    if args.json:
        print(json.dumps({"extraction": ex, "answers": asdict(ans) if ans else None,
                          "goals_met": ok}))
    else:
        print(table(ex, ans))
        print(f"\ngoals (F1 >= {GOAL_A} on (a), >= {GOAL_B} on (b); answers within 15% and "
              f"2 points): {'met' if ok else 'NOT met'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

