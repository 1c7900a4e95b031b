"""The melody-curve encoding: the one implementation shared by training and the live companion.

A melody is a sequence of notes (pitch, onset in quarter notes). Its curves are the
pairs ``(pitch_diff, time_diff)`` between consecutive notes: semitones and quarter notes
between onsets. Curves are transposition-invariant and tempo-relative, so the same
vocabulary serves any key and any tempo.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

#: The package formats a vocab.json may name: 1 (a step takes a token), 2 (a token and its
#: metrical position, companion.encoding.meter); the companion loads both.
VOCAB_FORMATS = (1, 2)

#: Time differences are snapped to 1/24 of a quarter note: this holds 32nd notes,
#: eighth and sixteenth triplets exactly, and merges the near-duplicate triplet
#: values that MIDI files read on a 1/1024 grid produce (0.3330 vs 0.3340).
TIME_GRID = 24

#: The nearest-curve distance: one semitone weighs as much as a factor 2**4 in time.
#: Pitch is what the performer chose; timing is human and drifts by tens of percent,
#: so a played curve keeps its interval and takes the closest duration ratio.
PITCH_WEIGHT = 4.0
TIME_WEIGHT = 1.0

#: Shortest time difference considered (a 1/48 quarter note); zero would have no log.
MIN_TIME = 1.0 / (2 * TIME_GRID)


def snap_time(t: float | np.ndarray) -> float | np.ndarray:
    """Snap quarter-note times to the 1/TIME_GRID grid."""
    return np.round(np.asarray(t, dtype=np.float64) * TIME_GRID) / TIME_GRID


def curves_from_notes(pitches: Sequence[int], onsets: Sequence[float]) -> np.ndarray:
    """Curves between consecutive notes, shape ``[n-1, 2]`` (pitch_diff, time_diff).

    Onsets are snapped to the grid first (absolute, so rounding never accumulates).
    """
    p = np.asarray(pitches, dtype=np.float64)
    t = snap_time(np.asarray(onsets, dtype=np.float64))
    if len(p) != len(t):
        raise ValueError(f"{len(p)} pitches but {len(t)} onsets")
    if len(p) < 2:
        return np.zeros((0, 2), dtype=np.float64)
    # the difference of two grid points is re-snapped to drop float noise (4/3 - 1 != 1/3)
    return np.stack([np.diff(p), snap_time(np.diff(t))], axis=1)


def curve(prev_pitch: int, prev_onset: float, pitch: int, onset: float) -> tuple[int, float]:
    """One curve between two notes: the live listener's per-note form of curves_from_notes."""
    dt = float(snap_time(snap_time(onset) - snap_time(prev_onset)))
    return int(pitch) - int(prev_pitch), dt


