"""The performer's MIDI messages, reduced to a melody line and a phrase-end deadline.

Pure logic with times passed in (seconds, any origin): the live engine feeds it
callback timestamps, `companion respond` and the tests feed it virtual times.
"""

from __future__ import annotations

from dataclasses import dataclass

from companion.encoding.skyline import (
    NEW_NOTE,
    NOTHING,
    OVERLAP_S,
    REST_BEATS,
    TOP_CHANGED,
    MelodyTracker,
)
from companion.engine.tempo import Pace

__all__ = ["NEW_NOTE", "NOTHING", "TOP_CHANGED", "Listener", "MelodyNote"]

#: Controllers that silence every key: All Sound Off, All Notes Off.
_ALL_OFF = (120, 123)

#: A key (channel 0..15, note) as the listener keeps it.
Key = tuple[int, int]


@dataclass(slots=True)
class MelodyNote:
    pitch: int
    time: float  # onset, seconds on the listener's clock
    velocity: int


class Listener:
    """Notes in, melody notes and accompaniment out, by companion.encoding.skyline's rule
    (``melody``: auto, top, split or channel). A chord (onsets within ``window_s`` of its
    first) is one melody note, its highest pitch: announced at the chord's first onset and
    corrected if a higher note follows within the window, so that the model can advance at
    once instead of waiting for the window to close. A note under a held melody note is
    announced when that note is released within ``overlap_s`` (legato), with its own onset.

    Nothing holds the call open for ever: a key counts as held for at most
    ``held_limit_beats`` from its (latest) press, and the sustain pedal (with
    ``sustain_holds``) holds released keys for at most as long from when it went down. The
    phrase end counts such a key released at its limit (``deadline``); ``forget_stuck``
    then drops it, and the caller says so.
    """

    def __init__(
        self,
        beat_s: float,
        phrase_end_beats: float,
        window_s: float = 0.03,
        channel: int | None = None,
        melody: str = "auto",
        overlap_s: float = OVERLAP_S,
        pedal_tone_beats: float = 4.0,
        split_note: int = 60,
        melody_channel: int | None = None,
        held_limit_beats: float = 8.0,
    ):
        self.beat_s = beat_s
        self.phrase_end_beats = phrase_end_beats
        self.phrase_end_s = phrase_end_beats * beat_s
        self.window_s = window_s
        self.channel = channel  # 0-based, None for omni
        self.pedal_tone_beats = pedal_tone_beats
        self.tracker = MelodyTracker(melody, window_s, overlap_s, pedal_tone_beats * beat_s,
                                     split_note, melody_channel, REST_BEATS * beat_s)
        self.held_limit_beats = held_limit_beats
        self.held: dict[Key, float] = {}  # key held -> when it was (last) pressed
        self._last_release = float("-inf")  # the last key (or the pedal's keys) let go
        self.notes: list[MelodyNote] = []  # melody of the phrase being played
        #: the phrase's other notes: they inform the key, never the melody
        self.accompaniment: list[MelodyNote] = []
        self.silence_since: float | None = None  # last key released, while none is held
        # Time (set by the engine from config.time; these defaults are the plain listener):
        # the sustain pedal, the explicit ends of a call, the performer's pace.
        self.sustain_holds = False
        self.end_on_pedal_release = False
        self.end_cc: int | None = None
        self.end_note: int | None = None
        self.pace: Pace | None = None
        self.pedal = False
        self._pedal_since = float("-inf")  # when the pedal went down
        self._pedal_spent = False  # down past the held limit: it holds nothing until let go
        self.sustained: set[Key] = set()  # released keys the pedal holds
        self.ended_at: float | None = None  # the call was ended explicitly

    def set_beat(self, beat_s: float) -> None:
        """A new tempo: the silence that ends a phrase, counted in beats, follows it."""
        self.beat_s = beat_s
        self.phrase_end_s = self.phrase_end_beats * beat_s

    def accepts(self, msg) -> bool:
        """A note or all-notes-off message on the listened channel."""
        kind = msg.type
        if kind == "note_on" or kind == "note_off":
            pass
        elif kind != "control_change" or (
            msg.control not in _ALL_OFF and msg.control != 64 and msg.control != self.end_cc
        ):
            return False
        return self.channel is None or msg.channel == self.channel

    def feed(self, msg, t: float) -> int:
        """One message at time ``t``: NOTHING, NEW_NOTE or TOP_CHANGED (``notes[-1]`` is it)."""
        if not self.accepts(msg):
            return NOTHING
        if msg.type == "control_change":
            if msg.control not in _ALL_OFF:
                self._control(msg.control, msg.value, t)
                return NOTHING
            self.sustained.clear()
            self.held.clear()
            self.tracker.clear()
            self._last_release = t
            if self.notes and self.silence_since is None:
                self.silence_since = t
            return NOTHING
        key = (msg.channel, msg.note)
        if msg.type == "note_on" and msg.velocity > 0:
            if msg.note == self.end_note:
                self._end(t)
                return NOTHING
            self.sustained.discard(key)
            self.held[key] = t  # struck again while held: its limit counts from now
            self.silence_since = None
            tr = self.tracker
            tr.pedal_tone = self.pedal_tone_beats * self.beat_s  # the beat may follow the tempo
            tr.rest = REST_BEATS * self.beat_s
            code = tr.press(key, msg.velocity, t)
            if code == NEW_NOTE:
                return self._melody_note(msg.note, t, msg.velocity)
            if code == TOP_CHANGED:
                top = self.notes[-1]
                top.pitch, top.velocity = msg.note, msg.velocity
                return TOP_CHANGED
            self.accompaniment.append(MelodyNote(msg.note, t, msg.velocity))
            return NOTHING
        # note_off, or note_on with velocity 0
        if key in self.held:
            del self.held[key]
            self._last_release = t
            code = self.tracker.release(key, t)
            if code == NEW_NOTE:  # the note under it was the melody's next, played legato
                pitch, onset, velocity = self.tracker.promoted
                self._drop_accompaniment(pitch, onset)
                code = self._melody_note(pitch, onset, velocity)
            if self.pedal and self.sustain_holds and not self._pedal_spent:
                self.sustained.add(key)
            elif not self.held and not self.sustained and self.notes:
                self.silence_since = t
            return code
        return NOTHING

    def _melody_note(self, pitch: int, onset: float, velocity: int) -> int:
        if self.pace is not None and self.notes:
            self.pace.add(onset - self.notes[-1].time)
        self.notes.append(MelodyNote(pitch, onset, velocity))
        return NEW_NOTE

    def _drop_accompaniment(self, pitch: int, onset: float) -> None:
        """The undecided note, counted as accompaniment until promoted, leaves it."""
        acc = self.accompaniment
        for i in range(len(acc) - 1, -1, -1):
            if acc[i].pitch == pitch and acc[i].time == onset:
                del acc[i]
                return

    def _control(self, cc: int, value: int, t: float) -> None:
        """The sustain pedal (CC 64) and the end-of-call controller."""
        if cc == 64:
            down = value >= 64
            if down and not self.pedal:
                self._pedal_since = t
            if self.pedal and not down:
                if self.sustained:
                    self.sustained.clear()
                    self._last_release = t
                self._pedal_spent = False
                if self.end_on_pedal_release:
                    self._end(t)
                elif not self.held and self.notes and self.silence_since is None:
                    self.silence_since = t
            self.pedal = down
        if cc == self.end_cc and value >= 64:
            self._end(t)

    def _end(self, t: float) -> None:
        """An explicit end of the call: it ends now, whatever is held."""
        if self.notes:
            self.ended_at = t

    def forget_stuck(self, t: float) -> tuple[list[Key], list[Key]]:
        """At ``t``, the keys held past the held limit stop counting as held, and so do the
        keys the pedal holds once it has been down that long (it holds none until let go).
        Returns both lists (empty when nothing passed its limit). The phrase end stays where
        ``deadline`` had it: the silence began when the last of them reached its limit, or
        at the last release after that."""
        if not self.held and not self.sustained:
            return [], []
        limit = self.held_limit_beats * self.beat_s  # the beat may follow the tempo
        until = self._holding_until(limit)
        keys = [k for k, p in self.held.items() if t >= p + limit]
        for k in keys:
            del self.held[k]
            self.tracker.forget(k)
        pedal: list[Key] = []
        if self.sustained and t >= self._pedal_since + limit:
            pedal = sorted(self.sustained)
            self.sustained.clear()
            self._pedal_spent = True
        if (keys or pedal) and not self.held and not self.sustained and self.notes \
                and self.silence_since is None:
            self.silence_since = max(self._last_release, until)
        return keys, pedal

    def _holding_until(self, limit: float) -> float:
        """When the keys counted as held now (pressed, or held by the pedal) have all reached
        the held limit, ``limit`` seconds."""
        until = max(self.held.values(), default=float("-inf")) + limit
        if self.sustained:
            until = max(until, self._pedal_since + limit)
        return until

    def held_keys(self) -> list[Key]:
        """The keys counted as held, pressed or held by the pedal, by pitch. Any thread: both
        are copied at once (under the GIL) before anything else."""
        return sorted({*self.held, *self.sustained}, key=lambda k: (k[1], k[0]))

    def deadline(self) -> float | None:
        """When the phrase ends if nothing more is played; None before its first note. A key
        still held counts as released at its held limit."""
        if self.ended_at is not None and self.notes:
            return self.ended_at
        if not self.notes:
            return None
        if self.held or self.sustained:
            quiet = max(self._last_release,
                        self._holding_until(self.held_limit_beats * self.beat_s))
        elif self.silence_since is None:
            return None
        else:
            quiet = self.silence_since
        if self.pace is not None:
            return quiet + self.pace.wait_s(self.phrase_end_s)
        return quiet + self.phrase_end_s

    def phrase_ended(self, t: float) -> bool:
        d = self.deadline()
        return d is not None and t >= d

    def resume(self, notes: list[MelodyNote]) -> None:
        """The phrase taken as ``notes`` goes on: they come back before the notes since."""
        self.notes[:0] = notes

    def take_phrase(self) -> list[MelodyNote]:
        """The finished phrase's melody; the listener starts on the next one (and on a new
        ``accompaniment`` list: take the finished one first)."""
        notes, self.notes = self.notes, []
        self.accompaniment = []
        self.silence_since = None
        self.ended_at = None
        self.tracker.end_phrase()
        return notes
