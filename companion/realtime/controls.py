"""MIDI controls: the performer's CCs steer the companion while playing; its state goes out
as a CC that a DAW or lights can follow.

Every control is optional (config ``controls:``, a CC number or null); which controls a CC
can move, and how, is the registry's (companion/live_controls.py): continuous controls map
0..127 linearly onto their range (whole numbers in whole steps), a choice's 0..127 is
divided evenly among its choices; switches are on at 64 and above (a footswitch sends
127/0); one-shot actions (panic, reset) fire when the value crosses 64 upwards. A program change
on the control channel selects the model package config ``models:`` maps it to (programs
1..128 as keyboards show them: the MIDI value + 1); an unmapped one is left alone.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import mido

from companion.config import ControlsConfig, check_of
from companion.live_controls import (  # noqa: F401 - ACTIONS, SHORT_NAMES: imported from here too
    ACTIONS,
    CC_CONTROLS,
    CONTROLS,
    SHORT_NAMES,
    Control,
)

#: Values of the outgoing state CC.
LISTENING, ANSWERING = 0, 127

#: Switches and triggers are on from this value (the MIDI convention for on/off CCs).
ON = 64


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
        self.cfg = cfg
        #: Each control of CC_CONTROLS -> what a CC value does to it.
        self._acts: dict[str, Callable[[int], None]] = {
            c.name: self._act(c) for c in CONTROLS if c.cc is not None}
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

    def _act(self, control: Control) -> Callable[[int], None]:
        """What a CC value does to ``control``, as its registry entry's ``cc`` says (the rules
        are companion/live_controls.py's)."""
        key = control.key
        if control.cc == "switch":
            return lambda v: self.apply(key, v >= ON)
        if control.cc == "trigger":
            return self._trigger(key)
        check = check_of(key)
        if control.cc == "choice":
            choices = check["choices"]
            return lambda v: self.apply(key, choices[v * len(choices) // 128])
        lo, top = check["min"], self._top(control, check["max"])
        if control.cc == "beats":
            zero = check.get("word")  # none: null
            return lambda v: self.apply(key, zero if v == 0 else max(1, round(v / 127 * top())))
        if control.cc == "whole":
            return lambda v: self.apply(key, round(lo + v / 127 * (top() - lo)))
        return lambda v: self.apply(key, lo + v / 127 * (top() - lo))

    def _top(self, control: Control, range_top: float) -> Callable[[], float]:
        """The value a CC's 127 gives ``control`` (its ``cc_top``: a number, a key of
        ``controls:``, a live setting read when the CC comes; None: ``range_top``)."""
        top = control.cc_top
        if top is None or isinstance(top, int | float):
            fixed = range_top if top is None else top
            return lambda: fixed
        if top.startswith("controls."):
            fixed = getattr(self.cfg, top.removeprefix("controls."))
            return lambda: fixed
        return lambda: self.setting(top)

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
