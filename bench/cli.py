"""`companion bench` (also `python -m bench`): the performance figures of this machine,
measured rather than asserted.

The parts, each in its own module: the model step three ways (bench.steps), the live path
in process (bench.live), a real `companion live` process on JACK (bench.process), and with
``--train`` corpus reading and training throughput (bench.training). The in-process live
figures come first, before TensorFlow is imported (its threads must not share the process
with them), then the subprocesses, then the steps. A figure that cannot be taken on this
machine is ``null`` in ``--json``, with the reason in the table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from collections.abc import Callable
from pathlib import Path

from bench.data import DEFAULT, ENV, nottingham_dir
from bench.figures import Plan, Result, log
from bench.jitter import measure_jitter
from bench.link import measure_link
from bench.live import measure_listen_answer, measure_schedule, measure_turn
from bench.process import measure_process
from bench.steps import measure_steps
from bench.training import measure_train
from bench.ui import measure_ui

#: The keys of ``--json``, in the order of the table.
KEYS = (
    "step_us",
    "tf_step_us",
    "keras_call_us",
    "listen_ms",
    "answer_latency_ms",
    "schedule_error_ms",
    "turn_ahead_ms",
    "cold_start_s",
    "rss_mb",
    "jack_roundtrip_ms",
    "answer_onset_jitter_ms",
    "clock_onset_error_ms",
    "link_onset_error_ms",
    "ui_answer_latency_ms",
    "ui_schedule_error_ms",
)
#: Extra keys with ``--train``.
TRAIN_KEYS = ("corpus_files_per_s", "train_tokens_per_s")

#: What each figure is held to on a 2-core machine: key -> (stat, limit).
GOALS: dict[str, tuple[str, float]] = {
    "step_us": ("p50", 80.0),
    "answer_latency_ms": ("p99", 2.0),
    "schedule_error_ms": ("p99", 1.0),
    "cold_start_s": ("value", 1.5),
    "rss_mb": ("value", 250.0),
    "turn_ahead_ms": ("min", 0.0),  # every answer whole before its first note is due
}
#: The ONNX step must be this many times faster than the other two, in the same run.
RATIO_GOALS = {"tf_step_us": 5.0, "keras_call_us": 50.0}


def _machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        import onnxruntime

        ort = f"onnxruntime {onnxruntime.__version__}"
    except ImportError:  # pragma: no cover - a runtime dependency
        ort = "no onnxruntime"
    load = ""
    if hasattr(os, "getloadavg"):
        load = f", load average {os.getloadavg()[0]:.1f} at the start"
    return (f"{cpu}, {os.cpu_count()} cores, {platform.system()} {platform.release()}, "
            f"Python {platform.python_version()}, {ort}{load}")


def _model_dir(args: argparse.Namespace) -> Path:
    """``--model``, else the config's model (``models/default`` unless set)."""
    from companion import config
    from companion.packages import locate

    if getattr(args, "model", None):
        return locate(args.model, Path.cwd()).resolve()
    return config.load(getattr(args, "config", None)).model_dir()


def _goal_text(key: str, fig: dict) -> str:
    """'ok' / 'MISSED' against GOALS and RATIO_GOALS, or '' where the figure has none."""
    val = fig.get(key)
    out = []
    if key in GOALS and val is not None:
        stat, limit = GOALS[key]
        v = val if stat == "value" else val[stat]
        if stat == "min":
            out.append(f"min > {limit:g}: {'ok' if v > limit else 'MISSED'}")
        else:
            out.append(f"{stat} <= {limit:g}: {'ok' if v <= limit else 'MISSED'}")
    if key in RATIO_GOALS and val is not None and fig.get("step_us"):
        ratio = val["p50"] / fig["step_us"]["p50"]
        want = RATIO_GOALS[key]
        ok = "ok" if ratio >= want else "MISSED"
        out.append(f"ONNX {ratio:.1f}x faster (>= {want:g}x: {ok})")
    return "; ".join(out)


def table(res: Result, header: str) -> str:
    """The figures as a readable table, with goals and what each was measured over."""
    cols = ("p50", "p99", "max")
    lines = [header, "", f"{'figure':<20}{'p50':>10}{'p99':>10}{'max':>10}   goal"]
    for key in [*KEYS, *TRAIN_KEYS]:
        if key not in res.figures:
            continue
        v = res.figures[key]
        if v is None:
            cells = ["n/a", "", ""]
        elif isinstance(v, dict) and set(v) <= set(cols):
            cells = [f"{v[c]:g}" if c in v else "" for c in cols]
        elif isinstance(v, dict):
            cells = [" ".join(f"{k} {x:g}" for k, x in v.items()), "", ""]
        else:
            cells = [f"{v:g}", "", ""]
        lines.append(f"{key:<20}{cells[0]:>10}{cells[1]:>10}{cells[2]:>10}   "
                     f"{_goal_text(key, res.figures)}")
    lines.append("")
    lines += [f"{k}: {res.notes[k]}" for k in [*KEYS, *TRAIN_KEYS] if k in res.notes]
    return "\n".join(lines)


