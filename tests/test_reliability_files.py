"""Bad files and settings: exit 2, ONE line naming the file or key and what was
expected, no traceback, and nothing overwritten (every file's bytes compared before/after).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from support import ROOT, write_config

CALL_JSON = {"name": "c", "notes": [[60, 0, 0.5, 80], [62, 0.5, 0.5, 80], [64, 1, 1, 80]]}


def snapshot(*folders: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for f in folders for p in sorted(f.rglob("*")) if p.is_file()}


def run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "companion", *args], cwd=cwd,
                          env=dict(os.environ, PYTHONPATH=str(ROOT)), capture_output=True,
                          text=True, timeout=120)


def one_line(r: subprocess.CompletedProcess) -> str:
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    assert "Traceback" not in r.stderr + r.stdout
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    return lines[0]


def wrong_io_onnx(path: Path, vocab_size: int) -> None:
    """A valid ONNX model whose inputs and outputs are not the step's."""
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, vocab_size])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, vocab_size])
    g = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g", [x], [y])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.save(m, str(path))


def break_model(pkg: Path, how: str) -> str:
    """Spoil the package copy ``pkg``; return what the error line must name."""
    onnx_path, vocab = pkg / "model.onnx", pkg / "vocab.json"
    if how == "missing onnx":
        onnx_path.unlink()
        return "model.onnx"
    if how == "corrupt onnx":
        onnx_path.write_bytes(b"\x08\x07garbage, not a protobuf" * 10)
        return "model.onnx"
    if how == "empty onnx":
        onnx_path.write_bytes(b"")
        return "model.onnx"
    if how == "truncated onnx":
        onnx_path.write_bytes(onnx_path.read_bytes()[:2000])
        return "model.onnx"
    if how == "wrong inputs":
        wrong_io_onnx(onnx_path, json.loads(vocab.read_text())["specials"]["bos"] + 1)
        return "model.onnx"
    if how == "vocab size":
        data = json.loads(vocab.read_text())
        data["curves"] = data["curves"][:-3]
        n = len(data["curves"])
        data["specials"] = {k: n + i for i, k in enumerate(data["specials"])}
        vocab.write_text(json.dumps(data))
        return "vocab.json"
    if how == "vocab not json":
        vocab.write_text("{not json")
        return "vocab.json"
    if how == "vocab wrong shape":
        vocab.write_text(json.dumps({"format": 1, "time_unit": "quarter",
                                     "curves": [["a", "b"]], "specials": {"bos": "x"}}))
        return "vocab.json"
    if how == "missing vocab":
        vocab.unlink()
        return "vocab.json"
    if how == "card not json":
        (pkg / "card.json").write_text("[1, 2")
        return "card.json"
    raise AssertionError(how)


BROKEN = ["missing onnx", "corrupt onnx", "empty onnx", "truncated onnx", "wrong inputs",
          "vocab size", "vocab not json", "vocab wrong shape", "missing vocab", "card not json"]


CASES = [("respond", how) for how in BROKEN] + [
    ("live", how) for how in ("corrupt onnx", "wrong inputs", "vocab size")]


@pytest.mark.parametrize("command, how", CASES)
def test_broken_model_package(tmp_path, model_pkg, how, command):
    pkg = tmp_path / "pkg"
    shutil.copytree(model_pkg, pkg)
    named = break_model(pkg, how)
    call = tmp_path / "call.json"
    call.write_text(json.dumps(CALL_JSON))
    out = tmp_path / "out.mid"
    out.write_bytes(b"an earlier answer")
    before = snapshot(tmp_path)
    if command == "respond":
        r = run(["respond", str(call), "-o", str(out), "--model", str(pkg)], tmp_path)
    else:  # the model is read before any MIDI port is opened: no MIDI system needed
        r = run(["live", "--model", str(pkg), "--backend", "jack"], tmp_path)
    line = one_line(r)
    said = ("expected", "missing", "must", "not", "no ")
    assert named in line and any(w in line for w in said), line
    assert snapshot(tmp_path) == before
    assert not (tmp_path / "sessions").exists()


