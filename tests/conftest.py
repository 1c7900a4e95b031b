"""Shared fixtures: a small random-weight model package, configs, and a JACK server."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from support import nottingham_files

# -- TensorFlow last ----------------------------------------------------------------------
# TensorFlow's thread pools and its garbage (graphs with C++ objects behind them) stay out
# of the way of the timing tests' MIDI, scheduler and JACK threads, as in the bench. (A
# crash in a garbage collection once blamed on it was python-rtmidi's callbacks: see
# companion/midi_in.py.) Tests that import it carry the `tensorflow` mark and run at the
# end; one that imports it without the mark fails.


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
    """A model package with a vocabulary from four real tunes and random weights:
    the real file formats and sizes, no TensorFlow, no training."""
    from companion.encoding.curves import Vocabulary, curves_from_notes
    from companion.encoding.melody import read_melodies
    from train.export import StepWeights, write_step

    pkg = tmp_path_factory.mktemp("model")
    melodies = [m for f in nottingham_files(4) for m in read_melodies(f)]
    vocab = Vocabulary.build([curves_from_notes(m.pitches, m.onsets) for m in melodies])
    vocab.save(pkg / "vocab.json")
    write_step(StepWeights.random(vocab.size, seed=7), pkg / "model.onnx")
    return pkg


@pytest.fixture(scope="session")
def model(model_pkg):
    from companion.engine.model import StepModel

    return StepModel(model_pkg)


# -- JACK -------------------------------------------------------------------------------


_PROBE = (
    "import rtmidi, sys\n"
    "try:\n    rtmidi.MidiIn(rtapi=rtmidi.API_UNIX_JACK).delete()\n"
    "except rtmidi.SystemError:\n    sys.exit(1)\n"
)


def _jack_up(env: dict) -> bool:
    """Whether clients can reach the server (jack_lsp if installed, else an rtmidi client)."""
    if shutil.which("jack_lsp"):
        cmd = ["jack_lsp"]
    else:
        cmd = [sys.executable, "-c", _PROBE]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=20)
    return r.returncode == 0


@pytest.fixture
def jack_server(tmp_path, request):
    """A JACK server on the dummy driver (no sound card), private to this test: yields the
    environment (JACK_DEFAULT_SERVER) in which clients find it. In CI a missing jackd fails.

    Its period is 256 frames at 48 kHz; a test that times MIDI to the millisecond asks for a
    shorter one (MIDI moves once a period) with ``@pytest.mark.parametrize("jack_server",
    [FRAMES], indirect=True)``, and one that needs every message through asks for a longer
    one: without real-time scheduling, a client that misses a cycle on a busy machine is an
    xrun, and JACK drops that cycle's MIDI. ``JACKD_LOG`` in the environment names the
    server's log (its xruns), for failure messages. Tests read JACK input polled
    (companion.midi.input), so no Python runs in their JACK clients' threads either."""
    frames = str(getattr(request, "param", 256))
    jackd = shutil.which("jackd")
    if jackd is None:
        if os.environ.get("CI"):
            pytest.fail("jackd is not installed: the JACK end-to-end tests cannot run "
                        "(install jackd2)")
        pytest.skip("jackd is not installed (install jackd2 to run the JACK tests)")
    name = f"companion-test-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    env = dict(os.environ, JACK_DEFAULT_SERVER=name, JACK_NO_AUDIO_RESERVATION="1",
               JACKD_LOG=str(tmp_path / "jackd.log"))
    log = open(tmp_path / "jackd.log", "w")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [jackd, "--no-realtime", "-n", name, "-d", "dummy", "-r", "48000", "-p", frames],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 15
        while not _jack_up(env):
            if proc.poll() is not None or time.monotonic() > deadline:
                log.flush()
                pytest.fail(f"jackd did not start: {(tmp_path / 'jackd.log').read_text()[-2000:]}")
            time.sleep(0.1)
        yield env
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
