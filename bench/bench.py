"""`companion bench`: the performance figures of this machine, measured rather than asserted.

How each figure is taken, and why that way:

- The three step figures (ONNX, ``tf.function``, Keras call) run in the same process in
  interleaved rounds, so that a noisy neighbour slows all three alike and their ratios hold.
  The TensorFlow side is built from the package's own weights (``read_step``): it needs no
  training checkpoint, and it is imported lazily, only here, only when installed.
- The live figures (listening, answering, scheduling) drive the live engine's own code on
  the in-process loopback, so they need no MIDI hardware.
- Cold start and peak memory are those of a real ``companion live`` process, against a JACK
  server the bench starts itself (``jackd -d dummy``) when jackd is installed; the same
  process gives the JACK round trip through its passthrough.

A figure that cannot be taken on this machine is ``null`` in ``--json``, with the reason
in the table.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

#: The keys of ``--json``, in the order of the table (issue 5).
KEYS = (
    "step_us",
    "tf_step_us",
    "keras_call_us",
    "listen_ms",
    "answer_latency_ms",
    "schedule_error_ms",
    "cold_start_s",
    "rss_mb",
    "jack_roundtrip_ms",
)
#: Extra keys with ``--train``.
TRAIN_KEYS = ("corpus_files_per_s", "train_tokens_per_s")

#: What each figure is held to on a 2-core machine (issue 5): key -> (stat, limit).
GOALS: dict[str, tuple[str, float]] = {
    "step_us": ("p50", 80.0),
    "answer_latency_ms": ("p99", 2.0),
    "schedule_error_ms": ("p99", 1.0),
    "cold_start_s": ("value", 1.5),
    "rss_mb": ("value", 250.0),
}
#: The ONNX step must be this many times faster than the other two, in the same run.
RATIO_GOALS = {"tf_step_us": 5.0, "keras_call_us": 50.0}


@dataclass
class Plan:
    """Repetitions of each measurement: the full bench, or ``--quick`` for tests."""

    rounds: int = 20  # interleaved step rounds
    onnx_per_round: int = 500
    tf_per_round: int = 100
    keras_per_round: int = 10
    idle_steps: int = 40  # steps each after 50 ms idle: the cache-cold cost
    answers: int = 200  # calls of 4 notes, each answered: the listen figure's notes too
    scheduled_notes: int = 2000
    cold_starts: int = 3
    jack_notes: int = 500
    train_files: int = 100
    train_batches: int = 20

    @classmethod
    def quick(cls) -> Plan:
        return cls(rounds=2, onnx_per_round=50, tf_per_round=5, keras_per_round=2, idle_steps=3,
                   answers=10, scheduled_notes=100, cold_starts=1,
                   jack_notes=20, train_files=6, train_batches=2)


@dataclass
class Result:
    """The figures, and per figure a note: repetitions, or why it is null."""

    figures: dict[str, object] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)

    def set(self, key: str, value: object, note: str) -> None:
        self.figures[key] = value
        self.notes[key] = note


def stats(samples, keys: tuple[str, ...] = ("p50", "p99"), digits: int = 3) -> dict[str, float]:
    """Percentiles (and ``max``) of ``samples``, rounded for a readable JSON."""
    a = np.asarray(samples, dtype=np.float64)
    out = {}
    for k in keys:
        v = float(a.max()) if k == "max" else float(np.percentile(a, float(k[1:])))
        out[k] = round(v, digits)
    return out


def _log(msg: str, quiet: bool) -> None:
    if not quiet:
        print(msg, file=sys.stderr, flush=True)


# -- the model step: ONNX, tf.function, Keras call, interleaved ----------------------------


class _TfStep:
    """The same step in TensorFlow, from the package's weights: a ``tf.function`` over Keras
    LSTM cells with explicit state, and the naive form, a Keras model with state inputs and
    outputs called eagerly on one token."""

    def __init__(self, onnx_path: Path):
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        import keras
        import tensorflow as tf

        from train.export import read_step

        # one thread each, as the ONNX session has: the step is too small to share out
        tf.config.threading.set_intra_op_parallelism_threads(1)
        tf.config.threading.set_inter_op_parallelism_threads(1)
        w = read_step(onnx_path)
        v, e = w.embedding.shape
        self.layers, self.units = len(w.lstm), w.units
        h_units = self.units

        emb = keras.layers.Embedding(v, e)
        emb.build((None,))
        emb.set_weights([w.embedding])
        cells = []
        d = e
        for k, r, b in w.lstm:
            cell = keras.layers.LSTMCell(h_units)
            cell.build((None, d))
            cell.set_weights([k, r, b])
            cells.append(cell)
            d = h_units
        dense = keras.layers.Dense(v)
        dense.build((None, h_units))
        dense.set_weights([w.dense_kernel, w.dense_bias])

        @tf.function(reduce_retracing=True)
        def step(tok, h, c):
            x = emb(tok)
            hs, cs = [], []
            for i, cell in enumerate(cells):
                x, (hn, cn) = cell(x, [h[i], c[i]])
                hs.append(hn)
                cs.append(cn)
            return dense(x), tf.stack(hs), tf.stack(cs)

        self._tf = tf
        self._step = step
        self.h = tf.zeros((self.layers, 1, h_units))
        self.c = tf.zeros((self.layers, 1, h_units))

        tok_in = keras.Input(shape=(1,), dtype="int32", batch_size=1, name="token")
        state_in = [keras.Input(shape=(h_units,), batch_size=1, name=f"s{i}")
                    for i in range(2 * self.layers)]
        x = keras.layers.Embedding(v, e, name="embedding")(tok_in)
        state_out = []
        for i in range(self.layers):
            x, hn, cn = keras.layers.LSTM(
                h_units, return_sequences=True, return_state=True, name=f"lstm{i}"
            )(x, initial_state=[state_in[2 * i], state_in[2 * i + 1]])
            state_out += [hn, cn]
        logits = keras.layers.Dense(v, name="logits")(x)
        self.keras_model = keras.Model([tok_in, *state_in], [logits, *state_out])
        self.keras_model.get_layer("embedding").set_weights([w.embedding])
        for i, (k, r, b) in enumerate(w.lstm):
            self.keras_model.get_layer(f"lstm{i}").set_weights([k, r, b])
        self.keras_model.get_layer("logits").set_weights([w.dense_kernel, w.dense_bias])
        self.states = [np.zeros((1, h_units), np.float32) for _ in range(2 * self.layers)]

    def tf_step(self, token: int) -> np.ndarray:
        tok = self._tf.constant([token], self._tf.int64)
        logits, self.h, self.c = self._step(tok, self.h, self.c)
        return logits

    def keras_call(self, token: int) -> np.ndarray:
        out = self.keras_model([np.array([[token]], np.int32), *self.states])
        self.states = [np.asarray(s) for s in out[1:]]
        return np.asarray(out[0])

    def check(self, model, tokens: list[int]) -> float:
        """Max |logit difference| of both TensorFlow forms against the ONNX step."""
        state = model.zero_state()
        worst = 0.0
        for t in tokens:
            ref = model.step(t, state)
            a = np.asarray(self.tf_step(t))[0]
            b = self.keras_call(t)[0, 0]
            worst = max(worst, float(np.abs(a - ref).max()), float(np.abs(b - ref).max()))
        return worst


def _timed(fn: Callable[[int], object], tokens: np.ndarray, out: list[float]) -> None:
    """Time each call of ``fn`` on its own, in microseconds."""
    clock = time.perf_counter_ns
    for t in tokens:
        t0 = clock()
        fn(t)
        out.append((clock() - t0) / 1000.0)


def measure_steps(model_dir: Path, plan: Plan, res: Result, quiet: bool) -> None:
    """``step_us``, ``tf_step_us``, ``keras_call_us``: interleaved rounds in one process."""
    from companion.engine.model import StepModel

    model = StepModel(model_dir)
    state = model.zero_state()
    rng = np.random.default_rng(0)
    v = model.vocab_size

    def onnx_step(t: int) -> object:
        return model.step(t, state)

    tfs = None
    why_not = "TensorFlow is not installed"
    try:
        import importlib.util

        if importlib.util.find_spec("tensorflow") and importlib.util.find_spec("keras"):
            _log("bench: building the TensorFlow step from the package's weights", quiet)
            tfs = _TfStep(model_dir / "model.onnx")
            diff = tfs.check(model, [int(t) for t in rng.integers(0, v, 8)])
            if diff > 1e-3:
                why_not = f"the TensorFlow step differs from ONNX by {diff:.1e}"
                tfs = None
    except Exception as e:  # a broken TensorFlow install must not cost the other figures
        why_not = f"TensorFlow step failed: {type(e).__name__}: {e}"[:200]
        tfs = None

    onnx_us: list[float] = []
    tf_us: list[float] = []
    keras_us: list[float] = []
    # warm-up: first calls trace, allocate and fill caches
    _timed(onnx_step, rng.integers(0, v, 200), [])
    if tfs is not None:
        _timed(tfs.tf_step, rng.integers(0, v, 20), [])
        _timed(tfs.keras_call, rng.integers(0, v, 3), [])
    _log(f"bench: model step, {plan.rounds} interleaved rounds", quiet)
    for _ in range(plan.rounds):
        # each round starts with a few untimed calls: the other two evicted the caches
        _timed(onnx_step, rng.integers(0, v, 20), [])
        _timed(onnx_step, rng.integers(0, v, plan.onnx_per_round), onnx_us)
        if tfs is not None:
            _timed(tfs.tf_step, rng.integers(0, v, 5), [])
            _timed(tfs.tf_step, rng.integers(0, v, plan.tf_per_round), tf_us)
            _timed(tfs.keras_call, rng.integers(0, v, 1), [])
            _timed(tfs.keras_call, rng.integers(0, v, plan.keras_per_round), keras_us)
    # Live, a step follows tens of ms without one: the weights have left the caches.
    idle_us: list[float] = []
    for t in rng.integers(0, v, plan.idle_steps):
        time.sleep(0.05)
        _timed(onnx_step, [t], idle_us)
    rounds = f"{plan.rounds} interleaved rounds"
    res.set("step_us", stats(onnx_us, digits=1),
            f"{len(onnx_us)} steps back to back ({rounds}, {model.layers}x{model.units} LSTM, "
            f"V={v}); a step after 50 ms without one, as between notes: p50 "
            f"{np.median(idle_us):.0f} us ({len(idle_us)} steps)")
    if tfs is None:
        res.set("tf_step_us", None, why_not)
        res.set("keras_call_us", None, why_not)
    else:
        res.set("tf_step_us", stats(tf_us, ("p50",), 1), f"{len(tf_us)} steps ({rounds})")
        res.set("keras_call_us", stats(keras_us, ("p50",), 1), f"{len(keras_us)} calls ({rounds})")


# -- training: corpus preparation and training throughput ----------------------------------


def measure_train(plan: Plan, corpus: str, res: Result, quiet: bool, vocab_size: int = 0) -> None:
    """Files per second reading a corpus cold (fresh cache) and warm, and training tokens/s
    (with the output layer of ``vocab_size`` tokens, the live model's, when it is larger
    than the small corpus's own vocabulary: the softmax over it is part of the cost)."""
    from train.corpus import load_corpus, resolve

    files = [str(p) for p in resolve(corpus)][: plan.train_files]
    old = os.environ.get("COMPANION_CACHE")
    with tempfile.TemporaryDirectory(prefix="companion-bench-cache-") as cache:
        os.environ["COMPANION_CACHE"] = cache
        try:
            _log(f"bench: reading {len(files)} files of {corpus}, cold then warm", quiet)
            t0 = time.perf_counter()
            cold = load_corpus(files, progress=False)
            t1 = time.perf_counter()
            warm = load_corpus(files, progress=False)
            t2 = time.perf_counter()
        finally:
            if old is None:
                os.environ.pop("COMPANION_CACHE", None)
            else:
                os.environ["COMPANION_CACHE"] = old
    res.set("corpus_files_per_s",
            {"cold": round(len(files) / (t1 - t0), 1), "warm": round(len(files) / (t2 - t1), 1)},
            f"{len(files)} files of {corpus}, {os.cpu_count()} workers; "
            f"warm: {warm.cached} from cache")

    try:
        import importlib.util

        if not importlib.util.find_spec("tensorflow"):
            res.set("train_tokens_per_s", None, "TensorFlow is not installed")
            return
        res.set("train_tokens_per_s", *_train_throughput(cold, plan, quiet, vocab_size))
    except Exception as e:
        res.set("train_tokens_per_s", None, f"training failed: {type(e).__name__}: {e}"[:200])


def _train_throughput(corpus, plan: Plan, quiet: bool, vocab_size: int) -> tuple[float, str]:
    """Tokens per second of ``train_on_batch`` on the default model and training settings,
    over the training pipeline's batches (length buckets)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import keras

    from companion.encoding.curves import Vocabulary
    from train.dataset import encode, melody_curves, tf_dataset, windows
    from train.model import ModelConfig, build, compile_model
    from train.train import parse_args

    defaults = parse_args(["--corpus", "x", "--out", "x"])
    curves = [melody_curves(m) for m in corpus.melodies if len(m) >= 2]
    vocab = Vocabulary.build(curves)
    x, y, w = windows(encode(curves, vocab), defaults.window)
    batch = defaults.batch
    batches = iter(tf_dataset(x, y, w, batch, shuffle=True, seed=0, per_token=True).repeat())
    keras.utils.set_random_seed(0)
    v = max(vocab.size, vocab_size)
    model = build(ModelConfig(v, defaults.embed, defaults.units, defaults.layers,
                              defaults.dropout))
    compile_model(model, defaults.lr)
    _log(f"bench: training {plan.train_batches} batches of {batch} windows", quiet)
    for _ in range(2):  # tracing
        bx, by, bw = next(batches)
        model.train_on_batch(bx, by, sample_weight=bw)
    tokens = 0.0
    t0 = time.perf_counter()
    for _ in range(plan.train_batches):
        bx, by, bw = next(batches)
        model.train_on_batch(bx, by, sample_weight=bw)
        tokens += float((bw.numpy() > 0).sum())
    dt = time.perf_counter() - t0
    note = (f"{plan.train_batches} batches of {batch} windows of up to {defaults.window} "
            f"tokens in length buckets, {defaults.layers}x{defaults.units} LSTM, V={v}; real "
            f"tokens (no padding)")
    return round(tokens / dt), note


# -- the live path, in process: listening, answering, scheduling ---------------------------


class _LoopIn:
    """An input port fed by the bench's performer thread (rtmidi's callback contract)."""

    def __init__(self) -> None:
        self.callback = None

    def deliver(self, msg) -> None:
        cb = self.callback
        if cb is not None:
            cb(msg)

    def close(self) -> None:
        self.callback = None


class _LoopOut:
    """An output port that only counts: sending costs what a real port's send costs least."""

    def __init__(self) -> None:
        self.sent = 0

    def send(self, msg) -> None:
        self.sent += 1

    def close(self) -> None:
        pass


