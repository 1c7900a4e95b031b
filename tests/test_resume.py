"""Training faults: a run killed mid-way resumes from its checkpoint in --work, and
an export that fails leaves the previous --out package byte-identical. A tiny model on a
few Nottingham tunes, so that each run takes seconds, not minutes."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from support import ROOT

TINY = ["--units", "16", "--embed", "8", "--window", "32", "--epochs", "4", "--batch", "8",
        "--seed", "7", "--patience", "10", "--quiet"]


def env() -> dict:
    return dict(os.environ, PYTHONPATH=str(ROOT), TF_CPP_MIN_LOG_LEVEL="3")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, nottingham) -> Path:
    d = tmp_path_factory.mktemp("corpus")
    for f in nottingham[:40]:
        (d / f.name).write_bytes(f.read_bytes())
    return d


def epochs(work: Path) -> list[int]:
    path = work / "history.csv"
    if not path.exists():
        return []
    with open(path) as f:
        return [int(float(row["epoch"])) for row in csv.DictReader(f)]


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file()}


@pytest.fixture(scope="module")
def resumed(corpus, tmp_path_factory):
    """A run SIGKILLed once its first epoch's backup is written, then run again."""
    base = tmp_path_factory.mktemp("resume")
    out, work = base / "models" / "tiny", base / "work"
    args = [sys.executable, "-m", "train", "--corpus", str(corpus), "--out", str(out),
            "--work", str(work), *TINY]
    proc = subprocess.Popen(args, cwd=ROOT, env=env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    backup = work / "backup"
    while not (backup.is_dir() and any(backup.iterdir())):
        assert proc.poll() is None, proc.stderr.read()[-3000:]
        assert time.monotonic() < deadline, "no backup after 300 s"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    proc.stderr.close()
    killed_after = epochs(work)
    assert not out.exists(), "a killed run must not write the package"
    r = subprocess.run(args, cwd=ROOT, env=env(), capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    return out, work, killed_after, r, args


def test_killed_training_resumes_from_its_checkpoint(resumed):
    out, work, killed_after, r, _ = resumed
    print(f"resume: killed with epochs {killed_after} in history.csv; after the rerun "
          f"{epochs(work)}")
    assert len(killed_after) < 4, "the run was not killed mid-way"
    assert "resuming from" in r.stderr
    # the history goes on from where it stopped: every epoch once, in order
    assert epochs(work) == [0, 1, 2, 3]
    card = json.loads((out / "card.json").read_text())
    assert card["training"]["epochs_run"] == 4
    for f in ("model.onnx", "vocab.json", "card.json"):
        assert (out / f).is_file()


@pytest.mark.parametrize("fault", ["parity", "disk full"])
def test_failed_export_leaves_the_previous_package(resumed, fault):
    """Same command, same --work (training is done there: straight to export), but the
    export fails: the package in --out stays byte for byte what it was."""
    out, work, _, _, args = resumed
    before = snapshot(out)
    assert before
    if fault == "parity":
        patch = "import train.train as t; t.PARITY_TOL = -1.0"
    else:
        patch = ("import train.export as e\n"
                 "def full(*a, **k):\n    raise OSError(28, 'No space left on device')\n"
                 "e.write_step = full")
    code = f"import sys\n{patch}\nfrom train.train import main\nsys.exit(main(sys.argv[1:]))"
    r = subprocess.run([sys.executable, "-c", code, *args[3:]], cwd=ROOT, env=env(),
                       capture_output=True, text=True, timeout=600)
    assert r.returncode != 0
    assert "training finished earlier" in r.stderr
    assert snapshot(out) == before
    assert not (out.parent / f".{out.name}.old").exists()
