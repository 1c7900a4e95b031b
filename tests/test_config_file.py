"""config.yaml is the shipped settings: every key of the typed config in it, documented in
place, with the config's own default value."""

from __future__ import annotations

import dataclasses
import typing

import pytest
import yaml
from support import ROOT

from companion import config


def test_config_yaml_holds_every_key_documented_with_its_default():
    text = (ROOT / "config.yaml").read_text()
    data = yaml.safe_load(text)
    lines = text.splitlines()
    defaults = config.Config()
    shipped = config.load(ROOT / "config.yaml")  # as read: YAML's `off` is the word here
    sections = {f.name: getattr(defaults, f.name) for f in dataclasses.fields(defaults)
                if dataclasses.is_dataclass(getattr(defaults, f.name))}
    assert set(data) == set(sections) | {"model", "models"} and data["model"] == defaults.model
    assert data["models"] == defaults.models
    for name, section in sections.items():
        keys = [f.name for f in dataclasses.fields(section)]
        assert set(data[name]) == set(keys), f"{name}: yaml {sorted(data[name])} vs {keys}"
        for key in keys:
            assert getattr(getattr(shipped, name), key) == getattr(section, key), (
                f"{name}.{key}: not the default")
            at = next(i for i, ln in enumerate(lines) if ln.startswith(f"  {key}:")
                      and _section_of(lines, i) == name)
            while lines[at - 1].startswith("  ") and not lines[at - 1].lstrip().startswith("#"):
                at -= 1  # keys documented together, under one comment
            assert lines[at - 1].lstrip().startswith("#"), f"{name}.{key} is not documented"


def _section_of(lines: list[str], i: int) -> str:
    while lines[i].startswith(" ") or lines[i].startswith("#") or not lines[i].strip():
        i -= 1
    return lines[i].rstrip(":")


def _numeric_keys() -> list[str]:
    """Every key of the config whose value is (or may be) a number."""
    keys = []
    for section in dataclasses.fields(config.Config):
        cls = typing.get_type_hints(config.Config)[section.name]
        if not dataclasses.is_dataclass(cls):
            continue
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            hint = hints[f.name]
            allowed = typing.get_args(hint) or (hint,)
            if (int in allowed or float in allowed) and not f.metadata.get("channel"):
                keys.append(f"{section.name}.{f.name}")
    return keys


def test_the_numeric_keys_are_found():
    keys = _numeric_keys()
    assert {"style.max_repeat", "time.meter", "answer.range_widen", "answer.length",
            "time.swing", "answer.seed", "controls.temperature"} <= set(keys)


@pytest.mark.parametrize("key", _numeric_keys())
def test_a_number_that_is_not_finite_is_a_one_line_error_naming_the_key(key, tmp_path):
    section, name = key.split(".")
    path = tmp_path / "config.yaml"
    for text in (".nan", ".inf", "-.inf"):
        path.write_text(f"{section}:\n  {name}: {text}\n")
        with pytest.raises(config.ConfigError) as e:
            config.load(path)
        assert str(e.value).startswith(f"{path}: {key}: expected ") and "\n" not in str(e.value)
        with pytest.raises(config.ConfigError, match=f"^{key}: expected "):
            config.override(config.Config(), key, float(text.replace(".", "")))
