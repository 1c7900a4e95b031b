"""Shared fixtures: a small random-weight model package, configs, and a JACK server."""

from __future__ import annotations

import faulthandler
import os
import sys
from pathlib import Path

import pytest
from support import tunes

from bench.jackserver import JackdError, JackdMissing, dummy_server
from companion.midi.jacklib import load_rtmidi

load_rtmidi()  # before any test imports rtmidi: JACK by the system's libjack

# -- no test hangs the suite ---------------------------------------------------------------
#: A test still running after this long ends the whole run, every thread's stack on stderr:
#: a call that waits in C holding the interpreter (python-rtmidi waiting on a JACK server
#: that stopped answering) lets no Python timeout run, and CI would wait out its hours.
TEST_LIMIT_S = 600


@pytest.fixture(autouse=True)
def _watchdog():
    faulthandler.dump_traceback_later(TEST_LIMIT_S, exit=True)
    yield
    faulthandler.cancel_dump_traceback_later()


# -- TensorFlow last ----------------------------------------------------------------------
# TensorFlow's thread pools and its garbage (graphs with C++ objects behind them) stay out
# of the way of the timing tests' MIDI, scheduler and JACK threads, as in the bench: tests
# that import it carry the `tensorflow` mark and run at the end; one that imports it
# without the mark fails.


def pytest_collection_modifyitems(config, items):
    items.sort(key=lambda item: item.get_closest_marker("tensorflow") is not None)


@pytest.fixture(autouse=True)
def _tensorflow_only_where_marked(request):
    before = "tensorflow" in sys.modules
    yield
    if not before and "tensorflow" in sys.modules \
            and request.node.get_closest_marker("tensorflow") is None:
        pytest.fail("this test imported TensorFlow into the test process: mark it "
                    "@pytest.mark.tensorflow (such tests run last)")


@pytest.fixture(scope="session")
def model_pkg(tmp_path_factory) -> Path:
    """A model package with a vocabulary from four real tunes (the first of support.TUNES, which
    ships with music21) and random weights: the real file formats and sizes, no TensorFlow,
    no training, no data beside the repository."""
    from companion.encoding.curves import Vocabulary, curves_from_notes
    from train.export import StepWeights, write_package

    pkg = tmp_path_factory.mktemp("model")
    melodies = tunes(1, 4)
    vocab = Vocabulary.build([curves_from_notes(m.pitches, m.onsets) for m in melodies])
    write_package(StepWeights.random(vocab.size, seed=7), vocab, pkg)
    return pkg


@pytest.fixture(scope="session")
def model(model_pkg):
    from companion.engine.model import StepModel

    return StepModel(model_pkg)


@pytest.fixture(scope="session")
def nottingham() -> list[Path]:
    """The Nottingham melodies' MIDI files, sorted, from the folder bench.data names: the
    one way in for the tests that need them. Without them such a test is skipped with one
    line naming the folder and where the data comes from; with CI set it fails instead."""
    from bench import data

    files = data.nottingham_files()
    if not files:
        why = f"{data.nottingham_dir()}: no Nottingham melodies (*.mid) there; {data.ORIGIN}"
        if os.environ.get("CI"):
            pytest.fail(why, pytrace=False)
        pytest.skip(why)
    return files


# -- JACK -------------------------------------------------------------------------------


@pytest.fixture
def jack_server(tmp_path, request):
    """A JACK server on the dummy driver (no sound card), private to this test
    (bench.jackserver): yields the environment (JACK_DEFAULT_SERVER) in which clients find
    it. In CI a missing jackd fails; elsewhere it skips.

    Its period is 256 frames at 48 kHz; a test that times MIDI to the millisecond asks for a
    shorter one (MIDI moves once a period) with ``@pytest.mark.parametrize("jack_server",
    [FRAMES], indirect=True)``, and one that needs every message through asks for a longer
    one: without real-time scheduling, a client that misses a cycle on a busy machine is an
    xrun, and JACK drops that cycle's MIDI. ``JACKD_LOG`` in the environment names the
    server's log (its xruns), for failure messages. Tests read JACK input polled
    (companion.midi.input), so no Python runs in their JACK clients' threads either.

    A test marked ``jack_sync`` gets a synchronous server (``jackd -S``): a client late for
    its cycle delays the graph instead of missing that cycle's MIDI, so a clock test judges
    the follower, not ticks JACK dropped at one listener and not another."""
    frames = int(getattr(request, "param", 256))
    sync = request.node.get_closest_marker("jack_sync") is not None
    try:
        with dummy_server(frames, log=tmp_path / "jackd.log", prefix="companion-test",
                          sync=sync) as env:
            yield env
    except JackdMissing:
        if os.environ.get("CI"):
            pytest.fail("jackd is not installed: the JACK end-to-end tests cannot run "
                        "(install jackd2)")
        pytest.skip("jackd is not installed (install jackd2 to run the JACK tests)")
    except JackdError as e:
        pytest.fail(str(e))