CONFIGS = [
    ("answer:\n  temprature: 0.5\n", "answer.temprature", "unknown key"),
    ("nonsense: 1\n", "nonsense", "unknown key"),
    ("answer:\n  temperature: hot\n", "answer.temperature", "expected a number"),
    ("answer:\n  temperature: 9\n", "answer.temperature", "0..5"),
    ("listen:\n  tempo_bpm: 5\n", "listen.tempo_bpm", "20..400"),
    ("midi:\n  passthrough: 3\n", "midi.passthrough", "true or false"),
    ("midi:\n  output_channel: 0\n", "midi.output_channel", "1..16"),
    ("midi: [1, 2]\n", "midi", "mapping"),
    ("session:\n  save_every_s: 0\n", "session.save_every_s", "0.5..3600"),
    ("answer:\n\ttemperature: 1\n", "c.yaml", "YAML"),
    ("- a list\n", "config", "mapping"),
]


@pytest.mark.parametrize("text, key, expected", CONFIGS)
def test_bad_config(tmp_path, model_pkg, capsys, text, key, expected):
    """In-process (the same `main` as the command, quicker); the subprocess below shows
    the same for a whole run."""
    from companion.commands.cli import main

    cfg = tmp_path / "c.yaml"
    cfg.write_text(text)
    call = tmp_path / "call.json"
    call.write_text(json.dumps(CALL_JSON))
    out = tmp_path / "out.mid"
    out.write_bytes(b"an earlier answer")
    before = snapshot(tmp_path, model_pkg)
    assert main(["respond", str(call), "-o", str(out), "--config", str(cfg),
                 "--model", str(model_pkg)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err, err
    assert key in err and expected in err, err
    assert snapshot(tmp_path, model_pkg) == before


def test_bad_config_whole_run(tmp_path, model_pkg):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("answer:\n  top_p: 2\n")
    before = snapshot(tmp_path)
    line = one_line(run(["live", "--config", str(cfg), "--model", str(model_pkg)], tmp_path))
    assert "c.yaml" in line and "answer.top_p" in line and "0..1" in line
    assert snapshot(tmp_path) == before


def test_unreadable_config_file(tmp_path, model_pkg):
    (tmp_path / "c.yaml").mkdir()  # a folder where the file should be
    line = one_line(run(["demo", "--config", str(tmp_path / "c.yaml")], tmp_path))
    assert "c.yaml" in line and "cannot read" in line


@pytest.mark.parametrize("kind", ["garbage.mid", "missing.mid", "folder.mid", "bad.json",
                                  "empty.abc", "binary.xml"])
def test_unreadable_call_file(tmp_path, model_pkg, kind):
    call = tmp_path / kind
    if kind == "garbage.mid":
        call.write_bytes(b"MThd\x00\x00\x00\x06\x00\x01garbage" + bytes(range(256)))
    elif kind == "folder.mid":
        call.mkdir()
    elif kind == "bad.json":
        call.write_text('{"notes": [[60, 0]]}')
    elif kind == "empty.abc":
        call.write_text("")
    elif kind == "binary.xml":
        call.write_bytes(np.random.default_rng(0).bytes(3000))
    out = tmp_path / "out.mid"
    out.write_bytes(b"an earlier answer")
    before = snapshot(tmp_path)
    line = one_line(run(["respond", str(call), "-o", str(out), "--model", str(model_pkg)],
                        tmp_path))
    assert kind in line, line
    assert snapshot(tmp_path) == before


def test_a_good_setup_still_works(tmp_path, model_pkg):
    """The same commands with nothing broken: exit 0 (the tests above fail for their cause)."""
    cfg = write_config(tmp_path / "c.yaml", model_pkg, answer={"seed": 1})
    call = tmp_path / "call.json"
    call.write_text(json.dumps(CALL_JSON))
    r = run(["respond", str(call), "-o", str(tmp_path / "out.mid"), "--config", str(cfg)],
            tmp_path)
    assert r.returncode == 0, r.stderr
