"""Metrical position: where a note's onset falls in the beat and the bar, as one id.

The model's second input (package format 2). An onset's position is its phase within the
quarter note, on a grid of ``PHASES`` (sixteenths and triplets land exactly), and the
quarter of the bar it falls in, counted from the bar's first beat; ``UNKNOWN_BAR`` stands
for that quarter where the bar is not known (no meter, or hidden in training so that the
model serves calls of unknown meter). Quarters past ``BAR_QUARTERS - 1`` (bars longer than
8 quarters) count as the last one.

Training reads bars from the score's barlines and time signatures (onsets in quarter notes
from the bar's start); live, the beat grid (a clock's, Link's, or the call's own) gives the
phase, and the bar is known from Link's quantum, a MIDI clock's count, or ``time.meter``.
An onset within float noise of the curves' time grid (1/24 beat) is put on it, then on
the phases, half a phase to the even one: an answer's onsets, sums of its curves' times,
give the positions their exact values give. The first step of a sequence (``bos``) takes
the position of the melody's first note; each curve's step takes the position of the note
the curve arrives at.
"""

from __future__ import annotations

import math

import numpy as np

from companion.encoding.curves import TIME_GRID

#: Positions within one quarter note.
PHASES = 12
#: Quarters of the bar that are told apart; the next index means "bar unknown".
BAR_QUARTERS = 8
UNKNOWN_BAR = BAR_QUARTERS
#: How many position ids there are: the size of the model's position input.
SIZE = (BAR_QUARTERS + 1) * PHASES
#: How near (in 1/24 beats) an onset is to the curves' time grid to be taken as on it.
GRID_NOISE = 1e-6
#: The package format whose step model takes a position (format 1: token, h, c only).
FORMAT = 2


def position(beats: float, bar_beats: float | None = None) -> int:
    """The id of an onset ``beats`` quarter notes after a beat of the grid, or, where
    ``bar_beats`` (the bar's length in quarters) is given, after the bar's first beat."""
    if not math.isfinite(beats):
        raise ValueError(f"position: onset {beats!r} is not a number")
    on_grid = round(beats * TIME_GRID)
    if abs(beats * TIME_GRID - on_grid) < GRID_NOISE:
        beats = on_grid / TIME_GRID
    steps = round(beats * PHASES)
    if bar_beats is None or not bar_beats > 0:
        return UNKNOWN_BAR * PHASES + steps % PHASES
    steps %= max(1, round(bar_beats * PHASES))
    quarter, phase = divmod(steps, PHASES)
    return min(quarter, BAR_QUARTERS - 1) * PHASES + phase


def positions(beats: np.ndarray, bar_beats: np.ndarray | float | None = None) -> np.ndarray:
    """``position`` of each onset (int64); ``bar_beats`` one length, one per onset (NaN or
    <= 0 for unknown), or None for all unknown."""
    beats = np.asarray(beats, dtype=np.float64)
    on_grid = np.round(beats * TIME_GRID)
    beats = np.where(np.abs(beats * TIME_GRID - on_grid) < GRID_NOISE, on_grid / TIME_GRID, beats)
    steps = np.round(beats * PHASES).astype(np.int64)
    unknown = UNKNOWN_BAR * PHASES + steps % PHASES
    if bar_beats is None:
        return unknown
    bar = np.broadcast_to(np.asarray(bar_beats, dtype=np.float64), beats.shape)
    known = np.isfinite(bar) & (bar > 0)
    bar_steps = np.maximum(1, np.round(np.where(known, bar, 1.0) * PHASES).astype(np.int64))
    quarter, phase = np.divmod(steps % bar_steps, PHASES)
    return np.where(known, np.minimum(quarter, BAR_QUARTERS - 1) * PHASES + phase, unknown)


def hide_bar(ids: np.ndarray | int) -> np.ndarray | int:
    """The same positions with the bar unknown (the phase kept)."""
    return UNKNOWN_BAR * PHASES + np.asarray(ids) % PHASES if not isinstance(ids, int) \
        else UNKNOWN_BAR * PHASES + ids % PHASES


def on_downbeat(pos: int) -> bool:
    """Whether ``pos`` is the bar's first beat (known bar, phase 0)."""
    return pos == 0
