"""The harmony model: chords under a melody as it is heard, one ONNX step at a time.

A harmony package (``kind: "harmony"``, docs/interface.md, docs/harmony.md) holds an LSTM
step whose state is explicit, like the melody model's; its steps are those of
companion.encoding.harmony: a *note step* for each melody note as it starts, and a *slot
step* at each slot, every quarter note of the beat grid the engine follows (the clock's,
Link's or the call's own beats), which gives the chord of that slot from the melody heard
before it. The live engine drives it through ``Harmonizer``::

    from companion.encoding.chords import chord_pitches
    from companion.engine.harmony import HarmonyModel, Harmonizer

    h = Harmonizer(HarmonyModel("models/harmony_nottingham"))
    # each melody note as it starts: MIDI pitch, onset in beats (any time line, the same for
    # every call), the onset's metrical position (meter.position; None: bar unknown)
    h.note(pitch, onset_beats, position)
    # before each beat (at most a beat ahead), with the beat's position (meter.position of
    # the beat from its bar's first beat: 0, 12, 24, ... in a known bar):
    token, chord = h.decide(position, temperature=0.0, rng=None)  # decided and committed
    chord.name, chord.pitch_classes(), chord.bass_pc()   # chord None: no chord (N)
    chord_pitches(chord, below=melody_pitch)            # a plain voicing, under the melody

or step by step: ``logits = h.query(position)`` (the slot's chord scores; the state moves
on), then ``h.commit(token)`` with the chord that will sound (the engine may choose another
than the model's best, or hold the last: the one committed is what the next slot step is
fed, and the model was trained to follow the melody whatever chord it is told sounded).
Slots and notes come in time order: a note heard before the slot is decided is fed before
it, one that starts on or after the slot's beat after it (training puts a slot before the
notes on its beat). Slots are every quarter note from the first after the first note;
before the first note there is nothing to harmonise: ``decide`` gives ``N`` without a
step. ``reset()`` starts a fresh melody (a new reference pitch class: chords are relative
to the first note heard; each slot step also reads the key heard so far relative to it,
companion.encoding.harmony's ``KeyTrack``, the same estimate as in training).

``HarmonyModel.step(token, pitch, position, state)`` is the raw step (inputs as
companion.encoding.harmony lays them out). A step of the shipped model costs about 40
microseconds (onnxruntime, one thread). The companion never imports TensorFlow here.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np

from companion.encoding import meter
from companion.encoding.chords import Chord, ChordVocabulary
from companion.encoding.curves import Vocabulary, curve
from companion.encoding.harmony import PITCHES, SLOT, KeyTrack, StepVocab, key_input
from companion.engine.model import DEFAULT_POSITION, State
from companion.packages import ModelError, read_card

KIND = "harmony"
FORMAT = 1
INPUTS = ("token", "pitch", "position", "h", "c")
OUTPUTS = ("logits", "h_out", "c_out")
#: What harmony.json says of the step's inputs (docs/interface.md).
INPUT_SIZES = {"pitch": PITCHES, "position": meter.SIZE}


def read_vocab(path: Path) -> tuple[StepVocab, dict]:
    """The step vocabulary of a harmony.json, and the file's object."""
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ModelError(f"{path}: cannot read ({e})") from e
    if not isinstance(data, dict) or data.get("kind") != KIND or data.get("format") != FORMAT:
        raise ModelError(f"{path}: expected an object with \"kind\": \"{KIND}\" and "
                         f"\"format\": {FORMAT}")
    if data.get("slot_quarters") != SLOT or data.get("reference") != "first_note":
        raise ModelError(f"{path}: expected \"slot_quarters\": {SLOT} and \"reference\": "
                         f"\"first_note\" (companion.encoding.harmony)")
    if data.get("inputs") != INPUT_SIZES:
        raise ModelError(f"{path}: \"inputs\": expected {json.dumps(INPUT_SIZES)}")
    try:
        curves = Vocabulary.from_json(data.get("curves"), str(path))
        chords = ChordVocabulary.from_json(data.get("chords"), str(path))
    except ValueError as e:
        raise ModelError(str(e)) from e
    if list(curves.specials) != ["bos"]:
        raise ModelError(f"{path}: \"curves\": expected the one special \"bos\"")
    return StepVocab(curves, chords), data


