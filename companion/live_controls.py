"""The registry of live controls: every control that can change while playing, defined once.

Each ``Control`` is named by its short name: the OSC address ``/companion/NAME``, the name
MIDI learn and ``--learn`` take, and (for one a CC can move) its key in config
``controls:``. The config key it sets carries its check (range or choices) in
companion/config.py, the one place ranges are kept; ``config.check_of`` reads it. Everything
else about a control is here: what kind it is, its step and unit on the page, a line for
performers, and how a CC value 0..127 moves it. What is derived from this table:
engine.LIVE_SETTINGS, the ``controls:`` section of the config (a CC number or null per
control a CC can move, checked for clashes), the MIDI CC mapping
(companion/realtime/controls.py), MIDI learn and ``--learn``, OSC's address lookup and the
page's controls (companion/ui/server.py ``describe_settings``). Adding a control is one entry.

How a CC moves a control (``cc``), each rule kept in one place (companion/realtime/controls.py);
"the top" is the value a CC's 127 gives (``cc_top``):

- ``"scale"``: 0..127 linearly onto the bottom of the setting's range up to the top.
- ``"whole"``: as ``"scale"``, rounded to the nearest whole number (whole steps).
- ``"choice"``: 0..127 divided evenly among the setting's choices, in their order (of two:
  0..63 the first, 64..127 the second).
- ``"beats"``: 0 is the setting's word (length's ``"call"``) or, having none, null (meter's
  "not known"), else 1..the top whole beats.
- ``"switch"``: on from 64 (a footswitch sends 127/0).
- ``"trigger"``: fires when the value crosses 64 upwards (a held button fires once).
- None: no CC moves it.

``cc_top``, the top: a number (a musically useful top for a setting whose range is far
wider); a key of ``controls:`` (``controls.temperature_max``, read from the config); a live
setting (``answer.max_beats``, read when the CC comes); None: the top of the setting's range.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

#: A control's kind: a config setting; an action with an on/off value (mute); an action
#: with no value (panic, reset_style); a command taking a name (model, learn).
Kind = Literal["setting", "switch", "trigger", "command"]
CcMapping = Literal["scale", "whole", "choice", "beats", "switch", "trigger"]


@dataclass(frozen=True)
class Control:
    """One live control (see the module)."""

    #: Short name: OSC ``/companion/NAME``, MIDI learn's name, config ``controls.NAME``.
    name: str
    #: The config key it sets (``answer.temperature``), or for the other kinds the name
    #: ``Live.apply`` takes (``mute``).
    key: str
    kind: Kind
    #: One line for performers.
    description: str
    #: The page's step (None: a whole number's 1, else the range over 200).
    step: float | None = None
    unit: str = ""
    #: How a CC value 0..127 moves it; None: no CC does.
    cc: CcMapping | None = None
    #: The value a CC's 127 gives: a number, a ``controls:`` key or a live setting (see the
    #: module); None: the top of the setting's range.
    cc_top: float | str | None = None
    #: MIDI learn's ``all`` walks it (the performer's everyday controls, in this order).
    learn_all: bool = False

    @property
    def label(self) -> str:
        """The name the page shows."""
        return self.name.replace("_", " ")


CONTROLS: tuple[Control, ...] = (
    Control("temperature", "answer.temperature", "setting",
            "How adventurous the answers are: 0 plays the most likely curve every time.",
            step=0.05, cc="scale", cc_top="controls.temperature_max", learn_all=True),
    Control("top_p", "answer.top_p", "setting",
            "Keep only the likeliest curves whose probabilities add up to this.",
            step=0.01, cc="scale"),
    Control("length", "answer.length", "setting",
            "How long the answer is: as long as the call, or a number of beats.",
            step=0.25, unit="beats", cc="beats", cc_top="answer.max_beats", learn_all=True),
    Control("start", "answer.start", "setting",
            "Where the answer starts: on the bar line the call ends on (trading bars), or on "
            "the first beat after a silence.", cc="choice"),
    Control("min_beats", "answer.min_beats", "setting", "The shortest answer.",
            step=0.25, unit="beats", cc="whole", cc_top=16),
    Control("max_beats", "answer.max_beats", "setting",
            "The longest answer, whatever the length says.",
            step=0.25, unit="beats", cc="whole", cc_top=32),
    Control("articulation", "answer.articulation", "setting",
            "How long each answer note sounds, as a share of the time to the next one.",
            step=0.01, cc="scale"),
    Control("max_note_beats", "answer.max_note_beats", "setting",
            "The longest an answer note sounds (a rest does not hold it).",
            step=0.05, unit="beats", cc="scale", cc_top=8),
    Control("range_widen", "answer.range_widen", "setting",
            "How far the answer may go beyond the pitch range of the call.",
            step=1, unit="semitones", cc="whole"),
    Control("barge_in", "answer.barge_in", "setting",
            "Playing during an answer: stop it at once, or keep it going.", cc="choice"),
    Control("cadence", "answer.cadence", "setting",
            "Share of the answers that end as a phrase ends (on a beat, on the key's tones).",
            step=0.01, cc="scale"),
    Control("register_pull", "answer.register_pull", "setting",
            "How strongly answers stay in the register of the call.",
            step=0.05, cc="scale"),
    Control("style_weight", "style.weight", "setting",
            "How much the answers borrow the motifs you played this session.",
            step=0.01, cc="scale", learn_all=True),
    Control("max_repeat", "style.max_repeat", "setting",
            "The same curve at most this many times in a row in one answer.",
            step=1, unit="times", cc="whole"),
    Control("key_strength", "key.strength", "setting",
            "How strongly answers keep to the key's scale: 0 ignores the key, 1 only its tones.",
            step=0.01, cc="scale", learn_all=True),
    Control("meter", "time.meter", "setting",
            "Beats to a bar (none: the bar is not known).",
            step=1, unit="beats", cc="beats"),
    Control("held_limit", "listen.held_limit_beats", "setting",
            "A key held this long stops holding the call open, as if its note-off had come.",
            step=1, unit="beats", cc="whole", cc_top=32),
    Control("mute", "mute", "switch",
            "Listen and learn without answering; the answer playing stops.",
            cc="switch", learn_all=True),
    Control("panic", "panic", "trigger", "Stop the answer: all notes off.",
            cc="trigger", learn_all=True),
    Control("reset_style", "reset_style", "trigger",
            "Forget the style learnt from you so far.", cc="trigger", learn_all=True),
    Control("model", "model", "command",
            "Switch to another model package, by name, between answers."),
    Control("learn", "learn", "command",
            "MIDI learn: the next CC that moves becomes this control "
            "(all: the everyday ones in turn)."),
)

#: Each control by its short name.
BY_NAME = {c.name: c for c in CONTROLS}
#: The config keys that may change while playing, in the registry's order.
LIVE_SETTINGS = tuple(c.key for c in CONTROLS if c.kind == "setting")
#: The controls that are actions rather than settings: ``Live.apply`` takes them too (mute's
#: value is on/off; the others fire and take none).
ACTIONS = tuple(c.key for c in CONTROLS if c.kind in ("switch", "trigger"))
#: The actions that fire and take no value.
TRIGGERS = tuple(c.key for c in CONTROLS if c.kind == "trigger")
#: Short name -> the name ``Live.apply`` takes: every one of LIVE_SETTINGS, ACTIONS, "model"
#: and "learn" (MIDI learn: the value a name of CC_CONTROLS, or "all").
SHORT_NAMES = {c.name: c.key for c in CONTROLS}
#: The controls a CC can move (config ``controls:`` keys), in the registry's order.
CC_CONTROLS = tuple(c.name for c in CONTROLS if c.cc is not None)
#: The controls MIDI learn's ``all`` walks, in the order it asks.
LEARN_ALL = tuple(c.name for c in CONTROLS if c.learn_all)

