"""MIDI learn: the next CC that moves is mapped to a control, played with at once, and saved
to the config file.

Armed by `companion live --learn NAME` (NAME any of CC_CONTROLS, the registry's controls a
CC can move (companion/live_controls.py); ``all``: those of LEARN_ALL, in turn) or
``Live.apply("learn", NAME)`` (the web page, OSC). While armed, a CC 0..119 on the control
channel is taken for the control waited for (and does nothing else); a CC already learnt in
the same walk is not taken again (the knob just learnt is still moving). A CC that was
another control's is that control's no more, in the companion and in the file.

The file is edited as text, so its comments and layout stay: the key's value in the
``controls:`` section is replaced (or the key added, or the section), the result is read
back with the config's own checks, then written to a temporary file beside it and renamed
over it (a reader sees the old file or the new one, never half of one). Saving happens on a
thread of its own, in order, never on the engine thread.
"""

from __future__ import annotations

import contextlib
import os
import queue
import re
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path

import mido
import yaml

from companion import config as config_mod
from companion.config import ConfigError
from companion.live_controls import CC_CONTROLS, LEARN_ALL
from companion.realtime.controls import Controls

#: CCs 120..127 are channel mode messages (All Notes Off ...), never a control.
LEARNABLE = range(0, 120)
SECTION = "controls"


def _key_line(section: str, key: str) -> re.Pattern[str]:
    return re.compile(rf"^(?P<indent>[ \t]+){re.escape(key)}[ \t]*:(?P<value>[^#\n]*)"
                      rf"(?P<comment>#[^\n]*)?$", re.M)


def set_controls_key(text: str, key: str, value: int | None) -> str:
    """``text`` (a config file) with ``controls.KEY`` set to ``value`` (null for None): the
    key's line rewritten in place with its comment, else the key added at the top of the
    section, else the section added at the end. Nothing else changes."""
    v = "null" if value is None else str(value)
    head = re.search(rf"^{SECTION}[ \t]*:[ \t]*(#[^\n]*)?$", text, re.M)
    if head is None:
        sep = "" if not text or text.endswith("\n") else "\n"
        return f"{text}{sep}{SECTION}:\n  {key}: {v}\n"
    start = head.end() + 1
    nxt = re.compile(r"^[^\s#][^\n]*$", re.M).search(text, start)  # the next top-level line
    end = nxt.start() if nxt else len(text)
    body = text[start:end]
    m = _key_line(SECTION, key).search(body)
    if m is not None:
        comment = m.group("comment")
        line = f"{m.group('indent')}{key}: {v}" + (f"  {comment}" if comment else "")
        body = body[:m.start()] + line + body[m.end():]
    else:
        indent = re.search(r"^([ \t]+)\S", body, re.M)
        body = f"{indent.group(1) if indent else '  '}{key}: {v}\n" + body
    return text[:start] + body + text[end:]


def save_control(path: Path, name: str, cc: int, others: list[str]) -> None:
    """Set ``controls.NAME: CC`` in the config file at ``path`` (and each of ``others``, the
    controls that had this CC, to null), atomically, comments kept. The file is created if
    missing. ConfigError (and the file untouched) if the result would not load."""
    try:
        text = path.read_text() if path.exists() else ""
    except OSError as e:
        raise ConfigError(f"{path}: cannot read ({e.strerror or e})") from None
    for other in others:
        text = set_controls_key(text, other, None)
    text = set_controls_key(text, name, cc)
    try:
        cfg = config_mod.from_dict(yaml.safe_load(text) or {}, path.parent)
    except (yaml.YAMLError, ConfigError) as e:
        raise ConfigError(f"{path}: not saved: the edited file would not load ({e})") from None
    if getattr(cfg.controls, name) != cc:
        raise ConfigError(f"{path}: not saved: controls.{name} would read "
                          f"{getattr(cfg.controls, name)!r}, not {cc}")
    mode = path.stat().st_mode & 0o777 if path.exists() else 0o644
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


class Learner:
    """Maps the next CC that moves to the control waited for (see the module). ``heard`` is
    called on the engine thread with each message before the controls see it."""

    def __init__(self, controls: Controls, log: Callable[[str], None],
                 config_path: Path | None = None):
        self.controls = controls
        self.log = log
        self.config_path = config_path
        self.waiting: list[str] = []  # the controls still to learn, the first next
        self._walked: set[int] = set()  # CCs learnt in this walk
        self._saves: queue.SimpleQueue = queue.SimpleQueue()
        self._saver: threading.Thread | None = None
        self.saved = 0  # saves done (for whoever waits for one)

    def save_to(self, path: Path | None) -> None:
        """Save what is learnt from now on to the config file at ``path`` (None: don't)."""
        self.config_path = path

    def arm(self, names: str | list[str]) -> list[str]:
        """Wait for a CC for each of ``names`` in turn (``"all"``: LEARN_ALL); ConfigError
        naming the known controls for anything else, and nothing armed."""
        if names == "all":
            wanted = list(LEARN_ALL)
        elif isinstance(names, str):
            wanted = [names]
        else:
            wanted = list(names) if isinstance(names, list | tuple) else [names]
        bad = [n for n in wanted if not isinstance(n, str) or n not in CC_CONTROLS]
        if bad or not wanted:
            raise ConfigError(f"learn: expected a control to learn ({', '.join(CC_CONTROLS)} "
                              f"or all), got {bad[0] if bad else names!r}")
        self.waiting = list(wanted)
        self._walked = set()
        self._prompt()
        return wanted

    def _prompt(self) -> None:
        if self.waiting:
            self.log(f"learn: move the control for {self.waiting[0]} (a knob, fader, pedal "
                     f"or button sending a CC)")

    def heard(self, msg: mido.Message) -> bool:
        """True if ``msg`` was taken as the CC of the control waited for."""
        if not self.waiting or msg.type != "control_change" or msg.control not in LEARNABLE:
            return False
        ch = self.controls.channel
        if ch is not None and msg.channel != ch:
            return False
        if msg.control in self._walked:
            return True  # the knob just learnt, still moving
        name = self.waiting.pop(0)
        others = self.controls.map(name, msg.control)
        self._walked.add(msg.control)
        note = f" (no longer {', '.join(others)})" if others else ""
        self.log(f"learn: {name} is CC {msg.control}{note}")
        if self.config_path is not None:
            self._save(name, msg.control, others)
        self._prompt()
        return True

    def _save(self, name: str, cc: int, others: list[str]) -> None:
        self._saves.put((name, cc, others))
        if self._saver is None:
            self._saver = threading.Thread(target=self._save_all, name="companion-learn-save",
                                           daemon=True)
            self._saver.start()

    def _save_all(self) -> None:
        while True:
            item = self._saves.get()
            if item is None:
                return
            name, cc, others = item
            path = self.config_path
            try:
                save_control(path, name, cc, others)
            except (ConfigError, OSError) as e:
                self.log(f"learn: {name} is CC {cc} for now, but {e}")
            else:
                self.log(f"learn: saved controls.{name}: {cc} in {path}")
            self.saved += 1

    def close(self) -> None:
        """Every save asked for is done."""
        if self._saver is not None:
            self._saves.put(None)
            self._saver.join(timeout=10.0)
            self._saver = None