def vocab_json(vocab: StepVocab) -> dict:
    """harmony.json's object for ``vocab`` (what ``read_vocab`` reads)."""
    return {"kind": KIND, "format": FORMAT, "slot_quarters": SLOT, "reference": "first_note",
            "inputs": dict(INPUT_SIZES), "curves": vocab.curves.to_json(),
            "chords": vocab.chords.to_json()}


class HarmonyModel:
    """A harmony package's step: ``step(token, pitch, position, state) -> chord logits``."""

    def __init__(self, package: str | Path, threads: int = 1):
        import onnxruntime as ort

        self.dir = Path(package)
        onnx_path = self.dir / "model.onnx"
        if not onnx_path.is_file():
            raise ModelError(f"{onnx_path}: missing (expected a harmony package's ONNX step)")
        self.vocab, self.spec = read_vocab(self.dir / "harmony.json")
        self.card = read_card(self.dir, KIND)
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(str(onnx_path), so,
                                                providers=["CPUExecutionProvider"])
        except Exception as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ModelError(f"{onnx_path}: not a loadable ONNX model ({first[:160]})") from e
        ins = {i.name: i for i in self.session.get_inputs()}
        outs = {o.name: o for o in self.session.get_outputs()}
        if set(ins) != set(INPUTS) or not set(OUTPUTS) <= set(outs):
            raise ModelError(f"{onnx_path}: expected inputs {', '.join(INPUTS)} and outputs "
                             f"{', '.join(OUTPUTS)}; found {', '.join(sorted(ins))} and "
                             f"{', '.join(sorted(outs))}")
        shape = ins["h"].shape
        self.layers, self.units = int(shape[0]), int(shape[2])
        if outs["logits"].shape[-1] != self.vocab.output_size:
            raise ModelError(f"{self.dir / 'harmony.json'}: {self.vocab.output_size} chords, "
                             f"but model.onnx outputs {outs['logits'].shape[-1]} logits")
        self._feed = {"token": np.zeros(1, np.int64), "pitch": np.zeros(1, np.int64),
                      "position": np.zeros(1, np.int64),
                      "h": np.zeros((self.layers, 1, self.units), np.float32),
                      "c": np.zeros((self.layers, 1, self.units), np.float32)}
        self._lock = threading.Lock()

    @property
    def chords(self) -> ChordVocabulary:
        return self.vocab.chords

    def zero_state(self, batch: int = 1) -> State:
        z = np.zeros((self.layers, batch, self.units), dtype=np.float32)
        return State(z, z.copy())

    def step(self, token: int, pitch: int, position: int | None, state: State) -> np.ndarray:
        """One step (companion.encoding.harmony's inputs); ``state`` is advanced in place.
        Returns the chord logits ``[C]`` (meaningful after a slot step), a new array."""
        if not 0 <= token < self.vocab.input_size:
            raise ValueError(f"token: expected 0..{self.vocab.input_size - 1}, got {token!r}")
        if not 0 <= pitch < PITCHES:
            raise ValueError(f"pitch: expected 0..{PITCHES - 1}, got {pitch!r}")
        if position is None:
            position = DEFAULT_POSITION
        elif not 0 <= position < meter.SIZE:
            raise ValueError(f"position: expected 0..{meter.SIZE - 1}, got {position!r}")
        with self._lock:
            f = self._feed
            f["token"][0], f["pitch"][0], f["position"][0] = token, pitch, position
            np.copyto(f["h"], state.h)
            np.copyto(f["c"], state.c)
            logits, h, c = self.session.run(OUTPUTS, f)
            np.copyto(state.h, h)
            np.copyto(state.c, c)
            return logits[0]

    def run_batch(self, tokens, pitches, positions, h, c):
        """A batched step for evaluation: inputs ``[B]``, state ``[L, B, H]``."""
        return self.session.run(OUTPUTS, {
            "token": np.asarray(tokens, np.int64), "pitch": np.asarray(pitches, np.int64),
            "position": np.asarray(positions, np.int64), "h": h, "c": c})


