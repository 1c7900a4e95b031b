"""Melodies out of music files, read with music21 (training corpora and offline calls).

music21 is imported inside the functions: the live path never pays for it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from companion.encoding import meter
from companion.encoding.skyline import melody_indexes

#: Bump when extraction changes: it is part of the corpus cache key.
EXTRACTOR_VERSION = 5
#: The extraction, as a model card names it.
EXTRACTION = (f"melody part, else the skyline of all parts (companion.encoding.skyline), "
              f"extractor {EXTRACTOR_VERSION}")
#: Written times are read on a grid this fine (quarter notes): only float noise is lost.
SCORE_WINDOW_Q = 1 / 1024
#: A written note held this many quarters no longer hides what moves below (pedal tone).
SCORE_PEDAL_TONE_Q = 4.0

SUFFIXES = (".mid", ".midi", ".abc", ".xml", ".musicxml", ".mxl", ".krn")


@dataclass
class Melody:
    """One melody line: parallel arrays, onsets and durations in quarter notes.

    ``bar_onsets`` (quarters from the start of the bar each note falls in) and
    ``bar_lengths`` (that bar's nominal length from its time signature) are NaN where the bar
    is not known; None stands for all unknown.
    """

    name: str
    pitches: np.ndarray  # int
    onsets: np.ndarray  # float, increasing
    durations: np.ndarray  # float
    velocities: np.ndarray  # int
    bar_onsets: np.ndarray | None = None  # float, NaN: unknown
    bar_lengths: np.ndarray | None = None  # float, NaN: unknown

    def __len__(self) -> int:
        return len(self.pitches)

    def bars(self) -> tuple[np.ndarray, np.ndarray]:
        """``(bar_onsets, bar_lengths)``, one per note, NaN where the bar is not known."""
        unknown = np.full(len(self), np.nan)
        return (unknown if self.bar_onsets is None else np.asarray(self.bar_onsets, np.float64),
                unknown if self.bar_lengths is None else np.asarray(self.bar_lengths, np.float64))

    def positions(self) -> np.ndarray:
        """``meter.position`` of each onset: from its bar's start where the bar is known, else
        the phase of the onset from the melody's time 0 with the bar unknown."""
        bar_onsets, bar_lengths = self.bars()
        known = np.isfinite(bar_onsets) & np.isfinite(bar_lengths) & (bar_lengths > 0)
        return np.where(known, meter.positions(np.where(known, bar_onsets, 0.0), bar_lengths),
                        meter.positions(np.asarray(self.onsets, np.float64)))


def melody_from_notes(name: str, notes: list[tuple[int, float, float, int]],
                      bars: list[tuple[float, float]] | None = None) -> Melody:
    """The melody of written notes (pitch, onset, duration, velocity; quarter notes) by the
    live skyline rule on the written timing: a chord gives its top note, a note under a
    higher note still held is accompaniment. A single line is kept whole. ``bars`` gives
    each note's (bar onset, bar length), NaN where unknown; None: all unknown."""
    def q(x: float) -> float:  # times equal up to float noise (triplets) are one time
        return round(x / SCORE_WINDOW_Q) * SCORE_WINDOW_Q

    if bars is not None and len(bars) != len(notes):
        raise ValueError(f"{name}: {len(bars)} bar positions for {len(notes)} notes")
    written = [(n[0], q(n[1]), q(n[1] + n[2]), 0) for n in notes]
    kept = melody_indexes(written, window=SCORE_WINDOW_Q, overlap=0.0,
                          pedal_tone=SCORE_PEDAL_TONE_Q, rest=0.0)
    ordered = [notes[i] for i in kept]
    return Melody(
        name=name,
        pitches=np.array([n[0] for n in ordered], dtype=np.int64),
        onsets=np.array([n[1] for n in ordered], dtype=np.float64),
        durations=np.array([n[2] for n in ordered], dtype=np.float64),
        velocities=np.array([n[3] for n in ordered], dtype=np.int64),
        bar_onsets=None if bars is None else np.array([bars[i][0] for i in kept], np.float64),
        bar_lengths=None if bars is None else np.array([bars[i][1] for i in kept], np.float64),
    )


def melody_part(score):
    """The part that holds the melody: of several instruments' parts, the one named melody,
    else the top one; None for one instrument (one part, or a piano's staves), whose
    melody is the skyline of all its notes."""
    parts = list(getattr(score, "parts", []))
    if len(parts) < 2:
        return None
    from music21 import stream

    names = {(p.partName or "").strip().lower() for p in parts}
    if all(isinstance(p, stream.PartStaff) for p in parts) or (len(names) == 1 and "" not in names):
        return None
    for p in parts:
        if "melody" in (p.partName or "").lower():
            return p
    return parts[0]


def melody_from_score(score, name: str, bars: bool = True) -> Melody:
    """Melody of a music21 score (its melody part, see ``melody_part``; else all of it):
    tied notes merged, grace notes and chord symbols dropped. Each note's bar (``bar_onsets``,
    ``bar_lengths``) is read from the measures it lies in (``note_bars``); ``bars`` False, or
    a note outside any measure: unknown.

    Repeat signs are not expanded: each section is read once, as written.
    """
    from music21 import harmony

    score = melody_part(score) or score
    stripped = score.stripTies(inPlace=False) if hasattr(score, "stripTies") else score
    where = note_bars(stripped) if bars else {}
    flat = stripped.flatten() if hasattr(stripped, "flatten") else stripped
    notes: list[tuple[int, float, float, int]] = []
    in_bar: list[tuple[float, float]] = []
    for el in flat.notes:
        if isinstance(el, harmony.Harmony) or el.duration.isGrace:
            continue
        pitches = [p.midi for p in el.pitches]
        if not pitches:
            continue
        vel = el.volume.velocity if el.volume.velocity is not None else 80
        onset = float(el.offset)
        notes.append((max(pitches), onset, float(el.quarterLength), int(vel)))
        start, length = where.get(id(el), (np.nan, np.nan))
        in_bar.append((onset - start, length))
    return melody_from_notes(name, notes, in_bar)


def note_bars(score) -> dict[int, tuple[float, float]]:
    """For each note (by ``id``) in a measure of ``score``: (where its bar starts, in
    quarters from the score's start; the bar's nominal length from its time signature).

    A measure shorter than its time signature's bar is a pickup when it is its part's first,
    or when the measure before it was short too (a bar split by a section's end, the second
    strain's pickup after it): a pickup is right-aligned, its bar starting that much before
    the measure so that its notes sit at the end of a bar. Other measures count from their
    start. A measure with no time signature in force has no bar."""
    from music21 import meter as m21meter
    from music21 import stream

    parts = list(getattr(score, "parts", [])) or [score]
    out: dict[int, tuple[float, float]] = {}
    for part in parts:
        ts = None
        after_short = True  # a part's first measure may be a pickup
        for measure in part.recurse().getElementsByClass(stream.Measure):
            ts = measure.timeSignature or ts
            if ts is None:
                ts = measure.getContextByClass(m21meter.TimeSignature)
            if ts is None:
                continue
            length = float(ts.barDuration.quarterLength)
            start = float(measure.getOffsetInHierarchy(score))
            missing = float(measure.paddingLeft) or max(0.0, length - float(measure.highestTime))
            short = 0 < missing < length
            if short and after_short:
                start -= missing
            after_short = short and not after_short
            for el in measure.recurse().notes:
                out[id(el)] = (start, length)
    return out


def read_melodies(path: str | Path) -> list[Melody]:
    """All melodies in one file: one per tune (an ABC or MusicXML opus holds many)."""
    from music21 import converter, stream

    path = Path(path)
    midi = path.suffix.lower() in (".mid", ".midi")
    kw = {"quantizePost": False} if midi else {}
    parsed = converter.parse(str(path), **kw)
    if isinstance(parsed, stream.Opus):
        scores = list(parsed.scores)
    else:
        scores = [parsed]
    out = []
    for i, sc in enumerate(scores):
        label = path.name if len(scores) == 1 else f"{path.name}#{i + 1}"
        title = getattr(getattr(sc, "metadata", None), "title", None)
        if title:
            label += f" ({title})"
        m = melody_from_score(sc, label, bars=not midi or _midi_has_meter(path))
        if len(m) >= 2:
            out.append(m)
    return out


#: A MIDI file's time-signature meta event: FF 58, length 4.
TIME_SIGNATURE_EVENT = b"\xff\x58\x04"


def _midi_has_meter(path: Path) -> bool:
    """Whether a MIDI file states a time signature (music21 assumes 4/4 where none is): a
    time-signature meta event among its bytes."""
    try:
        return TIME_SIGNATURE_EVENT in Path(path).read_bytes()
    except OSError:
        return False
