"""What every part of the bench shares: how often to repeat, where figures go, percentiles."""

from __future__ import annotations

import sys
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np


@dataclass
class Plan:
    """Repetitions of each measurement: the full bench, or ``--quick`` for tests."""

    rounds: int = 20  # interleaved step rounds
    onnx_per_round: int = 500
    tf_per_round: int = 100
    keras_per_round: int = 10
    idle_steps: int = 40  # steps each after 50 ms idle: the cache-cold cost
    answers: int = 200  # calls of 4 notes, each answered: the listen figure's notes too
    trades: int = 20  # one-bar calls answered on the bar line (turn_ahead_ms)
    scheduled_notes: int = 2000
    cold_starts: int = 3
    jack_notes: int = 500
    train_files: int = 100
    train_batches: int = 20

    @classmethod
    def quick(cls) -> Plan:
        return cls(rounds=2, onnx_per_round=50, tf_per_round=5, keras_per_round=2, idle_steps=3,
                   answers=10, trades=3, scheduled_notes=100, cold_starts=1,
                   jack_notes=20, train_files=6, train_batches=2)


@dataclass
class Result:
    """The figures, and per figure a note: repetitions, or why it is null."""

    figures: dict[str, object] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)

    def set(self, key: str, value: object, note: str) -> None:
        self.figures[key] = value
        self.notes[key] = note


def stats(samples: Iterable[float] | np.ndarray, keys: tuple[str, ...] = ("p50", "p99"),
          digits: int = 3) -> dict[str, float]:
    """Percentiles (and ``max``, ``min``) of ``samples``, rounded for a readable JSON."""
    a = np.asarray(samples, dtype=np.float64)
    out = {}
    for k in keys:
        v = (float(a.max()) if k == "max" else float(a.min()) if k == "min"
             else float(np.percentile(a, float(k[1:]))))
        out[k] = round(v, digits)
    return out


def log(msg: str, quiet: bool) -> None:
    """A progress line on stderr, unless ``quiet`` (``--json``)."""
    if not quiet:
        print(msg, file=sys.stderr, flush=True)


def next_pitch(pitch: int, rng: np.random.Generator) -> int:
    """A random walk that never repeats a pitch (a repeated key would release the held one)."""
    step = int(rng.integers(1, 6)) * (1 if rng.random() < 0.5 else -1)
    nxt = pitch + step
    return nxt if 48 <= nxt <= 84 else pitch - step
