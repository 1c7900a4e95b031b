"""The tutorial's table, reproduced on the 1034 Nottingham melodies in ../shared."""

import os
from pathlib import Path

import pytest

from companion.encoding.curves import Vocabulary
from train.corpus import load_corpus
from train.dataset import melody_curves

NOTTINGHAM = Path(__file__).resolve().parents[2] / "shared" / "data" / "nottingham-melody"
TUTORIAL_CURVES = 195_174


@pytest.mark.slow
@pytest.mark.skipif(not NOTTINGHAM.is_dir() and not os.environ.get("CI"),
                    reason="../shared data not present")
def test_nottingham_table(capsys):
    corpus = load_corpus([str(NOTTINGHAM)], progress=False)
    curves = [melody_curves(m) for m in corpus.melodies]
    total = sum(len(c) for c in curves)
    vocab = Vocabulary.build(curves)
    with capsys.disabled():
        print(f"\nNottingham: {len(corpus.melodies)} songs, {total} curves "
              f"(tutorial {TUTORIAL_CURVES}, {100 * (total / TUTORIAL_CURVES - 1):+.3f}%), "
              f"vocabulary {len(vocab.curves)} curves (tutorial 422, unquantized read 302)")
    assert corpus.failed == []
    assert len(corpus.melodies) == 1034
    assert abs(total - TUTORIAL_CURVES) <= 0.005 * TUTORIAL_CURVES
    # snapping to the 1/24 grid merges the triplet near-duplicates the tutorial kept
    assert len(vocab.curves) < 302
