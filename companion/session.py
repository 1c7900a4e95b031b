"""Session capture: what the performer played and what the companion answered, saved as a
two-track MIDI file when the live companion stops (signals included), so a good jam is
never lost.
"""

from __future__ import annotations

import time
from pathlib import Path

import mido

from companion.midifile import write_tracks


class SessionRecorder:
    """Collects channel messages with their clock times; thread-safe by list.append alone."""

    def __init__(self, start: float, tempo_bpm: float):
        self.start = start
        self.tempo_bpm = tempo_bpm
        self.started_at = time.localtime()
        self.performer: list[tuple[float, mido.Message]] = []
        self.companion: list[tuple[float, mido.Message]] = []

    def heard(self, t: float, msg: mido.Message) -> None:
        if hasattr(msg, "channel"):  # not clock ticks, sysex and the like
            self.performer.append((t, msg))

    def played(self, t: float, msg: mido.Message) -> None:
        self.companion.append((t, msg))

    def has_notes(self) -> bool:
        return any(m.type == "note_on" for _, m in self.performer + self.companion)

    def save(self, folder: str | Path) -> Path | None:
        """Write ``session-YYYYMMDD-HHMMSS.mid`` in ``folder``; None if no note was played."""
        if not self.has_notes():
            return None
        folder = Path(folder)
        stem = time.strftime("session-%Y%m%d-%H%M%S", self.started_at)
        path = folder / f"{stem}.mid"
        n = 2
        while path.exists():
            path = folder / f"{stem}-{n}.mid"
            n += 1
        beat = 60.0 / self.tempo_bpm

        def beats(events: list[tuple[float, mido.Message]]) -> list[tuple[float, mido.Message]]:
            return [((t - self.start) / beat, m) for t, m in events]

        write_tracks(
            path,
            [("performer", beats(self.performer)), ("companion", beats(self.companion))],
            self.tempo_bpm,
        )
        return path
