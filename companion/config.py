"""The one typed config object, loaded from config.yaml.

Each field carries its own check (range or choices) so that an error can name the key:
``config.yaml: answer.temperature: expected a number in 0..5, got 9``. A number must be
finite: NaN or an infinity is refused like a number out of range.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from companion.live_controls import CC_CONTROLS, CONTROLS


class ConfigError(ValueError):
    """A bad config file or value (exit 2)."""


def _num(lo: float, hi: float, default: float) -> Any:
    return field(default=default, metadata={"range": (lo, hi)})


def _choice(default: Any, *choices: Any) -> Any:
    return field(default=default, metadata={"choices": choices})


def _text(default: str) -> Any:
    """A name or path: an empty one would make a nameless port or write into the config folder."""
    return field(default=default, metadata={"nonempty": True})


@dataclass
class MidiConfig:
    backend: str = _choice("auto", "auto", "alsa", "jack", "coremidi", "winmm")
    client_name: str = _text("companion")
    input_name: str = _text("in")
    output_name: str = _text("out")
    input: str | None = None
    output: str | None = None
    input_channel: int | str = field(default="omni", metadata={"channel": True})
    output_channel: int = _num(1, 16, 1)
    passthrough: bool = False


@dataclass
class ListenConfig:
    chord_window_ms: float = _num(0, 500, 30.0)
    tempo_bpm: float = _num(20, 400, 110.0)
    phrase_end_beats: float = _num(0.25, 32, 1.5)
    reset_after_beats: float = _num(0, 10_000, 32.0)
    melody: str = _choice("auto", "auto", "top", "split", "channel")
    split_note: int = _num(0, 127, 60)
    melody_channel: int = _num(1, 16, 1)
    legato_overlap_ms: float = _num(0, 1000, 100.0)
    pedal_tone_beats: float = _num(0.25, 256, 4.0)
    accompaniment_key_weight: float = _num(0, 1, 0.5)
    held_limit_beats: float = _num(1, 256, 8.0)


@dataclass
class AnswerConfig:
    length: float | str = field(default="call", metadata={"length": True, "range": (0.25, 256)})
    start: str = _choice("bar", "bar", "beat")
    max_beats: float = _num(1, 256, 32.0)
    min_beats: float = _num(0, 256, 2.0)
    temperature: float = _num(0, 5, 0.9)
    top_p: float = _num(0, 1, 0.92)
    articulation: float = _num(0.05, 1, 0.9)
    max_note_beats: float = _num(0.05, 64, 2.0)
    range_widen: int = _num(0, 48, 12)
    barge_in: str = _choice("stop", "stop", "keep")
    seed: int | None = None
    cadence: float = _num(0, 1, 1.0)
    register_pull: float = _num(0, 8, 1.0)


@dataclass
class SessionConfig:
    enabled: bool = True
    folder: str = _text("sessions")
    save_every_s: float = _num(0.5, 3600, 5.0)


@dataclass
class TimeConfig:
    """Playing in time with the performer (midiclock.py, link.py, tempo.py, grid.py,
    metronome.py)."""

    clock: str = _choice("follow", "follow", "ignore", "link", "auto")
    link_quantum: int = _num(1, 16, 4)
    meter: int | None = field(default=None, metadata={"range": (1, 8)})
    link_lead: bool = False
    clock_port: str | None = None
    clock_window_ticks: int = _num(6, 384, 48)
    tempo: str = _choice("auto", "fixed", "auto")
    auto_min_bpm: float = _num(20, 400, 60.0)
    auto_max_bpm: float = _num(20, 400, 180.0)
    phrase_end: str = _choice("adaptive", "fixed", "adaptive")
    phrase_end_ioi: float = _num(0.5, 32, 3.0)
    phrase_end_min_s: float = _num(0.05, 60, 0.35)
    phrase_end_max_s: float = _num(0.05, 60, 4.0)
    pace_notes: int = _num(2, 256, 16)
    sustain_holds: bool = False
    end_on_pedal_release: bool = False
    end_cc: int | None = field(default=None, metadata={"range": (0, 127)})
    end_note: int | None = field(default=None, metadata={"range": (0, 127)})
    quantize: str = _choice("off", "off", "1/4", "1/8", "1/16", "1/8T")
    swing: float | str = field(default="auto", metadata={"word": "auto", "range": (0.5, 0.75)})
    metronome: bool = False
    count_in_beats: int = _num(0, 64, 0)
    click_channel: int = _num(1, 16, 10)
    click_note: int = _num(0, 127, 37)
    click_velocity: int = _num(1, 127, 90)

    def __post_init__(self) -> None:
        if self.auto_min_bpm >= self.auto_max_bpm:
            raise ConfigError(f"time.auto_max_bpm: expected more than time.auto_min_bpm "
                              f"({self.auto_min_bpm:g}), got {self.auto_max_bpm:g}")
        if self.phrase_end_min_s > self.phrase_end_max_s:
            raise ConfigError(f"time.phrase_end_max_s: expected at least "
                              f"time.phrase_end_min_s ({self.phrase_end_min_s:g}), got "
                              f"{self.phrase_end_max_s:g}")


@dataclass
class KeyConfig:
    """Key awareness (companion/encoding/key.py; key names: companion/encoding/names.py)."""

    fixed: str | None = None
    strength: float = _num(0, 1, 0.9)
    half_life_beats: float = _num(0, 10_000, 64.0)

    def __post_init__(self) -> None:
        if self.fixed is not None:
            from companion.encoding.names import parse_key

            try:
                parse_key(self.fixed)
            except ValueError as e:
                raise ConfigError(f"key.fixed: {e}") from e


@dataclass
class RangeConfig:
    """The absolute pitch range of the answers (a bass part, a piccolo part)."""

    lowest: int = _num(0, 127, 0)
    highest: int = _num(0, 127, 127)

    def __post_init__(self) -> None:
        if self.lowest > self.highest:
            raise ConfigError(f"range.highest: expected at least range.lowest "
                              f"({self.lowest}), got {self.highest}")


@dataclass
class StyleConfig:
    """Live style adaptation (companion/engine/style.py) and the repeated-curve guard."""

    weight: float = _num(0, 1, 0.3)
    order: int = _num(1, 8, 4)
    memory: int = _num(16, 65536, 2048)
    max_repeat: int = _num(1, 64, 3)


def _cc(default: int | None = None) -> Any:
    return field(default=default, metadata={"range": (0, 119)})


def _check_cc_clashes(self: Any) -> None:
    """No CC moves two controls."""
    seen: dict[int, str] = {}
    for name in CC_CONTROLS:
        cc = getattr(self, name)
        if cc is None:
            continue
        if cc in seen:
            raise ConfigError(f"controls.{name}: CC {cc} is already controls.{seen[cc]}")
        seen[cc] = name


#: The ``controls:`` keys that a registry entry's ``cc_top`` names (the value a CC's 127
#: reaches), each placed after that control's own key.
_CC_TOPS: dict[str, tuple[Any, Any]] = {"controls.temperature_max": (float, _num(0.1, 5, 2.0))}


def _controls_fields() -> list[tuple[str, Any, Any]]:
    """``controls:``: the channel, a CC number (0..119) or null for each control of the
    registry that a CC can move (then its ``cc_top``, if one of _CC_TOPS), state_out."""
    fields: list[tuple[str, Any, Any]] = [
        ("channel", int | str, field(default="omni", metadata={"channel": True}))]
    for c in CONTROLS:
        if c.cc is not None:
            fields.append((c.name, int | None, _cc()))
        if c.cc_top in _CC_TOPS:
            fields.append((c.cc_top.removeprefix("controls."), *_CC_TOPS[c.cc_top]))
    return [*fields, ("state_out", int | None, _cc())]


#: MIDI controls (companion/realtime/controls.py): a CC number per control of the registry
#: (companion/live_controls.py) that a CC can move, null for none; no CC for two.
ControlsConfig = dataclasses.make_dataclass(
    "ControlsConfig", _controls_fields(),
    namespace={"__post_init__": _check_cc_clashes, "__module__": __name__,
               "__doc__": "MIDI controls: a CC number per control of CC_CONTROLS (null for "
                          "none), the channel, temperature_max and state_out."})


@dataclass
class UiConfig:
    """The control surface in the browser (companion/ui/, `--ui`)."""

    host: str = _text("127.0.0.1")
    port: int = _num(0, 65535, 8765)
    #: Pinned, the URL (and its QR code) stays the same from run to run: a tablet's
    #: bookmark keeps working. 8..128 characters that a URL carries as they are.
    token: str | None = field(default=None, metadata={"token": True})


def parse_host_port(text: str) -> tuple[str, int]:
    """``host:port`` (an IPv6 host in brackets) -> (host, port); ValueError naming what is
    wrong."""
    host, sep, port = text.rpartition(":")
    if not sep or not host.strip("[]") or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(f"expected host:port (a port 1..65535), got {text!r}")
    return host.strip("[]"), int(port)


@dataclass
class OscConfig:
    """OSC (companion/realtime/osc.py): the controls in over UDP, the jam's state out."""

    enabled: bool = False
    host: str = _text("127.0.0.1")
    port: int = _num(0, 65535, 9000)
    send_to: str | None = None

    def __post_init__(self) -> None:
        if self.send_to is not None:
            try:
                parse_host_port(self.send_to)
            except ValueError as e:
                raise ConfigError(f"osc.send_to: {e}") from None