def _live_config(model_dir: Path, **listen):
    """The default config with a fast tempo, so that many phrases fit in a few seconds."""
    from companion import config

    return config.from_dict({
        "model": str(model_dir),
        "listen": {"tempo_bpm": 400, "phrase_end_beats": 0.25, **listen},
        "answer": {"seed": 1, "min_beats": 1, "max_beats": 4},
        "session": {"enabled": False},
    })


class _Probe:
    """Collects the live hooks' timestamps (``on_event``), and the moment each answer's first
    note is handed to the scheduler (its ``add``, wrapped: there is no hook for it)."""

    def __init__(self, live) -> None:
        import threading

        self.live = live
        self.listen: list[float] = []  # s: callback -> model advanced
        self.answer: list[float] = []  # s: phrase-end deadline -> first note handed over
        self.wake: list[float] = []  # s: deadline -> decision (engine thread woke)
        self.generate: list[float] = []  # s: decision -> whole answer generated
        self.first_late: list[float] = []  # s: first answer note sent - its time
        self.sched: dict[tuple[int, int], float] = {}  # (answer, index) -> send time
        self.first_sent = threading.Event()
        self._handed: dict[int, float] = {}
        sched = live.scheduler
        add = sched.add
        now = live.clock.now

        def add_stamped(answer: int, note) -> None:
            if answer not in self._handed:
                self._handed[answer] = now()
            add(answer, note)

        sched.add = add_stamped  # the engine calls player.add: the instance attribute wins

    def event(self, kind: str, t: float, **d) -> None:
        if kind == "note_in":
            self.listen.append(t - d["received"])
        elif kind == "phrase_end":
            a = self.live.engine.answer
            handed = self._handed.get(d["answer"])
            if a is not None and handed is not None:
                self.answer.append(handed - d["deadline"])
                self.wake.append(a.decided - d["deadline"])
                self.generate.append(t - a.decided)
        elif kind == "note_on":
            self.sched[(d["answer"], d["index"])] = t
            if d["index"] == 0:
                a = self.live.engine.answer
                if a is not None and a.id == d["answer"] and a.notes:
                    self.first_late.append(t - a.notes[0].start)
                self.first_sent.set()


