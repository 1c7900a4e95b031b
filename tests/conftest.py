"""Shared fixtures: a small random-weight model package, configs, and a JACK server."""

from __future__ import annotations

import contextlib
import faulthandler
import os
import shutil
import sys
import time
from pathlib import Path

import pytest
from support import LOG_FROM_KEY, jack_ports, jack_server_or_skip, server_log, tunes

from bench.clockrig import STALLED
from bench.jackserver import LOG_KEY, private_shm
from companion.midi.jacklib import load_rtmidi

load_rtmidi()  # before any test imports rtmidi: JACK by the system's libjack


# -- each worker its own /dev/shm ------------------------------------------------------------
def pytest_configure(config) -> None:
    """An xdist worker of `make test` gets its own /dev/shm (bench.jackserver.private_shm:
    JACK2 names a client's socket by client and uid, not server, so same-named clients of two
    workers' servers would take each other's sockets); where it cannot (not root), its JACK
    tests share the one and may collide with another worker's."""
    if os.environ.get("PYTEST_XDIST_WORKER") and shutil.which("jackd"):
        why = private_shm()
        if why is not None:
            sys.stderr.write(f"note: JACK tests of parallel workers share /dev/shm ({why})\n")


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


# -- the unit tier: `make check` -----------------------------------------------------------
#: Modules whose tests run on the real clock (threads and sleeps, subprocesses, servers,
#: training runs): marked ``realtime``, which `make check` leaves out with ``jack``,
#: ``slow``, ``link`` and ``tensorflow``; what it runs is the engine, the encoding, the
#: config and the model on the virtual clock.
REALTIME_MODULES = frozenset({
    "test_cli", "test_controls", "test_demo", "test_learn", "test_live", "test_midi_in",
    "test_models", "test_osc", "test_reliability_midi", "test_respond", "test_resume",
    "test_scheduler", "test_sysex", "test_train", "test_train_harmony", "test_ui_server",
})


#: The JACK tests that flood the companion with MIDI (a core's worth of work while they
#: run): one group, so that no two floods run at once; the other JACK tests are another.
FLOOD_MODULES = frozenset({"test_reliability_jack", "test_midi_in", "test_sysex"})
#: `make test`'s groups (below) that take longest, started first (xdist takes the groups in
#: collection order: ``--no-loadscope-reorder``), so that none of them is left for the end.
LONG_GROUPS = ("jack-sync", "jack-floods", "jack", "test_nottingham", "test_bench",
               "test_reliability_midi", "test_link", "test_ui_server", "test_osc",
               "test_musicianship", "test_learn", "test_hands")


def pytest_itemcollected(item) -> None:
    """``realtime`` on the tests of REALTIME_MODULES; ``jack`` on every test that takes a
    JACK server, marked or not. `make test` runs workers (pytest-xdist, ``--dist
    loadgroup``): the clock tests (``jack_sync``), the JACK floods (FLOOD_MODULES) and the
    other JACK tests each on one worker, each with one server at a time, and each other
    module whole on one, so that its module and session fixtures (a training run, the quick
    bench) are made once (marked here, as each is collected: before xdist reads the
    groups)."""
    name = getattr(item.module, "__name__", None)
    if name in REALTIME_MODULES:
        item.add_marker(pytest.mark.realtime)
    if "jack_server" in getattr(item, "fixturenames", ()):
        item.add_marker(pytest.mark.jack)
    if item.get_closest_marker("jack_sync") is not None:
        group = "jack-sync"  # the clock tests, on synchronous servers of their own
    elif item.get_closest_marker("jack") is not None:
        group = "jack-floods" if name in FLOOD_MODULES else "jack"
    else:
        group = name or item.nodeid
    item.stash[_GROUP] = group
    item.add_marker(pytest.mark.xdist_group(group))


_GROUP = pytest.StashKey[str]()


def _start_rank(item) -> int:
    """Where a test's group starts: LONG_GROUPS in their order, then the rest."""
    group = item.stash.get(_GROUP, "")
    return LONG_GROUPS.index(group) if group in LONG_GROUPS else len(LONG_GROUPS)


# -- TensorFlow last ----------------------------------------------------------------------
# TensorFlow's thread pools and its garbage (graphs with C++ objects behind them) stay out
# of the way of the timing tests' MIDI, scheduler and JACK threads, as in the bench: tests
# that import it carry the `tensorflow` mark and run at the end; one that imports it
# without the mark fails.


@pytest.hookimpl(tryfirst=True)  # the marks before -m selects by them
def pytest_collection_modifyitems(config, items):
    """TensorFlow's tests last, and the modules that hold any of them after every other (each
    module stays whole on one xdist worker: see ``pytest_itemcollected``); before them, the
    LONG_GROUPS first."""
    def tf(item) -> bool:
        return item.get_closest_marker("tensorflow") is not None

    tf_modules = {item.module.__name__ for item in items if tf(item) and item.module}
    items.sort(key=lambda item: (getattr(item.module, "__name__", None) in tf_modules,
                                 tf(item), _start_rank(item)))


@pytest.fixture(autouse=True)
def _tensorflow_only_where_marked(request):
    before = "tensorflow" in sys.modules
    yield
    if not before and "tensorflow" in sys.modules \
            and request.node.get_closest_marker("tensorflow") is None:
        pytest.fail("this test imported TensorFlow into the test process: mark it "
                    "@pytest.mark.tensorflow (such tests run last)")


