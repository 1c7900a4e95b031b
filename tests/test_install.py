"""The companion installs like a tool: the model lookup, and the wheel in a fresh venv run from
a folder of its own (the `slow` tests)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import threading
import time
import zipfile
from pathlib import Path

import mido
import pytest
from support import ROOT

from companion import config, packages
from companion.commands.cli import main
from companion.engine.model import ModelError
from companion.packages import installed_models, locate

SHIPPED = ("model.onnx", "vocab.json", "card.json")


def package(folder: Path) -> Path:
    folder.mkdir(parents=True)
    return folder


# -- the model lookup ---------------------------------------------------------------------


def test_an_absolute_path_is_taken_as_it_is(tmp_path, monkeypatch):
    monkeypatch.chdir(package(tmp_path / "work"))
    pkg = package(tmp_path / "elsewhere" / "mine")
    assert locate(str(pkg), tmp_path / "cfg") == pkg
    with pytest.raises(ModelError) as e:
        locate(str(tmp_path / "nothing"), tmp_path / "cfg")
    assert str(e.value) == (f"{tmp_path / 'nothing'}: no model package there "
                            "(expected a folder with model.onnx)")


def test_a_relative_path_is_tried_in_the_config_folder_then_the_working_folder(
        tmp_path, monkeypatch):
    cfg_dir, work = package(tmp_path / "cfg"), package(tmp_path / "work")
    monkeypatch.chdir(work)
    in_work = package(work / "models" / "mine")
    assert locate("models/mine", cfg_dir) == in_work
    in_cfg = package(cfg_dir / "models" / "mine")
    assert locate("models/mine", cfg_dir) == in_cfg


def test_a_name_found_nowhere_else_is_an_installed_package(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    root = installed_models()
    assert root is not None and (root / "default" / "model.onnx").is_file()
    assert locate("models/default", tmp_path) == root / "default"
    assert locate("default", tmp_path) == root / "default"
    mine = package(tmp_path / "models" / "default")  # the working folder's comes first
    assert locate("models/default", tmp_path / "cfg") == mine


def test_only_a_name_or_models_name_is_looked_up_among_the_installed(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ModelError) as e:
        locate("other/default", tmp_path / "cfg")
    assert str(e.value) == (
        "other/default: no model package there (expected a folder with model.onnx; looked in "
        f"{tmp_path / 'cfg' / 'other' / 'default'}, {tmp_path / 'other' / 'default'})")


def test_a_model_found_nowhere_names_every_place_looked_in(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ModelError) as e:
        locate("models/folk", tmp_path / "cfg")
    looked = [tmp_path / "cfg" / "models" / "folk", tmp_path / "models" / "folk",
              installed_models() / "folk"]
    assert str(e.value).endswith(f"looked in {', '.join(map(str, looked))})")


def test_without_installed_models_a_name_is_looked_up_in_the_folders_only(
        tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(packages, "INSTALLED", "companion.no_such_package")
    assert installed_models() is None
    with pytest.raises(ModelError) as e:
        locate("models/default", tmp_path)
    assert str(e.value).endswith(f"looked in {tmp_path / 'models' / 'default'})")


def test_no_config_file_means_the_defaults_and_the_installed_default_model(
        tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = config.load()
    assert cfg == config.from_dict({}) and cfg.model == "models/default"
    assert cfg.model_dir() == installed_models() / "default"


def test_a_config_files_model_is_relative_to_its_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(package(tmp_path / "work"))
    pkg = package(tmp_path / "cfg" / "mine")
    path = tmp_path / "cfg" / "config.yaml"
    path.write_text("model: mine\n")
    assert config.load(path).model_dir() == pkg


def test_cli_model_option_takes_an_installed_name(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    call = str(ROOT / "companion" / "calls" / "2-jig.json")
    assert main(["respond", call, "--json", "--seed", "1", "--model", "default"]) == 0
    by_name = json.loads(capsys.readouterr().out)
    assert main(["respond", call, "--json", "--seed", "1"]) == 0
    assert json.loads(capsys.readouterr().out) == by_name and by_name


def test_cli_model_found_nowhere_is_one_line_exit_2(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    call = str(ROOT / "companion" / "calls" / "2-jig.json")
    assert main(["respond", call, "--model", "models/folk"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: models/folk: no model package there") and "\n" not in err
    assert str(tmp_path / "models" / "folk") in err
    assert not list(tmp_path.iterdir())  # nothing written


# -- the wheel in a fresh venv ------------------------------------------------------------

#: what the source tree holds that is not the project (the build's own leftovers included)
NOT_SOURCE = shutil.ignore_patterns(".venv", ".git", "build", "dist", "*.egg-info",
                                    "__pycache__", ".*cache", "sessions", "runs")


def clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env["PYTHONNOUSERSITE"] = "1"
    return env


def check(cmd: list, **kw) -> subprocess.CompletedProcess:
    r = subprocess.run([str(c) for c in cmd], capture_output=True, text=True,
                       env=clean_env(), timeout=600, **kw)
    assert r.returncode == 0, (cmd, r.stdout[-2000:], r.stderr[-4000:])
    return r


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel, built from a copy of the source tree with this venv's setuptools."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    shutil.copytree(ROOT, src, ignore=NOT_SOURCE)
    check([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
           "-q", "-w", tmp / "dist", src])
    (whl,) = (tmp / "dist").glob("midi_companion-*.whl")
    return whl


@pytest.fixture(scope="module")
def venv(wheel, tmp_path_factory) -> tuple[Path, Path]:
    """A fresh venv with the wheel installed; the dependencies come from this venv's
    site-packages through a .pth file (whose own .pth files, the editable install's
    among them, are then not processed). Returns (bin folder, site-packages)."""
    home = tmp_path_factory.mktemp("venv") / "v"
    check([sys.executable, "-m", "venv", "--without-pip", home])
    py = home / "bin" / "python"
    check([sys.executable, "-m", "pip", "--python", py, "install", "--no-deps", "-q", wheel])
    site = Path(check([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"])
                .stdout.strip())
    ours = dict.fromkeys([sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]])
    (site / "zz_dependencies.pth").write_text("".join(f"{p}\n" for p in ours))
    return home / "bin", site


@pytest.mark.slow
def test_the_wheel_holds_the_model_the_calls_and_the_license(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {f"companion/models/default/{f}" for f in SHIPPED} <= names
    assert "companion/models/__init__.py" in names
    assert "companion/models/default/training_curves.png" not in names
    assert {n.split("/")[0] for n in names if "/" in n} & {"bench", "train", "lab"} == set()
    calls = sorted(p.name for p in (ROOT / "companion" / "calls").glob("*.json"))
    assert calls and {f"companion/calls/{c}" for c in calls} <= names
    (dist,) = {n.split("/")[0] for n in names if n.endswith(".dist-info/METADATA")}
    assert f"{dist}/licenses/LICENSE" in names
    with zipfile.ZipFile(wheel) as z:
        assert z.read(f"{dist}/licenses/LICENSE") == (ROOT / "LICENSE").read_bytes()
        assert "License-Expression: MIT" in z.read(f"{dist}/METADATA").decode().splitlines()
        for f in SHIPPED:
            assert z.read(f"companion/models/default/{f}") == \
                (ROOT / "models" / "default" / f).read_bytes()
        # the shipped settings, for `companion config --init` (setup.py)
        assert z.read("companion/config.yaml") == (ROOT / "config.yaml").read_bytes()


@pytest.mark.slow
def test_the_installed_companion_is_the_venvs_own(venv, tmp_path):
    bin_dir, site = venv
    r = check([bin_dir / "python", "-c",
               "import companion, mido; from companion.packages import installed_models; "
               "print(companion.__file__); print(installed_models()); print(mido.__file__)"],
              cwd=tmp_path)
    companion_file, models, mido_file = r.stdout.split()
    assert Path(companion_file) == site / "companion" / "__init__.py"
    assert Path(models) == site / "companion" / "models"
    assert Path(mido_file).is_relative_to(sysconfig.get_paths()["purelib"])  # this venv's


@pytest.mark.slow
def test_installed_config_init_writes_the_shipped_config_in_a_fresh_folder(venv, tmp_path):
    bin_dir, site = venv
    r = check([bin_dir / "companion", "config"], cwd=tmp_path)
    assert r.stdout.splitlines() == [
        f"config file: none (config.yaml is not in {tmp_path}): every setting at its default",
        f"shipped config: {site / 'companion' / 'config.yaml'} (`companion config --init` "
        f"copies it into the working folder, to edit)"]
    check([bin_dir / "companion", "config", "--init"], cwd=tmp_path)
    assert (tmp_path / "config.yaml").read_bytes() == (ROOT / "config.yaml").read_bytes()
    r = check([bin_dir / "companion", "models"], cwd=tmp_path)  # it reads it: the default
    assert "* default " in r.stdout


@pytest.mark.slow
def test_installed_bench_is_a_one_line_error(venv, tmp_path):
    """The wheel installs only the companion: `companion bench` runs from a clone."""
    bin_dir, _ = venv
    r = subprocess.run([str(bin_dir / "companion"), "bench", "--quick"], cwd=tmp_path,
                       env=clean_env(), capture_output=True, text=True, timeout=120)
    assert r.returncode == 1, r.stderr[-2000:]
    assert r.stdout == "" and r.stderr.count("\n") == 1, r.stderr[-2000:]
    assert r.stderr.startswith("error: companion bench is not available: it runs from a "
                               "clone of the repository"), r.stderr


@pytest.mark.slow
def test_installed_respond_from_a_fresh_folder(venv, tmp_path, monkeypatch, capsys):
    bin_dir, site = venv
    call = site / "companion" / "calls" / "2-jig.json"
    r = check([bin_dir / "companion", "respond", call, "--json", "--seed", "1"], cwd=tmp_path)
    answer = json.loads(r.stdout)
    assert answer and all(set(n) == {"pitch", "start_beats", "duration_beats", "velocity"}
                          for n in answer)
    assert all(0 <= n["pitch"] <= 127 and 1 <= n["velocity"] <= 127
               and n["duration_beats"] > 0 for n in answer)
    starts = [n["start_beats"] for n in answer]
    assert starts == sorted(starts)
    written = mido.MidiFile(tmp_path / "2-jig-response.mid")
    assert [t.name for t in written.tracks if t.name] == ["call", "answer"]
    # the same answer as the repository's own companion gives
    monkeypatch.chdir(tmp_path)
    assert main(["respond", str(call), "--json", "--seed", "1", "-o", "here.mid"]) == 0
    assert json.loads(capsys.readouterr().out) == answer


@pytest.mark.slow
def test_installed_demo_from_a_fresh_folder_answers_and_stops_on_ctrl_c(venv, tmp_path):
    bin_dir, _ = venv
    proc = subprocess.Popen([str(bin_dir / "companion"), "demo"], cwd=tmp_path,
                            env=clean_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    lines: list[str] = []
    answered = threading.Event()

    def read() -> None:
        for line in proc.stdout:
            lines.append(line)
            if "answer note 1," in line:
                answered.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        ok = answered.wait(90)
        if ok:
            time.sleep(0.5)
            proc.send_signal(signal.SIGINT)
            proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    reader.join(5)
    err = proc.stderr.read()
    assert ok, f"no answer in 90 s:\n{''.join(lines)}{err}"
    assert proc.returncode == 0, err
    text = "".join(lines)
    assert "companion demo: model " + str(bin_dir.parent) in text
    assert "phrase end" in text and text.rstrip().endswith("demo over")
    assert not list(tmp_path.iterdir())  # it writes nothing in the working folder
