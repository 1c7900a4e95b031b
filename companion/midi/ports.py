"""MIDI ports: choosing the MIDI system, opening virtual or named ports, and saying
clearly what is missing when there is no MIDI system. Outputs are mido's python-rtmidi
ports; inputs are polled (companion.midi.input says why).
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from typing import Any

from companion.midi.input import open_input, port_names
from companion.midi.jacklib import (
    SETTLE_S,
    close_in_turn,
    load_rtmidi,
    make_client,
    output_client,
)

BACKENDS = {"alsa": "LINUX_ALSA", "jack": "UNIX_JACK", "coremidi": "MACOSX_CORE",
            "winmm": "WINDOWS_MM"}
AUTO = "auto"  # midi.backend: the platform's MIDI system (choose_backend)
LABELS = {"alsa": "ALSA", "jack": "JACK", "coremidi": "CoreMIDI", "winmm": "Windows MM"}
NO_SYSTEM_HINT = "`companion demo` and `companion respond CALL` need no MIDI system"
ALSA_SEQ = "/dev/snd/seq"  # the ALSA sequencer's device: ALSA MIDI works when it is there
NATIVE = {"darwin": "coremidi", "win32": "winmm", "linux": "alsa"}  # by sys.platform prefix
PLATFORM_NAMES = {"coremidi": "macOS", "winmm": "Windows"}
JACK_TODO = "start a JACK server (`jackd -d alsa`, or `jackd -d dummy` without a sound card)"


class PortError(Exception):
    """Unknown port, unavailable backend, no MIDI system: exit 2 with this one line."""


class NoMidiSystem(PortError):
    pass


@contextlib.contextmanager
def quiet_stderr() -> Iterator[None]:
    """Silence C-level stderr: libasound and libjack print their own errors when probed,
    and the user should see one clear line instead."""
    if os.name != "posix":
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def no_system_message(backend: str, detail: str = "") -> str:
    if backend == "alsa":
        what = f"the ALSA sequencer ({ALSA_SEQ}) is not there"
        todo = ("load it with `sudo modprobe snd-seq`, or start a JACK server and use "
                "--backend jack")
    elif backend == "jack":
        server = os.environ.get("JACK_DEFAULT_SERVER")
        what = "no JACK server is running" + (f" (JACK_DEFAULT_SERVER={server})" if server else "")
        todo = f"{JACK_TODO}, or use --backend alsa"
    else:
        what = f"{LABELS[backend]} did not start" + (f" ({detail})" if detail else "")
        todo = "check the MIDI setup of this computer"
    return f"no MIDI system: {what}; {todo}; {NO_SYSTEM_HINT}"


def get_backend(name: str):
    """The mido backend for ``name`` (alsa, jack, coremidi, winmm: auto resolved by
    resolve_backend first), checked to be usable."""
    import mido

    if name not in BACKENDS:
        raise PortError(f"--backend: expected one of {', '.join(BACKENDS)}, got {name!r}")
    load_rtmidi()  # before mido's rtmidi backend imports it
    backend = mido.Backend(f"mido.backends.rtmidi/{BACKENDS[name]}", load=True)
    compiled = backend.module.get_api_names()
    if BACKENDS[name] not in compiled:
        have = [k for k, v in BACKENDS.items() if v in compiled]
        raise PortError(
            f"backend {name}: {LABELS[name]} is not available on this system "
            f"(available: {', '.join(have) or 'none'})"
        )
    check_system(name)
    return backend


def check_system(name: str) -> None:
    """Raise NoMidiSystem, with what to do, when the MIDI system cannot be reached."""
    if name == "alsa" and sys.platform.startswith("linux") and not os.path.exists(ALSA_SEQ):
        raise NoMidiSystem(no_system_message("alsa"))
    detail = _probe(name)
    if detail is not None:
        raise NoMidiSystem(no_system_message(name, detail))


def _probe(name: str) -> str | None:
    """None when an rtmidi client of ``name`` can be made (for JACK: a server is reachable;
    rtmidi never starts one), else rtmidi's reason."""
    rtmidi = load_rtmidi()

    api = getattr(rtmidi, f"API_{BACKENDS[name]}")
    try:
        with quiet_stderr():
            probe = make_client(lambda: rtmidi.MidiIn(rtapi=api, name="companion-probe"),
                         BACKENDS[name])
    except rtmidi.SystemError as e:
        return str(e)
    probe.delete()
    return None


def _native(platform: str) -> str | None:
    """The platform's own MIDI system (``platform`` as sys.platform says it), if it has one."""
    return next((b for prefix, b in NATIVE.items() if platform.startswith(prefix)), None)


