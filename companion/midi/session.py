"""Session capture: what the performer played and what the companion answered, saved as a
two-track MIDI file when the live companion stops (signals included), and rewritten
atomically every few seconds while it runs (``Autosave``), so that even a killed process
loses at most the last few seconds of a good jam.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import mido

from companion.midi.files import TrackWriter, ticks, write_chunks


class Events:
    """One track of the session, kept encoded as the messages come (``TrackWriter``)."""

    def __init__(self, name: str, start: float, beat_s: float):
        self.start = start
        self.beat_s = beat_s
        self._writer = TrackWriter(name)
        self._lock = threading.Lock()  # a live thread appends while the autosave reads
        self.notes = False

    def append(self, t: float, b: bytes) -> None:
        with self._lock:
            self._writer.add(ticks((t - self.start) / self.beat_s), b)
            if b[0] & 0xF0 == 0x90:
                self.notes = True

    def __len__(self) -> int:
        return self._writer.count

    def chunk(self, tempo_bpm: float | None = None) -> bytes:
        with self._lock:
            body = bytes(self._writer.body)
        return self._writer.chunk(tempo_bpm, body)


class SessionRecorder:
    """The performer's and the companion's channel messages, each track encoded as it is
    played (some 4 bytes a message, in the order they came): a long session, or a flood of
    input, stays small, and saving it makes no object per message."""

    def __init__(self, start: float, tempo_bpm: float):
        self.start = start
        self.tempo_bpm = tempo_bpm
        self.started_at = time.localtime()
        beat = 60.0 / tempo_bpm
        self.performer = Events("performer", start, beat)
        self.companion = Events("companion", start, beat)
        #: The file, chosen at the first flush and rewritten by every later one.
        self.path: Path | None = None

    def heard(self, t: float, msg: mido.Message) -> None:
        if hasattr(msg, "channel"):  # not clock ticks, sysex and the like
            self.performer.append(t, bytes(msg.bin()))

    def played(self, t: float, msg: mido.Message) -> None:
        self.companion.append(t, bytes(msg.bin()))

    def size(self) -> int:
        """Messages recorded so far (an autosave writes only when this changed)."""
        return len(self.performer) + len(self.companion)

    def has_notes(self) -> bool:
        return self.performer.notes or self.companion.notes

    def save(self, folder: str | Path) -> Path | None:
        """Write ``session-YYYYMMDD-HHMMSS.mid`` in ``folder``, a new file (never one that
        exists); None if no note was played."""
        if not self.has_notes():
            return None
        path = self._new_path(Path(folder))
        self._write(path)
        return path

    def flush(self, folder: str | Path) -> Path | None:
        """Like ``save``, but every flush after the first rewrites the same file (atomically:
        a reader or a crash sees the previous flush or this one, never half)."""
        if not self.has_notes():
            return None
        path = self.path or self._new_path(Path(folder))
        self._write(path)
        self.path = path
        return path

    def _new_path(self, folder: Path) -> Path:
        stem = time.strftime("session-%Y%m%d-%H%M%S", self.started_at)
        path = folder / f"{stem}.mid"
        n = 2
        while path.exists():
            path = folder / f"{stem}-{n}.mid"
            n += 1
        return path

    def _write(self, path: Path) -> None:
        write_chunks(path, [self.performer.chunk(self.tempo_bpm), self.companion.chunk()])


class Autosave:
    """Rewrites the session file every ``every_s`` seconds when something new was recorded,
    from a thread of its own: the engine and scheduler threads never wait for the disk."""

    def __init__(self, recorder: SessionRecorder, folder: str | Path, every_s: float,
                 log: Callable[[str], None]):
        self.recorder = recorder
        self.folder = folder
        self.every_s = every_s
        self.log = log
        self._saved = 0
        self._failed = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="companion-autosave", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            self.save_if_changed()

    def save_if_changed(self) -> None:
        n = self.recorder.size()
        if n == self._saved:
            return
        try:
            self.recorder.flush(self.folder)
        except OSError as e:  # a full or read-only disk: say so once, keep playing
            if not self._failed:
                self._failed = True
                self.log(f"could not save the session in {self.folder} ({e.strerror or e})")
            return
        self._saved = n

    def stop(self) -> None:
        """End the thread (the caller writes the final save)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10.0)
