"""Writing multi-track MIDI files (respond's call + answer, the live session capture)."""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from pathlib import Path

import mido

from companion.curves import write_atomic

TICKS_PER_BEAT = 480

#: A track: its name and its messages at absolute times in beats.
Track = tuple[str, Sequence[tuple[float, mido.Message]]]


def _order(item: tuple[float, mido.Message]) -> tuple[float, int]:
    """Time order; at one tick a note-off before a note-on, so a repeated pitch re-strikes."""
    t, msg = item
    off = msg.type == "note_off" or (msg.type == "note_on" and msg.velocity == 0)
    return (t, 0 if off else 1)


def write_tracks(path: str | Path, tracks: Sequence[Track], tempo_bpm: float) -> None:
    """A type-1 file, the tempo in the first track; written atomically."""
    mf = mido.MidiFile(type=1, ticks_per_beat=TICKS_PER_BEAT)
    for i, (name, events) in enumerate(tracks):
        track = mido.MidiTrack()
        track.append(mido.MetaMessage("track_name", name=name, time=0))
        if i == 0:
            track.append(mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(tempo_bpm), time=0))
        now = 0
        for t, msg in sorted(events, key=_order):
            tick = max(now, round(max(0.0, t) * TICKS_PER_BEAT))
            track.append(msg.copy(time=tick - now))
            now = tick
        track.append(mido.MetaMessage("end_of_track", time=0))
        mf.tracks.append(track)
    buf = io.BytesIO()
    mf.save(file=buf)
    write_atomic(Path(path), buf.getvalue())
    os.chmod(path, 0o644)  # a file for the user, not the private temp file's 0600