def choose(logits: np.ndarray, temperature: float = 0.0,
           rng: np.random.Generator | None = None) -> int:
    """A chord token from ``logits``: the best at temperature 0, else a draw from the
    softmax at that temperature."""
    if temperature <= 0 or rng is None:
        return int(np.argmax(logits))
    z = np.asarray(logits, np.float64) / temperature
    p = np.exp(z - z.max())
    return int(rng.choice(len(p), p=p / p.sum()))


class Harmonizer:
    """The harmony model following one melody: its state, reference pitch class, last note
    and the chord committed at the last slot (module docstring)."""

    def __init__(self, model: HarmonyModel):
        self.model = model
        self.reset()

    def reset(self) -> None:
        """A fresh melody: zero state, no note heard, no chord."""
        self.state = self.model.zero_state()
        self.ref: int | None = None
        self._prev: tuple[int, float] | None = None
        self.keys = KeyTrack()  # the key heard so far (a slot step's input)
        #: The chord token committed at the last slot (``N``, 0, at first).
        self.chord = ChordVocabulary.NONE

    def rest(self) -> None:
        """No chord sounds any more (the melody paused): the next slot may take any. What
        was heard (the state, the reference, the key) is kept."""
        self.chord = ChordVocabulary.NONE

    def note(self, pitch: int, onset: float, position: int | None = None) -> None:
        """A melody note that starts: MIDI ``pitch``, ``onset`` in beats, ``position`` its
        metrical position (meter.position; None: bar unknown, on the beat)."""
        v = self.model.vocab
        if self._prev is None:
            self.ref = int(pitch) % 12
            token = v.bos
        else:
            token = v.curves.token(*curve(*self._prev, int(pitch), float(onset)))
        self._prev = (int(pitch), float(onset))
        self.keys.note(int(pitch), float(onset))
        self.model.step(token, (int(pitch) - self.ref) % 12, position, self.state)

    def query(self, position: int | None) -> np.ndarray | None:
        """The slot step at ``position``: the logits of its chord (None before the first
        note: no step). Commit the chord that will sound with ``commit``."""
        if self.ref is None:
            return None
        return self.model.step(self.model.vocab.slot_token(self.chord),
                               key_input(self.keys.key(), self.ref), position, self.state)

    def key(self) -> tuple[int, int] | None:
        """The key heard so far (tonic pitch class, mode; None before any evidence): the
        slot steps' key input."""
        return self.keys.key()

    def commit(self, token: int) -> Chord | None:
        """The chord that sounds from this slot on (fed to the next slot step)."""
        if not 0 <= token < self.model.chords.size:
            raise ValueError(f"chord token: expected 0..{self.model.chords.size - 1}, "
                             f"got {token!r}")
        self.chord = int(token)
        return self.chord_of(self.chord)

    def decide(self, position: int | None, temperature: float = 0.0,
               rng: np.random.Generator | None = None) -> tuple[int, Chord | None]:
        """``query``, ``choose`` and ``commit`` in one: the slot's chord token and chord."""
        logits = self.query(position)
        if logits is None:
            return ChordVocabulary.NONE, None
        token = choose(logits, temperature, rng)
        return token, self.commit(token)

    def chord_of(self, token: int) -> Chord | None:
        """The absolute chord of a token under this melody (None: ``N``, or no note yet)."""
        return None if self.ref is None else self.model.chords.chord(token, self.ref)