@dataclass
class AccompanyConfig:
    """Playing along (companion/engine/accompany.py): chords and a bass under the melody."""

    mode: str = _choice("off", "off", "chords", "chords_bass", "bass")
    style: str = _choice("block", "block", "bar", "broken")
    #: `companion live`: accompany each call, then answer it (call), or accompany only.
    during: str = _choice("call", "call", "only")
    model: str = _text("models/harmony_nottingham")
    channel: int = _num(1, 16, 2)
    bass_channel: int = _num(1, 16, 3)
    temperature: float = _num(0, 5, 0.0)
    change_bias: float = _num(0, 10, 0.85)
    fit_weight: float = _num(0, 20, 1.0)
    fit_beats: float = _num(0.25, 16, 4.0)
    key_weight: float = _num(0, 20, 3.0)
    common_weight: float = _num(0, 20, 1.0)
    form_weight: float = _num(0, 50, 12.0)
    form_beats: float = _num(1, 32, 4.0)
    level: float = _num(0, 1, 0.7)
    lookahead_ms: float = _num(0, 2000, 50.0)
    lowest: int = _num(0, 127, 48)
    highest: int = _num(0, 127, 72)
    bass_low: int = _num(0, 115, 36)

    def __post_init__(self) -> None:
        if self.lowest > self.highest:
            raise ConfigError(f"accompany.highest: expected at least accompany.lowest "
                              f"({self.lowest}), got {self.highest}")


