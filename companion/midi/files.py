"""Writing multi-track MIDI files (respond's call + answer, the live session capture).

Tracks are encoded straight from each message's bytes (delta times, running status, as
mido writes them), by ``TrackWriter`` as the messages come: the live session keeps its
tracks encoded, some 4 bytes a message, and its autosave writes them out without making
an object per message (a mido object per message, every few seconds, on the thread beside
the live one, cost ten times the memory and left the allocator's arenas fragmented).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import mido

from companion.encoding.curves import write_atomic

TICKS_PER_BEAT = 480

#: A track: its name and its messages at absolute times in beats.
Track = tuple[str, Sequence[tuple[float, mido.Message]]]
#: The same with each message as its bytes (a channel message, status byte first).
RawTrack = tuple[str, Iterable[tuple[float, bytes]]]


def _varlen(n: int) -> bytes:
    out = [n & 0x7F]
    n >>= 7
    while n:
        out.append(0x80 | (n & 0x7F))
        n >>= 7
    return bytes(reversed(out))


def _meta(kind: int, data: bytes) -> bytes:
    return b"\x00\xff" + bytes([kind]) + _varlen(len(data)) + data


def ticks(beats: float) -> int:
    return round(max(0.0, beats) * TICKS_PER_BEAT)


class TrackWriter:
    """One track's channel messages, encoded as they are added, in time order (a message
    earlier than the one before it is put at that one's time)."""

    def __init__(self, name: str):
        self.name = name
        self.body = bytearray()
        self.tick = 0
        self.count = 0
        self._running: int | None = None  # running status: a repeated status byte is left out

    def add(self, tick: int, b: bytes) -> None:
        if not b or not 0x80 <= b[0] < 0xF0:
            raise ValueError(f"track {self.name!r}: not a channel message: {b[:4].hex(' ')}")
        tick = max(tick, self.tick)
        self.body += _varlen(tick - self.tick)
        self.body += b[1:] if b[0] == self._running else b
        self._running = b[0]
        self.tick = tick
        self.count += 1

    def chunk(self, tempo_bpm: float | None = None, body: bytes | None = None) -> bytes:
        """The ``MTrk`` chunk: the name (and tempo), the messages (``body``, a copy taken
        earlier, or the current one), the end."""
        head = _meta(0x03, self.name.encode("latin-1", "replace"))
        if tempo_bpm is not None:
            head += _meta(0x51, mido.bpm2tempo(tempo_bpm).to_bytes(3, "big"))
        data = head + (self.body if body is None else body) + _meta(0x2F, b"")
        return b"MTrk" + len(data).to_bytes(4, "big") + data


def write_chunks(path: str | Path, chunks: Sequence[bytes]) -> None:
    """A type-1 file of these track chunks; written atomically."""
    head = (b"MThd" + (6).to_bytes(4, "big") + (1).to_bytes(2, "big")
            + len(chunks).to_bytes(2, "big") + TICKS_PER_BEAT.to_bytes(2, "big"))
    write_atomic(Path(path), head + b"".join(chunks))
    os.chmod(path, 0o644)  # a file for the user, not the private temp file's 0600


def _is_off(b: bytes) -> bool:
    kind = b[0] & 0xF0
    return kind == 0x80 or (kind == 0x90 and len(b) > 2 and b[2] == 0)


def write_raw_tracks(path: str | Path, tracks: Sequence[RawTrack], tempo_bpm: float) -> None:
    """A type-1 file, the tempo in the first track, each track in time order (at one tick a
    note-off before a note-on, so that a repeated pitch re-strikes); written atomically."""
    chunks = []
    for i, (name, events) in enumerate(tracks):
        w = TrackWriter(name)
        for tick, _, _, b in sorted((ticks(t), not _is_off(b), j, b)
                                    for j, (t, b) in enumerate(events)):
            w.add(tick, b)
        chunks.append(w.chunk(tempo_bpm if i == 0 else None))
    write_chunks(path, chunks)


def write_tracks(path: str | Path, tracks: Sequence[Track], tempo_bpm: float) -> None:
    """``write_raw_tracks`` for mido messages."""
    write_raw_tracks(path, [(name, [(t, bytes(m.bin())) for t, m in events])
                            for name, events in tracks], tempo_bpm)