def run(model_dir: Path, plan: Plan, quiet: bool, train: bool = False,
        corpus: str | None = None, vocab_size: int = 0) -> Result:
    """Every figure; a part that fails leaves its figures null with the reason."""
    res = Result()
    # The in-process live figures come first, before TensorFlow is imported here (its
    # threads must not share the process with them), then the subprocesses, then the steps.
    parts: list[tuple[tuple[str, ...], Callable[[], None]]] = [
        (("listen_ms", "answer_latency_ms"),
         lambda: measure_listen_answer(model_dir, plan, res, quiet)),
        (("schedule_error_ms",), lambda: measure_schedule(model_dir, plan, res, quiet)),
        (("turn_ahead_ms",), lambda: measure_turn(model_dir, plan, res, quiet)),
        (("cold_start_s", "rss_mb", "jack_roundtrip_ms"),
         lambda: measure_process(model_dir, plan, res, quiet)),
        (("answer_onset_jitter_ms",), lambda: measure_jitter(plan, res, quiet)),
        (("clock_onset_error_ms", "link_onset_error_ms"),
         lambda: measure_link(model_dir, plan, res, quiet)),
        (("ui_answer_latency_ms", "ui_schedule_error_ms"),
         lambda: measure_ui(model_dir, plan, res, quiet)),
        (("step_us", "tf_step_us", "keras_call_us"),
         lambda: measure_steps(model_dir, plan, res, quiet)),
    ]
    if train:
        spec = corpus or str(nottingham_dir())
        parts.append((TRAIN_KEYS, lambda: measure_train(plan, spec, res, quiet, vocab_size)))
    for keys, fn in parts:
        try:
            fn()
        except Exception as e:  # noqa: BLE001 - one broken part must not hide the others
            why = f"failed: {type(e).__name__}: {e}"[:300]
            for k in keys:
                if k not in res.figures:
                    res.set(k, None, why)
    return res


def main(args: argparse.Namespace) -> int:
    """`companion bench [--json] [--model DIR] [--quick] [--train [--corpus SPEC]]`."""
    from companion.engine.model import ModelError, StepModel

    as_json = bool(getattr(args, "json", False))
    quick = bool(getattr(args, "quick", False))
    train = bool(getattr(args, "train", False))
    try:
        model_dir = _model_dir(args)
        model = StepModel(model_dir)
    except ModelError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    shape = f"{model.layers}x{model.units} LSTM, V={model.vocab_size}"
    vocab_size = model.vocab_size
    del model
    plan = Plan.quick() if quick else Plan()
    header = (f"companion bench{' --quick' if quick else ''}: {model_dir} ({shape})\n"
              f"on {_machine()}")
    log(header, as_json)
    res = run(model_dir, plan, as_json, train, getattr(args, "corpus", None), vocab_size)
    if as_json:
        keys = [*KEYS, *(TRAIN_KEYS if train else ())]
        print(json.dumps({k: res.figures.get(k) for k in keys}))
    else:
        print(table(res, header))
    return 0


def parser() -> argparse.ArgumentParser:
    """The options of `companion bench` (and of `python -m bench`)."""
    p = argparse.ArgumentParser(
        prog="companion bench",
        description="The performance figures of this machine: the model step (ONNX beside "
        "TensorFlow and Keras), listening, answering, scheduling, start-up, memory and the "
        "JACK round trip; with --train, corpus reading and training throughput.")
    add_arguments(p)
    return p


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--model", metavar="DIR", help="model package (config key: model)")
    p.add_argument("--config", metavar="F", help="config file (default: ./config.yaml)")
    p.add_argument("--quick", action="store_true",
                   help="few repetitions: checks that every figure can be taken (for tests)")
    p.add_argument("--train", action="store_true",
                   help="also corpus reading (files/s, cold and warm) and training tokens/s")
    p.add_argument("--corpus", metavar="SPEC",
                   help=f"corpus for --train (default: the Nottingham melodies: ${ENV}, else "
                   f"{DEFAULT} beside the repository)")

