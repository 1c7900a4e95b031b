"""Training end to end on a handful of real tunes: corpus -> curves -> LSTM -> ONNX -> figures."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from support import ROOT, tunes, write_tune

from companion.encoding.curves import Vocabulary
from companion.engine.model import StepModel


def run_module(*args, cwd=ROOT, env_extra=None, timeout=600):
    env = dict(os.environ, PYTHONPATH=str(ROOT), TF_CPP_MIN_LOG_LEVEL="3")
    env.update(env_extra or {})
    return subprocess.run([sys.executable, "-m", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture(scope="module")
def small_corpus(tmp_path_factory):
    """Twelve tunes that ship with music21 (support.TUNES, 5 to 16), and two more held out
    (17, 18), as MIDI files in a scratch folder: training needs no data beside the
    repository."""
    d = tmp_path_factory.mktemp("corpus")
    (d / "train").mkdir()
    (d / "held").mkdir()
    for n in range(5, 17):
        write_tune(d / "train" / f"tune{n:02d}.mid", n)
    for n in (17, 18):
        write_tune(d / "held" / f"tune{n:02d}.mid", n)
    return d


@pytest.fixture(scope="module")
def trained(small_corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("models") / "tiny"
    work = tmp_path_factory.mktemp("work")
    r = run_module("train", "--corpus", str(small_corpus / "train"), "--out", str(out),
                   "--work", str(work), "--eval-corpus", str(small_corpus / "held"),
                   "--epochs", "3", "--units", "24", "--embed", "8", "--window", "32",
                   "--batch", "8", "--seed", "7", "--quiet")
    assert r.returncode == 0, r.stderr[-3000:]
    return out, r


def test_package_has_contract_files(trained):
    out, _ = trained
    for f in ("model.onnx", "vocab.json", "card.json", "training_curves.png"):
        assert (out / f).is_file(), f
    assert not list(out.parent.glob(".tiny.*")), "staging folders left behind"


def test_onnx_step_signature_and_vocab_size_agree(trained):
    out, _ = trained
    m = StepModel(out)
    assert [i.name for i in m.session.get_inputs()] == ["token", "position", "h", "c"]
    assert m.positional
    assert [o.name for o in m.session.get_outputs()] == ["logits", "h_out", "c_out"]
    assert m.vocab_size == Vocabulary.load(out / "vocab.json").size
    assert m.layers == 2 and m.units == 24


def test_card_records_corpora_sizes_parity_and_baselines(trained, small_corpus):
    out, _ = trained
    card = json.loads((out / "card.json").read_text())
    assert card["corpora"] == [str(small_corpus / "train")]
    assert card["extraction"].startswith("melody part")  # which melody line it learned from
    assert card["corpus_sizes"]["melodies"] == 12
    assert card["onnx"]["parity_max_abs_diff"] <= 1e-4
    assert card["format"] == 2
    assert card["position"] == {"phases": 12, "bar_quarters": 8, "size": 108}
    assert card["model"]["position_embed"] == 16
    assert card["training"]["bar_hidden"] == 0.3
    assert np.isfinite(card["training"]["best_val_nll_bar_hidden"])
    assert card["training"]["epochs_run"] == 3
    fig = card["held_out"]["test_split"]
    assert set(fig["baselines"]) == {"unigram", "kn2", "kn3", "kn5"}
    assert fig["lstm"]["nll"] > 0 and 0 <= fig["lstm"]["top1"] <= 1
    assert fig["lstm_bar_hidden"]["tokens"] == fig["lstm"]["tokens"]
    held = card["held_out"][str(small_corpus / "held")]
    assert held["songs"] == 2 and held["held_out"] == "whole corpus"


def test_vocabulary_comes_from_training_songs_only(trained, small_corpus):
    from train.corpus import load_corpus
    from train.dataset import prepare

    out, _ = trained
    card = json.loads((out / "card.json").read_text())
    mels = load_corpus([str(small_corpus / "train")], progress=False).melodies
    songs = prepare(mels, card["split"]["seed"], card["split"]["val_frac"],
                    card["split"]["test_frac"])
    train_curves = {(int(p), float(t)) for i in songs.split.train for p, t in songs.curves[i]}
    vocab = Vocabulary.load(out / "vocab.json")
    assert {(int(p), float(t)) for p, t in vocab.curves} == train_curves


def test_evaluate_command_prints_figures_beside_baselines(trained, small_corpus):
    out, _ = trained
    r = run_module("train.evaluate", "--model", str(out), "--corpus", str(small_corpus / "held"),
                   "--json")
    assert r.returncode == 0, r.stderr[-2000:]
    fig = json.loads(r.stdout)
    assert fig["songs"] == 2
    assert {"unigram", "kn2", "kn3", "kn5"} <= set(fig["baselines"])
    assert np.isfinite(fig["lstm"]["nll"])


@pytest.mark.tensorflow
def test_onnx_step_reproduces_keras_over_whole_melodies(small_corpus):
    """The exported step, fed token by token (and position) with its state, gives Keras's
    full-sequence logits."""
    import keras

    from train.corpus import load_corpus
    from train.dataset import BAR_HIDDEN, encode, melody_curves, tf_dataset, windows
    from train.export import StepWeights, write_package
    from train.model import ModelConfig, build, compile_model
    from train.train import check_parity

    mels = load_corpus([str(small_corpus / "train")], progress=False).melodies
    mels += [m for m in tunes(19, 4)]  # ABC tunes: bars known
    curves = [melody_curves(m) for m in mels]
    vocab = Vocabulary.build(curves)
    seqs = encode(curves, vocab)
    pos = [m.positions() for m in mels]
    keras.utils.set_random_seed(1)
    model = build(ModelConfig(vocab.size, embed=12, units=40, layers=3, dropout=0.1,
                              position_embed=6))
    compile_model(model, 3e-3)
    x, y, w, p = windows(seqs, 64, pos)
    model.fit(tf_dataset(x, y, w, batch=8, shuffle=True, seed=1, positions=p,
                         bar_hidden=BAR_HIDDEN), epochs=1, verbose=0)
    pkg = small_corpus / "parity_pkg"
    write_package(StepWeights.from_keras(model), vocab, pkg)
    step = StepModel(pkg)
    assert step.positional
    songs = [0, 1, len(mels) - 2, len(mels) - 1]  # whole songs, hundreds of steps
    known = [(q // 12 < 8).mean() for q in pos]
    assert known[0] == 0 and known[-1] == 1  # MIDI without meter; ABC with it
    worst = check_parity(model, step, [seqs[i] for i in songs], [pos[i] for i in songs])
    assert sum(len(seqs[i]) for i in songs) > 300
    assert worst <= 1e-4
    # the positions matter to both: the same song with its bars hidden gives other logits
    state = step.zero_state()
    a = [step.step(int(t), state, int(q)) for t, q in zip(seqs[-1], pos[-1], strict=True)]
    state = step.zero_state()
    b = [step.step(int(t), state, 96 + int(q) % 12) for t, q in zip(seqs[-1], pos[-1],
                                                                      strict=True)]
    assert np.abs(np.array(a) - np.array(b)).max() > 1e-3


def test_unreadable_file_is_skipped_named_and_counted(small_corpus, tmp_path):
    from train.corpus import load_corpus

    d = tmp_path / "mixed"
    d.mkdir()
    for f in sorted((small_corpus / "train").glob("*.mid"))[:2]:
        (d / f.name).write_bytes(f.read_bytes())
    (d / "broken.mid").write_bytes(b"MThd\x00\x00\x00\x06garbage")
    (d / "notes.txt").write_text("not music, not read")
    c = load_corpus([str(d)], progress=False, use_cache=False)
    assert c.files == 3 and len(c.melodies) == 2
    assert [Path(p).name for p, _ in c.failed] == ["broken.mid"]
    assert "1 unreadable" in c.summary()


@pytest.mark.parametrize("spec, expected", [
    ("music21:noSuchCorpusHere", "music21:noSuchCorpusHere: no corpus of that name"),
    ("EMPTY", "no music files"),
    ("does/not/exist", "does/not/exist: no such file or folder"),
])
def test_bad_corpus_exits_2_with_one_line(tmp_path, spec, expected):
    if spec == "EMPTY":
        (tmp_path / "empty").mkdir()
        spec = str(tmp_path / "empty")
    r = run_module("train", "--corpus", spec, "--out", str(tmp_path / "m"), "--quiet",
                   "--work", str(tmp_path / "w"))
    assert r.returncode == 2
    lines = [ln for ln in r.stderr.strip().splitlines() if ln.strip()]
    assert lines[-1].startswith("error: ") and expected in lines[-1]
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "m").exists()


@pytest.mark.parametrize("epochs", [1, 4, 60, 100])
@pytest.mark.tensorflow
def test_the_rate_is_held_until_early_stopping_may_begin_then_decays_to_one_percent(epochs):
    from train.model import decay_start_epoch, schedule

    steps = 46
    sched = schedule(1e-2, steps, epochs)
    start = decay_start_epoch(epochs)
    assert 0 <= start < epochs
    assert float(sched(0)) == pytest.approx(1e-2)
    assert float(sched(steps * start)) == pytest.approx(1e-2)  # held up to the decay's epoch
    assert float(sched(steps * start + steps // 2)) < 1e-2  # which decays
    assert float(sched(steps * epochs)) == pytest.approx(1e-4)
