"""The command line: config and options, one-line errors with exit 2, no MIDI system."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from support import ROOT, write_config

from companion.commands.cli import load_config, main


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err, err
    return err


def test_unknown_config_key_names_it(tmp_path, capsys, model_pkg):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("answer:\n  temprature: 0.5\n")
    assert main(["respond", "x.mid", "--config", str(cfg)]) == 2
    err = one_error_line(capsys)
    assert "c.yaml" in err and "answer.temprature" in err


@pytest.mark.parametrize("yaml_text, key", [
    ("session:\n  folder: ''\n", "session.folder"),
    ("session:\n  enabled: maybe\n", "session.enabled"),
    ("midi:\n  output_channel: 17\n", "midi.output_channel"),
    ("answer:\n  barge_in: sometimes\n", "answer.barge_in"),
    ("style:\n  max_repeat: .nan\n", "style.max_repeat"),
    ("time:\n  meter: .inf\n", "time.meter"),
    ("answer:\n  range_widen: -.inf\n", "answer.range_widen"),
])
def test_bad_config_values_name_the_key(tmp_path, capsys, yaml_text, key):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml_text)
    assert main(["demo", "--config", str(cfg)]) == 2
    assert key in one_error_line(capsys)


def test_options_override_config(tmp_path, model_pkg):
    cfg_path = write_config(tmp_path / "c.yaml", None, midi={"input": "keys", "output": "synth"})
    parser_args = ["live", "--config", str(cfg_path), "--virtual", "--backend", "jack",
                   "--model", str(model_pkg)]
    from companion.commands.cli import _parser

    cfg = load_config(_parser().parse_args(parser_args))
    assert cfg.midi.input is None and cfg.midi.output is None and cfg.midi.backend == "jack"
    assert cfg.model_dir() == model_pkg
    cfg = load_config(_parser().parse_args(["live", "--config", str(cfg_path), "--input", "k2"]))
    assert cfg.midi.input == "k2" and cfg.midi.output == "synth"
    assert cfg.accompany.mode == "off"
    cfg = load_config(_parser().parse_args(["live", "--config", str(cfg_path),
                                            "--accompany", "chords_bass"]))
    assert cfg.accompany.mode == "chords_bass"


def test_bad_option_value(capsys):
    assert main(["live", "--backend", "oss"]) == 2
    assert "--backend" in one_error_line(capsys)
    assert main(["respond", "x.mid", "--tempo", "5"]) == 2
    assert "--tempo" in one_error_line(capsys)
    assert main(["live", "--accompany", "organ"]) == 2
    assert "--accompany" in one_error_line(capsys)


def test_missing_model_is_exit_2(tmp_path, capsys):
    assert main(["live", "--model", str(tmp_path / "nothing")]) == 2
    assert "nothing" in one_error_line(capsys)


def test_bench_missing_is_a_one_line_error(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "bench.cli", None)  # as if the bench were not there
    assert main(["bench"]) == 1
    line = one_error_line(capsys)
    assert "companion bench is not available" in line and "bench package" in line


def test_bench_is_found_in_the_clone_from_any_folder(tmp_path):
    """The companion alone on the path (a link to the clone's companion/), run from a folder
    of its own: `companion bench` takes bench/ from beside it."""
    (tmp_path / "path").mkdir()
    (tmp_path / "path" / "companion").symlink_to(ROOT / "companion")
    r = subprocess.run([sys.executable, "-m", "companion", "bench", "--help"], cwd=tmp_path,
                       env=dict(os.environ, PYTHONPATH=str(tmp_path / "path")),
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "--quick" in r.stdout, r.stdout


def _run(*args, env=None):
    return subprocess.run([sys.executable, "-m", "companion", *args], cwd=ROOT,
                          env=dict(os.environ, PYTHONPATH=str(ROOT), **(env or {})),
                          capture_output=True, text=True, timeout=60)


def test_no_jack_server_is_one_clear_line():
    r = _run("ports", "--backend", "jack",
             env={"JACK_DEFAULT_SERVER": "companion-no-such-server", "JACK_NO_START_SERVER": "1"})
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "no MIDI system" in lines[0] and "JACK" in lines[0]
    assert "companion demo" in lines[0]


@pytest.mark.skipif(os.path.exists("/dev/snd/seq") or not sys.platform.startswith("linux"),
                    reason="this machine has an ALSA sequencer")
def test_no_alsa_sequencer_is_one_clear_line(model_pkg):
    r = _run("live", "--backend", "alsa", "--model", str(model_pkg))
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "/dev/snd/seq" in lines[0] and "snd-seq" in lines[0]


def test_live_path_imports_neither_music21_nor_tensorflow():
    code = ("import sys, companion.commands.cli, companion.commands.live, companion.midi.ports, "
            "companion.commands.demo\n"
            "bad = [m for m in ('music21', 'tensorflow', 'keras') if m in sys.modules]\n"
            "assert not bad, bad\n")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                       env=dict(os.environ, PYTHONPATH=str(ROOT)), timeout=60)
    assert r.returncode == 0, r.stderr
