"""Playing along: chords and a bass under the performer's melody as it is played, free of I/O.

The ``Accompanist`` hears the melody notes the engine hears (``MelodyNote``: pitch, time,
velocity) with their metrical positions (companion.encoding.meter), on whatever time line
the caller keeps, counted in beats, and decides the chord of each slot (a quarter note of
the beat grid: companion.encoding.harmony's slots) through the harmony model
(companion.engine.harmony.Harmonizer) *before* the slot's beat: the caller asks for slot
``beat`` at most ``lookahead`` beats ahead of it (a committed lookahead; what is decided is
never taken back), and the notes of the melody that start on or after that point are fed
after it, in the order the model was trained on.

- **Where chords change.** The model is asked at every slot (its state hears the chord that
  sounds), but a new chord is taken only where the music changes harmony: a bar's first
  beat, and the middle of a bar of four quarters (every two beats where the bar is
  unknown). Elsewhere the chord sounding goes on (and is what the model is fed).
- **Which chord.** The model's best (``temperature`` 0), else a draw at that temperature,
  after nudges to its logits (chosen on tunes the model trained on, with bench.accompany's
  ``--train-tunes``): ``change_bias`` added to every chord but the one sounding (the model
  alone holds a chord far longer than the tunes do); ``key_weight`` added to the chords
  whose triad lies in the key heard so far (companion.encoding.key), ``common_weight`` to
  those that are one of its five common triads (I, IV, V, vi, ii; minor i, iv, V, VI, III);
  ``fit_weight`` times the share of the melody of the last ``fit_beats`` beats on the
  chord's notes; and the *form*, ``form_weight`` times the share on the chord's notes of
  the melody that followed the same place in an earlier passage whose last ``form_beats``
  beats match those just heard (tunes repeat: the second time through, the companion
  knows what comes; ``Accompanist._form``).
- **Voicing.** The chord's notes once each, in close position, the highest under the lowest
  melody note heard in the last ``MELODY_MEMORY_BEATS`` beats (and never above ``highest``),
  and of the inversions that fit, the one that moves least from the chord before (the sum
  of the voices' steps). A melody note heard under a chord note that sounds stops that chord
  note there (``hear`` returns them): the chord never crosses the melody. The bass plays
  the chord's bass note (its root, or the bass it names) in the octave from ``bass_low``.
- **Style.** ``block``: the chord on every beat; ``bar``: the chord once where it may change
  (a bar, a half bar), held; ``broken``: its notes one by one in eighths, up and down.
  ``mode`` picks chords, chords and bass, or bass only.
- **Velocities** are the performer's recent mean times ``level`` (the bass a little more,
  still under the performer's).

Notes come out as ``AccNote`` (beats, a part and a MIDI channel 0..15); the caller plays
them on its clock (companion.commands.accompany on a virtual one).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import numpy as np

from companion.encoding import meter
from companion.encoding.chords import Chord, ChordVocabulary
from companion.encoding.key import SCALES
from companion.engine.harmony import Harmonizer, HarmonyModel

#: The melody notes of the last this-many beats set the ceiling of the chords' register.
MELODY_MEMORY_BEATS = 8.0
#: Durations are this share of the time to the next attack (a note-off before the next on).
LEGATO = 0.95
MODES = ("off", "chords", "chords_bass", "bass")
STYLES = ("block", "bar", "broken")
#: The form: an earlier passage counts as the one now heard where they match at least this.
FORM_MIN = 0.7
EPS_BEAT = 1e-6
#: Two notes are twins in two passages where their onsets differ by at most this (beats).
MATCH_TOLERANCE = 0.25
#: In the passage the form predicts, the note on its first beat counts this much extra.
DOWNBEAT = 1.0
#: The key's five common triads (semitones above the tonic, quality): major, minor.
COMMON = (((0, "maj"), (5, "maj"), (7, "maj"), (9, "min"), (2, "min")),
          ((0, "min"), (5, "min"), (7, "maj"), (8, "maj"), (3, "maj")))


@dataclass(slots=True)
class AccNote:
    pitch: int
    start: float  # beats
    duration: float  # beats
    velocity: int
    channel: int  # 0..15
    part: str  # "chord" or "bass"

    @property
    def end(self) -> float:
        return self.start + self.duration


@dataclass
class Decision:
    """One slot: its beat, when it was decided (beats, same time line), the chord that
    sounds from it (None: none yet), whether it is a new chord, and its notes."""

    beat: float
    decided: float
    chord: Chord | None
    changed: bool
    notes: list[AccNote] = field(default_factory=list)
    voicing: list[int] = field(default_factory=list)  # the chord's notes (no bass)


@dataclass
class AccompanySettings:
    """What config.yaml's ``accompany:`` holds that the engine reads (config.AccompanyConfig)."""

    mode: str = "chords_bass"
    style: str = "block"
    channel: int = 2  # 1..16
    bass_channel: int = 3  # 1..16
    temperature: float = 0.0
    change_bias: float = 0.85
    fit_weight: float = 1.0
    fit_beats: float = 4.0
    key_weight: float = 3.0
    form_weight: float = 12.0
    form_beats: float = 4.0
    common_weight: float = 1.0
    level: float = 0.7
    lowest: int = 48
    highest: int = 72
    bass_low: int = 36


