"""The performer's MIDI messages, reduced to a melody line and a phrase-end deadline.

Pure logic with times passed in (seconds, any origin): the live engine feeds it
callback timestamps, `companion respond` and the tests feed it virtual times.
"""

from __future__ import annotations

from dataclasses import dataclass

#: What a message did to the melody (plain ints: the live path allocates no event objects).
NOTHING, NEW_NOTE, TOP_CHANGED = 0, 1, 2

#: Controllers that silence every key: All Sound Off, All Notes Off.
_ALL_OFF = (120, 123)


@dataclass(slots=True)
class MelodyNote:
    pitch: int
    time: float  # onset, seconds on the listener's clock
    velocity: int


class Listener:
    """Notes in, melody notes out: a chord (onsets within ``window_s`` of its first) is one
    melody note, its highest pitch. The melody note is announced at the chord's first onset
    and corrected if a higher note follows within the window, so that the model can advance
    at once instead of waiting for the window to close.
    """

    def __init__(
        self,
        beat_s: float,
        phrase_end_beats: float,
        window_s: float = 0.03,
        channel: int | None = None,
    ):
        self.beat_s = beat_s
        self.phrase_end_s = phrase_end_beats * beat_s
        self.window_s = window_s
        self.channel = channel  # 0-based, None for omni
        self.held: set[tuple[int, int]] = set()
        self.notes: list[MelodyNote] = []  # melody of the phrase being played
        self.silence_since: float | None = None  # last key released, while none is held
        self._group_start = float("-inf")

    def accepts(self, msg) -> bool:
        """A note or all-notes-off message on the listened channel."""
        kind = msg.type
        if kind == "note_on" or kind == "note_off":
            pass
        elif kind != "control_change" or msg.control not in _ALL_OFF:
            return False
        return self.channel is None or msg.channel == self.channel

    def feed(self, msg, t: float) -> int:
        """One message at time ``t``: NOTHING, NEW_NOTE or TOP_CHANGED (``notes[-1]`` is it)."""
        if not self.accepts(msg):
            return NOTHING
        if msg.type == "control_change":
            self.held.clear()
            if self.notes and self.silence_since is None:
                self.silence_since = t
            return NOTHING
        key = (msg.channel, msg.note)
        if msg.type == "note_on" and msg.velocity > 0:
            self.held.add(key)
            self.silence_since = None
            if self.notes and t - self._group_start <= self.window_s:
                top = self.notes[-1]
                if msg.note > top.pitch:
                    top.pitch, top.velocity = msg.note, msg.velocity
                    return TOP_CHANGED
                return NOTHING
            self._group_start = t
            self.notes.append(MelodyNote(msg.note, t, msg.velocity))
            return NEW_NOTE
        # note_off, or note_on with velocity 0
        if key in self.held:
            self.held.discard(key)
            if not self.held and self.notes:
                self.silence_since = t
        return NOTHING

    def deadline(self) -> float | None:
        """When the phrase ends if nothing more is played; None while a key is held."""
        if self.silence_since is None or self.held or not self.notes:
            return None
        return self.silence_since + self.phrase_end_s

    def phrase_ended(self, t: float) -> bool:
        d = self.deadline()
        return d is not None and t >= d

    def take_phrase(self) -> list[MelodyNote]:
        """The finished phrase's melody; the listener starts on the next one."""
        notes, self.notes = self.notes, []
        self.silence_since = None
        self._group_start = float("-inf")
        return notes
