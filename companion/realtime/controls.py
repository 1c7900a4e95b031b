"""MIDI controls: the performer's CCs steer the companion while playing; its state goes out
as a CC that a DAW or lights can follow.

Every control is optional (config ``controls:``, a CC number or null). Continuous controls
map 0..127 linearly onto their range; switches are on at 64 and above (a footswitch sends
127/0); one-shot actions (panic, reset) fire when the value crosses 64 upwards.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import mido

from companion.config import ControlsConfig
from companion.engine.engine import Engine

#: Values of the outgoing state CC.
LISTENING, ANSWERING = 0, 127

#: Switches and triggers are on from this value (the MIDI convention for on/off CCs).
ON = 64


class Controls:
    """Routes mapped CCs to the engine's settings (``Engine.set``, ``set_muted``,
    ``reset_style``: nothing else). Called on the engine thread only, like everything else
    that touches the engine, so no lock is needed for the settings it changes."""

    def __init__(
        self,
        cfg: ControlsConfig,
        engine: Engine,
        on_mute: Callable[[bool], None] | None = None,
        on_panic: Callable[[], None] | None = None,
        log: Callable[[str], None] | None = None,
    ):
        self.engine = engine
        self.channel = None if cfg.channel == "omni" else int(cfg.channel) - 1
        self.temperature_max = cfg.temperature_max
        self.on_mute = on_mute
        self.on_panic = on_panic
        self.log = log or (lambda line: None)
        self.actions: dict[int, Callable[[int], None]] = {}
        for name, act in (("temperature", self._temperature), ("length", self._length),
                          ("style_weight", self._style_weight),
                          ("key_strength", self._key_strength), ("mute", self._mute),
                          ("panic", self._trigger(self._panic)),
                          ("reset_style", self._trigger(self._reset_style))):
            cc = getattr(cfg, name)
            if cc is not None:
                self.actions[cc] = act

    def handle(self, msg: mido.Message) -> bool:
        """Act on ``msg`` if it is a mapped CC on the control channel; True if it was."""
        if msg.type != "control_change" or (
            self.channel is not None and msg.channel != self.channel
        ):
            return False
        act = self.actions.get(msg.control)
        if act is None:
            return False
        act(msg.value)
        return True

    # -- continuous ---------------------------------------------------------------------

    def _temperature(self, v: int) -> None:
        self.engine.set("answer.temperature", v / 127 * self.temperature_max)

    def _length(self, v: int) -> None:
        """0: as long as the call; else 1..answer.max_beats whole beats."""
        max_beats = self.engine.setting("answer.max_beats")
        self.engine.set("answer.length",
                        "call" if v == 0 else float(max(1, round(v / 127 * max_beats))))

    def _style_weight(self, v: int) -> None:
        self.engine.set("style.weight", v / 127)

    def _key_strength(self, v: int) -> None:
        self.engine.set("key.strength", v / 127)

    # -- switches and triggers -------------------------------------------------------------

    def _mute(self, v: int) -> None:
        muted = v >= ON
        if self.engine.set_muted(muted):
            self.log("muted: listening only" if muted else "unmuted: answering again")
            if self.on_mute is not None:
                self.on_mute(muted)

    def _trigger(self, action: Callable[[], None]) -> Callable[[int], None]:
        """Fire ``action`` when the value crosses ON upwards (a held button fires once)."""
        state = {"on": False}

        def act(v: int) -> None:
            on = v >= ON
            if on and not state["on"]:
                action()
            state["on"] = on

        return act

    def _panic(self) -> None:
        self.log("panic: all notes off")
        if self.on_panic is not None:
            self.on_panic()

    def _reset_style(self) -> None:
        self.engine.reset_style()
        self.log("style memory reset")


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