def _phase(position: int | None) -> int:
    """A change slot's place in the bar (its quarter; the bar unknown: ``UNKNOWN_BAR``)."""
    if position is None or position // meter.PHASES >= meter.UNKNOWN_BAR:
        return meter.UNKNOWN_BAR
    return int(position // meter.PHASES)


def window(on: np.ndarray, pitch: np.ndarray, start: float, stop: float
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The notes (onsets ``on``, sorted, and ``pitch``) sounding in ``start..stop``: each
    note's onset, how long it sounds there (to the next onset, cut to the window), pitch."""
    i0 = max(int(np.searchsorted(on, start, "right")) - 1, 0)
    i1 = int(np.searchsorted(on, stop, "left"))
    o = on[i0:i1]
    nxt = np.append(on[i0 + 1:i1 + 1], stop)[:len(o)] if len(o) else o
    a, b = np.maximum(o, start), np.minimum(nxt, stop)
    keep = b > a
    return o[keep], (b - a)[keep], pitch[i0:i1][keep]


def match(x: tuple[np.ndarray, np.ndarray, np.ndarray],
          y: tuple[np.ndarray, np.ndarray, np.ndarray], width: float,
          x0: float, y0: float, tolerance: float = MATCH_TOLERANCE) -> float:
    """How alike two windows of melody (``window``'s) are, their onsets taken from ``x0``
    and ``y0``: the share of each window's time whose note has a twin in the other (the
    same pitch, onset within ``tolerance`` beats), the smaller of the two; 0 where either
    covers under half of ``width`` beats."""
    (ox, dx, px), (oy, dy, py) = x, y
    if dx.sum() < width / 2 or dy.sum() < width / 2:
        return 0.0
    twin = (px[:, None] == py[None, :]) & \
        (np.abs((ox - x0)[:, None] - (oy - y0)[None, :]) <= tolerance)
    return float(min(dx[twin.any(axis=1)].sum() / dx.sum(),
                     dy[twin.any(axis=0)].sum() / dy.sum()))


def can_change(position: int | None, bar_beats: float | None, index: int) -> bool:
    """Whether a chord may change on a slot: at ``position`` (meter.position) in a bar of
    ``bar_beats`` quarters; ``index`` counts the slots from the first (the bar unknown:
    every two)."""
    if position is None or bar_beats is None or not bar_beats > 0 \
            or position // meter.PHASES >= meter.UNKNOWN_BAR:
        return index % 2 == 0
    q = position // meter.PHASES
    return q == 0 or (q == 2 and abs(bar_beats - 4) < 1e-6)


def voicings(pcs: tuple[int, ...], low: int, top: int) -> list[list[int]]:
    """Every close-position voicing of pitch classes ``pcs`` (each once, within an octave
    and a fifth) whose notes lie in ``low..top``, sorted low to high."""
    out = []
    for bottom in range(low, top + 1):
        if bottom % 12 not in pcs:
            continue
        notes = [bottom]
        for pc in pcs:
            if pc == bottom % 12:
                continue
            notes.append(bottom + (pc - bottom) % 12)
        notes.sort()
        if notes[-1] <= top:
            out.append(notes)
    return out


def motion(a: list[int], b: list[int]) -> int:
    """How far voicing ``b`` moves from ``a``: each voice of the larger to its nearest in the
    other (the sum of the steps; equal sizes pair voices in order)."""
    if not a or not b:
        return 0
    if len(a) == len(b):
        return sum(abs(x - y) for x, y in zip(a, b, strict=True))
    big, small = (a, b) if len(a) > len(b) else (b, a)
    return sum(min(abs(x - y) for y in small) for x in big)


def voice(chord: Chord, previous: list[int], top: int, low: int) -> list[int]:
    """The voicing of ``chord`` under ``top`` (inclusive) from ``low`` that moves least
    from ``previous`` (none: the highest that fits); where none fits, the one nearest under
    ``top``, its notes above ``top`` left out."""
    pcs = chord.pitch_classes()
    cands = voicings(pcs, low, top)
    if not cands:
        cands = voicings(pcs, max(0, top - 12), top + 12)
        cands = [[p for p in v if p <= top] for v in cands]
        cands = [v for v in cands if v] or [[top - (top - pcs[0]) % 12]]
    if not previous:
        return max(cands, key=lambda v: (v[-1], v[0]))
    return min(cands, key=lambda v: (motion(previous, v), -v[-1]))


class Accompanist:
    """Chords and a bass under one melody (module docstring). ``hear`` each melody note as
    it starts; ``slot`` before each slot's beat. Times are beats on the caller's grid."""

    def __init__(self, model: HarmonyModel, settings: AccompanySettings | None = None,
                 seed: int | None = None):
        self.model = model
        self.settings = settings or AccompanySettings()
        self.harmonizer = Harmonizer(model)
        self.rng = np.random.default_rng(seed)
        self.reset()

    def reset(self) -> None:
        """A fresh melody: no note heard, no chord, no voicing."""
        self.harmonizer.reset()
        self.recent: deque[tuple[float, int, int]] = deque()  # (beat, pitch, velocity)
        self.chord: Chord | None = None
        self.voicing: list[int] = []
        self.sounding: list[AccNote] = []  # chord notes that may still sound
        self.decisions: list[Decision] = []
        self.slots = 0
        self.melody_now: tuple[float, int] | None = None
        self._masks: np.ndarray | None = None  # [chords, 12] pitch classes under this ref
        # every melody note's onset (beats) and pitch, grown as heard (read per slot)
        self._on = np.empty(64)
        self._pit = np.empty(64, np.int64)
        self._n = 0
        # each slot where the chord may change: (beat, phase, bar beats, the next change's
        # beat: inf until known)
        self.spans: list[tuple[float, int, float | None, float]] = []
        self.form_match: tuple[float, float] | None = None  # (how well, the beat matched)

    def rest(self) -> None:
        """The melody paused (a run of the live accompaniment ended): nothing sounds and no
        chord is held, so the next slot may take any; what was heard of the tune (its key,
        its form, the model's state) is kept for the next run."""
        self.harmonizer.rest()
        self.chord = None
        self.voicing = []
        self.sounding = []
        self.form_match = None

    def heard_any(self) -> bool:
        """Whether a melody note was heard since the last ``reset``."""
        return self._n > 0

    @property
    def heard(self) -> list[tuple[float, int]]:
        """Every melody note heard since the last ``reset``: (beat, pitch)."""
        return list(zip(self._on[:self._n].tolist(), self._pit[:self._n].tolist(),
                        strict=True))

    # -- hearing ---------------------------------------------------------------------

    def hear(self, pitch: int, velocity: int, beat: float, position: int | None) -> list[AccNote]:
        """A melody note starting at ``beat`` (its metrical position ``position``; None:
        unknown). Returns the chord notes it cut short: those sounding at or above it,
        now ending at ``beat`` (so the chords never cross the melody)."""
        self.harmonizer.note(int(pitch), float(beat), position)
        if self._n == len(self._on):  # room for twice as many
            self._on = np.resize(self._on, 2 * self._n)
            self._pit = np.resize(self._pit, 2 * self._n)
        self._on[self._n], self._pit[self._n] = beat, pitch
        self._n += 1
        self.recent.append((float(beat), int(pitch), int(velocity)))
        while self.recent and self.recent[0][0] < beat - MELODY_MEMORY_BEATS:
            self.recent.popleft()
        self.melody_now = (float(beat), int(pitch))
        cut = []
        for n in self.sounding:
            if n.start < beat + 1e-9 < n.end and n.pitch >= pitch:
                n.duration = max(0.0, beat - n.start)
                cut.append(n)
        self.sounding = [n for n in self.sounding if n.end > beat]
        return cut

    def _ceiling(self) -> int:
        s = self.settings
        low = min((p for _, p, _ in self.recent), default=s.highest + 1)
        return min(s.highest, low - 1)

    def _velocity(self, part: str) -> int:
        vel = [v for _, _, v in self.recent] or [80]
        mean = float(np.mean(vel[-8:]))
        level = self.settings.level * (1.1 if part == "bass" else 1.0)
        return int(np.clip(round(mean * min(level, 0.95)), 1, 127))

    # -- deciding ---------------------------------------------------------------------

    def slot(self, beat: float, position: int | None, bar_beats: float | None,
             now: float, span: float = 1.0, next_change: float | None = None) -> Decision:
        """Decide the slot at ``beat`` (metrical ``position``, bar of ``bar_beats``; None:
        unknown) at ``now`` (beats, before ``beat``): its chord, committed, and its notes
        over ``span`` beats (to the next slot); ``next_change`` is the beat of the next slot
        where the chord may change (the ``bar`` style holds a chord until then)."""
        s = self.settings
        h = self.harmonizer
        index = self.slots
        self.slots += 1
        logits = h.query(position)
        held = h.chord
        if logits is None:  # before the first note: nothing to harmonise
            d = Decision(beat, now, None, False)
            self.decisions.append(d)
            return d
        may = can_change(position, bar_beats, index) or held == ChordVocabulary.NONE
        if may:
            z = np.asarray(logits, np.float64)
            z = z.copy()
            z[ChordVocabulary.NONE] = -np.inf  # under a melody that sounds, always a chord
            if s.form_weight:
                z += s.form_weight * self._form(beat, position, bar_beats, now)
            if s.common_weight:
                z += s.common_weight * self._common()
            if s.fit_weight:
                z += s.fit_weight * self._fit(now)
            if s.key_weight:
                z += s.key_weight * self._in_key()
            if s.change_bias and held != ChordVocabulary.NONE:
                keep = z[held]
                z += s.change_bias
                z[held] = keep
            if s.temperature > 0:
                z = z / s.temperature
                p = np.exp(z - z.max())
                token = int(self.rng.choice(len(p), p=p / p.sum()))
            else:
                token = int(np.argmax(z))
            if self.spans and self.spans[-1][3] == np.inf:  # its end unknown until now
                self.spans[-1] = (*self.spans[-1][:3], float(beat))
            self.spans.append((float(beat), _phase(position), bar_beats,
                               float(next_change) if next_change is not None else np.inf))
        else:
            token = held
        chord = h.commit(token)
        changed = chord != self.chord
        self.chord = chord
        d = Decision(beat, now, chord, changed)
        if chord is not None and s.mode != "off":
            d.notes = self._notes(chord, beat, span, changed, may, next_change)
            if s.mode in ("chords", "chords_bass"):
                d.voicing = list(self.voicing)
        self.decisions.append(d)
        return d

    def _in_key(self) -> np.ndarray:
        """Per chord token, 1 where the chord's triad lies in the key heard so far (its
        scale; minor with its raised seventh), else 0 (all 1 before any key is heard)."""
        self._chord_masks()
        k = self._key()
        if k is None:
            return np.ones(len(self._masks))
        tonic, mode = k
        scale = np.array([(d - tonic) % 12 in SCALES[mode] for d in range(12)], np.float64)
        outside = self._triads @ (1.0 - scale)
        return (outside == 0).astype(np.float64)

    def _key(self) -> tuple[int, int] | None:
        return self.harmonizer.key()

    def _common(self) -> np.ndarray:
        """Per chord token, 1 where its triad is one of the key's common five (I, IV, V, vi,
        ii; minor: i, iv, V, VI, III) in the key heard so far, else 0 (all 0 before)."""
        self._chord_masks()
        k = self._key()
        if k is None:
            return np.zeros(len(self._masks))
        tonic, mode = k
        want = np.zeros((5, 12))
        for r, (deg, quality) in enumerate(COMMON[mode]):
            want[r, list(Chord((tonic + deg) % 12, quality).triad())] = 1.0
        return (self._triads @ want.T == 3).any(axis=1).astype(np.float64) \
            * (self._triads.sum(axis=1) == 3)

    def _form(self, beat: float, position: int | None, bar_beats: float | None,
              now: float) -> np.ndarray:
        """The form: where the melody of the last ``form_beats`` before ``now`` matches the
        melody before an earlier chord change at the same place in the bar, whose span has
        been heard whole, the share of that span's melody on each chord's notes, times how
        well it matched (``match``; the best match, the latest on a tie; the note on that
        span's first beat counts ``1 + DOWNBEAT`` times); zeros where none matches at
        least ``FORM_MIN``. Only the melody heard before ``now`` is read."""
        self._chord_masks()
        self.form_match = None
        out = np.zeros(len(self._masks))
        if not self._n:
            return out
        on, pit = self._on[:self._n], self._pit[:self._n]
        width, ahead = self.settings.form_beats, beat - now
        phase = _phase(position)
        cur = window(on, pit, beat - width, now)
        best, where = 0.0, None
        for b0, ph0, bar0, end0 in reversed(self.spans):
            if end0 > now + EPS_BEAT or ph0 != phase or bar0 != bar_beats:
                continue
            score = match(cur, window(on, pit, b0 - width, b0 - ahead), width - ahead,
                          beat, b0)
            if score >= FORM_MIN and score > best + 1e-9:
                best, where = score, (b0, end0)
        self.form_match = None if where is None else (best, where[0])
        if where is None:
            return out
        hist = np.zeros(12)
        for o, d, p in zip(*window(on, pit, where[0], where[1]), strict=True):
            hist[p % 12] += d * (1.0 + DOWNBEAT * (o <= where[0] + MATCH_TOLERANCE))
        total = hist.sum()
        return best * (self._masks @ hist) / total if total > 0 else out

    def _chord_masks(self) -> None:
        if self._masks is not None:
            return
        h, v = self.harmonizer, self.model.chords
        self._masks = np.zeros((v.size, 12))
        self._triads = np.zeros((v.size, 12))
        for k in range(1, v.size):
            c = v.chord(k, h.ref)
            self._masks[k, list(c.pitch_classes())] = 1.0
            self._triads[k, list(c.triad())] = 1.0

    def _fit(self, now: float) -> np.ndarray:
        """Per chord token, the share of the melody heard in the last ``fit_beats`` (each
        note for as long as it has sounded, until the next onset) on the chord's notes."""
        self._chord_masks()
        hist = np.zeros(12)
        notes = list(self.recent)
        for k, (b, p, _) in enumerate(notes):
            stop = notes[k + 1][0] if k + 1 < len(notes) else now
            a = max(b, now - self.settings.fit_beats)
            if stop > a:
                hist[p % 12] += min(stop, now) - a
        total = hist.sum()
        return self._masks @ hist / total if total > 0 else np.zeros(len(self._masks))

    def _notes(self, chord: Chord, beat: float, span: float, changed: bool, may: bool,
               next_change: float | None) -> list[AccNote]:
        s = self.settings
        out: list[AccNote] = []
        hold = max(span, (next_change - beat) if next_change is not None else span)
        if s.mode in ("chords", "chords_bass"):
            top = self._ceiling()
            low = min(s.lowest, top - 11)
            if changed or not self.voicing or max(self.voicing) > top:
                self.voicing = voice(chord, self.voicing, top, low)
            vel = self._velocity("chord")
            ch = s.channel - 1
            if s.style == "block":
                out += [AccNote(p, beat, span * LEGATO, vel, ch, "chord") for p in self.voicing]
            elif s.style == "bar":
                if changed or may:
                    out += [AccNote(p, beat, hold * LEGATO, vel, ch, "chord")
                            for p in self.voicing]
            else:  # broken: up and down the voicing in eighths
                order = self.voicing + self.voicing[-2:0:-1]
                steps = max(1, round(span * 2))
                k0 = round(beat * 2)
                for k in range(steps):
                    p = order[(k0 + k) % len(order)]
                    out.append(AccNote(p, beat + k * span / steps, span / steps * LEGATO,
                                       max(1, vel - 6 * ((k0 + k) % 2)), ch, "chord"))
            self.sounding += out
        if s.mode in ("chords_bass", "bass") and (changed or may):
            b = s.bass_low + (chord.bass_pc() - s.bass_low) % 12
            out.append(AccNote(b, beat, hold * LEGATO, self._velocity("bass"),
                               s.bass_channel - 1, "bass"))
        return out

    def chord_name(self) -> str:
        """The chord sounding now as a symbol (``-`` before the first)."""
        return "-" if self.chord is None else self.chord.name


def settings_from(cfg) -> AccompanySettings:
    """The accompanist's settings from a Config's ``accompany`` section."""
    a = cfg.accompany
    return AccompanySettings(
        mode=a.mode, style=a.style, channel=a.channel, bass_channel=a.bass_channel,
        temperature=a.temperature, change_bias=a.change_bias, fit_weight=a.fit_weight,
        fit_beats=a.fit_beats, key_weight=a.key_weight, common_weight=a.common_weight,
        form_weight=a.form_weight, form_beats=a.form_beats, level=a.level,
        lowest=a.lowest, highest=a.highest, bass_low=a.bass_low)


__all__ = ["AccNote", "Accompanist", "AccompanySettings", "Decision", "MODES", "STYLES",
           "can_change", "match", "motion", "settings_from", "voice", "voicings", "window"]
