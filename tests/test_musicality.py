"""`python -m train.musicality`: the features of a passage, the overlap of two sets of them,
and the whole measurement on a small model (random weights, real tunes)."""

from __future__ import annotations

import json
import shutil

import pytest
from support import make_config, tunes, write_tune

from companion.encoding.curves import curves_from_notes
from train import musicality as mu
from train.musicality import ENDINGS, FEATURES, SOURCES, Note, features, measure, overlap

G_MAJOR = (7, 0)


def test_features_of_a_passage():
    # G A B B | D (held two beats), over 4 beats; the call's mean pitch is 60
    notes = [Note(67, 0.0, 0.5), Note(69, 0.5, 0.5), Note(71, 1.0, 0.5), Note(71, 1.5, 0.5),
             Note(74, 2.0, 2.0)]
    f = features(notes, 4.0, 60.0, G_MAJOR)
    assert f["note_density"] == 5 / 4
    assert f["pitch_range"] == 7
    assert f["unique_pitches"] == 4
    assert f["mean_interval"] == pytest.approx((2 + 2 + 0 + 3) / 4)
    assert f["largest_interval"] == 3
    assert f["repeated_notes"] == 0.25
    assert f["mean_ioi"] == 0.5
    assert f["note_values"] == 1
    assert f["pitch_drift"] == pytest.approx(70.4 - 60)
    assert (f["end_on_beat"], f["end_stable"], f["end_held"]) == (1.0, 1.0, 1.0)
    # ending off the beat, short, on the sixth (E)
    f = features(notes[:4] + [Note(64, 2.5, 0.5)], 4.0, 60.0, G_MAJOR)
    assert (f["end_on_beat"], f["end_stable"], f["end_held"]) == (0.0, 0.0, 0.0)
    assert f["note_values"] == 2 and f["mean_ioi"] == pytest.approx(2.5 / 4)


def test_overlap_of_distributions():
    a = [1.0, 2.0, 2.5, 3.0, 4.0, 2.2]
    assert overlap(a, a) == pytest.approx(1.0, abs=1e-3)
    assert overlap(a, [x + 100 for x in a]) < 0.01
    shifted = overlap(a, [x + 1 for x in a])
    assert 0.2 < shifted < 0.9
    assert overlap([1, 1, 0, 0], [1, 0, 0, 0]) == pytest.approx(0.75)  # yes/no: shares
    assert overlap([3.0, 3.0], [3.0]) == 1.0


def small_trial(model, model_pkg, cadence: float) -> dict:
    melodies = tunes(1, 12)
    train = [model.vocab.encode(curves_from_notes(m.pitches, m.onsets)) for m in melodies[:6]]
    cfg = make_config(model_pkg, answer={"cadence": cadence})
    return measure(cfg, model, melodies[6:], train, beats=4.0, calls=6, seed=3)


def test_measure_describes_every_source_and_the_endings(model, model_pkg):
    r = small_trial(model, model_pkg, 1.0)
    assert r["calls"] == 6 and r["answers"] == 6
    for feat in FEATURES + ENDINGS:
        row = r["features"][feat]
        assert set(row["mean"]) == set(SOURCES)
        assert all(0.0 <= row["overlap"][s] <= 1.0 + 1e-6 for s in ("answer", "ngram", "other"))
    # answer.cadence 1: every answer ends on a beat, held, on the tonic, third or fifth
    assert r["endings"]["answer"]["all_three"] == 1.0
    assert set(r["endings"]) == set(SOURCES) | {"phrase_ends"}
    assert sum(r["end_degrees"].values()) == 6
    assert set(r["goals"]) == {"overlap", "endings"}
    again = small_trial(model, model_pkg, 1.0)
    assert json.dumps(again) == json.dumps(r)  # same seed, same figures


def test_measure_without_cadence_shows_answers_that_stop(model, model_pkg):
    r = small_trial(model, model_pkg, 0.0)
    assert r["endings"]["answer"]["all_three"] < 1.0


def test_command_on_a_package_with_its_card(model_pkg, tmp_path, capsys):
    corpus = tmp_path / "tunes"
    corpus.mkdir()
    for n in range(1, 11):
        write_tune(corpus / f"tune{n:02d}.mid", n)
    pkg = tmp_path / "pkg"
    shutil.copytree(model_pkg, pkg)
    card = {"corpora": [str(corpus)], "split": {"seed": 1, "val_frac": 0.1, "test_frac": 0.4}}
    (pkg / "card.json").write_text(json.dumps(card))
    rc = mu.main(["--model", str(pkg), "--beats", "4", "--calls", "3", "--json", "--quiet",
                  "--workers", "1", "--set", "answer.cadence=1"])
    out = json.loads(capsys.readouterr().out)
    assert rc == 0
    assert out["held_out"] == "test split" and out["calls"] >= 1
    assert out["endings"]["answer"]["all_three"] == 1.0
    # --card: the same figures into the card, beside what it held before
    rc = mu.main(["--model", str(pkg), "--beats", "4", "--calls", "3", "--json", "--quiet",
                  "--workers", "1", "--set", "answer.cadence=1", "--card"])
    again = json.loads(capsys.readouterr().out)
    written = json.loads((pkg / "card.json").read_text())
    assert rc == 0 and written["corpora"] == card["corpora"] and written["split"] == card["split"]
    entry = written["musicality"]["test_split"]
    assert entry["mean_overlap"] == again["mean_overlap"] and entry["calls"] == again["calls"]
    assert entry["command"].startswith("python -m train.musicality --model")
    # a bad setting, a missing package: one line naming what was wrong, exit 2
    rc = mu.main(["--model", str(pkg), "--quiet", "--set", "answer.cadence=2"])
    err = capsys.readouterr().err
    assert rc == 2 and "answer.cadence" in err and len(err.strip().splitlines()) == 1
    rc = mu.main(["--model", str(tmp_path / "nowhere"), "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2 and "nowhere" in err and len(err.strip().splitlines()) == 1
