"""The polled MIDI input (companion.midi.input): arrival times from RtMidi's stamps, the
reading thread, and, over JACK, opening and closing under a flood of notes."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest
from support import ROOT, wait_for

from companion.midi import input as midi_in
from companion.midi import jacklib
from companion.midi.input import ArrivalClock, PolledInput, open_listed, port_names


def poll(arrivals, deltas, busy=(), poll_s=0.0005):
    """ArrivalClock as PolledInput drives it: messages that truly arrive at ``arrivals``
    (our clock), stamped by RtMidi with ``deltas``, read by looks every ``poll_s`` (a look
    at a time in ``busy`` comes that much later: Python was busy). Returns the arrivals
    given and the times read."""
    clock = ArrivalClock(opened_at=arrivals[0] - 0.01)
    got, reads, k, t = [], [], 0, arrivals[0] - 0.01
    busy = dict(busy)
    while k < len(arrivals):
        t += poll_s + busy.pop(int(t / poll_s), 0.0)
        if arrivals[k] > t:
            clock.empty_at = t
            continue
        while k < len(arrivals) and arrivals[k] <= t:
            reads.append(t)
            got.append(clock.arrival(deltas[k], t))
            k += 1
    return np.array(got), np.array(reads)


def test_arrivals_come_from_the_stamps_not_from_when_they_are_read():
    rng = np.random.default_rng(3)
    arrivals = np.cumsum(rng.uniform(0.02, 0.03, 400)) + 100.0  # a MIDI clock
    deltas = np.diff(arrivals, prepend=arrivals[0])
    busy = {int(a / 0.0005): rng.uniform(0.002, 0.02) for a in rng.choice(arrivals, 20)}
    got, reads = poll(arrivals, deltas, busy.items())
    late, err = reads - arrivals, got - arrivals
    assert np.all(got <= reads) and np.all(np.diff(got) >= 0)
    assert late.max() > 0.002  # some were read milliseconds late,
    assert abs(err[50:]).max() < 0.00005  # and all are stamped within 0.05 ms


def test_a_lost_interval_is_caught_by_the_last_empty_look():
    # RtMidi dropped a message from a full queue, and its interval with it: by the stamps
    # alone, later messages arrived 50 ms earlier than they did
    arrivals = np.arange(100) * 0.01 + 5.0
    deltas = np.diff(arrivals, prepend=arrivals[0])
    deltas[60] -= 0.05
    got, reads = poll(arrivals, deltas)
    err = got - arrivals
    assert abs(err).max() < 0.0006  # a look's time: without its bound, 50 ms early


class FakeRt:
    """python-rtmidi's MidiIn as PolledInput uses it: get_message, close_port, delete."""

    def __init__(self, calls: list[str] | None = None):
        self.queue: list[tuple[list[int], float]] = []
        self.lock = threading.Lock()
        self.calls: list[str] = [] if calls is None else calls
        self.looks = 0
        self.deepest = 0  # the most messages ever queued
        self.times: dict[str, float] = {}

    def put(self, data, delta=0.001):
        with self.lock:
            self.queue.append((data, delta))
            self.deepest = max(self.deepest, len(self.queue))

    def get_message(self):
        with self.lock:
            if "delete" in self.calls:
                self.calls.append("read after delete")
            self.looks += 1
            return self.queue.pop(0) if self.queue else None

    def close_port(self):
        self.times["close_port"] = time.monotonic()
        self.calls.append("close_port")

    def delete(self):
        self.calls.append("delete")


class FakeEnd:
    """The sysex-end output as PolledInput uses it, writing into the same call log."""

    def __init__(self, calls: list[str]):
        self.calls = calls
        self.times: dict[str, float] = {}

    def send_message(self, data):
        pass

    def close_port(self):
        self.times["close_port"] = time.monotonic()
        self.calls.append("end close_port")

    def delete(self):
        self.calls.append("end delete")


def test_polled_input_delivers_parsed_stamped_messages_and_survives_bad_ones(capsys):
    rt = FakeRt()
    port = PolledInput(rt, "fake")
    got = []

    def callback(msg):
        if msg.type == "control_change":
            raise RuntimeError("a bad callback")
        got.append(msg)

    rt.put([0x90, 60, 100])  # waits in the queue: no callback yet
    time.sleep(0.02)
    assert not got
    t0 = time.perf_counter()
    port.callback = callback
    for data in ([0xB0, 1, 2], [0xFE], [0x90, 200, 1], [0xE0, 5], [0x80, 60, 0], [0xF8]):
        rt.put(data)
    wait_for(lambda: len(got) == 3, timeout=5)
    assert [m.type for m in got] == ["note_on", "note_off", "clock"]  # sensing dropped
    assert all(m.time <= time.perf_counter() for m in got)
    assert all(t0 < m.time for m in got)  # nothing stamps a message before the clock knows it
    assert port.invalid == 2 and port.errors == 1
    assert "a bad callback" in capsys.readouterr().err
    port.close()
    assert rt.calls == ["close_port", "delete"] and not port._thread.is_alive()
    port.close()
    assert rt.calls == ["close_port", "delete"]


