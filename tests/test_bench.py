"""`companion bench`: every figure is taken (a number) or says why not (null).

Speed is measured by the benchmark, not asserted here: these tests run it in its quick
mode and check the shape of what it prints, never a timing goal.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest
from support import ROOT

from bench import cli as bench
from bench import jackserver
from bench.data import nottingham_dir
from bench.figures import Plan, Result, stats
from bench.training import measure_train


def _numbers(value) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int | float):
        return bool(np.isfinite(value))
    return isinstance(value, dict) and bool(value) and all(_numbers(v) for v in value.values())


def _args(model_pkg, **kw) -> argparse.Namespace:
    base = dict(json=True, quick=True, model=str(model_pkg), config=None, train=False,
                corpus=None)
    base.update(kw)
    return argparse.Namespace(**base)


@pytest.fixture(scope="module")
def quick_bench(model_pkg) -> tuple[str, Result]:
    """One `companion bench --json --quick` for the module: (what it printed, its Result)."""
    from companion.commands.cli import main

    results: list[Result] = []

    def run(*a, **k) -> Result:
        results.append(real_run(*a, **k))
        return results[-1]

    real_run = bench.run
    out = io.StringIO()
    with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stdout(out):
        mp.setattr(bench, "run", run)
        assert main(["bench", "--json", "--quick", "--model", str(model_pkg)]) == 0
    (res,) = results
    return out.getvalue(), res


@pytest.mark.slow
@pytest.mark.tensorflow
def test_quick_bench_prints_every_key_as_numbers_or_null(quick_bench):
    out = json.loads(quick_bench[0])
    assert list(out) == list(bench.KEYS)
    for key, value in out.items():
        assert value is None or _numbers(value), f"{key}: {value!r}"
    # the statistics each figure carries
    shapes = {"step_us": {"p50", "p99"}, "tf_step_us": {"p50"}, "keras_call_us": {"p50"},
              "listen_ms": {"p50", "p99"}, "answer_latency_ms": {"p50", "p99", "max"},
              "schedule_error_ms": {"p50", "p99", "max"}, "jack_roundtrip_ms": {"p50", "p99"},
              "turn_ahead_ms": {"p50", "min"},
              "clock_onset_error_ms": {"p50", "p99", "max"},
              "link_onset_error_ms": {"p50", "p99", "max"}}
    for key, want in shapes.items():
        if out[key] is not None:
            assert set(out[key]) == want, key
    for key in ("cold_start_s", "rss_mb"):
        assert out[key] is None or isinstance(out[key], int | float)
    # what needs no MIDI system and no TensorFlow is always there
    for key in ("step_us", "listen_ms", "answer_latency_ms", "schedule_error_ms",
                "turn_ahead_ms", "clock_onset_error_ms"):
        assert out[key] is not None, key


@pytest.mark.slow
@pytest.mark.tensorflow
def test_table_names_every_figure_and_its_repetitions(model_pkg, quick_bench, capsys,
                                                      monkeypatch):
    """The table of the module's quick bench (its figures, taken once)."""
    monkeypatch.setattr(bench, "run", lambda *a, **k: quick_bench[1])
    assert bench.main(_args(model_pkg, json=False)) == 0
    text = capsys.readouterr().out
    for key in bench.KEYS:
        assert key in text
    assert "interleaved rounds" in text  # the step figures say how they were taken


def test_missing_model_is_a_usage_error(tmp_path, capsys):
    assert bench.main(_args(tmp_path / "nowhere")) == 2
    assert "nowhere" in capsys.readouterr().err


def test_a_failing_part_leaves_its_figures_null_with_the_reason(model_pkg, monkeypatch):
    def broken(*_a, **_k):
        raise RuntimeError("no luck")

    for name in ("measure_listen_answer", "measure_schedule", "measure_turn",
                 "measure_process", "measure_steps", "measure_link", "measure_ui",
                 "measure_jitter"):
        monkeypatch.setattr(bench, name, broken)
    res = bench.run(model_pkg, Plan.quick(), quiet=True)
    assert set(res.figures) == set(bench.KEYS)
    assert all(v is None for v in res.figures.values())
    assert all("no luck" in res.notes[k] for k in bench.KEYS)