def choose_backend(
    platform: str,
    alsa_seq: bool,
    jack_running: bool,
    compiled: Collection[str],
    jack_server: str | None = None,
) -> tuple[str, str]:
    """(backend, why) for ``midi.backend: auto``: the platform's own MIDI system when this
    python-rtmidi has it (CoreMIDI on macOS, Windows MM on Windows, ALSA on Linux when
    ``alsa_seq``: /dev/snd/seq is there), else JACK when a server runs and rtmidi has JACK.
    Neither: NoMidiSystem saying what is missing and what to do. ``compiled``: the backend
    names rtmidi was built with; ``jack_server``: JACK_DEFAULT_SERVER, for the message.
    """
    native = _native(platform)
    what: list[str] = []
    todo: list[str] = []
    lacks = ""  # why JACK, when the platform's own system was not taken
    if native is not None and native not in compiled:
        lacks = f"python-rtmidi has no {LABELS[native]}"
        what.append(f"this python-rtmidi was built without {LABELS[native]}")
        todo.append(f"install a python-rtmidi built with {LABELS[native]}")
    elif native == "alsa" and not alsa_seq:
        lacks = f"no {ALSA_SEQ}"
        what.append(f"the ALSA sequencer ({ALSA_SEQ}) is not there")
        todo.append("load the ALSA sequencer with `sudo modprobe snd-seq`")
    elif native == "alsa":
        return native, f"auto: {ALSA_SEQ} is present"
    elif native is not None:
        return native, f"auto: the MIDI system of {PLATFORM_NAMES[native]}"
    if jack_running and "jack" in compiled:
        return "jack", "auto: " + ", ".join(filter(None, [lacks, "a JACK server is running"]))
    if "jack" in compiled:
        what.append("no JACK server is running"
                    + (f" (JACK_DEFAULT_SERVER={jack_server})" if jack_server else ""))
        todo.append(JACK_TODO)
    elif not what:
        what.append(f"{platform} has no MIDI system this python-rtmidi knows")
        todo.append("install a python-rtmidi built with JACK, and a JACK server")
    raise NoMidiSystem(f"no MIDI system: {' and '.join(what)}; {', or '.join(todo)}; "
                       f"{NO_SYSTEM_HINT}")


def compiled_backends() -> list[str]:
    """The backend names this python-rtmidi was built with."""
    rtmidi = load_rtmidi()

    apis = set(rtmidi.get_compiled_api())
    return [name for name, api in BACKENDS.items() if getattr(rtmidi, f"API_{api}") in apis]


def resolve_backend(name: str) -> tuple[str, str]:
    """(backend, why): ``name`` itself, or for auto the choice of choose_backend on what
    this machine has. JACK is probed only when nothing else will do (a probe is a client)."""
    if name != AUTO:
        if name not in BACKENDS:
            raise PortError(f"--backend: expected one of {', '.join((AUTO, *BACKENDS))}, "
                            f"got {name!r}")
        return name, f"midi.backend: {name}"
    compiled = compiled_backends()
    seq = os.path.exists(ALSA_SEQ)
    server = os.environ.get("JACK_DEFAULT_SERVER")
    try:
        return choose_backend(sys.platform, seq, False, compiled, server)
    except NoMidiSystem:
        if "jack" not in compiled:
            raise
    return choose_backend(sys.platform, seq, _probe("jack") is None, compiled, server)


def describe(backend: str, why: str) -> str:
    """How logs and `companion ports` name the MIDI system: ``JACK (auto: ...)``."""
    return f"{LABELS.get(backend, backend)} ({why})"


def midi_system_problem(backend: str | None = None) -> str | None:
    """The one-line "no MIDI system" message, or None when the MIDI system is there.

    For `make run`, which shows `companion demo` instead when this says something. With no
    ``backend``, the one of ./config.yaml (auto if that cannot be read).
    """
    if backend is None:
        from companion import config

        try:
            backend = config.load().midi.backend
        except config.ConfigError:
            backend = AUTO
    try:
        check_system(resolve_backend(backend)[0])
    except NoMidiSystem as e:
        return str(e)
    except Exception:  # noqa: BLE001 - not built in, etc.: a different problem, said by live
        return None
    return None


def list_ports(backend) -> tuple[list[str], list[str]]:
    """(input names, output names): ports that can be listened to and played to."""
    with quiet_stderr():
        return (port_names(backend.get_input_names),
                port_names(backend.get_output_names))


def match_port(query: str, names: list[str], kind: str, label: str) -> str:
    """The one port whose name contains ``query`` (case-insensitive); an exact name wins."""
    q = query.lower()
    exact = [n for n in names if n.lower() == q]
    if len(exact) == 1:
        return exact[0]
    hits = [n for n in names if q in n.lower()]
    if len(hits) == 1:
        return hits[0]
    listed = "; ".join(names) if names else "none"
    if not hits:
        raise PortError(f"no {label} MIDI {kind} port matches {query!r} ({kind} ports: {listed})")
    raise PortError(
        f"{label} MIDI {kind} port {query!r} is ambiguous, it matches: {'; '.join(hits)}"
    )


