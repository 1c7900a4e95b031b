"""Feedback loops: the companion's own notes coming back on its input.

A DAW's MIDI thru (or a patchbay) that routes ``companion:out`` back to ``companion:in``
makes the companion hear its answer as the performer's next call, answer that, and so on
for ever. ``EchoGuard`` keeps the note-ons the companion sent in the last ``ECHO_WINDOW_S``;
a note-on that comes in with the pitch and velocity of one of them (on any channel: a DAW
may move it) is that note come back, and is ignored, and so is its note-off (one of that
pitch that comes in within the window after the companion sent one), so it is never heard as
playing, never answered and never stops an answer. ``LOOP_NOTES`` echoes in a row
are a loop (``loop``: said once by the caller, shown on the page); ``LOOP_NOTES`` notes sent
in a row that do not come back end it.

A performer's note is taken for an echo only when it has the pitch and the velocity of a
note the companion sent at most ``ECHO_WINDOW_S`` before it: unison with the answer, or
the same pitch sooner than a player reacts to it (answers take their velocities from the
call, so with a keyboard of fixed velocity, pitch and time alone tell).
"""

from __future__ import annotations

import threading
from collections import deque

#: A note-on that comes in at most this long after the companion sent a note-on of the same
#: pitch and velocity is that note come back. Over JACK MIDI moves once a period: back in 16
#: to 21 ms at 1024 frames (tests/test_names_jack.py), two periods at most, so up to 2048
#: frames at 48 kHz with a DAW's own buffer on top; shorter than a player's reaction to a
#: note heard (over 0.1 s), so a performer echoing the answer is heard.
ECHO_WINDOW_S = 0.1
#: Its arrival stamp may read this much earlier than the send's (two clocks' readings).
ECHO_EARLY_S = 0.005
#: This many echoes in a row are a loop (an answer of two notes, a short call's, says it);
#: this many notes sent in a row that did not come back within the window end it.
LOOP_NOTES = 2


def _note_on(msg) -> bool:
    return getattr(msg, "type", None) == "note_on" and msg.velocity > 0


def _note_off(msg) -> bool:
    kind = getattr(msg, "type", None)
    return kind == "note_off" or (kind == "note_on" and msg.velocity == 0)


class EchoGuard:
    """What the companion sent (``sent``, from any thread) against what it hears (``heard``,
    the engine thread): thread-safe. Times are seconds on one clock."""

    def __init__(self, window_s: float = ECHO_WINDOW_S, loop_notes: int = LOOP_NOTES):
        self.window_s = window_s
        self.loop_notes = loop_notes
        self._lock = threading.Lock()
        self._sent: deque[tuple[float, int, int]] = deque()  # (t, pitch, velocity) unmatched
        self._offs: deque[tuple[float, int]] = deque()  # (t, pitch) of note-offs sent
        self._held: set[int] = set()  # pitches of ignored note-ons: their note-off goes too
        self._streak = 0  # echoes in a row
        self._misses = 0  # notes sent in a row that did not come back
        #: A loop is going on; the echoes ignored so far (note-ons).
        self.loop = False
        self.echoes = 0
        #: Seconds from a note's send to its echo's arrival, the last one.
        self.delay_s: float | None = None

    def sent(self, msg, t: float) -> None:
        """The companion sends ``msg`` at ``t``."""
        if _note_on(msg):
            with self._lock:
                self._expire(t)
                self._sent.append((t, msg.note, msg.velocity))
        elif _note_off(msg):
            with self._lock:
                self._expire(t)
                self._offs.append((t, msg.note))

    def heard(self, msg, t: float) -> bool:
        """Whether ``msg``, arrived at ``t``, is the companion's own note come back (to be
        ignored): a note-on matching a note-on sent, or the note-off of one such, matching a
        note-off sent (so a performer's key released before the companion's echo of it,
        with midi.passthrough, is heard released)."""
        if _note_on(msg):
            with self._lock:
                self._expire(t)
                for i, (ts, pitch, velocity) in enumerate(self._sent):
                    if pitch == msg.note and velocity == msg.velocity and ts - ECHO_EARLY_S <= t:
                        del self._sent[i]
                        self.delay_s = t - ts
                        self._held.add(pitch)
                        self.echoes += 1
                        self._misses = 0
                        self._streak += 1
                        if self._streak >= self.loop_notes:
                            self.loop = True
                        return True
                self._streak = 0
                self._held.discard(msg.note)  # the performer's own key: its release is heard
                return False
        if _note_off(msg):
            with self._lock:
                self._expire(t)
                if msg.note not in self._held:
                    return False
                for i, (ts, pitch) in enumerate(self._offs):
                    if pitch == msg.note and ts - ECHO_EARLY_S <= t:
                        del self._offs[i]
                        self._held.discard(pitch)
                        return True
        return False

    def looping(self, now: float) -> bool:
        """``loop``, once the notes sent before ``now - window`` have been counted."""
        with self._lock:
            self._expire(now)
            return self.loop

    def _expire(self, now: float) -> None:
        """Notes sent longer ago than the window did not come back: a loop ends after
        ``loop_notes`` of them in a row."""
        while self._offs and now - self._offs[0][0] > self.window_s:
            self._offs.popleft()
        while self._sent and now - self._sent[0][0] > self.window_s:
            self._sent.popleft()
            self._misses += 1
            if self._misses >= self.loop_notes:
                self.loop = False
                self._streak = 0