def test_a_callback_swap_waits_for_the_message_in_hand():
    rt = FakeRt()
    port = PolledInput(rt, "fake")
    inside = threading.Event()
    release = threading.Event()
    seen = []

    def slow(msg):
        inside.set()
        release.wait(2)
        seen.append("slow")

    port.callback = slow
    rt.put([0x90, 60, 100])
    assert inside.wait(2)
    swapped = threading.Thread(target=lambda: setattr(port, "callback", None))
    swapped.start()
    time.sleep(0.05)
    assert swapped.is_alive()  # blocked until the slow callback returns
    release.set()
    swapped.join(2)
    assert not swapped.is_alive() and seen == ["slow"]
    port.close()


def test_looks_slow_down_when_nothing_comes_and_not_for_active_sensing(monkeypatch):
    import companion.midi.input as midi_in

    monkeypatch.setattr(midi_in, "IDLE_AFTER_S", 0.15)
    rt = FakeRt()
    port = PolledInput(rt, "fake")
    port.callback = lambda msg: None

    def looks_per_s(span: float = 0.1) -> float:
        n0 = rt.looks
        time.sleep(span)
        return (rt.looks - n0) / span

    rt.put([0x90, 60, 100])
    active = looks_per_s()
    time.sleep(0.2)
    idle = looks_per_s()
    for _ in range(3):  # a keyboard's active sensing does not wake it
        rt.put([0xFE])
        time.sleep(0.01)
    sensing = looks_per_s(0.05)
    port.close()
    print(f"looks per second: {active:.0f} active, {idle:.0f} idle, {sensing:.0f} sensing")
    assert idle < 0.6 * active and sensing < 0.6 * active


def test_closing_keeps_the_queue_empty_and_closes_ports_settled_then_clients(monkeypatch):
    """Closing under a flood: nothing is delivered once closing, the queue is emptied until
    the port is gone (a full RtMidi queue writes to stderr from JACK's thread, where closing
    cancels it), the input closes SETTLE_S after opening and its sysex-end output SETTLE_S
    after it, and the clients close only after the reading thread has stopped."""
    monkeypatch.setattr(midi_in, "SETTLE_S", 0.2)
    calls: list[str] = []
    rt, end = FakeRt(calls), FakeEnd(calls)
    opened = time.monotonic()
    port = PolledInput(rt, "fake", end)
    got = []
    port.callback = got.append
    stop = threading.Event()

    def flood():
        while not stop.is_set():
            rt.put([0x90, 60, 100], 0.0001)
            time.sleep(0.0001)

    flooding = threading.Thread(target=flood)
    flooding.start()
    wait_for(lambda: len(got) > 20, timeout=5)
    rt.deepest = 0
    heard = len(got)
    closed_at = time.monotonic()
    port.close()
    after = len(got)
    stop.set()
    flooding.join()
    assert after <= heard + 1  # at most the message in hand when the close came
    assert rt.deepest < 200  # emptied while closing, never piling up (a 4096 queue)
    assert calls == ["close_port", "end close_port", "delete", "end delete"]
    assert rt.times["close_port"] >= opened + 0.2
    assert end.times["close_port"] >= rt.times["close_port"] + 0.2
    assert closed_at < rt.times["close_port"]


@pytest.mark.parametrize("api, server, refusals, made_it", [
    ("UNIX_JACK", True, 2, True),  # a JACK server still dropping a killed process's clients
    ("UNIX_JACK", True, 10**6, False),  # one that goes on refusing: its error after JACK_RETRY_S
    ("UNIX_JACK", False, 10**6, False),  # none there: its error at once
    ("LINUX_ALSA", True, 1, False),  # elsewhere at once
])
def test_a_refused_client_is_asked_again_while_a_jack_server_is_there(
        monkeypatch, api, server, refusals, made_it):
    import rtmidi

    monkeypatch.setattr(jacklib, "JACK_RETRY_S", 0.5)
    monkeypatch.setattr(jacklib, "jack_server_there", lambda: server)
    tries = []

    def make():
        tries.append(1)
        if len(tries) <= refusals:
            raise rtmidi.SystemError("MidiInJack::initialize: JACK server not running?")
        return "client"

    if made_it:
        assert jacklib.make_client(make, api) == "client" and len(tries) == refusals + 1
        return
    with pytest.raises(rtmidi.SystemError):
        jacklib.make_client(make, api)
    assert (2 <= len(tries) < 100) if api == "UNIX_JACK" and server else len(tries) == 1


