"""The melody of several voices as a listener hears it: one rule, live and offline.

A note belongs to the melody when it is the highest note sounding at its onset; a note
that starts below a higher key still held is accompaniment. Three things real playing
does are allowed for:

- legato overlap: a note masked only by a held *melody* note is undecided until that
  note is released; released within ``overlap`` of the new onset, the new note is the
  melody after all (announced then, with its own onset). Of the notes undecided at once,
  the highest is the candidate (a left-hand note struck just before it is not);
- a dip: a note masked only by held *accompaniment* (a left-hand chord held above the
  right hand's next note) is the melody when it lies within ``DIP_SEMITONES`` of the
  melody note before it;
- a pedal tone: a key held longer than ``pedal_tone`` no longer masks what moves below;
- a short rest of the melody: within ``rest`` of the melody note's release, a note more
  than ``LEAP_SEMITONES`` below it is the other hand filling the rest, not the melody
  (``rest`` 0: no such rule, as for a written score, where a rest is a rest).

Notes within ``window`` of a melody onset are its chord: the highest is the melody note.
Keys released but sustained by the pedal do not mask: under the pedal a melody moves down
while the notes it left still ring, and the listener follows the hand, not the ringing.

Modes: ``auto`` (the rule above, on every note), ``top`` (every onset's top note is the
melody, nothing masks: a monophonic instrument), ``split`` (the rule on the notes at or
above ``split_note``; those below are accompaniment), ``channel`` (the rule on the notes
of ``melody_channel``; other channels are accompaniment).

Times are in any unit, the same for every argument: seconds live, quarter notes for a score.
"""

from __future__ import annotations

from collections.abc import Sequence

#: What a key press or release did (plain ints: the live path allocates no event objects).
NOTHING, NEW_NOTE, TOP_CHANGED, ACCOMPANIMENT, PENDING = 0, 1, 2, 3, 4

MODES = ("auto", "top", "split", "channel")

#: A note masked only by held accompaniment is the melody within this of the melody note
#: before it (a major third: a step or a skip of the line, not a leap to another voice).
DIP_SEMITONES = 4
#: A note this far below the melody note released just before it is accompaniment.
LEAP_SEMITONES = 12
#: Live, the short rest of the melody (``rest``) is this many beats.
REST_BEATS = 1.0
#: Live defaults, seconds (the config keeps its own copy of each, documented there).
OVERLAP_S = 0.1
WINDOW_S = 0.03


