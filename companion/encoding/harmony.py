"""The harmony model's steps: one implementation for training and the live companion.

The harmony model reads a melody as it is heard and names the chord of each *slot*, a
point of a grid on which chords may change: one slot a quarter note (``SLOT``), counted
from the bar's first beat where the bar is known, else from the melody's time 0 (its own
beat grid). Its one stream of steps holds two kinds, in the order of their times:

- **a note step** for each melody note, at its onset: the melody model's input (the curve
  from the note before, ``bos`` for the first note, and the metrical position of its
  onset, companion.encoding.meter) and the note's pitch class relative to ``ref``, the
  first note's pitch class;
- **a slot step** at each slot, before the notes that start on it: its input is the chord
  that sounded until then (the previous slot's, ``N`` at the first), the slot's metrical
  position and the key heard so far (``KeyTrack``: its tonic relative to ``ref`` and its
  mode, the same online estimate live); its output is the chord of this slot. So each
  chord is decided from the melody heard before its slot, and the chord chosen is fed
  back at the next slot.

Slots start at the first grid point after the melody's first onset (a chord needs a note
heard) and last while the melody sounds. Chords are tokens of a ``ChordVocabulary`` with
roots relative to ``ref``, so the whole stream is the same in every key (the model needs no
key estimate and no transposition of its corpus).

Input token layout (``StepVocab``): curves ``0..Vc-1`` (the package's curve vocabulary),
``bos`` ``Vc``, then a slot step fed chord token ``k`` is ``Vc + 1 + k``. The pitch input is
``0..11`` for a note step; for a slot step ``NO_PITCH`` (12) before any key is heard, else
``KEYS + 12 * mode + (tonic - ref) % 12`` (``key_input``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from companion.encoding import meter
from companion.encoding.chords import Chord, ChordVocabulary
from companion.encoding.curves import Vocabulary, curves_from_notes
from companion.encoding.key import KeyEstimator
from companion.encoding.melody import Melody

#: The slots' grid, in quarter notes: one chord decision a quarter note.
SLOT = 1.0
#: The pitch input of a slot step (notes take 0..11).
NO_PITCH = 12
#: A slot step's key input: ``KEYS + 12 * mode + tonic above ref`` (24 keys).
KEYS = 13
PITCHES = KEYS + 24
#: The key heard so far: a note's evidence halves every this many quarters.
KEY_HALF_LIFE = 32.0
#: A note counts for the time to the next onset, at most this many quarters.
KEY_NOTE_MAX = 4.0
#: Times within this many quarters are one time (score offsets carry float noise).
EPS = 1e-6


@dataclass
class StepVocab:
    """The harmony model's input and output tokens: the curves of the melody (its own
    vocabulary, built from its training tunes) and the chords."""

    curves: Vocabulary
    chords: ChordVocabulary

    @property
    def bos(self) -> int:
        return len(self.curves.curves)

    @property
    def input_size(self) -> int:
        """Curves, ``bos``, and one slot token per chord."""
        return len(self.curves.curves) + 1 + self.chords.size

    @property
    def output_size(self) -> int:
        return self.chords.size

    def slot_token(self, previous_chord: int) -> int:
        """The input token of a slot step after chord token ``previous_chord``."""
        if not 0 <= previous_chord < self.chords.size:
            raise ValueError(f"chord token: expected 0..{self.chords.size - 1}, "
                             f"got {previous_chord!r}")
        return self.bos + 1 + previous_chord


@dataclass
class Slots:
    """A melody's slots: their times (quarters, on the melody's time line), metrical
    positions and the length of their bar (quarters; NaN: unknown)."""

    times: np.ndarray  # float64
    positions: np.ndarray  # int64
    bar_lengths: np.ndarray  # float64

    def strong(self) -> np.ndarray:
        """The strong slots: a bar's first beat, and the middle of a bar of 4 quarters."""
        q = self.positions // meter.PHASES
        known = q < meter.UNKNOWN_BAR
        return known & ((q == 0) | ((q == 2) & (np.abs(self.bar_lengths - 4) < EPS)))

    def __len__(self) -> int:
        return len(self.times)


def key_input(key: tuple[int, int] | None, ref: int) -> int:
    """A slot step's pitch input for ``key`` (tonic pitch class, mode; None: no key heard):
    ``NO_PITCH``, else ``KEYS + 12 * mode + (tonic - ref) % 12``."""
    if key is None:
        return NO_PITCH
    tonic, mode = key
    return KEYS + 12 * int(mode) + (int(tonic) - int(ref)) % 12


class KeyTrack:
    """The key heard so far, the same in training and live: each melody note counts (into
    companion.encoding.key's estimator, half-life ``KEY_HALF_LIFE``) once the next note
    starts, for the time between their onsets (at most ``KEY_NOTE_MAX``)."""

    def __init__(self) -> None:
        self.estimator = KeyEstimator(half_life_beats=KEY_HALF_LIFE)
        self._last: tuple[int, float] | None = None

    def note(self, pitch: int, onset: float) -> None:
        """A melody note starting at ``onset`` (quarters): the note before it now counts."""
        if self._last is not None:
            p0, t0 = self._last
            self.estimator.add(p0, t0, min(onset - t0, KEY_NOTE_MAX))
        self._last = (int(pitch), float(onset))

    def key(self) -> tuple[int, int] | None:
        """(tonic, mode) of the notes counted so far; None before any."""
        return self.estimator.estimate()


