"""config.yaml is the shipped settings: every key of the typed config in it, documented in
place, with the config's own default value."""

from __future__ import annotations

import dataclasses
import typing

import pytest
import yaml
from support import ROOT

from companion import config
from companion.commands.cli import main


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


# -- companion config: where it is read from, and a copy to start from ----------------------


def test_config_init_writes_the_shipped_file_and_never_overwrites(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["config"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"config file: none (config.yaml is not in {tmp_path})")
    assert f"shipped config: {config.shipped_config()}" in out
    assert main(["config", "--init"]) == 0
    assert (tmp_path / "config.yaml").read_text() == (ROOT / "config.yaml").read_text()
    assert capsys.readouterr().out.startswith("wrote config.yaml: ")
    (tmp_path / "config.yaml").write_text("answer:\n  temperature: 1.5\n")
    assert main(["config", "--init"]) == 2
    err = capsys.readouterr().err
    assert err == "error: config.yaml: already there, not overwritten (edit it, or remove it " \
                  "first)\n"
    assert (tmp_path / "config.yaml").read_text() == "answer:\n  temperature: 1.5\n"
    assert main(["config"]) == 0
    assert capsys.readouterr().out.startswith(f"config file: {tmp_path / 'config.yaml'}\n")
    # another path, or a folder
    (tmp_path / "d").mkdir()
    assert main(["config", "--init", "d"]) == 0 and (tmp_path / "d" / "config.yaml").is_file()
    assert main(["config", "--init", "mine.yaml"]) == 0
    assert (tmp_path / "mine.yaml").read_text() == (ROOT / "config.yaml").read_text()


def test_config_names_a_bad_file_in_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "config.yaml").write_text("answer:\n  temperature: 9\n")
    assert main(["config"]) == 2
    assert capsys.readouterr().err == ("error: config.yaml: answer.temperature: expected a "
                                       "number in 0..5, got 9\n")


def test_the_copy_is_the_defaults_from_any_folder(tmp_path, monkeypatch):
    """The copy, written elsewhere, reads as the defaults: its model (models/default) is the
    installed default package, its paths relative to its own folder."""
    monkeypatch.chdir(tmp_path)
    path = config.init_config(tmp_path / "config.yaml")
    cfg = config.load(path)
    assert cfg.model_dir() == config.Config().model_dir()
    assert cfg.session_dir() == tmp_path / "sessions"
