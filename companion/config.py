"""The one typed config object, loaded from config.yaml.

Each field carries its own check (range or choices) so that an error can name the key:
``config.yaml: answer.temperature: expected a number in 0..5, got 9``.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


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
    backend: str = _choice("alsa", "alsa", "jack", "coremidi", "winmm")
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


@dataclass
class AnswerConfig:
    length: float | str = field(default="call", metadata={"length": True})
    max_beats: float = _num(1, 256, 16.0)
    min_beats: float = _num(0, 256, 2.0)
    temperature: float = _num(0, 5, 0.9)
    top_p: float = _num(0, 1, 0.92)
    articulation: float = _num(0.05, 1, 0.9)
    max_note_beats: float = _num(0.05, 64, 2.0)
    range_widen: int = _num(0, 48, 12)
    barge_in: str = _choice("stop", "stop", "keep")
    seed: int | None = None


@dataclass
class SessionConfig:
    enabled: bool = True
    folder: str = _text("sessions")


@dataclass
class Config:
    model: str = _text("models/default")
    midi: MidiConfig = field(default_factory=MidiConfig)
    listen: ListenConfig = field(default_factory=ListenConfig)
    answer: AnswerConfig = field(default_factory=AnswerConfig)
    session: SessionConfig = field(default_factory=SessionConfig)
    #: Folder the config was read from: relative paths in it are relative to this.
    base_dir: Path = field(default_factory=Path.cwd, metadata={"internal": True})

    def model_dir(self) -> Path:
        return self._resolve(self.model)

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
    if meta.get("channel"):
        if value == "omni" or (
            isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 16
        ):
            return value
        raise ConfigError(f"{key}: expected \"omni\" or a channel 1..16, got {value!r}")
    if meta.get("length"):
        if value == "call":
            return value
        if isinstance(value, int | float) and not isinstance(value, bool) and 0.25 <= value <= 256:
            return float(value)
        raise ConfigError(
            f"{key}: expected \"call\" or a number of beats in 0.25..256, got {value!r}"
        )
    if bool in allowed:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected true or false, got {value!r}")
    if float in allowed or int in allowed:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        given = value
        if int in allowed and float not in allowed:
            if float(value) != int(value):
                raise ConfigError(f"{key}: expected a whole number, got {value!r}")
            value = int(value)
        else:
            value = float(value)
        lo, hi = meta.get("range", (None, None))
        if lo is not None and not lo <= value <= hi:
            raise ConfigError(f"{key}: expected a number in {lo:g}..{hi:g}, got {given!r}")
        return value
    if str in allowed:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected text, got {value!r}")
        if meta.get("nonempty") and not value.strip():
            raise ConfigError(f"{key}: expected a non-empty name, got {value!r}")
        choices = meta.get("choices")
        if choices and value not in choices:
            raise ConfigError(f"{key}: expected one of {', '.join(choices)}, got {value!r}")
        return value
    raise ConfigError(f"{key}: unsupported value {value!r}")  # pragma: no cover


def _is_union(hint: Any) -> bool:
    return typing.get_origin(hint) in (typing.Union, types.UnionType)


def _build(cls: type, data: Any, prefix: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix or 'config'}: expected a mapping of keys, got {data!r}")
    hints = typing.get_type_hints(cls)
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


def from_dict(data: dict | None, base_dir: Path | None = None) -> Config:
    cfg = _build(Config, data or {}, "")
    cfg.base_dir = base_dir or Path.cwd()
    return cfg


def load(path: str | Path | None = None) -> Config:
    """Read a config file; with no path, ``config.yaml`` in the working folder if present."""
    if path is None:
        default = Path("config.yaml")
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
    hint = typing.get_type_hints(type(target))[parts[-1]]
    setattr(target, parts[-1], _check(key, f, value, hint))
    return cfg