def _next_pitch(pitch: int, rng: np.random.Generator) -> int:
    """A random walk that never repeats a pitch (a repeated key would release the held one)."""
    step = int(rng.integers(1, 6)) * (1 if rng.random() < 0.5 else -1)
    nxt = pitch + step
    return nxt if 48 <= nxt <= 84 else pitch - step


@contextlib.contextmanager
def _as_live(seconds: float = 0.001):
    """What `companion live` sets (live.run): threads get the GIL back within ~1 ms, and the
    start-up heap is set aside (no long garbage collection while playing)."""
    from companion.realtime.live import settled_heap

    old = sys.getswitchinterval()
    sys.setswitchinterval(seconds)
    try:
        with settled_heap():
            yield
    finally:
        sys.setswitchinterval(old)


def _start_live(model_dir: Path, cfg=None):
    from companion.engine.model import StepModel
    from companion.realtime.live import Live

    cfg = cfg or _live_config(model_dir)
    inport, outport = _LoopIn(), _LoopOut()
    holder: dict = {}

    def on_event(kind: str, t: float, **d) -> None:
        p = holder.get("probe")
        if p is not None:
            p.event(kind, t, **d)

    live = Live(cfg, StepModel(cfg.model_dir()), inport, outport, seed=1, on_event=on_event)
    probe = _Probe(live)
    holder["probe"] = probe
    return live, inport, probe


