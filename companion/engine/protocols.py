"""What the engine asks of the world outside it: a clock to read, a player to hand its timed
notes to, and the timed note itself. companion.realtime implements them (RealClock,
VirtualClock, Scheduler, VirtualScheduler); the engine imports nothing from there.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(slots=True)
class TimedNote:
    pitch: int
    start: float  # seconds on the clock
    duration: float  # seconds
    velocity: int
    channel: int | None = None  # 0..15; None: the player's own channel (the answers')

    @property
    def end(self) -> float:
        return self.start + self.duration


#: The "answer" id the accompaniment's notes are played under (answers count from 1): a new
#: answer (``Player.begin``) never stops it; ``Player.cancel(ACCOMPANIMENT)`` does.
ACCOMPANIMENT = 0


class Cancel(Protocol):
    """A flag a wait stops early on (threading.Event, realtime.clock.StopFlag)."""

    def is_set(self) -> bool: ...
    def wait(self, timeout: float | None = None) -> bool: ...


class Clock(Protocol):
    def now(self) -> float: ...

    def wait_until(self, deadline: float, cancel: Cancel | None = None) -> bool:
        """Return at ``deadline`` (True), or early when ``cancel`` is set (False)."""
        ...


class Player(Protocol):
    """What the engine asks of playback, whichever clock drives it: answers are numbered,
    and their notes handed over one by one as they are sampled."""

    def begin(self, answer: int) -> None:
        """A new answer starts: what is left of earlier ones stops (not the accompaniment)."""
        ...

    def add(self, answer: int, note: TimedNote) -> None: ...

    def shift(self, after: float, dt: float) -> None:
        """What is still to play after ``after`` moves by ``dt`` seconds."""
        ...

    def started(self, answer: int) -> int:
        """How many notes of ``answer`` have begun to sound."""
        ...

    def busy(self, answer: int) -> bool:
        """``answer`` still has notes to start or to end."""
        ...

    def cancel(self, answer: int | None = None) -> int:
        """Stop ``answer`` (or everything) now; the notes it had begun."""
        ...