@dataclass
class OpenPorts:
    """Open ports, the names others see them by, and the MIDI system they are on (resolved,
    never auto; empty for in-process ports) with why it was chosen."""

    inport: object
    outport: object
    input_label: str
    output_label: str
    backend: str = ""
    why: str = ""

    def close(self) -> None:
        """The input, then the output (over JACK once the graph has settled: close_in_turn)."""
        close_in_turn([self.inport.close, self.outport.close],
                      SETTLE_S if self.backend == "jack" else 0.0)


def open_ports(
    backend_name: str,
    client_name: str,
    input_name: str,
    output_name: str,
    input_query: str | None = None,
    output_query: str | None = None,
) -> OpenPorts:
    """Named ports where a query is given (opened first, so they never match our own
    virtual ports), virtual ``client_name:input_name`` / ``:output_name`` otherwise.
    ``backend_name`` may be auto: the result says which system was chosen, for the rest."""
    backend_name, why = resolve_backend(backend_name)
    get_backend(backend_name)  # a PortError naming the system if it cannot be had here
    label = LABELS[backend_name]
    if (input_query is None or output_query is None) and backend_name == "winmm":
        raise PortError(
            "Windows MM has no virtual ports: install a loopback driver (e.g. loopMIDI), create "
            "two ports there and name them with --input and --output (see `companion ports`)"
        )
    inport = outport = None
    try:
        # named ports first, so that they never match our own virtual ports
        if input_query is not None:
            inport, in_label = open_port(backend_name, "input", input_query, client_name,
                                         input_name)
        if output_query is not None:
            outport, out_label = open_port(backend_name, "output", output_query, client_name,
                                           output_name)
        if inport is None:
            inport, in_label = open_port(backend_name, "input", None, client_name, input_name)
        if outport is None:
            outport, out_label = open_port(backend_name, "output", None, client_name,
                                           output_name)
    except PortError:
        for p in (inport, outport):
            if p is not None:
                p.close()
        raise
    except OSError as e:  # rtmidi.SystemError (no client made) is an OSError
        for p in (inport, outport):
            if p is not None:
                p.close()
        raise PortError(f"{label}: cannot open MIDI ports ({e})") from e
    return OpenPorts(inport, outport, in_label, out_label, backend_name, why)


def open_port(backend_name: str, kind: str, query: str | None, client_name: str,
              own_name: str) -> tuple[Any, str]:
    """One open port of ``kind`` ("input" or "output") on a resolved backend, and the name
    others see for it: the existing port that ``query`` matches (as --input/--output
    match), or our own virtual port ``client_name:own_name`` for None."""
    backend = get_backend(backend_name)
    api = BACKENDS[backend_name]
    jack = backend_name == "jack"
    # Over JACK each port is a client of its own, named for what it is whichever opens
    # first: the input ``NAME`` (its port ``in`` when it listens to a port named too), our
    # virtual output ``NAME-01``, the input's sysex-end ``NAME-sysex-end`` (jacklib).
    client = output_client(client_name) if jack and kind == "output" else client_name
    with quiet_stderr():
        if query is not None:
            ins, outs = list_ports(backend)
            name = match_port(query, ins if kind == "input" else outs, kind,
                              LABELS[backend_name])
            if kind == "input":
                if jack:
                    return open_input(api, name, client_name=client, port_name=own_name), name
                return open_input(api, name), name
            # (mido opens a named output under RtMidi's client name: "RtMidiOut Client")
            return make_client(lambda: backend.open_output(name), api), name
        if kind == "input":
            port = open_input(api, own_name, virtual=True, client_name=client)
        else:
            port = make_client(lambda: backend.open_output(own_name, virtual=True,
                                                           client_name=client), api)
    ins, outs = list_ports(backend)
    # our input is an output port to the others, and the other way round
    return port, _own(outs if kind == "input" else ins, client, own_name)


def _own(names: list[str], client: str, port: str) -> str:
    """The name others see for our virtual port: JACK renames a client whose name is taken
    (by another companion, or a killed one's not yet dropped) ``NAME-01``, ``NAME-02`` ...,
    the last one listed is the newest."""
    pat = re.compile(rf"^{re.escape(client)}(-\d+)*:{re.escape(port)}\b", re.IGNORECASE)
    mine = [n for n in names if pat.match(n)]
    return mine[-1] if mine else f"{client}:{port}"


def open_clock_port(backend_name: str, query: str, client_name: str = "companion"):
    """The input port a MIDI clock comes from (config time.clock_port), matched like
    --input: a case-insensitive substring of an existing port's name. Over JACK its client
    is ``NAME-clock`` and its port ``clock`` (open_port says why)."""
    backend = get_backend(backend_name)
    label = LABELS[backend_name]
    ins, _ = list_ports(backend)
    name = match_port(query, ins, "input", label)
    own = ({"client_name": f"{client_name}-clock", "port_name": "clock"}
           if backend_name == "jack" else {})
    try:
        with quiet_stderr():
            return open_input(BACKENDS[backend_name], name, **own)
    except (OSError, SystemError) as e:
        raise PortError(f"{label}: cannot open the clock port {name!r} ({e})") from e