def measure_listen_answer(model_dir: Path, plan: Plan, res: Result, quiet: bool) -> None:
    """``listen_ms`` and ``answer_latency_ms``: a performer thread plays short calls into the
    live companion (in-process loopback, real clock, its own threads); after each answer's
    first note it plays the next call, which stops that answer (barge-in)."""
    import mido

    live, inport, probe = _start_live(model_dir)
    rng = np.random.default_rng(2)
    notes_per_call = 4
    _log(f"bench: listening and answering, {plan.answers} calls of {notes_per_call} notes", quiet)
    with _as_live():
        live.start()
        try:
            pitch = 64
            for _ in range(plan.answers):
                probe.first_sent.clear()
                held = None
                for _ in range(notes_per_call):
                    pitch = _next_pitch(pitch, rng)
                    inport.deliver(mido.Message("note_on", note=pitch, velocity=90))
                    if held is not None:  # legato: the previous key is released after this one
                        time.sleep(0.004)
                        inport.deliver(mido.Message("note_off", note=held, velocity=0))
                    held = pitch
                    time.sleep(float(rng.uniform(0.04, 0.07)))
                inport.deliver(mido.Message("note_off", note=held, velocity=0))
                probe.first_sent.wait(2.0)
                time.sleep(float(rng.uniform(0.005, 0.02)))
        finally:
            live.stop()
    ms = 1000.0
    res.set("listen_ms", stats(np.array(probe.listen) * ms),
            f"{len(probe.listen)} melody notes, from the input callback to the model state "
            "advanced (Live's note_in hook)")
    if probe.answer:
        a = np.array(probe.answer) * ms
        res.set("answer_latency_ms", stats(a, ("p50", "p99", "max")),
                f"{len(a)} answers, from the phrase-end deadline to the first answer note handed "
                f"to the scheduler (engine woke {np.median(probe.wake) * ms:.3f} ms after the "
                f"deadline, p50; whole answer generated in "
                f"{np.median(probe.generate) * ms:.2f} ms, p50; the first note then waits for "
                f"its beat and left {np.median(probe.first_late) * ms:+.3f} ms from it, p50, "
                f"{np.max(probe.first_late) * ms:+.3f} max)")
    else:
        res.set("answer_latency_ms", None, "no answer came")