@dataclass
class Config:
    model: str = _text("models/default")
    midi: MidiConfig = field(default_factory=MidiConfig)
    listen: ListenConfig = field(default_factory=ListenConfig)
    answer: AnswerConfig = field(default_factory=AnswerConfig)
    session: SessionConfig = field(default_factory=SessionConfig)
    key: KeyConfig = field(default_factory=KeyConfig)
    range: RangeConfig = field(default_factory=RangeConfig)
    style: StyleConfig = field(default_factory=StyleConfig)
    controls: ControlsConfig = field(default_factory=ControlsConfig)
    time: TimeConfig = field(default_factory=TimeConfig)
    osc: OscConfig = field(default_factory=OscConfig)
    #: Program change -> model package: {program 1..128 (the number keyboards show): name}.
    models: dict[int, str] = field(default_factory=dict, metadata={"programs": True})
    ui: UiConfig = field(default_factory=UiConfig)
    accompany: AccompanyConfig = field(default_factory=AccompanyConfig)
    #: Folder the config was read from: relative paths in it are relative to this.
    base_dir: Path = field(default_factory=Path.cwd, metadata={"internal": True})

    def model_dir(self) -> Path:
        """The model package's folder, found by companion.packages.locate (ModelError if
        it is nowhere)."""
        from companion.packages import locate

        return locate(self.model, self.base_dir)

    def session_dir(self) -> Path:
        return self._resolve(self.session.folder)

    def _resolve(self, path: str) -> Path:
        p = Path(path).expanduser()
        return p if p.is_absolute() else self.base_dir / p