class MelodyTracker:
    """Key presses and releases in, melody decisions out (see the module's rule).

    ``press`` answers NEW_NOTE (the pressed note starts a melody note), TOP_CHANGED (it is
    the new top of the melody note's chord), ACCOMPANIMENT or PENDING (masked by a held
    melody note: it may still be promoted). ``release`` answers NEW_NOTE when it promotes
    the pending note: ``promoted`` then holds its (pitch, onset, velocity).
    """

    def __init__(self, mode: str = "auto", window: float = WINDOW_S, overlap: float = OVERLAP_S,
                 pedal_tone: float = 2.0, split_note: int = 0, melody_channel: int | None = None,
                 rest: float = 0.5):
        if mode not in MODES:
            raise ValueError(f"melody mode: expected one of {', '.join(MODES)}, got {mode!r}")
        self.mode = mode
        self.window = window
        self.overlap = overlap
        self.pedal_tone = pedal_tone
        self.rest = rest
        self.split_note = split_note
        self.melody_channel = melody_channel  # 0-based
        #: held candidate keys: (channel, note) -> (pitch, onset, pressed as melody)
        self.sounding: dict[tuple[int, int], tuple[int, float, bool]] = {}
        self.group_start = float("-inf")  # onset of the current melody note
        self.top = -1  # pitch of the current melody note (its chord's top), -1 before one
        self.top_key: tuple[int, int] | None = None
        self.top_released = float("-inf")  # when the current melody note's key was released
        self._pending: tuple[tuple[int, int], int, float, int] | None = None
        self.promoted: tuple[int, float, int] = (0, 0.0, 0)

    def candidate(self, key: tuple[int, int]) -> bool:
        """Whether the key may be a melody note at all (split point, melody channel)."""
        if self.mode == "split":
            return key[1] >= self.split_note
        if self.mode == "channel":
            return key[0] == self.melody_channel
        return True

    def press(self, key: tuple[int, int], velocity: int, t: float) -> int:
        """A key pressed at ``t``."""
        pitch = key[1]
        if not self.candidate(key):
            return ACCOMPANIMENT
        pend = self._pending
        if pend is not None and t - pend[2] > self.overlap:
            pend = self._pending = None
        if t - self.group_start <= self.window:  # within the melody note's chord
            melody = pitch > self.top
            self.sounding[key] = (pitch, t, melody)
            if melody:
                self.top, self.top_key = pitch, key
                return TOP_CHANGED
            return ACCOMPANIMENT
        masked = self._masker(pitch, t, key)
        if masked == 0 and not self._fills_rest(pitch, t):
            self._pending = None
            self.sounding[key] = (pitch, t, True)
            self._start(pitch, key, t)
            return NEW_NOTE
        self.sounding[key] = (pitch, t, False)
        if masked == 1 and self.overlap > 0:
            if pend is None:
                self._pending = (key, pitch, t, velocity)
                return PENDING
            if pitch > pend[1]:  # the higher note is the line's next (a chord: its top)
                onset = pend[2] if t - pend[2] <= self.window else t
                self._pending = (key, pitch, onset, velocity)
                return PENDING
        return ACCOMPANIMENT

    def release(self, key: tuple[int, int], t: float) -> int:
        """A key released at ``t`` (sustained or not: a released key no longer masks)."""
        self.sounding.pop(key, None)
        if key == self.top_key:
            self.top_released = t
        pend = self._pending
        if pend is None or key == pend[0]:
            return NOTHING
        if t - pend[2] > self.overlap:
            self._pending = None
            return NOTHING
        pkey, pitch, onset, velocity = pend
        if self._masker(pitch, onset, pkey) != 0:
            return NOTHING
        self._pending = None
        if pkey in self.sounding:
            self.sounding[pkey] = (pitch, self.sounding[pkey][1], True)
        self._start(pitch, pkey, onset)
        self.promoted = (pitch, onset, velocity)
        return NEW_NOTE

    def _start(self, pitch: int, key: tuple[int, int], onset: float) -> None:
        self.group_start = onset
        self.top, self.top_key = pitch, key
        self.top_released = float("inf") if key in self.sounding else onset

    def _fills_rest(self, pitch: int, t: float) -> bool:
        """A leap down from the melody note released just now: the other hand's note."""
        return (self.mode != "top" and self.rest > 0 and pitch < self.top - LEAP_SEMITONES
                and self.top_key not in self.sounding and t - self.top_released <= self.rest)

    def _masker(self, pitch: int, onset: float, key: tuple[int, int]) -> int:
        """0: nothing masks a note of ``pitch`` at ``onset``; 1: a held melody note does;
        2: held accompaniment does (and the dip rule does not free it)."""
        if self.mode == "top":
            return 0
        accomp = False
        for k, (p, on, melody) in self.sounding.items():
            if p <= pitch or k == key or on > onset or onset - on > self.pedal_tone:
                continue
            if melody:
                return 1
            accomp = True
        if accomp and (self.top < 0 or abs(pitch - self.top) > DIP_SEMITONES):
            return 2
        return 0

    def forget(self, key: tuple[int, int]) -> None:
        """A key whose release was lost: it no longer masks."""
        self.sounding.pop(key, None)

    def clear(self) -> None:
        """Every key released at once (All Notes Off)."""
        self.sounding.clear()
        self._pending = None

    def end_phrase(self) -> None:
        """The phrase is over: an undecided note stays accompaniment, the next onset is new."""
        self._pending = None
        self.group_start = float("-inf")
        self.top, self.top_key = -1, None


def melody_indexes(notes: Sequence[tuple[int, float, float, int]], mode: str = "auto",
                   window: float = WINDOW_S, overlap: float = OVERLAP_S, pedal_tone: float = 2.0,
                   split_note: int = 0, melody_channel: int | None = None,
                   rest: float = 0.5) -> list[int]:
    """The melody of ``notes`` (pitch, onset, end, channel), as indexes into ``notes`` in
    onset order: the tracker fed the notes' presses and releases in time order (at one time
    releases first, then presses from the highest down)."""
    tr = MelodyTracker(mode, window, overlap, pedal_tone, split_note, melody_channel, rest)
    events = []
    for i, (pitch, onset, end, _ch) in enumerate(notes):
        events.append((onset, 1, -pitch, i))
        events.append((max(end, onset), 0, -pitch, i))
    events.sort()
    out: list[int] = []
    pending = -1
    by_key: dict[tuple[int, int], int] = {}  # the held key's note
    for t, kind, _p, i in events:
        pitch, onset, _end, ch = notes[i]
        key = (ch, pitch)
        if kind == 0:
            if by_key.get(key) != i:
                continue  # a later note of the same key took it over
            del by_key[key]
            if tr.release(key, t) == NEW_NOTE:
                out.append(pending)
            continue
        by_key[key] = i
        code = tr.press(key, 64, onset)
        if code == NEW_NOTE:
            out.append(i)
        elif code == TOP_CHANGED:
            out[-1] = i
        elif code == PENDING:  # the note now undecided (a chord's higher note replaces it)
            pending = i
    return out