def measure_schedule(model_dir: Path, plan: Plan, res: Result, quiet: bool) -> None:
    """``schedule_error_ms``: the live scheduler plays a long answer at a fast tempo (a note
    every 3-7 ms) while a performer plays over it, holding a key (so that no phrase ends and
    the engine steps the model for each of its notes, as with ``barge_in: keep``)."""
    import mido

    from companion.realtime.scheduler import TimedNote

    live, inport, probe = _start_live(model_dir, _live_config(model_dir, tempo_bpm=110))
    rng = np.random.default_rng(3)
    n = plan.scheduled_notes
    _log(f"bench: scheduling {n} answer notes", quiet)
    with _as_live():
        live.start()
        try:
            inport.deliver(mido.Message("note_on", note=40, velocity=80))  # held throughout
            answer_id = 1_000_000
            t0 = live.clock.now() + 0.2
            starts = t0 + np.cumsum(rng.uniform(0.003, 0.007, n))
            live.scheduler.begin(answer_id)
            notes = [TimedNote(60 + i % 24, float(s), 0.002, 80) for i, s in enumerate(starts)]
            for note in notes:
                live.scheduler.add(answer_id, note)
            end = float(starts[-1]) + 0.05
            pitch = 64
            restrike = live.clock.now() + 1.0
            while live.clock.now() < end:
                if live.clock.now() > restrike:  # a key held for long counts as stuck
                    inport.deliver(mido.Message("note_on", note=40, velocity=80))
                    restrike += 1.0
                pitch = _next_pitch(pitch, rng)
                inport.deliver(mido.Message("note_on", note=pitch, velocity=90))
                time.sleep(0.01)
                inport.deliver(mido.Message("note_off", note=pitch, velocity=0))
                time.sleep(float(rng.uniform(0.03, 0.06)))
            inport.deliver(mido.Message("note_off", note=40, velocity=0))
        finally:
            live.stop()
    errs = [probe.sched[(answer_id, i)] - nt.start for i, nt in enumerate(notes)
            if (answer_id, i) in probe.sched]
    missing = n - len(errs)
    res.set("schedule_error_ms", stats(np.array(errs) * 1000.0, ("p50", "p99", "max")),
            f"{len(errs)} answer notes 3-7 ms apart{f', {missing} never sent' if missing else ''}, "
            f"while the performer played {len(probe.listen)} notes over them; send time (Live's "
            "note_on hook) minus the note's time")