def _check(key: str, f: dataclasses.Field, value: Any, hint: Any) -> Any:
    meta = f.metadata
    allowed = typing.get_args(hint) if _is_union(hint) else (hint,)
    if value is None:
        if type(None) in allowed:
            return None
        raise ConfigError(f"{key}: expected a value, got null")
    if meta.get("programs"):
        return _programs(key, value)
    if meta.get("channel"):
        if value == "omni" or (
            isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 16
        ):
            return value
        raise ConfigError(f"{key}: expected \"omni\" or a channel 1..16, got {value!r}")
    if "word" in meta:  # a word ("auto") or a number in range
        word, (lo, hi) = meta["word"], meta["range"]
        if value == word:
            return value
        if isinstance(value, int | float) and not isinstance(value, bool) and lo <= value <= hi:
            return float(value)
        raise ConfigError(f"{key}: expected \"{word}\" or a number in {lo:g}..{hi:g}, "
                          f"got {value!r}")
    if value is False and "off" in meta.get("choices", ()):  # YAML 1.1 reads `off` as false
        return "off"
    if meta.get("length"):
        lo, hi = meta["range"]
        if value == "call":
            return value
        if isinstance(value, int | float) and not isinstance(value, bool) and lo <= value <= hi:
            return float(value)
        raise ConfigError(
            f"{key}: expected \"call\" or a number of beats in {lo:g}..{hi:g}, got {value!r}"
        )
    if bool in allowed:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected true or false, got {value!r}")
    if float in allowed or int in allowed:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        lo, hi = meta.get("range", (None, None))
        if not math.isfinite(value):  # YAML's .nan / .inf, OSC's NaN
            within = "a finite number" if lo is None else f"a number in {lo:g}..{hi:g}"
            raise ConfigError(f"{key}: expected {within}, got {value!r}")
        given = value
        if int in allowed and float not in allowed:
            if float(value) != int(value):
                raise ConfigError(f"{key}: expected a whole number, got {value!r}")
            value = int(value)
        else:
            value = float(value)
        if lo is not None and not lo <= value <= hi:
            raise ConfigError(f"{key}: expected a number in {lo:g}..{hi:g}, got {given!r}")
        return value
    if str in allowed:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected text, got {value!r}")
        if meta.get("nonempty") and not value.strip():
            raise ConfigError(f"{key}: expected a non-empty name, got {value!r}")
        if meta.get("token") and not re.fullmatch(r"[A-Za-z0-9._~-]{8,128}", value):
            raise ConfigError(f"{key}: expected 8 to 128 letters, digits or - _ . ~ (what a "
                              f"URL carries as it is), got {value!r}")
        choices = meta.get("choices")
        if choices and value not in choices:
            raise ConfigError(f"{key}: expected one of {', '.join(choices)}, got {value!r}")
        return value
    raise ConfigError(f"{key}: unsupported value {value!r}")  # pragma: no cover


def check_of(key: str) -> dict[str, Any]:
    """The check a config key (``section.key``) gets, as data for the page and the CCs:
    ``{"kind": "range", "min", "max", "whole"}`` (a number in min..max, a whole one if
    ``whole``; with ``"word"``, that word too) or ``{"kind": "choice", "choices"}`` (one of
    them; true/false for a switch). ConfigError naming the key if the config has no such
    key, or it is checked otherwise."""
    section, _, name = key.rpartition(".")
    cls = _hints(Config).get(section) if section else Config
    fields = {f.name: f for f in dataclasses.fields(cls)} if dataclasses.is_dataclass(cls) else {}
    if name not in fields:
        raise ConfigError(f"{key}: no such config key")
    f, hint = fields[name], _hints(cls)[name]
    meta = f.metadata
    allowed = typing.get_args(hint) if _is_union(hint) else (hint,)
    if "choices" in meta:
        return {"kind": "choice", "choices": list(meta["choices"])}
    if "range" in meta:
        lo, hi = meta["range"]
        d = {"kind": "range", "min": lo, "max": hi,
             "whole": int in allowed and float not in allowed}
        if meta.get("length"):
            d["word"] = "call"
        elif "word" in meta:
            d["word"] = meta["word"]
        return d
    if allowed == (bool,):
        return {"kind": "choice", "choices": [True, False]}
    raise ConfigError(f"{key}: checked otherwise than by a range or choices")


