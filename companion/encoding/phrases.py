"""Call phrases as notes in beats: the demo's built-in calls, and calls read from files."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import mido

if TYPE_CHECKING:
    from companion.encoding.melody import Melody

CALLS_DIR = Path(__file__).resolve().parents[1] / "calls"


class CallError(ValueError):
    """A call file that cannot be read or played (exit 2)."""


@dataclass
class PhraseNote:
    pitch: int
    start: float  # beats
    duration: float  # beats
    velocity: int


@dataclass
class Phrase:
    name: str
    notes: list[PhraseNote]

    def messages(self, channel: int = 0) -> list[tuple[float, mido.Message]]:
        """Note-on / note-off messages at their beats; at one time note-offs first.

        A note lasts at least 1/48 beat, so that its note-off never precedes its note-on.
        """
        events = []
        for n in self.notes:
            on = mido.Message("note_on", channel=channel, note=n.pitch, velocity=n.velocity)
            off = mido.Message("note_off", channel=channel, note=n.pitch, velocity=0)
            events.append((n.start, 1, on))
            events.append((n.start + max(n.duration, 1 / 48), 0, off))
        events.sort(key=lambda e: (e[0], e[1]))
        return [(t, m) for t, _, m in events]


def read_json(path: str | Path) -> Phrase:
    """``{"name": ..., "notes": [[pitch, start_beats, duration_beats, velocity], ...]}``."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
        notes = [
            PhraseNote(int(p), float(s), float(d), int(v)) for p, s, d, v in data["notes"]
        ]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise CallError(
            f"{path}: expected {{\"name\", \"notes\": [[pitch, start_beats, duration_beats, "
            f"velocity], ...]}} ({e})"
        ) from e
    for n in notes:
        if not (0 <= n.pitch <= 127 and 1 <= n.velocity <= 127 and n.start >= 0
                and n.duration > 0):
            raise CallError(f"{path}: note {n} is out of range")
    if not notes:
        raise CallError(f"{path}: no notes")
    return Phrase(str(data.get("name", path.stem)), sorted(notes, key=lambda n: n.start))


def builtin() -> list[Phrase]:
    """The demo's calls, in file name order."""
    return [read_json(p) for p in sorted(CALLS_DIR.glob("*.json"))]


def read_melody(path: str | Path) -> Melody:
    """The first melody of a file music21 reads (MIDI, ABC, MusicXML...); CallError naming
    the file otherwise."""
    from companion.encoding.melody import read_melodies

    path = Path(path)
    if not path.is_file():
        raise CallError(f"{path}: no such file")
    try:
        melodies = read_melodies(path)
    except Exception as e:  # noqa: BLE001 - music21 raises many kinds
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise CallError(f"{path}: cannot read a melody from it ({first[:160]})") from e
    if not melodies:
        raise CallError(f"{path}: no melody of two notes or more in it")
    return melodies[0]


def read_call(path: str | Path) -> Phrase:
    """A call from a file: our JSON, or anything music21 reads (its first tune)."""
    path = Path(path)
    if path.is_file() and path.suffix.lower() == ".json":
        return read_json(path)
    m = read_melody(path)
    notes = [
        PhraseNote(int(p), float(s), float(d), int(v))
        for p, s, d, v in zip(m.pitches, m.onsets, m.durations, m.velocities, strict=True)
    ]
    return Phrase(m.name, notes)
