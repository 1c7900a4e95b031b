"""Over JACK: the names the docs give (`companion:in`, `companion-01:out`, the input's
`companion-sysex-end` client), and a feedback loop (`companion-01:out` wired back to
`companion:in` with jack_connect, as a DAW's MIDI thru does) said once and not answered."""

from __future__ import annotations

import shutil
import subprocess
import time

import pytest
from support import (
    ANSWER_BEATS,
    PHRASE_END_BEATS,
    Companion,
    Performer,
    jack_config,
    jack_env,
    jackd_log,
)
from support import JACK_BEAT as BEAT
from support import JACK_CALL as CALL

pytestmark = pytest.mark.jack


def connections(env: dict) -> dict[str, list[str]]:
    """``jack_lsp -c``: each port and the ports connected to it."""
    out = subprocess.run(["jack_lsp", "-c"], env=env, capture_output=True, text=True,
                         timeout=20, check=True).stdout
    ports: dict[str, list[str]] = {}
    last = ""
    for line in out.splitlines():
        if line.startswith(" "):
            ports[last].append(line.strip())
        else:
            last = line.strip()
            ports[last] = []
    return ports


@pytest.mark.parametrize("jack_server", [1024], indirect=True)
def test_port_names_as_documented_and_a_feedback_loop_not_answered(
        jack_server, monkeypatch, tmp_path, model_pkg):
    if shutil.which("jack_connect") is None or shutil.which("jack_lsp") is None:
        pytest.skip("jack_connect / jack_lsp not installed (Debian: jackd2)")
    jack_env(jack_server, monkeypatch)
    comp = Companion(jack_server, "--config", str(jack_config(tmp_path, model_pkg)))
    performer = None
    try:
        comp.wait_ready()
        assert any("listening on companion:in, answering on companion-01:out" in line
                   for line in comp.lines), comp.lines
        ours = {p: c for p, c in connections(jack_server).items() if p.startswith("companion")}
        assert ours == {"companion:in": ["companion-sysex-end:sysex-end"],
                        "companion-01:out": [],
                        "companion-sysex-end:sysex-end": ["companion:in"]}, ours

        # a DAW's MIDI thru: the companion's output back into its input
        subprocess.run(["jack_connect", "companion-01:out", "companion:in"], env=jack_server,
                       check=True, timeout=20)
        performer = Performer()
        performer.play(CALL)
        comp.wait_line("-> answer of", timeout=20)
        comp.wait_line("feedback loop:", timeout=20)
        # the answer plays out, and nothing more is answered in the time of several answers
        time.sleep(3 * (PHRASE_END_BEATS + 1 + ANSWER_BEATS) * BEAT)
        context = "\n".join(comp.lines) + "\n" + jackd_log(jack_server)
        assert comp.count("-> answer of") == 1, context
        assert comp.count("feedback loop:") == 1, context
        assert comp.count("performer plays: answer stopped") == 0, context
    finally:
        if performer is not None:
            performer.close()
        assert comp.stop() == 0, "\n".join(comp.lines)
    print(next(line for line in comp.lines if "feedback loop:" in line))
