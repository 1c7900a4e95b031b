"""The harmony model trained end to end on a handful of tunes: ABC with chord symbols ->
harmonic steps -> LSTM -> ONNX step -> held-out figures -> package (train.harmony)."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from support import ROOT

from companion.engine.harmony import Harmonizer, HarmonyModel

#: Diatonic degrees 0.. of two keys as ABC writes them (K:G makes every f an F sharp).
SCALES = {"C": "C D E F G A B c d e f g".split(), "G": "G A B c d e f g a b".split()}
#: Chord symbols of the degrees I, IV, V, vi in each key.
CHORDS = {"C": {0: "C", 3: "F", 4: "G7", 5: "Am"}, "G": {0: "G", 3: "C", 4: "D7", 5: "Em"}}


def tune(x: int, key: str, rng) -> str:
    """A made-up 8-bar tune in 4/4: a chord a bar (I IV V I, vi IV V I), quarter and eighth
    notes mostly on the chord's notes."""
    scale = SCALES[key]
    body = []
    for root in (0, 3, 4, 0, 5, 3, 4, 0):
        tones = [d for d in range(len(scale)) if (d - root) % 7 in (0, 2, 4)]
        notes = []
        for _ in range(4):
            if rng.random() < 0.3:
                a = rng.choice(tones)
                notes.append(f"{scale[a]}/2{scale[min(a + 1, len(scale) - 1)]}/2")
            else:
                notes.append(scale[rng.choice(tones)])
        body.append(f'"{CHORDS[key][root]}"' + "".join(notes))
    return f"X: {x}\nT:Tune {x}\nM:4/4\nL:1/4\nK:{key}\n" + "|".join(body) + "|]\n"


@pytest.fixture(scope="module")
def abc(tmp_path_factory):
    rng = np.random.default_rng(5)
    d = tmp_path_factory.mktemp("chords")
    (d / "tunes.abc").write_text("\n\n".join(tune(x, "CG"[x % 2], rng) for x in range(1, 13)))
    return d


@pytest.fixture(scope="module")
def trained(abc, tmp_path_factory):
    out = tmp_path_factory.mktemp("models") / "harmony-tiny"
    work = tmp_path_factory.mktemp("work")
    env = dict(os.environ, PYTHONPATH=str(ROOT), TF_CPP_MIN_LOG_LEVEL="3")
    r = subprocess.run(
        [sys.executable, "-m", "train.harmony", "--corpus", str(abc), "--out", str(out),
         "--work", str(work), "--epochs", "3", "--units", "16", "--embed", "8", "--window",
         "48", "--batch", "4", "--workers", "1", "--seed", "3", "--quiet",
         "--idiom", "made-up tunes"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    return out, r


def test_the_package_and_its_card(trained, abc):
    out, r = trained
    for f in ("model.onnx", "harmony.json", "card.json", "training_curves.png"):
        assert (out / f).is_file(), f
    assert not list(out.parent.glob(".harmony-tiny.*")), "staging folders left behind"
    card = json.loads((out / "card.json").read_text())
    assert card["kind"] == "harmony" and card["idiom"] == "made-up tunes"
    assert card["corpora"] == [str(abc)] and card["chords_from"] == ["symbols"]
    assert card["corpus_sizes"]["tunes"] == 12
    split = card["corpus_sizes"]["tunes_split"]
    assert sum(split.values()) == 12 and split["test"] >= 1
    assert len(card["split"]["test_tunes"]) == split["test"]
    assert card["onnx"]["parity_max_abs_diff"] <= 1e-4
    assert 0 < card["onnx"]["step_us"] < 1000
    assert card["training"]["epochs_run"] == 3
    fig = card["held_out"]["test_split"]
    tf = fig["teacher_forced"]
    assert tf["slots"] > 0 and np.isfinite(tf["nll"]) and 0 <= tf["top1"] <= tf["top1_triad"] <= 1
    assert 0 <= tf["hold_previous"]["top1"] <= 1
    for run in ("greedy", "sampled_t1", "sampled_t05", "tunes_own_chords",
                "tunes_own_chords_a_beat_late", "rule_whole_bar"):
        f = fig["free_running"][run]
        for k in ("note_in_chord", "note_in_chord_strong", "agreement_strong"):
            assert 0 <= f[k] <= 1, (run, k)
        assert f["changes_per_bar"] >= 0
    own = fig["free_running"]["tunes_own_chords"]
    assert own["agreement_strong"] == 1.0  # the tune's chords agree with themselves
    assert own["changes_per_bar"] == pytest.approx(1.0, abs=0.2)  # a chord a bar
    assert card["training"]["wrong_chord"] == 0.25
    # the rule, seeing whole bars of a tune with a chord a bar from I IV V vi, gets most
    assert fig["free_running"]["rule_whole_bar"]["agreement_strong"] > 0.5
    assert "note-in-chord" in r.stdout


def test_the_trained_package_harmonises_live(trained):
    out, _ = trained
    model = HarmonyModel(out)
    assert model.layers == 1 and model.units == 16
    assert [i.name for i in model.session.get_inputs()] == ["token", "pitch", "position", "h", "c"]
    h = Harmonizer(model)
    for k, p in enumerate((67, 71, 74, 71)):
        h.note(p, float(k), k * 12)
    token, chord = h.decide(0)
    assert 0 <= token < model.chords.size
    assert chord is None or chord.name