# -- a real `companion live` process: cold start, peak memory, JACK round trip ------------


_JACK_PROBE = (
    "import rtmidi, sys\n"
    "try:\n    rtmidi.MidiIn(rtmidi.API_UNIX_JACK).delete()\n"
    "except rtmidi.SystemError:\n    sys.exit(1)\n"
)


def _jack_reachable(env: dict) -> bool:
    cmd = ["jack_lsp"] if shutil.which("jack_lsp") else [sys.executable, "-c", _JACK_PROBE]
    try:
        r = subprocess.run(cmd, env=env, capture_output=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return r.returncode == 0


class _Jack:
    """A JACK server for the bench: the one already running if any, else a private one on
    the dummy driver (no sound card needed), stopped at the end."""

    PERIOD = 64  # frames at 48 kHz: 1.33 ms, so that the round trip shows the companion

    def __init__(self) -> None:
        self.proc: subprocess.Popen | None = None
        self.env = dict(os.environ, JACK_NO_START_SERVER="1")
        self.what = ""

    def __enter__(self) -> _Jack | None:
        if _jack_reachable(self.env):
            name = os.environ.get("JACK_DEFAULT_SERVER", "default")
            self.what = f"the running JACK server ({name})"
            return self
        jackd = shutil.which("jackd")
        if jackd is None:
            return None
        name = f"companion-bench-{os.getpid()}"
        self.env.update(JACK_DEFAULT_SERVER=name, JACK_NO_AUDIO_RESERVATION="1")
        self.proc = subprocess.Popen(
            [jackd, "--no-realtime", "-n", name, "-d", "dummy", "-r", "48000",
             "-p", str(self.PERIOD)],
            env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + 15
        while not _jack_reachable(self.env):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self._stop()
                return None
            time.sleep(0.1)
        self.what = (f"a private jackd on the dummy driver, 48 kHz, period {self.PERIOD} "
                     f"frames ({self.PERIOD / 48:.2f} ms)")
        return self

    def __exit__(self, *exc) -> None:
        self._stop()

    @contextlib.contextmanager
    def client_env(self):
        """This process's own JACK clients find the server through the same variables."""
        keys = ("JACK_DEFAULT_SERVER", "JACK_NO_START_SERVER")
        old = {k: os.environ.get(k) for k in keys}
        os.environ.update({k: self.env[k] for k in keys if k in self.env})
        try:
            yield
        finally:
            for k, v in old.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v

    def _stop(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None


class _LiveProcess:
    """`companion live` as a subprocess; ``ready`` is when it said it listens (ports open,
    model loaded), on the monotonic clock, from ``started``."""

    READY = "companion: listening on"

    def __init__(self, config_path: Path, env: dict, cwd: Path):
        import threading

        self.lines: list[str] = []
        self.ready_at: float | None = None
        self._ready = threading.Event()
        self.started = time.perf_counter()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "companion", "live", "--config", str(config_path)],
            env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if self.ready_at is None and line.startswith(self.READY):
                self.ready_at = time.perf_counter()
                self._ready.set()
            self.lines.append(line.rstrip())
        self._ready.set()

    def wait_ready(self, timeout: float = 60.0) -> float:
        if not self._ready.wait(timeout) or self.ready_at is None:
            self.stop()
            tail = " | ".join(self.lines[-3:]) or "no output"
            raise RuntimeError(f"companion live did not get ready ({tail})")
        return self.ready_at - self.started

    def status(self, key: str) -> float | None:
        """A /proc/PID/status figure in kB (VmHWM: peak resident memory)."""
        try:
            for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
                if line.startswith(key + ":"):
                    return float(line.split()[1])
        except OSError:
            return None
        return None

    def loaded(self, needle: str) -> bool:
        try:
            return needle in Path(f"/proc/{self.proc.pid}/maps").read_text()
        except OSError:
            return False

    def stop(self) -> int | None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def _jack_roundtrip(client: str, notes: int, rng: np.random.Generator) -> tuple[list[float], int]:
    """Notes from a JACK client of the bench into ``client:in``, timed until the passthrough
    note comes back from ``client:out``; then the held key is released and an answer awaited
    (so that the peak memory covers answering). Returns (round trips in s, answer notes)."""
    import re
    import threading

    import rtmidi

    from companion.midi.input import open_input

    got: list[tuple[float, list[int]]] = []
    arrived = threading.Event()

    def on_msg(msg) -> None:
        got.append((time.perf_counter(), msg.bytes()))
        arrived.set()

    to = rtmidi.MidiOut(rtmidi.API_UNIX_JACK, "bench")
    frm = None
    try:
        outs = to.get_ports()
        lister = rtmidi.MidiIn(rtmidi.API_UNIX_JACK, "bench-list")
        ins = lister.get_ports()
        lister.delete()
        target = [i for i, n in enumerate(outs) if n == f"{client}:in"]
        source = [n for n in ins if re.match(rf"^{re.escape(client)}(-\d+)?:out$", n)]
        if not target or not source:
            raise RuntimeError(f"no JACK ports {client}:in / {client}:out (inputs {ins})")
        to.open_port(target[0], "to-companion")
        # polled, as the companion reads its input (companion.midi.input): the trip includes
        # up to midi_in.POLL_S on this side too
        frm = open_input("UNIX_JACK", source[-1], callback=on_msg)
        time.sleep(0.3)
        trips = []
        to.send_message([0x90, 30, 70])  # held: no phrase ends while the probes play
        time.sleep(0.05)
        pitch = 64
        for k in range(notes):
            pitch = _next_pitch(pitch, rng)
            vel = 20 + k % 100
            n0 = len(got)
            arrived.clear()
            t0 = time.perf_counter()
            to.send_message([0x90, pitch, vel])
            deadline = t0 + 0.5
            hit = None
            while hit is None and time.perf_counter() < deadline:
                arrived.wait(0.05)
                arrived.clear()
                for t, m in got[n0:]:
                    if len(m) == 3 and m[0] & 0xF0 == 0x90 and m[1] == pitch and m[2] == vel:
                        hit = t
                        break
            if hit is not None:
                trips.append(hit - t0)
            time.sleep(0.003)
            to.send_message([0x80, pitch, 0])
            time.sleep(float(rng.uniform(0.005, 0.015)))
        n0 = len(got)
        to.send_message([0x80, 30, 0])
        deadline = time.perf_counter() + 5.0
        answer = 0
        while time.perf_counter() < deadline and answer < 2:
            time.sleep(0.05)
            answer = sum(1 for _, m in got[n0:] if m[0] & 0xF0 == 0x90 and m[2] > 0)
        return trips, answer
    finally:
        if frm is not None:
            frm.close()
        with contextlib.suppress(Exception):
            to.close_port()
        with contextlib.suppress(Exception):
            to.delete()


def measure_process(model_dir: Path, plan: Plan, res: Result, quiet: bool) -> None:
    """``cold_start_s``, ``rss_mb``, ``jack_roundtrip_ms`` of real `companion live` processes."""
    keys = ("cold_start_s", "rss_mb", "jack_roundtrip_ms")
    if not sys.platform.startswith("linux"):
        for k in keys:
            res.set(k, None, "measured on Linux only (/proc, jackd)")
        return
    with _Jack() as jack:
        if jack is None:
            why = ("no JACK server is running and jackd is not installed (or did not start): "
                   "`companion live` has no MIDI system to open here")
            for k in keys:
                res.set(k, None, why)
            return
        own = jack.proc is not None
        client = "companion" if own else f"companion-bench-{os.getpid()}"
        root = str(Path(__file__).resolve().parents[1])
        env = dict(jack.env, PYTHONPATH=os.pathsep.join(
            p for p in (root, os.environ.get("PYTHONPATH")) if p))
        with tempfile.TemporaryDirectory(prefix="companion-bench-") as tmp:
            cfg = Path(tmp) / "config.yaml"
            cfg.write_text(json.dumps({  # JSON is YAML
                "model": str(model_dir.resolve()),
                "midi": {"backend": "jack", "client_name": client, "passthrough": True},
                "session": {"enabled": False},
            }))
            starts = []
            proc = None
            for i in range(plan.cold_starts):
                _log(f"bench: starting companion live ({i + 1} of {plan.cold_starts})", quiet)
                proc = _LiveProcess(cfg, env, Path(tmp))
                starts.append(proc.wait_ready())
                if i < plan.cold_starts - 1:
                    proc.stop()
            assert proc is not None
            try:
                _log(f"bench: JACK round trip, {plan.jack_notes} notes", quiet)
                with jack.client_env():
                    trips, answer = _jack_roundtrip(client, plan.jack_notes,
                                                    np.random.default_rng(4))
                time.sleep(0.2)
                hwm = proc.status("VmHWM")
                tf_loaded = proc.loaded("tensorflow")
            finally:
                rc = proc.stop()
    res.set("cold_start_s", round(float(np.median(starts)), 3),
            f"median of {len(starts)} starts ({', '.join(f'{s:.2f}' for s in starts)} s), from "
            "process start to its 'listening on' line (ports open, model loaded); TensorFlow "
            f"{'LOADED' if tf_loaded else 'not loaded'}")
    res.set("rss_mb", round(hwm / 1024, 1) if hwm else None,
            f"VmHWM of the live process after {len(trips)} notes in and an answer of "
            f"{answer}+ notes out; exit code {rc} on SIGTERM")
    if trips:
        res.set("jack_roundtrip_ms", stats(np.array(trips) * 1000.0),
                f"{len(trips)} of {plan.jack_notes} notes, bench client -> {client}:in -> "
                f"passthrough -> {client}:out -> bench client, through {jack.what}")
    else:
        res.set("jack_roundtrip_ms", None, "no passthrough note came back")


# -- the command --------------------------------------------------------------------------


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


def _model_dir(args) -> Path:
    """``--model``, else the config's model (``models/default`` unless set)."""
    from companion import config

    if getattr(args, "model", None):
        return Path(args.model).expanduser().resolve()
    return config.load(getattr(args, "config", None)).model_dir()


def _goal_text(key: str, fig: dict) -> str:
    """'ok' / 'MISSED' against the issue's goals, or '' where the figure has none."""
    val = fig.get(key)
    out = []
    if key in GOALS and val is not None:
        stat, limit = GOALS[key]
        v = val if stat == "value" else val[stat]
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
        (("cold_start_s", "rss_mb", "jack_roundtrip_ms"),
         lambda: measure_process(model_dir, plan, res, quiet)),
        (("step_us", "tf_step_us", "keras_call_us"),
         lambda: measure_steps(model_dir, plan, res, quiet)),
    ]
    if train:
        parts.append((TRAIN_KEYS, lambda: measure_train(plan, corpus or _nottingham(), res,
                                                          quiet, vocab_size)))
    for keys, fn in parts:
        try:
            fn()
        except Exception as e:  # noqa: BLE001 - one broken part must not hide the others
            why = f"failed: {type(e).__name__}: {e}"[:300]
            for k in keys:
                if k not in res.figures:
                    res.set(k, None, why)
    return res


def _nottingham() -> str:
    """The Nottingham melodies beside the repository (shared/data), for ``--train``."""
    root = Path(__file__).resolve().parents[1]
    for p in (root.parent / "shared" / "data" / "nottingham-melody",
              Path("/work/shared/data/nottingham-melody")):
        if p.is_dir():
            return str(p)
    return str(root.parent / "shared" / "data" / "nottingham-melody")


def main(args: argparse.Namespace) -> int:
    """`companion bench [--json] [--model DIR] [--quick] [--train [--corpus SPEC]]`."""
    from companion.engine.model import ModelError, StepModel

    as_json = bool(getattr(args, "json", False))
    quick = bool(getattr(args, "quick", False))
    train = bool(getattr(args, "train", False))
    model_dir = _model_dir(args)
    try:
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
    _log(header, as_json)
    res = run(model_dir, plan, as_json, train, getattr(args, "corpus", None), vocab_size)
    if as_json:
        keys = [*KEYS, *(TRAIN_KEYS if train else ())]
        print(json.dumps({k: res.figures.get(k) for k in keys}))
    else:
        print(table(res, header))
    return 0


def parser() -> argparse.ArgumentParser:
    """The options of `companion bench` (cli.py adds the same to its subcommand)."""
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
                   help="corpus for --train (default: the Nottingham melodies in shared/data)")


if __name__ == "__main__":
    sys.exit(main(parser().parse_args()))
