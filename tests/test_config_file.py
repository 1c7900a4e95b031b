"""config.yaml is the shipped settings: every key of the typed config in it, documented in
place, with the config's own default value."""

from __future__ import annotations

import dataclasses

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