def _q(x):
    return np.round(np.asarray(x, np.float64) * 1024) / 1024


def slots(m: Melody, slot: float = SLOT) -> Slots:
    """The slots of melody ``m``: every ``slot`` quarters of each bar from its first beat
    (bars read from the notes' bars, those without a note starting in them filled in),
    else of the melody's time line from 0; from the first after its first onset while it
    sounds (to the end of its last note)."""
    if len(m) == 0:
        return Slots(np.zeros(0), np.zeros(0, np.int64), np.zeros(0))
    onsets = np.asarray(m.onsets, np.float64)
    first = float(onsets[0])
    end = float(np.max(onsets + np.asarray(m.durations, np.float64)))
    bar_onsets, bar_lengths = m.bars()
    known = np.isfinite(bar_onsets) & np.isfinite(bar_lengths) & (bar_lengths > 0)
    times: list[float] = []
    pos: list[int] = []
    lens: list[float] = []
    if not known.any():
        t = math.floor(first / slot + EPS) * slot + slot
        while t < end - EPS:
            times.append(t)
            pos.append(meter.position(t))
            lens.append(math.nan)
            t += slot
        return Slots(np.array(times), np.array(pos, np.int64), np.array(lens))
    starts = _q(onsets[known] - bar_onsets[known])
    lengths = bar_lengths[known]
    bars: dict[float, float] = {}
    for s, n in zip(starts, lengths, strict=True):
        bars.setdefault(float(s), float(n))
    order = sorted(bars)
    filled: list[tuple[float, float]] = []
    for i, s in enumerate(order):
        n = bars[s]
        nxt = order[i + 1] if i + 1 < len(order) else end
        b = s
        while b < nxt - EPS:
            filled.append((b, n))
            b += n
    for b, n in filled:
        k = 0
        while k * slot < n - EPS:
            t = b + k * slot
            if first + EPS < t < end - EPS:
                times.append(t)
                pos.append(meter.position(k * slot, n))
                lens.append(n)
            k += 1
    return Slots(np.array(times), np.array(pos, np.int64), np.array(lens))


def chords_at(times: np.ndarray, changes: list[tuple[float, Chord | None]]) -> list[Chord | None]:
    """The chord sounding at each time: the last of ``changes`` (time, chord; sorted by
    time) at or before it, None before the first."""
    out: list[Chord | None] = []
    k = -1
    for t in times:
        while k + 1 < len(changes) and changes[k + 1][0] <= t + EPS:
            k += 1
        out.append(changes[k][1] if k >= 0 else None)
    return out


@dataclass
class TuneSteps:
    """One melody's stream of steps, parallel arrays: input token, pitch input, position,
    target chord token (slot steps; -1 for note steps) and the step's time."""

    tokens: np.ndarray
    pitches: np.ndarray
    positions: np.ndarray
    targets: np.ndarray
    times: np.ndarray
    ref: int

    def __len__(self) -> int:
        return len(self.tokens)

    @property
    def is_slot(self) -> np.ndarray:
        return self.targets >= 0


def tune_steps(m: Melody, chords: list[Chord | None], sl: Slots, vocab: StepVocab,
               horizon: float = 0.0) -> TuneSteps:
    """The steps of melody ``m`` with the chord of each of its slots ``sl`` (``chords``,
    parallel to the slots; None for ``N``), teacher-forced: each slot step is fed the
    previous slot's true chord. A slot at time t comes before the notes starting at or after
    ``t - horizon`` (0: the notes on its beat are heard after it is decided)."""
    if len(chords) != len(sl):
        raise ValueError(f"{len(chords)} chords for {len(sl)} slots")
    n = len(m)
    ref = int(m.pitches[0]) % 12 if n else 0
    curve_tokens = vocab.curves.encode(curves_from_notes(m.pitches, m.onsets)) if n else []
    note_pos = m.positions() if n else np.zeros(0, np.int64)
    chord_tokens = [vocab.chords.token(c, ref) for c in chords]
    # one merged order: a slot sorts before a note at (its time - horizon) or later
    events = [(float(m.onsets[i]), 1, i) for i in range(n)]
    events += [(float(sl.times[j]) - horizon - EPS, 0, j) for j in range(len(sl))]
    events.sort()
    tok, pit, pos, tgt, tim = [], [], [], [], []
    prev = ChordVocabulary.NONE
    keys = KeyTrack()
    for _, kind, i in events:
        if kind == 1:
            keys.note(int(m.pitches[i]), float(m.onsets[i]))
            tok.append(int(curve_tokens[i]))
            pit.append((int(m.pitches[i]) - ref) % 12)
            pos.append(int(note_pos[i]))
            tgt.append(-1)
            tim.append(float(m.onsets[i]))
        else:
            tok.append(vocab.slot_token(prev))
            pit.append(key_input(keys.key(), ref))
            pos.append(int(sl.positions[i]))
            tgt.append(chord_tokens[i])
            tim.append(float(sl.times[i]))
            prev = chord_tokens[i]
    return TuneSteps(np.array(tok, np.int64), np.array(pit, np.int64),
                     np.array(pos, np.int64), np.array(tgt, np.int64), np.array(tim), ref)
