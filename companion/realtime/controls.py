"""MIDI controls: the performer's CCs steer the companion while playing; its state goes out
as a CC that a DAW or lights can follow.

Every control is optional (config ``controls:``, a CC number or null). Continuous controls
map 0..127 linearly onto their range; switches are on at 64 and above (a footswitch sends
127/0); one-shot actions (panic, reset) fire when the value crosses 64 upwards. A program change
on the control channel selects the model package config ``models:`` maps it to (programs
1..128 as keyboards show them: the MIDI value + 1); an unmapped one is left alone.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import mido

from companion.config import ControlsConfig

#: Values of the outgoing state CC.
LISTENING, ANSWERING = 0, 127

#: Switches and triggers are on from this value (the MIDI convention for on/off CCs).
ON = 64

#: The controls that are actions rather than settings: ``apply(name, value)`` takes them
#: too (mute's value is on/off; the others fire and take none).
ACTIONS = ("mute", "panic", "reset_style")

#: The controls by their short names (config ``controls:``, OSC ``/companion/NAME``, MIDI
#: learn) -> the name ``Live.apply`` takes: every one of LIVE_SETTINGS, ACTIONS, "model" and
#: "learn" (MIDI learn: the value a name of CC_CONTROLS, or "all").
SHORT_NAMES = {
    "temperature": "answer.temperature", "top_p": "answer.top_p", "length": "answer.length",
    "min_beats": "answer.min_beats", "max_beats": "answer.max_beats",
    "articulation": "answer.articulation", "max_note_beats": "answer.max_note_beats",
    "range_widen": "answer.range_widen", "barge_in": "answer.barge_in",
    "cadence": "answer.cadence", "register_pull": "answer.register_pull",
    "style_weight": "style.weight", "max_repeat": "style.max_repeat",
    "key_strength": "key.strength", "meter": "time.meter", "mute": "mute", "panic": "panic",
    "reset_style": "reset_style", "model": "model", "learn": "learn",
}
#: The controls a CC can move (config ``controls:`` keys), in the order MIDI learn asks.
CC_CONTROLS = ("temperature", "length", "style_weight", "key_strength", "mute", "panic",
               "reset_style")


class Controls:
    """Maps CCs to the companion's controls. Every change goes through ``apply(name, value)``
    (``Live.apply``: the one path that MIDI, the web page and OSC share), with ``name`` a
    setting of LIVE_SETTINGS or one of ACTIONS; ``setting(name)`` reads a setting's value."""

    def __init__(
        self,
        cfg: ControlsConfig,
        apply: Callable[[str, Any], Any],
        setting: Callable[[str], Any],
        programs: dict[int, str] | None = None,
    ):
        self.apply = apply
        self.setting = setting
        self.programs = dict(programs or {})
        self.channel = None if cfg.channel == "omni" else int(cfg.channel) - 1
        self.temperature_max = cfg.temperature_max
        self._acts: dict[str, Callable[[int], None]] = {
            "temperature": self._temperature, "length": self._length,
            "style_weight": self._style_weight, "key_strength": self._key_strength,
            "mute": self._mute, "panic": self._trigger("panic"),
            "reset_style": self._trigger("reset_style")}
        #: CC number -> the control (one of CC_CONTROLS) it moves.
        self.mapped: dict[int, str] = {}
        for name in CC_CONTROLS:
            cc = getattr(cfg, name)
            if cc is not None:
                self.mapped[cc] = name

    def map(self, name: str, cc: int) -> list[str]:
        """From now on ``cc`` moves the control ``name`` (one of CC_CONTROLS), and only it:
        the CC ``name`` had is free again. Returns the control that had ``cc`` before, if
        another (it has none now). Call it on the engine thread, like ``handle``."""
        before = self.mapped.get(cc)
        self.mapped = {c: n for c, n in self.mapped.items() if n != name and c != cc}
        self.mapped[cc] = name
        return [before] if before is not None and before != name else []

    def handle(self, msg: mido.Message) -> bool:
        """Act on ``msg`` if it is a mapped CC or program change on the control channel; True
        if it was."""
        if self.channel is not None and getattr(msg, "channel", None) != self.channel:
            return False
        if msg.type == "program_change":
            name = self.programs.get(msg.program + 1)
            if name is None:
                return False
            self.apply("model", name)
            return True
        if msg.type != "control_change":
            return False
        name = self.mapped.get(msg.control)
        if name is None:
            return False
        self._acts[name](msg.value)
        return True

    # -- continuous ---------------------------------------------------------------------

    def _temperature(self, v: int) -> None:
        self.apply("answer.temperature", v / 127 * self.temperature_max)

    def _length(self, v: int) -> None:
        """0: as long as the call; else 1..answer.max_beats whole beats."""
        max_beats = self.setting("answer.max_beats")
        self.apply("answer.length", "call" if v == 0 else float(max(1, round(v / 127 * max_beats))))

    def _style_weight(self, v: int) -> None:
        self.apply("style.weight", v / 127)

    def _key_strength(self, v: int) -> None:
        self.apply("key.strength", v / 127)

    # -- switches and triggers -------------------------------------------------------------

    def _mute(self, v: int) -> None:
        self.apply("mute", v >= ON)

    def _trigger(self, action: str) -> Callable[[int], None]:
        """Apply ``action`` when the value crosses ON upwards (a held button fires once)."""
        state = {"on": False}

        def act(v: int) -> None:
            on = v >= ON
            if on and not state["on"]:
                self.apply(action, None)
            state["on"] = on

        return act


class StateOut:
    """The outgoing state CC: ANSWERING from the phrase-end decision to the answer's last
    note-off (or its cut), LISTENING otherwise; sent only when it changes. Set from the
    engine thread and the scheduler thread: ``lock`` (the player's) orders the two."""

    def __init__(self, cc: int | None, channel: int, send: Callable[[mido.Message], None],
                 lock: threading.RLock | None = None):
        self.cc = cc
        self.channel = channel
        self.send = send
        self.lock = lock or threading.RLock()
        self.value: int | None = None

    def set(self, value: int) -> None:
        if self.cc is None:
            return
        with self.lock:
            if value == self.value:
                return
            self.value = value
            self.send(mido.Message("control_change", channel=self.channel, control=self.cc,
                                   value=value))