def _programs(key: str, value: Any) -> dict[int, str]:
    """``{program: package name}``: programs 1..128, names of model packages (never paths;
    whether each is there is checked when the companion starts)."""
    from companion.packages import PACKAGE_NAME

    if not isinstance(value, dict):
        raise ConfigError(f"{key}: expected a mapping of program numbers 1..128 to model "
                          f"package names, got {value!r}")
    out: dict[int, str] = {}
    for prog, name in value.items():
        if isinstance(prog, bool) or not isinstance(prog, int) or not 1 <= prog <= 128:
            raise ConfigError(f"{key}: expected program numbers 1..128, got {prog!r}")
        if not isinstance(name, str) or not PACKAGE_NAME.fullmatch(name):
            raise ConfigError(f"{key}.{prog}: expected the name of a model package (a folder "
                              f"name, no path), got {name!r}")
        out[prog] = name
    return out


def _is_union(hint: Any) -> bool:
    return typing.get_origin(hint) in (typing.Union, types.UnionType)


def _build(cls: type, data: Any, prefix: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix or 'config'}: expected a mapping of keys, got {data!r}")
    hints = _hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if not f.metadata.get("internal")}
    unknown = [k for k in data if k not in fields]
    if unknown:
        key = f"{prefix}{unknown[0]}"
        raise ConfigError(f"{key}: unknown key (known here: {', '.join(fields)})")
    kwargs = {}
    for name, value in data.items():
        f, hint = fields[name], hints[name]
        if dataclasses.is_dataclass(hint):
            kwargs[name] = _build(hint, value if value is not None else {}, f"{prefix}{name}.")
        else:
            kwargs[name] = _check(f"{prefix}{name}", f, value, hint)
    return cls(**kwargs)


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    """The type hints of a config section (evaluated once: they never change)."""
    return typing.get_type_hints(cls)


def from_dict(data: dict | None, base_dir: Path | None = None) -> Config:
    cfg = _build(Config, data or {}, "")
    cfg.base_dir = base_dir or Path.cwd()
    return cfg


#: The config file read when none is named (``--config F``): this one in the working folder.
DEFAULT_PATH = Path("config.yaml")


def shipped_config() -> Path:
    """The shipped config.yaml, every key with its default and documented: the package's
    own copy in an installed companion (setup.py puts it there), else the clone's, beside
    companion/. ConfigError where neither is there."""
    here = Path(__file__).resolve().parent
    for path in (here / "config.yaml", here.parent / "config.yaml"):
        if path.is_file():
            return path
    raise ConfigError(f"the shipped config.yaml is missing from this installation ({here})")


def init_config(path: str | Path | None = None) -> Path:
    """Write a copy of the shipped config.yaml to ``path`` (default ./config.yaml), to edit;
    a file already there is never overwritten: ConfigError, and nothing written."""
    path = Path(path) if path is not None else DEFAULT_PATH
    text = shipped_config().read_text()
    if path.is_dir():
        path = path / DEFAULT_PATH.name
    try:
        with open(path, "x") as f:  # "x": fails if it exists, atomically
            f.write(text)
    except FileExistsError:
        raise ConfigError(f"{path}: already there, not overwritten (edit it, or remove it "
                          f"first)") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot write ({e.strerror or e})") from e
    return path


def load(path: str | Path | None = None) -> Config:
    """Read a config file; with no path, ``config.yaml`` in the working folder if present."""
    if path is None:
        default = DEFAULT_PATH
        if not default.exists():
            return from_dict({})
        path = default
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as e:
        raise ConfigError(f"{path}: cannot read config ({e.strerror or e})") from e
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}: not valid YAML{where}") from e
    try:
        return from_dict(data, path.resolve().parent)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from e


def override(cfg: Config, key: str, value: Any) -> Config:
    """Set ``section.key`` (or a top-level key) with the same checks as the file."""
    parts = key.split(".")
    target: Any = cfg
    for p in parts[:-1]:
        target = getattr(target, p)
    f = {f.name: f for f in dataclasses.fields(target)}[parts[-1]]
    hint = _hints(type(target))[parts[-1]]
    setattr(target, parts[-1], _check(key, f, value, hint))
    return cfg