def test_stats_are_percentiles_and_max():
    s = stats(np.arange(1, 101, dtype=float), ("p50", "p99", "max"))
    assert s == {"p50": 50.5, "p99": 99.01, "max": 100.0}


def test_options():
    args = bench.parser().parse_args(["--json", "--quick", "--model", "m", "--train"])
    assert args.json and args.quick and args.train and args.model == "m"


@pytest.mark.slow
@pytest.mark.tensorflow
def test_train_figures(model_pkg, monkeypatch, nottingham):
    """--train: corpus files/s cold and warm, and training tokens/s (TensorFlow installed),
    on the bench's default corpus, the Nottingham melodies."""
    pytest.importorskip("tensorflow")
    res = Result()
    plan = Plan.quick()
    plan.train_files, plan.train_batches = 3, 1
    measure_train(plan, str(nottingham_dir()), res, quiet=True, vocab_size=40)
    assert set(res.figures["corpus_files_per_s"]) == {"cold", "warm"}
    assert _numbers(res.figures["corpus_files_per_s"])
    assert _numbers(res.figures["train_tokens_per_s"]), res.notes["train_tokens_per_s"]


def test_python_m_bench_is_companion_bench(tmp_path):
    """`python -m bench` parses the same options and fails the same way on a bad model."""
    r = subprocess.run([sys.executable, "-m", "bench", "--json", "--model",
                        str(tmp_path / "nowhere")], cwd=ROOT, capture_output=True, text=True,
                       env=dict(os.environ, PYTHONPATH=str(ROOT)), timeout=60)
    assert r.returncode == 2, r.stderr
    err = r.stderr.strip()
    assert err.startswith("error: ") and "\n" not in err and "nowhere" in err
    assert r.stdout == ""


def test_the_live_probe_sees_every_note_handed_to_the_scheduler(model_pkg):
    """The bench's live figures come from Live's hooks and the scheduler's observer: an
    answer played straight into the scheduler is seen handed over and sent, note by note."""
    from bench.live import start_live
    from companion.engine.protocols import TimedNote

    live, _inport, probe = start_live(model_pkg)
    live.start()
    try:
        t0 = live.clock.now() + 0.05
        notes = [TimedNote(60 + i, t0 + 0.01 * i, 0.005, 80) for i in range(5)]
        live.scheduler.begin(7)
        for note in notes:
            live.scheduler.add(7, note)
        assert probe.first_sent.wait(2.0)
        deadline = live.clock.now() + 2.0
        while live.scheduler.busy(7) and live.clock.now() < deadline:
            time.sleep(0.01)
    finally:
        live.stop()
    assert sorted(i for a, i in probe.sched if a == 7) == [0, 1, 2, 3, 4]
    assert all(probe.sched[(7, i)] >= n.start for i, n in enumerate(notes))
    played = [m.note for _, m in live.outport.messages() if m.type == "note_on"]
    assert played == [n.pitch for n in notes]


@pytest.mark.jack
def test_private_jack_server_is_reachable_and_gone_after(tmp_path):
    """bench.jackserver: a private jackd under a unique name, reachable by clients in the
    environment it yields, with its log where asked; stopped at the end of the block."""
    try:
        with jackserver.dummy_server(128, log=tmp_path / "jackd.log", prefix="bench-test") as env:
            assert env["JACK_DEFAULT_SERVER"].startswith(f"bench-test-{os.getpid()}-")
            assert env["JACKD_LOG"] == str(tmp_path / "jackd.log")
            assert jackserver.reachable(env)
            with jackserver.dummy_server(128, prefix="bench-test") as other:
                assert other["JACK_DEFAULT_SERVER"] != env["JACK_DEFAULT_SERVER"]
                assert jackserver.reachable(other)
    except jackserver.JackdMissing:
        pytest.skip("jackd is not installed")
    assert (tmp_path / "jackd.log").exists()
    assert not jackserver.reachable(env)
