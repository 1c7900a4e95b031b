"""Melodies out of music files, read with music21 (training corpora and offline calls).

music21 is imported inside the functions: the live path never pays for it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

#: Bump when extraction changes: it is part of the corpus cache key.
EXTRACTOR_VERSION = 3

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
    """The top note of each onset: chords and simultaneous voices reduce to their highest pitch."""
    top: dict[float, tuple[int, float, float, int]] = {}
    for n in notes:
        key = round(n[1] * 1024) / 1024  # onsets equal up to float noise are one onset
        if key not in top or n[0] > top[key][0]:
            top[key] = n
    ordered = [top[k] for k in sorted(top)]
    return Melody(
        name=name,
        pitches=np.array([n[0] for n in ordered], dtype=np.int64),
        onsets=np.array([n[1] for n in ordered], dtype=np.float64),
        durations=np.array([n[2] for n in ordered], dtype=np.float64),
        velocities=np.array([n[3] for n in ordered], dtype=np.int64),
    )


def melody_from_score(score, name: str) -> Melody:
    """Melody of a music21 score: tied notes merged, grace notes and chord symbols dropped.

    Repeat signs are not expanded: each section is read once, as written.
    """
    from music21 import harmony

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
