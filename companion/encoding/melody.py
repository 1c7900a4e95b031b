"""Melodies out of music files, read with music21 (training corpora and offline calls).

music21 is imported inside the functions: the live path never pays for it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from companion.encoding.skyline import melody_indexes

#: Bump when extraction changes: it is part of the corpus cache key.
EXTRACTOR_VERSION = 4
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
    """One melody line: parallel arrays, onsets and durations in quarter notes."""

    name: str
    pitches: np.ndarray  # int
    onsets: np.ndarray  # float, increasing
    durations: np.ndarray  # float
    velocities: np.ndarray  # int

    def __len__(self) -> int:
        return len(self.pitches)


def melody_from_notes(name: str, notes: list[tuple[int, float, float, int]]) -> Melody:
    """The melody of written notes (pitch, onset, duration, velocity; quarter notes) by the
    live skyline rule on the written timing: a chord gives its top note, a note under a
    higher note still held is accompaniment. A single line is kept whole."""
    def q(x: float) -> float:  # times equal up to float noise (triplets) are one time
        return round(x / SCORE_WINDOW_Q) * SCORE_WINDOW_Q

    written = [(n[0], q(n[1]), q(n[1] + n[2]), 0) for n in notes]
    ordered = [notes[i] for i in melody_indexes(written, window=SCORE_WINDOW_Q, overlap=0.0,
                                                pedal_tone=SCORE_PEDAL_TONE_Q, rest=0.0)]
    return Melody(
        name=name,
        pitches=np.array([n[0] for n in ordered], dtype=np.int64),
        onsets=np.array([n[1] for n in ordered], dtype=np.float64),
        durations=np.array([n[2] for n in ordered], dtype=np.float64),
        velocities=np.array([n[3] for n in ordered], dtype=np.int64),
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


def melody_from_score(score, name: str) -> Melody:
    """Melody of a music21 score (its melody part, see ``melody_part``; else all of it):
    tied notes merged, grace notes and chord symbols dropped.

    Repeat signs are not expanded: each section is read once, as written.
    """
    from music21 import harmony

    score = melody_part(score) or score
    flat = score.stripTies(inPlace=False).flatten() if hasattr(score, "stripTies") else score
    notes: list[tuple[int, float, float, int]] = []
    for el in flat.notes:
        if isinstance(el, harmony.Harmony) or el.duration.isGrace:
            continue
        pitches = [p.midi for p in el.pitches]
        if not pitches:
            continue
        vel = el.volume.velocity if el.volume.velocity is not None else 80
        notes.append((max(pitches), float(el.offset), float(el.quarterLength), int(vel)))
    return melody_from_notes(name, notes)


def read_melodies(path: str | Path) -> list[Melody]:
    """All melodies in one file: one per tune (an ABC or MusicXML opus holds many)."""
    from music21 import converter, stream

    path = Path(path)
    kw = {"quantizePost": False} if path.suffix.lower() in (".mid", ".midi") else {}
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
        m = melody_from_score(sc, label)
        if len(m) >= 2:
            out.append(m)
    return out
