"""Accompanying live: the Accompanist (companion.engine.accompany) on the beat grid the engine
follows, its notes handed to the engine's player, free of I/O. The engine owns one and
drives it from its own ``on_message`` and ``poll`` (deadline to deadline).

The rules it keeps:

- **The grid.** An external time's beat count while one leads (a MIDI clock, a Link
  session: ``Timekeeper.grid_at``); else the performer's own: the first note of each run
  is a downbeat (as turn.py takes a call's first onset), beat 0 for the first, else the
  next bar line of the count reached (so that the tune's form, heard across runs, keeps
  its bars), at the tempo the engine follows (a change of tempo keeps the count). Bars of
  ``time.meter`` beats (Link: its quantum), else ``turn.DEFAULT_BAR_BEATS``.
- **Slots.** Each whole beat of the grid is a slot, decided ``lookahead_s`` (at most one
  beat) before its beat, at the first poll at or after that (``deadline`` says when); the
  first is the first beat whose decision comes after the run's first note. A slot's notes
  are placed from the beat's time as the grid gives it at the decision.
- **Where they sound.** Under ``ACCOMPANIMENT`` (a new answer never stops them), on their
  own channels (``accompany.channel``, ``bass_channel``).
- **A run stops** (every accompaniment note off) when the slot to decide comes a bar after
  the performer let go of the last key, or when told (``stop``: the engine's phrase end
  when it answers, mute, panic, the mode turned off). The next note heard starts a new run,
  which goes on with what the accompanist heard of the tune (its key, its form); the mode
  turned off forgets it.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from companion.encoding import meter
from companion.engine.accompany import Accompanist, Decision, can_change
from companion.engine.protocols import ACCOMPANIMENT, Player, TimedNote
from companion.engine.timekeeper import Timekeeper
from companion.engine.turn import DEFAULT_BAR_BEATS

#: What the engine hears of each decision: ``on_decision(decision, beat_time)``, the beat's
#: time in seconds on the engine's clock.
DecisionHook = Callable[[Decision, float], None]


class PlayAlong:
    """One Accompanist driven live (module docstring)."""

    def __init__(self, acc: Accompanist, timekeeper: Timekeeper, player: Player,
                 lookahead_s: float, on_decision: DecisionHook | None = None):
        self.acc = acc
        self.timekeeper = timekeeper
        self.player = player
        self.lookahead_s = max(0.0, lookahead_s)
        self.on_decision = on_decision
        self.running = False
        self._ref: tuple[float, float] = (0.0, 0.0)  # (time, own beat count) of the own grid
        self._slot = 0  # the next slot's beat count
        self._deadline: float | None = None
        self._quiet_since: float | None = None  # every key let go at this time
        self.decisions = 0  # slots decided in all runs
        self.late = 0  # of them, decided after their beat

    # -- the grid ------------------------------------------------------------------------

    def _grid(self, t: float, beat_s: float) -> tuple[float, float]:
        """(beat count, bar beats) at ``t``: the external time's, else the own grid's."""
        t0, b0 = self._ref
        beats, bar = self.timekeeper.grid_at(t, b0 + (t - t0) / beat_s)
        return beats, float(bar or DEFAULT_BAR_BEATS)

    def _rebase(self, t: float, beat_s: float) -> None:
        """The own grid's beat count at ``t`` kept from now on (the tempo may change)."""
        t0, b0 = self._ref
        self._ref = (t, b0 + (t - t0) / beat_s)

    def _look(self, beat_s: float) -> float:
        return min(self.lookahead_s, beat_s)

    def _plan(self, t: float, beat_s: float) -> None:
        """The deadline of the next slot, ``self._slot``, from the grid at ``t``."""
        beats, _ = self._grid(t, beat_s)
        self._deadline = t + (self._slot - beats) * beat_s - self._look(beat_s)

    # -- what the engine tells it ----------------------------------------------------------

    def hear(self, pitch: int, velocity: int, t: float, beat_s: float) -> None:
        """A melody note at ``t``: into the accompanist at its beat (a run starts with it)."""
        if not self.running:
            self.running = True
            if self.acc.heard_any():  # the tune goes on: this note starts the next bar
                t0, b0 = self._ref
                _, bar = self._grid(t, beat_s)
                count = b0 + (t - t0) / beat_s
                self._ref = (t, math.ceil(count / bar - 1e-9) * bar)
            else:
                self._ref = (t, 0.0)
            beats, _ = self._grid(t, beat_s)
            self._slot = math.floor(beats + self._look(beat_s) / beat_s + 1e-9) + 1
        self._rebase(t, beat_s)
        beats, bar = self._grid(t, beat_s)
        self.acc.hear(pitch, velocity, beats, meter.position(beats, bar))
        self._plan(t, beat_s)

    def keys(self, t: float, held: bool) -> None:
        """Whether the performer holds a key after a message at ``t``."""
        if held:
            self._quiet_since = None
        elif self._quiet_since is None:
            self._quiet_since = t

    def deadline(self) -> float | None:
        """When the next slot is to be decided; None while no run goes on."""
        return self._deadline if self.running else None

    def poll(self, t: float, beat_s: float) -> Decision | None:
        """At ``t``: decide the next slot if it is due, its notes to the player; or stop the
        run a bar after the last key was let go. The decision, or None."""
        if not self.running or self._deadline is None or t < self._deadline:
            return None
        self._rebase(t, beat_s)
        beats, bar = self._grid(t, beat_s)
        if self._slot < beats - 0.5:  # a poll far too late: on to the next beat
            self._slot = math.ceil(beats)
        k = self._slot
        at = t + (k - beats) * beat_s  # the beat's time
        quiet = self._quiet_since
        if quiet is not None and at - quiet >= bar * beat_s - 1e-9:
            self.stop()
            return None
        acc = self.acc
        index = acc.slots
        change = next((k + j for j in range(1, int(bar) + 1)
                       if can_change(meter.position(k + j, bar), bar, index + j)), None)
        d = acc.slot(float(k), meter.position(k, bar), bar, beats, 1.0,
                     None if change is None else float(change))
        self.decisions += 1
        if beats > k:
            self.late += 1
        for n in d.notes:
            if n.duration > 1e-6:
                self.player.add(ACCOMPANIMENT, TimedNote(
                    n.pitch, at + (n.start - k) * beat_s, n.duration * beat_s, n.velocity,
                    n.channel))
        self._slot = k + 1
        self._plan(t, beat_s)
        if self.on_decision is not None:
            self.on_decision(d, at)
        return d

    def stop(self, forget: bool = False) -> None:
        """The run ends: every accompaniment note off, nothing more decided until a note.
        What was heard of the tune is kept for the next run (`Accompanist.rest`), unless
        ``forget``."""
        self.player.cancel(ACCOMPANIMENT)
        self.running = False
        self._deadline = None
        if forget:
            self.acc.reset()
        else:
            self.acc.rest()

    def chord_name(self) -> str:
        """The chord sounding (``-``: none)."""
        return self.acc.chord_name() if self.running else "-"
