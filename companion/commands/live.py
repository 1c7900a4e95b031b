"""`companion live`: the process around a running companion (companion.realtime.live.Live):
its ports opened and closed in turn, the signals that stop it, the session recorder and
autosave, the port watcher, the control surface, the OSC server, and the report on exit.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TextIO

from companion.config import Config, ConfigError
from companion.engine.model import StepModel
from companion.midi.jacklib import SETTLE_S, close_in_turn, jack_server_there
from companion.midi.session import Autosave, SessionRecorder
from companion.realtime.clock import RealClock, StopFlag
from companion.realtime.live import Live

#: The exit code of `companion live` when its JACK server went away, or stopped moving MIDI,
#: while it ran (docs/interface.md).
EXIT_JACK_GONE = 3
#: How often `companion live` looks whether its JACK server is still there (a read of the
#: kernel's socket list, never a word with the server): a server gone is said, and the
#: companion gone, well within 2 s.
SERVER_LOOK_S = 0.25
#: On a signal, over JACK: how long the input may take to read a message (its own F7s come
#: back within ~SYSEX_END_S while JACK moves MIDI) before the server counts as hanging, and
#: its ports are left unclosed (closing one would wait for the server for ever).
HANG_WAIT_S = 0.5


@contextlib.contextmanager
def settled_heap() -> Iterator[None]:
    """Collect the start-up garbage once, then set every live object aside (``gc.freeze``)
    while playing. A full collection walks all ~30,000 objects of the loaded process and
    holds the GIL for 4 to 8 ms: about a JACK period (5.3 ms at 256 frames), so the
    scheduler's next note and the reading of input would be that late (input keeps its
    arrival times: companion.midi.input). Objects made while playing are collected as usual,
    and walking them is short."""
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


@contextlib.contextmanager
def stop_on_signals(on_signal: Callable[[int, object], None]) -> Iterator[None]:
    """Ctrl-C, SIGTERM and SIGHUP call ``on_signal`` instead of killing the process (only
    the main thread can take signals; elsewhere this does nothing); restored on exit."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    sigs = [s for s in (signal.SIGINT, signal.SIGTERM, getattr(signal, "SIGHUP", None)) if s]
    saved = {s: signal.getsignal(s) for s in sigs}
    for s in sigs:
        signal.signal(s, on_signal)
    try:
        yield
    finally:
        for s, h in saved.items():
            signal.signal(s, h)


def _print(out: TextIO) -> Callable[[str], None]:
    def log(line: str) -> None:
        print(f"companion: {line}", file=out, flush=True)

    return log


def _osc_server(live: Live, cfg: Config, log: Callable[[str], None]) -> Any:
    """The OSC server of config ``osc:`` (companion.realtime.osc), python-osc being optional."""
    try:
        from companion.realtime.osc import OscServer
    except ModuleNotFoundError as e:
        if e.name is None or not e.name.startswith("pythonosc"):
            raise
        from companion.extras import install_hint

        raise ConfigError(f"osc.enabled: OSC needs python-osc, the `osc` extra: "
                          f"{install_hint('osc')}") from None
    return OscServer(live, cfg.osc, log)


def _ended(code: int, jack_gone: bool) -> int:
    """``code``, returned; or, where the JACK server is gone or hangs (``jack_gone``), the
    process ended at once with it, its output flushed: the clients of such a server are
    never closed, since RtMidi's JACK output waits a second per port, when closed or deleted
    (at the interpreter's exit too), for a process cycle that does not come."""
    if not jack_gone:
        return code
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)


