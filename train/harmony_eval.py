"""Held-out figures of a harmony model, on tunes with their own chords.

Two ways of running the model over a tune's steps (companion.encoding.harmony):

- **teacher-forced**: each slot step is fed the tune's own previous chord; per slot the
  cross-entropy of the tune's chord (nats), top-1 accuracy (the same chord token) and
  triad accuracy (the same triad's pitch classes: a seventh counts as its triad; ``N``
  only matches ``N``), overall and at the slots where the tune's chord changes, beside the
  baseline that holds the previous chord;
- **free-running**: the model's own chord fed back at each slot, as live (its best chord,
  ``greedy``, or a draw at temperature 1 and 0.5, ``sampled_t1``, ``sampled_t05``):
  note-in-chord, the share of the melody's time (from the first slot) during which its
  note is a note of the chord sounding, and of the notes sounding on strong beats (a bar's
  first beat, the middle of a bar of 4 quarters); agreement, the share of strong beats
  whose chord has the tune's chord's triad; harmonic rhythm, chord changes per bar;
  distinct chords per tune. The same figures of the tune's own chords stand beside them,
  of the same one slot late (what following the chords heard would give), and of a rule
  that sees the whole bar (``rule_chords``: per bar, the diatonic triad among I, IV, V,
  vi, ii of the key estimated from the whole melody that covers most of the bar's melody).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from companion.encoding.chords import Chord, ChordVocabulary
from companion.encoding.harmony import NO_PITCH, Slots, StepVocab, TuneSteps
from companion.encoding.key import KeyEstimator
from companion.encoding.melody import Melody
from companion.encoding.names import MAJOR, MINOR


@dataclass
class EvalTune:
    melody: Melody
    slots: Slots
    steps: TuneSteps  # teacher-forced: targets are the tune's chord tokens


def run(model, tunes: Sequence[EvalTune], mode: str = "teacher", seed: int = 0,
        batch: int = 64, temperature: float = 1.0) -> list[tuple[np.ndarray, np.ndarray]]:
    """For each tune, (log-probabilities ``[slots, C]``, chosen tokens ``[slots]``) of its
    slot steps. ``mode``: ``teacher`` (the tune's previous chord fed; chosen = best),
    ``greedy`` or ``sampled`` (at ``temperature``; the chosen chord fed back)."""
    vocab: StepVocab = model.vocab
    rng = np.random.default_rng(seed)
    out: list[tuple[np.ndarray, np.ndarray]] = [None] * len(tunes)  # type: ignore[list-item]
    order = sorted(range(len(tunes)), key=lambda i: -len(tunes[i].steps))
    for g in range(0, len(order), batch):
        group = [order[k] for k in range(g, min(g + batch, len(order)))]
        B = len(group)
        steps = [tunes[i].steps for i in group]
        T = max(len(s) for s in steps)
        h = np.zeros((model.layers, B, model.units), np.float32)
        c = np.zeros_like(h)
        prev = np.zeros(B, np.int64)
        logp: list[list[np.ndarray]] = [[] for _ in range(B)]
        chosen: list[list[int]] = [[] for _ in range(B)]
        for t in range(T):
            tok = np.zeros(B, np.int64)
            pit = np.full(B, NO_PITCH, np.int64)
            pos = np.zeros(B, np.int64)
            for b, s in enumerate(steps):
                if t >= len(s):
                    continue
                tok[b], pit[b], pos[b] = s.tokens[t], s.pitches[t], s.positions[t]
                if mode != "teacher" and s.targets[t] >= 0:
                    tok[b] = vocab.slot_token(int(prev[b]))
            logits, h, c = model.run_batch(tok, pit, pos, h, c)
            for b, s in enumerate(steps):
                if t >= len(s) or s.targets[t] < 0:
                    continue
                z = logits[b].astype(np.float64)
                lp = z - z.max()
                lp -= np.log(np.exp(lp).sum())
                if mode == "sampled":
                    q = np.exp((lp - lp.max()) / temperature)
                    k = int(rng.choice(len(q), p=q / q.sum()))
                else:
                    k = int(np.argmax(lp))
                logp[b].append(lp)
                chosen[b].append(k)
                prev[b] = k
        for b, i in enumerate(group):
            C = vocab.output_size
            out[i] = (np.array(logp[b]).reshape(-1, C), np.array(chosen[b], np.int64))
    return out


def _triads(chords: ChordVocabulary, tokens: np.ndarray) -> list[frozenset | None]:
    """Each token's triad, with the reference 0 (tokens of one tune share one)."""
    out = []
    for k in tokens:
        c = chords.chord(int(k), 0)
        out.append(None if c is None else c.triad())
    return out


def teacher_figures(chords: ChordVocabulary, tunes: Sequence[EvalTune], results) -> dict:
    nll = n = hit = tri = ch_n = ch_hit = ch_tri = hold_hit = hold_tri = ch_hold_tri = 0.0
    for t, (lp, best) in zip(tunes, results, strict=True):
        y = t.steps.targets[t.steps.is_slot]
        if not len(y):
            continue
        prev = np.concatenate([[ChordVocabulary.NONE], y[:-1]])
        ty, tb, tp = _triads(chords, y), _triads(chords, best), _triads(chords, prev)
        nll += float(-lp[np.arange(len(y)), y].sum())
        n += len(y)
        hit += float((best == y).sum())
        tri += sum(a == b for a, b in zip(ty, tb, strict=True))
        hold_hit += float((prev == y).sum())
        hold_tri += sum(a == b for a, b in zip(ty, tp, strict=True))
        change = prev != y
        change[0] = False  # the first slot: nothing held yet
        ch_n += float(change.sum())
        ch_hit += float((best == y)[change].sum())
        ch_tri += sum(a == b for a, b, c in zip(ty, tb, change, strict=True) if c)
        ch_hold_tri += sum(a == b for a, b, c in zip(ty, tp, change, strict=True) if c)
    if not n:
        return {"slots": 0}
    return {
        "slots": int(n), "nll": nll / n, "top1": hit / n, "top1_triad": tri / n,
        "changes": int(ch_n), "top1_at_changes": ch_hit / ch_n if ch_n else None,
        "top1_triad_at_changes": ch_tri / ch_n if ch_n else None,
        "hold_previous": {"top1": hold_hit / n, "top1_triad": hold_tri / n,
                          "top1_triad_at_changes": ch_hold_tri / ch_n if ch_n else None},
    }


def _timeline(slots: Slots, end: float) -> np.ndarray:
    return np.concatenate([slots.times, [max(end, slots.times[-1])]])


def music_figures(chords: ChordVocabulary, tunes: Sequence[EvalTune],
                  choices: Sequence[np.ndarray] | None) -> dict:
    """Note-in-chord (time, strong beats), agreement, changes per bar and distinct chords of
    ``choices`` (per tune, a chord token per slot), or of the tunes' own chords (None)."""
    in_time = all_time = strong_in = strong_n = agree = agree_n = changes = bars = 0.0
    distinct: list[int] = []
    for k, t in enumerate(tunes):
        sl, m = t.slots, t.melody
        if not len(sl):
            continue
        real = t.steps.targets[t.steps.is_slot]
        toks = real if choices is None else choices[k]
        ref = t.steps.ref
        pcs = [frozenset(chords.pitch_classes(int(x), ref)) for x in toks]
        on = np.asarray(m.onsets, np.float64)
        off = on + np.asarray(m.durations, np.float64)
        edges = _timeline(sl, float(off.max()))
        for i in range(len(sl)):
            a, b = edges[i], edges[i + 1]
            over = np.clip(np.minimum(off, b) - np.maximum(on, a), 0, None)
            inside = np.array([int(p) % 12 in pcs[i] for p in m.pitches])
            in_time += float(over[inside].sum())
            all_time += float(over.sum())
        strong = sl.strong()
        rt = _triads(chords, real)
        ct = _triads(chords, toks)
        for i in np.flatnonzero(strong):
            s = sl.times[i]
            sounding = np.flatnonzero((on <= s + 1e-6) & (off > s + 1e-6))
            if len(sounding):
                strong_n += 1
                strong_in += int(m.pitches[sounding[-1]]) % 12 in pcs[i]
            agree_n += 1
            agree += rt[i] is not None and rt[i] == ct[i]
        changes += float((toks[1:] != toks[:-1]).sum())
        lens = sl.bar_lengths
        bar = float(np.nanmedian(lens)) if np.isfinite(lens).any() else 4.0
        bars += len(sl) * float(np.median(np.diff(sl.times)) if len(sl) > 1 else 1.0) / bar
        distinct.append(len({int(x) for x in toks if x != ChordVocabulary.NONE}))
    return {
        "note_in_chord": in_time / all_time if all_time else None,
        "note_in_chord_strong": strong_in / strong_n if strong_n else None,
        "agreement_strong": agree / agree_n if agree_n else None,
        "changes_per_bar": changes / bars if bars else None,
        "distinct_chords": float(np.mean(distinct)) if distinct else None,
    }


#: The rule baseline's triads, in order of preference on a tie: (semitones above the tonic,
#: quality) of I, V, IV, vi, ii in major, and i, V, iv, VI, III in minor.
RULE_TRIADS = {MAJOR: ((0, "maj"), (7, "maj"), (5, "maj"), (9, "min"), (2, "min")),
               MINOR: ((0, "min"), (7, "maj"), (5, "min"), (8, "maj"), (3, "maj"))}


def rule_chords(chords: ChordVocabulary, t: EvalTune) -> np.ndarray:
    """A chord token per slot of ``t``: per bar (from a slot on a bar's first beat to the
    next; every 4 slots where the bar is unknown), the triad of RULE_TRIADS in the key of the
    whole melody (companion.encoding.key, not faded) whose notes cover most of the bar's
    melody time."""
    m, sl = t.melody, t.slots
    key = KeyEstimator(half_life_beats=0)
    for p, on, d in zip(m.pitches, m.onsets, m.durations, strict=True):
        key.add(int(p), float(on), float(d))
    tonic, mode = key.estimate() or (int(m.pitches[0]) % 12, MAJOR)
    triads = [Chord((tonic + r) % 12, q) for r, q in RULE_TRIADS[mode]]
    q = sl.positions // 12
    starts = [i for i in range(len(sl)) if i == 0 or (q[i] == 0 if q[i] < 8 else i % 4 == 0)]
    on = np.asarray(m.onsets, np.float64)
    off = on + np.asarray(m.durations, np.float64)
    end = float(off.max())
    out = np.zeros(len(sl), np.int64)
    for k, a in enumerate(starts):
        b = starts[k + 1] if k + 1 < len(starts) else len(sl)
        t0, t1 = sl.times[a], sl.times[b] if b < len(sl) else max(end, sl.times[-1])
        over = np.clip(np.minimum(off, t1) - np.maximum(on, t0), 0, None)
        cover = [sum(o for o, p in zip(over, m.pitches, strict=True)
                     if int(p) % 12 in c.pitch_classes()) for c in triads]
        best = triads[int(np.argmax(cover))]
        out[a:b] = chords.token(best, t.steps.ref)
    return out


def figures(model, tunes: Sequence[EvalTune], seed: int = 0) -> dict:
    """Every figure of the module docstring over ``tunes``."""
    chords = model.vocab.chords
    teacher = run(model, tunes, "teacher")
    greedy = run(model, tunes, "greedy")
    sampled = run(model, tunes, "sampled", seed=seed)
    half = run(model, tunes, "sampled", seed=seed, temperature=0.5)
    return {
        "tunes": len(tunes),
        "teacher_forced": teacher_figures(chords, tunes, teacher),
        "free_running": {
            "greedy": music_figures(chords, tunes, [c for _, c in greedy]),
            "sampled_t1": music_figures(chords, tunes, [c for _, c in sampled]),
            "sampled_t05": music_figures(chords, tunes, [c for _, c in half]),
            "tunes_own_chords": music_figures(chords, tunes, None),
            "tunes_own_chords_a_beat_late": music_figures(chords, tunes, [
                np.concatenate([[ChordVocabulary.NONE], t.steps.targets[t.steps.is_slot][:-1]])
                for t in tunes]),
            "rule_whole_bar": music_figures(chords, tunes,
                                            [rule_chords(chords, t) for t in tunes]),
        },
    }


def chord_name(chords: ChordVocabulary, token: int, ref: int) -> str:
    c: Chord | None = chords.chord(token, ref)
    return "N" if c is None else c.name
