"""`companion bench`: every figure is taken (a number) or says why not (null).

Speed is measured by the benchmark, not asserted here: these tests run it in its quick
mode and check the shape of what it prints, never a timing goal.
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest

from bench import bench


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


@pytest.mark.slow
@pytest.mark.tensorflow
def test_quick_bench_prints_every_key_as_numbers_or_null(model_pkg, capsys):
    from companion.commands.cli import main

    assert main(["bench", "--json", "--quick", "--model", str(model_pkg)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert list(out) == list(bench.KEYS)
    for key, value in out.items():
        assert value is None or _numbers(value), f"{key}: {value!r}"
    # the statistics each figure carries (issue 5)
    shapes = {"step_us": {"p50", "p99"}, "tf_step_us": {"p50"}, "keras_call_us": {"p50"},
              "listen_ms": {"p50", "p99"}, "answer_latency_ms": {"p50", "p99", "max"},
              "schedule_error_ms": {"p50", "p99", "max"}, "jack_roundtrip_ms": {"p50", "p99"}}
    for key, stats in shapes.items():
        if out[key] is not None:
            assert set(out[key]) == stats, key
    for key in ("cold_start_s", "rss_mb"):
        assert out[key] is None or isinstance(out[key], int | float)
    # what needs no MIDI system and no TensorFlow is always there
    for key in ("step_us", "listen_ms", "answer_latency_ms", "schedule_error_ms"):
        assert out[key] is not None, key


@pytest.mark.slow
@pytest.mark.tensorflow
def test_table_names_every_figure_and_its_repetitions(model_pkg, capsys):
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

    for name in ("measure_listen_answer", "measure_schedule", "measure_process",
                 "measure_steps"):
        monkeypatch.setattr(bench, name, broken)
    res = bench.run(model_pkg, bench.Plan.quick(), quiet=True)
    assert set(res.figures) == set(bench.KEYS)
    assert all(v is None for v in res.figures.values())
    assert all("no luck" in res.notes[k] for k in bench.KEYS)


def test_stats_are_percentiles_and_max():
    s = bench.stats(np.arange(1, 101, dtype=float), ("p50", "p99", "max"))
    assert s == {"p50": 50.5, "p99": 99.01, "max": 100.0}


def test_options():
    args = bench.parser().parse_args(["--json", "--quick", "--model", "m", "--train"])
    assert args.json and args.quick and args.train and args.model == "m"


@pytest.mark.slow
@pytest.mark.tensorflow
def test_train_figures(model_pkg, monkeypatch):
    """--train: corpus files/s cold and warm, and training tokens/s (TensorFlow installed)."""
    pytest.importorskip("tensorflow")
    res = bench.Result()
    plan = bench.Plan.quick()
    plan.train_files, plan.train_batches = 3, 1
    bench.measure_train(plan, bench._nottingham(), res, quiet=True, vocab_size=40)
    assert set(res.figures["corpus_files_per_s"]) == {"cold", "warm"}
    assert _numbers(res.figures["corpus_files_per_s"])
    assert _numbers(res.figures["train_tokens_per_s"]), res.notes["train_tokens_per_s"]
