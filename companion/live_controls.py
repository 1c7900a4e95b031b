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

import math
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
    #: One line for performers: the page's hint under the control.
    description: str
    #: The page's step (None: a whole number's 1, else the range over 200).
    step: float | None = None
    unit: str = ""
    #: The name the page shows, in a performer's words (empty: the short name, spaced).
    title: str = ""
    #: The page's scale: "linear", or "log" for a range that spans decades (its stops are
    #: spaced evenly in ratio, each a multiple of ``step``; see ``stops``).
    scale: Literal["linear", "log"] = "linear"
    #: The word the page shows for null, for a setting that may be unset (meter: "unknown");
    #: the slider's bottom stop returns it to null.
    none: str | None = None
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
        return self.title or self.name.replace("_", " ")


CONTROLS: tuple[Control, ...] = (
    Control("temperature", "answer.temperature", "setting",
            "How adventurous the answers are: 0 plays the likeliest line every time.",
            step=0.05, title="adventure", cc="scale", cc_top="controls.temperature_max",
            learn_all=True),
    Control("top_p", "answer.top_p", "setting",
            "How many of the possible next moves it weighs: low keeps to the likeliest few.",
            step=0.01, title="variety", cc="scale"),
    Control("length", "answer.length", "setting",
            "How long the answer is: as long as your phrase, or a number of beats.",
            step=1, unit="beats", title="answer length", scale="log", cc="beats",
            cc_top="answer.max_beats", learn_all=True),
    Control("start", "answer.start", "setting",
            "Where the answer starts: on the bar line your phrase ends on (trading bars), or "
            "on the first beat after a silence.", title="answer starts", cc="choice"),
    Control("min_beats", "answer.min_beats", "setting",
            "The answer is never shorter than this, however short your phrase.",
            step=1, unit="beats", title="shortest answer", scale="log", cc="whole", cc_top=16),
    Control("max_beats", "answer.max_beats", "setting",
            "The answer is never longer than this, whatever the length says.",
            step=1, unit="beats", title="longest answer", scale="log", cc="whole", cc_top=32),
    Control("articulation", "answer.articulation", "setting",
            "How long each note sounds before the next: short and detached up to legato.",
            step=0.01, title="legato", cc="scale"),
    Control("max_note_beats", "answer.max_note_beats", "setting",
            "No answer note rings longer than this, even before a rest.",
            step=0.05, unit="beats", title="longest note", scale="log", cc="scale", cc_top=8),
    Control("range_widen", "answer.range_widen", "setting",
            "How far above and below your phrase's notes the answer may go.",
            step=1, unit="semitones", title="reach", cc="whole"),
    Control("barge_in", "answer.barge_in", "setting",
            "When you play over an answer: it stops at once, or keeps going.",
            title="when you play over it", cc="choice"),
    Control("cadence", "answer.cadence", "setting",
            "How often an answer ends like a phrase: on a beat, on a tone of the key.",
            step=0.01, title="phrase endings", cc="scale"),
    Control("register_pull", "answer.register_pull", "setting",
            "How strongly the answer stays near the pitches you played.",
            step=0.05, title="stay near your notes", cc="scale"),
    Control("style_weight", "style.weight", "setting",
            "How much the answers borrow the motifs you played this session.",
            step=0.01, title="your motifs", cc="scale", learn_all=True),
    Control("max_repeat", "style.max_repeat", "setting",
            "The same step of melody at most this many times in a row.",
            step=1, unit="times", title="repeats in a row", scale="log", cc="whole"),
    Control("key_strength", "key.strength", "setting",
            "How strictly answers keep to the key: 0 ignores it, 1 plays only its scale.",
            step=0.01, title="stay in key", cc="scale", learn_all=True),
    Control("meter", "time.meter", "setting",
            "Beats to a bar, so that answers end on a bar; unknown: any meter.",
            step=1, unit="beats", title="beats per bar", none="unknown", cc="beats"),
    Control("held_limit", "listen.held_limit_beats", "setting",
            "A key held this long stops holding your phrase open, as if you had let it go.",
            step=1, unit="beats", title="forget a held key after", scale="log", cc="whole",
            cc_top=32),
    Control("accompany", "accompany.mode", "setting",
            "Chords and a bass under what you play, decided before each beat; off: none.",
            title="accompany", cc="choice"),
    Control("accompany_style", "accompany.style", "setting",
            "How the chords are played: on every beat, held through the bar, or broken.",
            title="chord style", cc="choice"),
    Control("accompany_during", "accompany.during", "setting",
            "Accompany each phrase and then answer it, or only accompany and never answer.",
            title="accompany and answer", cc="choice"),
    Control("chord_adventure", "accompany.temperature", "setting",
            "How adventurous the chords are: 0 takes the likeliest chord every time.",
            step=0.05, title="chord adventure", cc="scale"),
    Control("mute", "mute", "switch",
            "Listen and learn without answering; the answer playing stops.",
            cc="switch", learn_all=True),
    Control("panic", "panic", "trigger", "Stop the answer: all notes off.",
            cc="trigger", learn_all=True),
    Control("reset_style", "reset_style", "trigger",
            "Forget the motifs learnt from you so far.", title="forget my motifs",
            cc="trigger", learn_all=True),
    Control("model", "model", "command",
            "Switch to another model package, by name, between answers."),
    Control("learn", "learn", "command",
            "MIDI learn: the next CC that moves becomes this control "
            "(all: the everyday ones in turn)."),
)


def stops(control: Control, check: dict) -> list:
    """The values the page's slider for ``control`` stops at, bottom to top, for its config
    ``check`` (``config.check_of``): every ``step`` from the bottom of the range on a linear
    scale; on a log scale 1, 1.25, 1.5 and 1.75 times each power of two, each made a multiple
    of ``step`` (whole beats: 1, 2, 3, ... 8, 10, 12, 14, 16, 20, 24, 28, 32, 40, ... 256),
    with the range's ends (a bottom of 0 too). Below them the range's word (length's "call")
    or, for a setting with a ``none`` word, null."""
    lo, hi = check["min"], check["max"]
    step = control.step or 1

    def snap(v: float) -> float:
        v = round(v / step) * step
        return int(round(v)) if float(step).is_integer() else round(v, 6)

    if control.scale == "log":
        first = max(lo, step)
        out = [snap(lo), snap(hi)]
        for k in range(math.floor(math.log2(first)), math.ceil(math.log2(hi)) + 1):
            out += [snap(m * 2.0 ** k) for m in (1, 1.25, 1.5, 1.75) if m * 2.0 ** k >= first]
    else:
        out = [snap(lo + i * step) for i in range(round((hi - lo) / step) + 1)]
    out = sorted({v for v in out if lo - 1e-9 <= v <= hi + 1e-9})
    if "word" in check:
        out.insert(0, check["word"])
    elif control.none is not None:
        out.insert(0, None)
    return out


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

