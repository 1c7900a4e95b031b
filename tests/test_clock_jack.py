"""MIDI clock sync end to end, at the periods performers run JACK at (256 to 1024 frames;
64 in the lab: lab/tests/test_clock_small_period.py): `companion live` on a
JACK server follows a real 100 BPM clock client (Debian's ``jack_midi_clock``), and its
answer starts on one of the clock's beats.

The judge is independent of the companion and sample-accurate: ``jack_midi_dump -a`` hears
the clock and the companion's output on one port and prints each event's frame. A beat is
a clock tick whose count since Start is a multiple of 24; the answer's first note-on must
lie within max(3 ms, one period) of one (MIDI leaves a client at the start of a cycle, so a
period is the output's own resolution). The tempo the companion logs must be 100 +- 0.3 BPM.

The JACK server runs real-time (SCHED_FIFO) where the machine allows it: without, a loaded
machine makes xruns, each dropping a cycle's MIDI, ticks among it (at 64 frames, 610 of
them in one run, and 87 BPM followed). It also runs synchronous (``jack_sync``): in JACK2's
default asynchronous graph a client late for its cycle (a stall of the machine) misses that
cycle's MIDI, and a tick lost at the companion's input leaves its count, so its grid, a tick
late (25 ms at 100 BPM); synchronous, the graph waits for it. Each test says which
scheduling and mode it got and how many xruns the server counted, and checks that the
companion heard every tick the judge did.
"""

from __future__ import annotations

import pytest
from support import jack_tools, run_clock_sync

pytestmark = [pytest.mark.jack, pytest.mark.jack_sync]

@pytest.mark.parametrize("jack_server", [256], indirect=True)
def test_answers_on_the_clocks_beats(jack_server, tmp_path, model_pkg):
    jack_tools()
    run_clock_sync(jack_server, 256, tmp_path, model_pkg)


@pytest.mark.alone
@pytest.mark.parametrize("jack_server", [256], indirect=True)
def test_an_answer_stays_on_the_beats_of_a_clock_that_stalled(jack_server, tmp_path,
                                                               model_pkg):
    jack_tools()
    run_clock_sync(jack_server, 256, tmp_path, model_pkg, stall_s=0.08)


@pytest.mark.slow
@pytest.mark.parametrize("jack_server", [512, 1024], indirect=True)
def test_answers_on_the_clocks_beats_at_stage_periods(jack_server, tmp_path, model_pkg,
                                                       request):
    jack_tools()
    run_clock_sync(jack_server, request.node.callspec.params["jack_server"], tmp_path,
                   model_pkg)