@pytest.mark.jack
def test_a_jack_servers_socket_says_it_is_there(jack_server, monkeypatch):
    for key, value in jack_server.items():
        monkeypatch.setenv(key, value)
    assert jacklib.jack_server_there()
    monkeypatch.setenv("JACK_DEFAULT_SERVER", "no-such-server-here")
    assert not jacklib.jack_server_there()


def test_a_port_list_that_changes_while_read_is_read_again():
    import rtmidi

    answers = [rtmidi.InvalidPortError("gone"), rtmidi.InvalidPortError("gone"), ["a", "b"]]

    def listing():
        a = answers.pop(0)
        if isinstance(a, Exception):
            raise a
        return a

    assert port_names(listing) == ["a", "b"]

    def always():
        raise rtmidi.InvalidPortError("gone")

    with pytest.raises(rtmidi.InvalidPortError):
        port_names(always)


def test_a_port_gone_before_its_opening_is_looked_up_again():
    import rtmidi

    class Lister:
        """Lists two ports, then, after the first one went, one; opening by a stale
        index fails as rtmidi's does."""

        def __init__(self):
            self.lists = [["gone", "keys"], ["keys"]]
            self.now = self.lists[0]
            self.opened = None

        def get_ports(self):
            self.now = self.lists.pop(0) if self.lists else self.now
            return list(self.now)

        def open_port(self, index, name=None):
            if self.now == ["gone", "keys"]:  # the list changed since it was read
                self.now = ["keys"]
                raise rtmidi.InvalidPortError("the 'portNumber' argument (1) is invalid")
            self.opened = self.now[index]

    rt = Lister()
    assert open_listed(rt, lambda names: names.index("keys"), None) == "keys"
    assert rt.opened == "keys"
    assert open_listed(Lister(), lambda names: None, None) is None


# -- over JACK ----------------------------------------------------------------------------

CHURN = textwrap.dedent("""
    import os, random, subprocess, sys, time
    import rtmidi
    from companion.midi.input import open_input
    # a flood of notes from another process, into ports this process opens and closes
    flood = subprocess.Popen([sys.executable, "-c", '''
    import rtmidi, time
    o = rtmidi.MidiOut(rtapi=rtmidi.API_UNIX_JACK, name="flood")
    o.open_virtual_port("out")
    end = time.time() + 30
    while time.time() < end:
        o.send_message([0x90, 60, 100]); o.send_message([0x80, 60, 0]); time.sleep(0.0003)
    '''])
    lister = rtmidi.MidiIn(rtapi=rtmidi.API_UNIX_JACK, name="lister")
    while not [n for n in lister.get_ports() if n.startswith("flood")]:
        time.sleep(0.05)
    name = [n for n in lister.get_ports() if n.startswith("flood")][0]
    heard, opens, t0 = [0], 0, time.time()
    while time.time() - t0 < float(sys.argv[1]):
        port = open_input("UNIX_JACK", name, callback=lambda m: heard.__setitem__(0, heard[0] + 1))
        time.sleep(random.random() * 0.01)
        port.close()
        opens += 1
    flood.kill()
    print(f"opens {opens} heard {heard[0]}")
""")


@pytest.mark.jack
def test_opening_and_closing_under_a_flood_neither_crashes_nor_hangs(jack_server):
    """Ports opened and closed for 20 s under a flood of messages: the polled input neither
    deadlocks nor crashes (under Python's debug allocator, which makes the reuse of a freed
    object fatal at once)."""
    env = dict(jack_server, PYTHONPATH=str(ROOT), PYTHONMALLOC="debug")
    r = subprocess.run([sys.executable, "-X", "faulthandler", "-c", CHURN, "20"], env=env,
                       capture_output=True, text=True, timeout=90, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-3000:]
    opens, heard = (int(x) for x in r.stdout.split()[1::2])
    print(f"flood: {opens} opens and closes, {heard} messages read")
    # a close waits for JACK's graph to settle twice (SETTLE_S): at most ~1/(2 SETTLE_S) a s
    assert opens > 20 / (2 * jacklib.SETTLE_S) / 3 and heard > 1000


def test_ports_close_in_turn_each_after_the_graph_settled_and_all_of_them():
    """close_in_turn: in order, the next ``settle_s`` after the one before (a JACK2 client
    that drops a port while handling the notice of the close before crashes), and a close
    that raises does not keep the rest open."""
    closed: list[tuple[str, float]] = []

    def close(name: str, fail: bool = False):
        def run() -> None:
            closed.append((name, time.monotonic()))
            if fail:
                raise OSError(f"{name} is gone")
        return run

    jacklib.close_in_turn([close("in", fail=True), close("out"), close("clock")], 0.05)
    assert [n for n, _ in closed] == ["in", "out", "clock"]
    gaps = [b - a for (_, a), (_, b) in zip(closed, closed[1:], strict=False)]
    assert all(g >= 0.05 for g in gaps), gaps