def run(cfg: Config, out: TextIO | None = None, ui: bool = False,
        learn: list[str] | None = None, config_path: Path | None = None) -> int:
    """`companion live`: until Ctrl-C / SIGTERM / SIGHUP, then notes off, session saved, 0.
    ``ui``: serve the control surface (config ui:) and print its URL. ``learn``: MIDI learn
    these controls first (``["all"]``: each in turn), saved to ``config_path``.

    Over JACK, a server that goes away (its socket no longer listened on, looked at every
    SERVER_LOOK_S) or stops moving MIDI (companion.midi.jacklib.SILENT_S) is said in one line;
    the companion then stops as it does on a signal, saves the session, and the process ends
    at once with EXIT_JACK_GONE, its JACK ports left unclosed (see ``_ended``). A signal's stop
    while JACK moves no MIDI for HANG_WAIT_S (a server that hangs, or a synchronous graph
    waiting out a client) leaves the ports unclosed the same way, and exits 0."""
    from companion.midi.jacklib import SILENT_S
    from companion.midi.ports import describe, open_ports

    log = _print(out or sys.stdout)
    stop = StopFlag()
    running: list[Live] = []
    signalled: list[float] = []  # when the stop signal came (the live clock)

    def on_signal(signum, frame) -> None:
        for live in running:
            live.halt()  # before anything else: no note-on leaves after this
        signalled.append(time.perf_counter())
        stop.set()

    with stop_on_signals(on_signal), contextlib.ExitStack() as stack:
        sys.setswitchinterval(0.001)  # the scheduler thread gets the GIL back within ~1 ms
        model = StepModel(cfg.model_dir())
        if stop.is_set():
            return 0
        m = cfg.midi
        ports = open_ports(m.backend, m.client_name, m.input_name, m.output_name, m.input,
                           m.output)
        recorder = autosave = watcher = clockport = server = None
        exit_code = 0
        hung = False  # on a signal, JACK moved no MIDI: its ports are left unclosed
        osc = None
        try:
            clock = RealClock()
            if cfg.session.enabled:
                recorder = SessionRecorder(clock.now(), cfg.listen.tempo_bpm)
                autosave = Autosave(recorder, cfg.session_dir(), cfg.session.save_every_s, log)
            if cfg.time.clock_port is not None and cfg.time.clock in ("follow", "auto"):
                from companion.midi.ports import open_clock_port

                clockport = open_clock_port(ports.backend, cfg.time.clock_port,
                                            cfg.midi.client_name)
            live = Live(cfg, model, ports.inport, ports.outport, clock, cfg.answer.seed,
                        recorder=recorder, log=log, clockport=clockport, ports=ports)
            running.append(live)
            stack.enter_context(settled_heap())
            live.learner.save_to(config_path)
            if learn:
                live.learner.arm(learn[0] if len(learn) == 1 else learn)
            live.start()
            if autosave is not None:
                autosave.start()
            if m.input is not None or m.output is not None:
                from companion.midi.watch import PortWatcher

                watcher = PortWatcher(live, ports.backend, m.input, m.output, ports.input_label,
                                      ports.output_label, log)
                watcher.start()
            if ui:
                from companion.ui.server import UiServer

                server = UiServer(live, cfg.ui.host, cfg.ui.port, cfg.ui.token, recorder, log)
                log(f"control surface: {server.start()}")
                if (qr := server.qr()) is not None:
                    log("the control surface's URL, for a tablet's camera:")
                    print(qr, file=out or sys.stdout, flush=True)
            if cfg.osc.enabled:
                osc = _osc_server(live, cfg, log)
                osc.start()
            log(
                f"listening on {ports.input_label}, answering on {ports.output_label} channel "
                f"{m.output_channel} on {describe(ports.backend, ports.why)}; model "
                f"{cfg.model_dir()}; "
                f"{cfg.listen.tempo_bpm:g} BPM, answer after {cfg.listen.phrase_end_beats:g} "
                f"beats of silence. Ctrl-C stops."
            )
            watch_server = ports.backend == "jack" and jack_server_there()
            while not stop.wait(SERVER_LOOK_S):
                if watch_server and not jack_server_there():
                    break
                if live.midi_stopped.is_set():
                    log(f"JACK stopped moving MIDI (no message for {SILENT_S:g} s, not even "
                        "our own: its server quit or hangs); stopping. Start the companion "
                        "again once it runs")
                    exit_code = EXIT_JACK_GONE
                    break
            if watch_server and not jack_server_there():  # also when a signal came after
                log("the JACK server is gone; stopping. Start the companion again once it "
                    "runs")
                exit_code = EXIT_JACK_GONE
            elif (exit_code == 0 and ports.backend == "jack"
                  and hasattr(live.inport, "moves_midi")
                  and not live.inport.moves_midi(HANG_WAIT_S)):
                log(f"JACK moves no MIDI (not even our own for {HANG_WAIT_S:g} s: its server "
                    "hangs or its graph waits); stopping without closing its ports")
                hung = True
        finally:
            if osc is not None:
                osc.stop()
            if server is not None:
                server.stop()
            if watcher is not None:
                watcher.stop()
            for live in running:
                live.stop()
                # the ports now in place (the watcher may have swapped them)
                ports = dataclasses.replace(ports, inport=live.inport, outport=live.outport)
            gone = exit_code == EXIT_JACK_GONE or hung
            if not gone:
                close_in_turn([ports.close]
                              + ([clockport.close] if clockport is not None else []),
                              SETTLE_S if ports.backend == "jack" else 0.0)
            if autosave is not None:
                autosave.stop()
        for live in running:
            if signalled and live.notes_off_at is not None:
                ms = (live.notes_off_at - signalled[0]) * 1000
                log(f"every note off {ms:.1f} ms after the stop signal")
            clock = live.engine.midiclock
            if clock is not None and clock.heard:
                log(f"MIDI clock ticks heard: {clock.heard}")
            if live.dropped or live.dropped_queue_full:
                log(f"{live.dropped + live.dropped_queue_full} flooded input messages dropped "
                    f"in all")
        if recorder is not None:
            try:
                path = recorder.flush(cfg.session_dir())
            except OSError as e:
                log(f"could not save the session in {cfg.session_dir()} ({e.strerror or e})")
                return _ended(1, gone)
            if path is not None:
                log(f"session saved: {path}")
        log("stopped")
        return _ended(exit_code, gone)
