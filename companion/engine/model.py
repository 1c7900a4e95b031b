"""A model package and its one-step ONNX model, run with onnxruntime.

The LSTM state is explicit: the caller keeps it and advances it one note at a time,
so listening costs one step per note and an answer never replays the call.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from companion.encoding import meter
from companion.encoding.curves import Vocabulary
from companion.packages import ModelError, read_card

INPUTS = {"token": "int64", "h": "float", "c": "float"}
OUTPUTS = ("logits", "h_out", "c_out")
#: The second input of a format-2 step model: an onset's metrical position (meter.position).
POSITION = "position"
#: What a format-2 package's card says of its positions (card.json ``"position"``).
POSITION_CARD = {"phases": meter.PHASES, "bar_quarters": meter.BAR_QUARTERS, "size": meter.SIZE}
#: The position fed where none is given: bar unknown, on the beat.
DEFAULT_POSITION = meter.UNKNOWN_BAR * meter.PHASES


@dataclass
class State:
    h: np.ndarray  # [L, 1, H] float32
    c: np.ndarray

    def copy(self) -> State:
        return State(self.h.copy(), self.c.copy())


class StepModel:
    """One LSTM step of a package: ``step(token, state, position) -> logits``, the state
    advanced in place.

    The format is the ONNX model's: with an int64 ``position`` input it is format 2
    (``positional``: each step also takes the metrical position of its note's onset), else
    format 1 (token, h, c only; a position given is ignored). A card that says otherwise
    (its ``"format"``, or a ``"position"`` other than meter's) is a ModelError."""

    def __init__(self, package: str | Path, threads: int = 1):
        import onnxruntime as ort

        self.dir = Path(package)
        if not self.dir.is_dir():
            raise ModelError(
                f"{self.dir}: no model package there (expected a folder with model.onnx)"
            )
        onnx_path = self.dir / "model.onnx"
        if not onnx_path.is_file():
            raise ModelError(f"{onnx_path}: missing (expected the ONNX step model)")
        try:
            self.vocab = Vocabulary.load(self.dir / "vocab.json")
        except ValueError as e:
            raise ModelError(str(e)) from e
        so = ort.SessionOptions()
        # One step is ~1 M multiply-adds: thread hand-offs cost more than they save.
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # Batch 1 multiplies a vector by each weight matrix once per step: the step is bound
        # by reading the 4 MB of weights. Read as stored they stream ~15% faster than in the
        # blocks onnxruntime repacks them into for matrix-matrix products (bench: step_us).
        so.add_session_config_entry("session.disable_prepacking", "1")
        so.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(
                str(onnx_path), so, providers=["CPUExecutionProvider"]
            )
        except Exception as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ModelError(f"{onnx_path}: not a loadable ONNX model ({first[:160]})") from e
        self._check_signature(onnx_path)
        self.card = read_card(self.dir)
        self._check_format()
        self._bind_step(ort)

    def _bind_step(self, ort) -> None:
        """Bind the batch-1 step once to buffers of its own (an IOBinding): a step then builds
        no feed dict, allocates no outputs and skips the Python wrapper's per-call checks,
        which are ~15% of a step. onnxruntime releases the GIL while it runs."""
        L, H, V = self.layers, self.units, self.vocab_size
        self._tok = np.zeros(1, dtype=np.int64)
        self._pos = np.full(1, DEFAULT_POSITION, dtype=np.int64)
        self._h_in = np.zeros((L, 1, H), dtype=np.float32)
        self._c_in = np.zeros((L, 1, H), dtype=np.float32)
        self._logits = np.zeros((1, V), dtype=np.float32)
        self._h_out = np.zeros((L, 1, H), dtype=np.float32)
        self._c_out = np.zeros((L, 1, H), dtype=np.float32)
        self._binding = self.session.io_binding()
        inputs = [("token", self._tok), ("h", self._h_in), ("c", self._c_in)]
        if self.positional:
            inputs.append((POSITION, self._pos))
        for name, a in inputs:
            self._binding.bind_cpu_input(name, a)
        for name, a in (("logits", self._logits), ("h_out", self._h_out), ("c_out", self._c_out)):
            self._binding.bind_output(name, "cpu", 0, a.dtype, list(a.shape), a.ctypes.data)
        self._run_opts = ort.RunOptions()
        # the C++ session's own entry point where this onnxruntime has it (it always has so
        # far); the public wrapper adds checks for graph capture on the GPU, not needed here
        sess = getattr(self.session, "_sess", None)
        raw = getattr(self._binding, "_iobinding", None)
        if sess is not None and raw is not None and hasattr(sess, "run_with_iobinding"):
            run, binding = sess.run_with_iobinding, raw
        else:  # pragma: no cover - depends on the onnxruntime version
            run, binding = self.session.run_with_iobinding, self._binding
        opts = self._run_opts
        self._run = lambda: run(binding, opts)
        self._lock = threading.Lock()  # the bound buffers are this model's: one step at a time

    def _check_signature(self, path: Path) -> None:
        ins = {i.name: i for i in self.session.get_inputs()}
        outs = {o.name: o for o in self.session.get_outputs()}
        if set(ins) - {POSITION} != set(INPUTS) or not set(OUTPUTS) <= set(outs):
            raise ModelError(
                f"{path}: expected inputs token, h, c (and position, format 2) and outputs "
                f"logits, h_out, c_out; found inputs {', '.join(sorted(ins))} and outputs "
                f"{', '.join(sorted(outs))}"
            )
        if "int64" not in ins["token"].type or "float" not in ins["h"].type:
            raise ModelError(f"{path}: expected token int64 and h, c float32 inputs")
        #: Format 2: every step takes its note's metrical position too.
        self.positional = POSITION in ins
        if self.positional and "int64" not in ins[POSITION].type:
            raise ModelError(f"{path}: expected the position input int64, got "
                             f"{ins[POSITION].type}")
        shape = ins["h"].shape
        if len(shape) != 3 or not all(isinstance(d, int) for d in (shape[0], shape[2])):
            raise ModelError(f"{path}: expected h of shape [layers, batch, units], got {shape}")
        self.layers, self.units = int(shape[0]), int(shape[2])
        v = outs["logits"].shape[-1]
        if not isinstance(v, int):
            raise ModelError(f"{path}: logits have no fixed vocabulary size")
        self.vocab_size = v
        if v != self.vocab.size:
            raise ModelError(
                f"{self.dir / 'vocab.json'}: {self.vocab.size} tokens, "
                f"but model.onnx outputs {v} logits (expected one per token)"
            )

    @property
    def format(self) -> int:
        """The package format: 2 with a position input, else 1."""
        return meter.FORMAT if self.positional else 1

    def _check_format(self) -> None:
        """The card's ``"format"`` and ``"position"``, where present, agree with model.onnx:
        format 2 and meter's positions with a position input, format 1 and none without."""
        p = self.dir / "card.json"
        fmt = self.card.get("format")
        takes = "takes a position input" if self.positional else "has no position input"
        if self.vocab.format != self.format:
            raise ModelError(f"{self.dir / 'vocab.json'}: \"format\": {self.vocab.format}, but "
                             f"model.onnx {takes} (expected format {self.format})")
        if fmt is not None and fmt != self.format:
            raise ModelError(f"{p}: \"format\": {fmt!r}, but model.onnx {takes} (expected "
                             f"format {self.format})")
        pos = self.card.get("position")
        if pos is None:
            return
        if not self.positional:
            raise ModelError(f"{p}: \"position\" given, but model.onnx {takes} (format 1)")
        if pos != POSITION_CARD:
            raise ModelError(f"{p}: \"position\": expected {json.dumps(POSITION_CARD)} "
                             f"(companion.encoding.meter), got {json.dumps(pos)}")

    def zero_state(self, batch: int = 1) -> State:
        z = np.zeros((self.layers, batch, self.units), dtype=np.float32)
        return State(z, z.copy())

    def step(self, token: int, state: State, position: int | None = None) -> np.ndarray:
        """Feed one token, at the metrical ``position`` (meter.position) of its note's onset;
        ``state`` now holds the state after it (its arrays are updated in place). Returns the
        logits ``[V]``, a new array. Format 1 ignores ``position``; format 2 takes None as
        ``DEFAULT_POSITION`` (bar unknown, on the beat), and a position outside
        0..meter.SIZE - 1 is a ValueError."""
        if self.positional:
            if position is None:
                position = DEFAULT_POSITION
            elif not 0 <= position < meter.SIZE:
                raise ValueError(f"position: expected 0..{meter.SIZE - 1}, got {position!r}")
        with self._lock:
            self._tok[0] = token
            if self.positional:
                self._pos[0] = position
            np.copyto(self._h_in, state.h)
            np.copyto(self._c_in, state.c)
            self._run()
            np.copyto(state.h, self._h_out)
            np.copyto(state.c, self._c_out)
            return self._logits[0].copy()

    def warm(self) -> None:
        """A throwaway step (on this model's own buffers; no state changes): it brings the
        weights back into the CPU caches. A step after tens of ms without one costs several
        times one right after another (`companion bench`, step_us), so the engine warms the
        model just before a step it knows is coming: the first of an answer."""
        with self._lock:
            self._run()

    def run_batch(self, tokens: np.ndarray, h: np.ndarray, c: np.ndarray,
                  positions: np.ndarray | None = None):
        """A batched step for evaluation: tokens ``[B]``, state ``[L, B, H]``, positions
        ``[B]`` as ``step`` takes them (format 1 ignores them; format 2 takes None as
        ``DEFAULT_POSITION`` for all)."""
        feed = {"token": tokens.astype(np.int64), "h": h, "c": c}
        if self.positional:
            if positions is None:
                positions = np.full(len(tokens), DEFAULT_POSITION, dtype=np.int64)
            positions = np.asarray(positions, dtype=np.int64)
            if positions.shape != feed["token"].shape:
                raise ValueError(f"positions: expected shape {feed['token'].shape}, got "
                                 f"{positions.shape}")
            if positions.size and not (0 <= positions.min() and positions.max() < meter.SIZE):
                raise ValueError(f"positions: expected ids 0..{meter.SIZE - 1}")
            feed[POSITION] = positions
        return self.session.run(OUTPUTS, feed)