@dataclass
class Vocabulary:
    """Curves of the training songs, plus special tokens after them (docs/interface.md)."""

    curves: np.ndarray  # [N, 2] float64: pitch_diff, time_diff
    specials: dict[str, int] = field(default_factory=dict)
    format: int = 1  # the package format (VOCAB_FORMATS) vocab.json says

    def __post_init__(self) -> None:
        self.curves = np.asarray(self.curves, dtype=np.float64).reshape(-1, 2)
        if not self.specials:
            self.specials = {"bos": len(self.curves)}
        self._pitch = self.curves[:, 0].copy()
        self._logt = np.log2(np.maximum(self.curves[:, 1], MIN_TIME))
        self._index = {(int(p), float(t)): i for i, (p, t) in enumerate(self.curves)}

    @property
    def size(self) -> int:
        """V: the model's output width."""
        return len(self.curves) + len(self.specials)

    @property
    def bos(self) -> int:
        return self.specials["bos"]

    @classmethod
    def build(cls, songs: Iterable[np.ndarray], min_count: int = 1) -> Vocabulary:
        """The unique curves of ``songs`` (each ``[n, 2]``), sorted by pitch then time."""
        counts: Counter[tuple[int, float]] = Counter()
        for c in songs:
            counts.update((int(p), float(t)) for p, t in snap_curves(c))
        kept = sorted(k for k, n in counts.items() if n >= min_count)
        if not kept:
            raise ValueError("no curves to build a vocabulary from: the corpus has no melodies")
        return cls(np.array(kept, dtype=np.float64))

    def nearest(self, curves: np.ndarray) -> np.ndarray:
        """Token of each curve ``[n, 2]``: itself when known, else the nearest by

        ``PITCH_WEIGHT * |semitones apart| + TIME_WEIGHT * |log2(time ratio)|``.
        """
        c = snap_curves(curves)
        if len(c) == 0:
            return np.zeros(0, dtype=np.int64)
        dp = np.abs(c[:, 0:1] - self._pitch[None, :])
        dt = np.abs(np.log2(np.maximum(c[:, 1:2], MIN_TIME)) - self._logt[None, :])
        return np.argmin(PITCH_WEIGHT * dp + TIME_WEIGHT * dt, axis=1).astype(np.int64)

    def token(self, pitch_diff: int, time_diff: float) -> int:
        """One curve's token: a dict hit for known curves, the vectorised search otherwise."""
        t = float(snap_time(time_diff))
        hit = self._index.get((int(pitch_diff), t))
        if hit is not None:
            return hit
        return int(self.nearest(np.array([[pitch_diff, t]]))[0])

    def encode(self, curves: np.ndarray, bos: bool = True) -> np.ndarray:
        """A song's token sequence, ``bos`` first."""
        toks = self.nearest(curves)
        return np.concatenate([[self.bos], toks]).astype(np.int64) if bos else toks

    def to_json(self) -> dict:
        return {
            "format": self.format,
            "time_unit": "quarter",
            "curves": [[int(p), float(t)] for p, t in self.curves],
            "specials": dict(self.specials),
        }

    @classmethod
    def from_json(cls, data: dict, source: str = "vocab.json") -> Vocabulary:
        if not isinstance(data, dict) or data.get("format") not in VOCAB_FORMATS:
            raise ValueError(f"{source}: expected an object with \"format\" one of "
                             f"{', '.join(map(str, VOCAB_FORMATS))}")
        if data.get("time_unit") != "quarter":
            raise ValueError(f"{source}: expected \"time_unit\": \"quarter\"")
        curves = data.get("curves")
        specials = data.get("specials")
        if not isinstance(curves, list) or not curves or not all(
            isinstance(c, list) and len(c) == 2 for c in curves
        ):
            raise ValueError(
                f"{source}: \"curves\" must be a non-empty list of [pitch_diff, time_diff]"
            )
        if not isinstance(specials, dict) or "bos" not in specials:
            raise ValueError(f"{source}: \"specials\" must be an object with at least \"bos\"")
        n = len(curves)
        if sorted(specials.values()) != list(range(n, n + len(specials))):
            raise ValueError(f"{source}: special tokens must have the indexes after the curves")
        return cls(np.array(curves, dtype=np.float64), {k: int(v) for k, v in specials.items()},
                   int(data["format"]))

    @classmethod
    def load(cls, path: str | Path) -> Vocabulary:
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise ValueError(f"{path}: cannot read vocabulary ({e})") from e
        return cls.from_json(data, str(path))

    def save(self, path: str | Path) -> None:
        write_atomic(Path(path), json.dumps(self.to_json(), indent=1).encode())


def snap_curves(curves: np.ndarray) -> np.ndarray:
    c = np.asarray(curves, dtype=np.float64).reshape(-1, 2).copy()
    c[:, 0] = np.round(c[:, 0])
    c[:, 1] = snap_time(c[:, 1])
    return c


def write_atomic(path: Path, data: bytes) -> None:
    """Write a file so that readers see the old or the new content, never half of it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    umask = os.umask(0)
    os.umask(umask)
    try:
        os.fchmod(fd, 0o666 & ~umask)  # mkstemp's 0600 would hide shipped files from others
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise

