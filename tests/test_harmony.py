"""The harmony model's encoding and live step: chord symbols, the chord vocabulary, slots,
the stream of steps, and HarmonyModel / Harmonizer on a package of random weights (no
TensorFlow, no training)."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

from companion.encoding import meter
from companion.encoding.chords import Chord, ChordVocabulary, chord_pitches, parse_symbol
from companion.encoding.curves import Vocabulary, curves_from_notes
from companion.encoding.harmony import (
    KEYS,
    NO_PITCH,
    PITCHES,
    KeyTrack,
    StepVocab,
    chords_at,
    key_input,
    slots,
    tune_steps,
)
from companion.encoding.melody import Melody
from companion.engine.harmony import Harmonizer, HarmonyModel, choose
from companion.packages import ModelError, list_packages

C, D, E, F, G, A, B = 0, 2, 4, 5, 7, 9, 11


def melody(notes, bar: float | None = 4.0, start: float = 0.0) -> Melody:
    """A melody of (pitch, onset, duration); bars of ``bar`` quarters from ``start`` (None:
    unknown)."""
    p = np.array([n[0] for n in notes])
    on = np.array([n[1] for n in notes], float)
    dur = np.array([n[2] for n in notes], float)
    if bar is None:
        return Melody("m", p, on, dur, np.full(len(p), 80))
    bar_on = (on - start) % bar
    return Melody("m", p, on, dur, np.full(len(p), 80), bar_on, np.full(len(p), bar))


#: A tune in G, 4/4 with a quarter pickup: G D | G B d B | c A F# D | G ...
TUNE = [(62, 0, 1), (67, 1, 1), (71, 2, 1), (74, 3, 1), (71, 4, 1), (72, 5, 1), (69, 6, 1),
        (66, 7, 1), (62, 8, 1), (67, 9, 2)]
CHANGES = [(1.0, Chord(G, "maj")), (5.0, Chord(D, "7")), (9.0, Chord(G, "maj"))]


@pytest.mark.parametrize("text, chord", [
    ("G", Chord(G, "maj")), ("D7", Chord(D, "7")), ("Em", Chord(E, "min")),
    ("F#m", Chord(6, "min")), ("Bb", Chord(10, "maj")), ("Cd", Chord(C, "dim")),
    ("Ca", Chord(C, "aug")), ("D/f+", Chord(D, "maj", 4)), ("Gm/bb", Chord(G, "min", 3)),
    ("A7/e", Chord(A, "7", 7)), ("(E7)", Chord(E, "7")), ("E7b9", Chord(E, "7b9")),
    ("Am7", Chord(A, "min7")), ("C6", Chord(C, "6")), ("A7/C#", Chord(A, "7", 4)),
    ("C/d", Chord(C, "maj")), ("Bbmaj7", Chord(10, "maj7")),
])
def test_chord_symbols_as_nottingham_writes_them(text, chord):
    assert parse_symbol(text) == chord


@pytest.mark.parametrize("text", ["", "H", "Gx", "N.C."])
def test_unreadable_chord_symbols_are_none(text):
    assert parse_symbol(text) is None


def test_chord_names_pitch_classes_and_triads():
    c = Chord(A, "7", 4)
    assert c.name == "A7/C#" and c.pitch_classes() == (9, 1, 4, 7) and c.bass_pc() == 1
    assert c.triad() == Chord(A, "maj").triad() == frozenset({9, 1, 4})
    assert Chord(E, "min").name == "Em"


def test_chord_vocabulary_is_relative_to_the_reference():
    v = ChordVocabulary.build([Chord(G, "maj")] * 6 + [Chord(D, "7")] * 6 + [Chord(D, "maj", 4)]
                              * 2)
    assert v.shapes[:2] == [("maj", 0), ("7", 0)] and ("min", 0) in v.shapes
    assert v.size == 1 + 12 * len(v.shapes)
    assert v.token(None, 3) == 0 and v.chord(0, 3) is None and v.name(0, 3) == "N"
    for ref in range(12):
        k = v.token(Chord(D, "7"), ref)
        assert v.chord(k, ref) == Chord(D, "7")
    # the same token is the same chord transposed with the reference
    assert v.chord(v.token(Chord(D, "7"), G), A) == Chord(E, "7")
    # a rare shape (not kept) takes its nearest: D/F# -> D, E7b9 -> E7, Cm6 -> Cm
    assert v.chord(v.token(Chord(D, "maj", 4), 0), 0) == Chord(D, "maj")
    assert v.chord(v.token(Chord(E, "7b9"), 0), 0) == Chord(E, "7")
    assert v.chord(v.token(Chord(C, "min6"), 0), 0) == Chord(C, "min")
    assert ChordVocabulary.from_json(json.loads(json.dumps(v.to_json()))) == v
    with pytest.raises(ValueError):
        ChordVocabulary.from_json({"none": 0, "roots": 12, "shapes": [["nine", 0]]})
    with pytest.raises(ValueError):
        v.chord(v.size, 0)


def test_chord_pitches_lie_under_the_melody_with_the_bass_first():
    notes = chord_pitches(Chord(D, "7", 4), below=74)
    assert notes[0] == 42  # F#2: the bass, in the octave from 36
    assert sorted(p % 12 for p in notes[1:]) == sorted(Chord(D, "7").pitch_classes())
    assert max(notes) < 74 and min(notes[1:]) >= 48
    assert chord_pitches(None, below=70) == []
    assert len(chord_pitches(Chord(C, "maj"), below=80, bass=False)) == 3


def test_slots_are_quarters_of_the_bar_after_the_first_note():
    m = melody(TUNE, bar=4.0, start=1.0)  # a quarter pickup: bars start at 1, 5, 9
    sl = slots(m)
    assert list(sl.times) == [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]
    assert [int(p) // 12 for p in sl.positions] == [0, 1, 2, 3] * 2 + [0, 1]
    assert list(sl.strong()) == [True, False, True, False] * 2 + [True, False]
    assert [c.name for c in chords_at(sl.times, CHANGES)] == ["G"] * 4 + ["D7"] * 4 + ["G"] * 2
    # 6/8: three quarter-note slots to a bar of 3 quarters; a bar without a note filled in
    jig = melody([(67, 0, 0.5), (69, 0.5, 0.5), (71, 1, 5.0), (72, 6, 1)], bar=3.0)
    sj = slots(jig)
    assert list(sj.times) == [1, 2, 3, 4, 5, 6] and [int(p) // 12 for p in sj.positions] == \
        [1, 2, 0, 1, 2, 0]
    # bars unknown: the melody's own quarter grid, positions with the bar unknown
    su = slots(melody(TUNE, bar=None))
    assert list(su.times) == list(range(1, 11))
    assert all(p == meter.UNKNOWN_BAR * meter.PHASES for p in su.positions)
    assert not su.strong().any()


def vocab_for(melodies, chords) -> StepVocab:
    curves = Vocabulary.build([curves_from_notes(m.pitches, m.onsets) for m in melodies])
    return StepVocab(curves, ChordVocabulary.build(chords, min_count=1))


def test_steps_put_each_slot_before_the_notes_on_its_beat():
    m = melody(TUNE, bar=4.0, start=1.0)
    sl = slots(m)
    v = vocab_for([m], [c for _, c in CHANGES])
    s = tune_steps(m, chords_at(sl.times, CHANGES), sl, v)
    assert len(s) == len(m) + len(sl) and s.ref == 62 % 12
    kinds = ["slot" if t >= 0 else "note" for t in s.targets]
    assert kinds[:5] == ["note", "slot", "note", "slot", "note"]
    assert s.tokens[0] == v.bos and s.pitches[0] == 0
    # a slot step reads the key heard so far (none before a note has ended), relative to ref
    keys = s.pitches[s.is_slot]
    assert keys[0] == NO_PITCH and ((keys[1:] >= KEYS) & (keys[1:] < PITCHES)).all()
    track = KeyTrack()
    for p, t in zip(m.pitches, m.onsets, strict=True):
        if t < sl.times[-1]:
            track.note(int(p), float(t))
    assert keys[-1] == key_input(track.key(), s.ref)
    # teacher forcing: each slot is fed the chord before it, N at the first
    y = s.targets[s.is_slot]
    fed = s.tokens[s.is_slot] - (v.bos + 1)
    assert fed[0] == ChordVocabulary.NONE and list(fed[1:]) == list(y[:-1])
    assert v.chords.chord(int(y[0]), s.ref) == Chord(G, "maj")
    assert np.all(np.diff(s.times) >= 0)
    # a horizon of half a beat: the slot on beat 2 is decided before the note at 1.5
    short = melody([(60, 0, 1), (62, 1.5, 1), (64, 2, 1)], bar=None)
    early = tune_steps(short, [None, None], slots(short), v, horizon=0.5)
    assert ["s" if t >= 0 else "n" for t in early.targets] == ["n", "s", "s", "n", "n"]


@pytest.fixture(scope="module")
def pkg(tmp_path_factory):
    from train.harmony import random_package

    m = melody(TUNE, bar=4.0, start=1.0)
    v = vocab_for([m], [c for _, c in CHANGES] + [Chord(E, "min")])
    return random_package(v, tmp_path_factory.mktemp("harmony") / "h", units=24, seed=3)


def test_the_harmonizer_feeds_the_steps_training_reads(pkg):
    """Live: notes and slot decisions through the Harmonizer give the logits of the training
    stream, step for step (teacher-forced with the chords the Harmonizer committed)."""
    model = HarmonyModel(pkg)
    m = melody(TUNE, bar=4.0, start=1.0)
    sl = slots(m)
    h = Harmonizer(model)
    assert h.decide(int(sl.positions[0])) == (0, None)  # no note heard yet: no step
    live, committed = [], []
    events = sorted([(float(t), 0, i) for i, t in enumerate(sl.times)]
                    + [(float(t), 1, i) for i, t in enumerate(m.onsets)])
    for _, kind, i in events:
        if kind == 1:
            h.note(int(m.pitches[i]), float(m.onsets[i]), int(m.positions()[i]))
        else:
            logits = h.query(int(sl.positions[i]))
            live.append(logits)
            k = choose(logits)
            h.commit(k)
            committed.append(h.chord_of(k))
    s = tune_steps(m, committed, sl, model.vocab)
    state = model.zero_state()
    offline = []
    for a, b, c, t in zip(s.tokens, s.pitches, s.positions, s.targets, strict=True):
        logits = model.step(int(a), int(b), int(c), state)
        if t >= 0:
            offline.append(logits)
    assert len(offline) == len(live) == len(sl)
    assert max(float(np.abs(a - b).max()) for a, b in zip(live, offline, strict=True)) < 1e-5


def test_a_transposed_melody_gets_the_same_chords_transposed(pkg):
    model = HarmonyModel(pkg)
    m = melody(TUNE, bar=4.0, start=1.0)
    sl = slots(m)

    def play(shift):
        h = Harmonizer(model)
        out = []
        events = sorted([(float(t), 0, i) for i, t in enumerate(sl.times)]
                        + [(float(t), 1, i) for i, t in enumerate(m.onsets)])
        for _, kind, i in events:
            if kind:
                h.note(int(m.pitches[i]) + shift, float(m.onsets[i]), int(m.positions()[i]))
            else:
                out.append(h.decide(int(sl.positions[i]))[1])
        return out

    up = play(5)
    for a, b in zip(play(0), up, strict=True):
        assert (a is None and b is None) or Chord((a.root + 5) % 12, a.quality, a.bass) == b


def test_sampling_follows_the_temperature():
    logits = np.array([2.0, 1.0, 0.0])
    assert choose(logits) == 0
    rng = np.random.default_rng(0)
    draws = [choose(logits, 1.0, rng) for _ in range(2000)]
    p = np.exp(logits) / np.exp(logits).sum()
    assert abs(draws.count(0) / 2000 - p[0]) < 0.05
    assert {choose(logits, 0.01, rng) for _ in range(50)} == {0}


def test_a_step_is_well_under_a_millisecond(pkg):
    model = HarmonyModel(pkg)
    state = model.zero_state()
    times = []
    for k in range(300):
        t = time.perf_counter()
        model.step(k % 10, k % 13, k % meter.SIZE, state)
        times.append(time.perf_counter() - t)
    assert np.median(times) < 1e-3


def test_a_broken_harmony_package_is_a_model_error(pkg, tmp_path):
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(pkg, bad)
    spec = json.loads((bad / "harmony.json").read_text())
    (bad / "harmony.json").write_text(json.dumps(spec | {"kind": "melody"}))
    with pytest.raises(ModelError, match="harmony.json"):
        HarmonyModel(bad)
    spec["chords"]["shapes"] = spec["chords"]["shapes"][:1]
    (bad / "harmony.json").write_text(json.dumps(spec))
    with pytest.raises(ModelError, match="logits"):
        HarmonyModel(bad)
    with pytest.raises(ModelError, match="model.onnx"):
        HarmonyModel(tmp_path)
    model = HarmonyModel(pkg)
    with pytest.raises(ValueError):
        model.step(model.vocab.input_size, 0, 0, model.zero_state())
    with pytest.raises(ValueError):
        model.step(0, PITCHES, 0, model.zero_state())


def test_harmony_packages_are_not_listed_as_models_to_answer_with(pkg, model_pkg, tmp_path):
    import shutil

    shutil.copytree(pkg, tmp_path / "harmony")
    shutil.copytree(model_pkg, tmp_path / "melody")
    assert [p.name for p in list_packages([tmp_path])] == ["melody"]


def test_a_slot_step_reads_the_key_heard_so_far_relative_to_the_first_note():
    """A tune in D major that starts on its fifth (A): once its notes have been heard, a
    slot step is fed D major, seven semitones above the reference A, not the first note."""
    d_major = [69, 71, 73, 74, 76, 78, 73, 74, 69, 74, 78, 74]
    m = melody([(p, k, 1) for k, p in enumerate(d_major)], bar=4.0)
    sl = slots(m)
    v = vocab_for([m], [Chord(D, "maj")])
    s = tune_steps(m, [Chord(D, "maj")] * len(sl), sl, v)
    assert s.ref == 69 % 12
    assert s.pitches[s.is_slot][-1] == key_input((D, 0), s.ref) == KEYS + 5
    assert key_input(None, s.ref) == NO_PITCH
    assert key_input((D, 1), s.ref) == KEYS + 12 + 5


def test_training_weighs_the_slots_where_the_live_chord_may_change():
    """Slots on a bar's first beat or the middle of a bar of four weigh 1, the others the
    off-beat weight, note steps nothing; the windows carry these weights."""
    from train.harmony import step_weights, windows
    from train.harmony_eval import EvalTune

    m = melody(TUNE, bar=4.0, start=1.0)
    sl = slots(m)
    v = vocab_for([m], [c for _, c in CHANGES])
    s = tune_steps(m, chords_at(sl.times, CHANGES), sl, v)
    w = step_weights(EvalTune(m, sl, s), 0.25)
    assert (w[~s.is_slot] == 0).all()
    strong = [float(t - 1.0) % 4 in (0.0, 2.0) for t in sl.times]
    assert list(w[s.is_slot]) == [1.0 if x else 0.25 for x in strong]
    assert any(strong) and not all(strong)
    win = windows([s], 64, weights=[w])
    assert np.array_equal(win[4][0, :len(s)], w) and (win[4][0, len(s):] == 0).all()