#: The browser of the page's tests (Debian's chromium, through Playwright).
BROWSER = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def browser():
    """Headless Chromium; without it the test skips (CI, where .ci/run installs it: fails)."""
    sync_api = pytest.importorskip("playwright.sync_api")
    if BROWSER is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed: the browser tests cannot run")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=BROWSER, args=["--no-sandbox"])
        yield b
        b.close()


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
def harmony_pkg(tmp_path_factory) -> Path:
    """A harmony package with random weights (train.harmony.random_package): the curves of the
    first of support.TUNES, the common chords of G major; no TensorFlow, no training."""
    from companion.encoding.chords import Chord, ChordVocabulary
    from companion.encoding.curves import Vocabulary, curves_from_notes
    from companion.encoding.harmony import StepVocab
    from train.harmony import random_package

    m = tunes(1, 1)[0]
    chords = [Chord(7, "maj"), Chord(2, "7"), Chord(0, "maj"), Chord(4, "min"), Chord(9, "min")]
    v = StepVocab(Vocabulary.build([curves_from_notes(m.pitches, m.onsets)]),
                  ChordVocabulary.build(chords, min_count=1))
    return random_package(v, tmp_path_factory.mktemp("harmony") / "h", units=24, seed=3)


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


class JackServers:
    """The session's shared JACK server: one at a time, for the period and mode last asked
    for. A test gets it only while no client of an earlier test is left on it, and a server
    that logged a stalled graph or saw a test fail is stopped, not handed on."""

    #: How long a test waits for the clients of the test before it to leave the server.
    IDLE_WAIT_S = 3.0

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.key: tuple[int, bool] | None = None
        self.env: dict[str, str] | None = None
        self.stack = contextlib.ExitStack()
        self.started = 0

    def get(self, frames: int, sync: bool) -> dict[str, str]:
        """The shared server of ``frames`` and ``sync``, started if needed; its environment
        with LOG_FROM_KEY at the end of its log so far."""
        if self.env is not None and (self.key != (frames, sync) or not self._idle()):
            self.close()
        if self.env is None:
            self.started += 1
            log = self.folder / f"jackd-{self.started}-{frames}{'-sync' if sync else ''}.log"
            self.env = self.stack.enter_context(
                jack_server_or_skip(frames, log, sync))
            self.key = (frames, sync)
        return dict(self.env, **{LOG_FROM_KEY: str(Path(self.env[LOG_KEY]).stat().st_size)})

    def done(self, env: dict[str, str], failed: bool) -> None:
        """After a test on it: a failed test, or a stall logged meanwhile, stops it."""
        if failed or STALLED in server_log(env):
            self.close()

    def _idle(self) -> bool:
        """Whether only the dummy driver's own ports are there (waits IDLE_WAIT_S)."""
        assert self.env is not None
        deadline = time.monotonic() + self.IDLE_WAIT_S
        while True:
            ports = jack_ports(self.env)
            if ports is not None and all(p.startswith("system:") for p in ports):
                return True
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)

    def close(self) -> None:
        self.stack.close()
        self.stack, self.env, self.key = contextlib.ExitStack(), None, None


@pytest.fixture(scope="session")
def _jack_servers(tmp_path_factory):
    servers = JackServers(tmp_path_factory.mktemp("jackd"))
    yield servers
    servers.close()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if report.failed:
        item.stash[_FAILED] = True
    return report


_FAILED = pytest.StashKey[bool]()


@pytest.fixture
def jack_server(_jack_servers, tmp_path, request):
    """A JACK server on the dummy driver (no sound card) (bench.jackserver): yields the
    environment (JACK_DEFAULT_SERVER) in which clients find it. In CI a missing jackd fails;
    elsewhere it skips. It is the session's shared server (`JackServers`), which the test
    leaves as it found it (no client of its own left); a test marked ``jack_private`` (one
    that stops or breaks its server) gets one of its own.

    Its period is 256 frames at 48 kHz; a test that times MIDI to the millisecond asks for a
    shorter one (MIDI moves once a period) with ``@pytest.mark.parametrize("jack_server",
    [FRAMES], indirect=True)``, and one that needs every message through asks for a longer
    one: without real-time scheduling, a client that misses a cycle on a busy machine is an
    xrun, and JACK drops that cycle's MIDI. ``JACKD_LOG`` in the environment names the
    server's log (its xruns), for failure messages, from the byte ``JACKD_LOG_FROM`` on
    (support.server_log). Tests read JACK input polled (companion.midi.input), so no
    Python runs in their JACK clients' threads either.

    A test marked ``jack_sync`` gets a synchronous server (``jackd -S``): a client late for
    its cycle delays the graph instead of missing that cycle's MIDI, so a clock test judges
    the follower, not ticks JACK dropped at one listener and not another."""
    frames = int(getattr(request, "param", 256))
    sync = request.node.get_closest_marker("jack_sync") is not None
    if request.node.get_closest_marker("jack_private") is not None:
        with jack_server_or_skip(frames, tmp_path / "jackd.log", sync) as env:
            yield dict(env, **{LOG_FROM_KEY: "0"})
        return
    env = _jack_servers.get(frames, sync)
    try:
        yield env
    finally:
        _jack_servers.done(env, request.node.stash.get(_FAILED, False))
