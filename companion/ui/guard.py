"""Who may talk to the control surface: the rules kept by the server, apart from aiohttp.

- The server binds to loopback unless told otherwise; on any other address a token is
  required (a random one unless configured), compared in constant time.
- The Host header must name this server (an IP address, localhost or this machine's own
  name, with our port): a page on another site whose name is made to resolve to this
  machine (DNS rebinding) sends its own name and is refused.
- A WebSocket's Origin must be this server itself: a page on another origin that the
  performer happens to have open cannot open the socket (cross-site WebSocket hijacking).
- MIDI from the page (its Web MIDI input) is one whole channel message at a time
  (``check_midi``), checked by the web process and again by the companion.
"""

from __future__ import annotations

import hmac
import ipaddress
import secrets
import socket
import time
from urllib.parse import urlsplit

from companion.config import ConfigError, UiConfig

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")


def is_loopback(host: str) -> bool:
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def split_host(value: str) -> tuple[str, int | None]:
    """``host[:port]`` or ``[v6]:port`` -> (host, port or None); ValueError if malformed."""
    parts = urlsplit("//" + value)
    return (parts.hostname or ""), parts.port


class Guard:
    """The checks every request passes (see the module's rules)."""

    def __init__(self, host: str, port: int, token: str | None):
        self.host = host
        self.port = port
        self.local = is_loopback(host)
        #: None: no token needed (loopback, none configured).
        self.token = token if token or self.local else secrets.token_urlsafe(16)
        me = socket.gethostname().lower()
        self.names = {"localhost", me, f"{me}.local", socket.getfqdn().lower()}

    def set_port(self, port: int) -> None:
        """The port actually bound (config port 0: any free one)."""
        self.port = port

    def token_ok(self, given: str | None) -> bool:
        if self.token is None:
            return True
        return hmac.compare_digest((given or "").encode(), self.token.encode())

    def host_ok(self, header: str | None) -> bool:
        """The Host header names this server: our port, and an IP address or one of our
        names (only loopback ones when bound to loopback)."""
        if not header:
            return False
        try:
            host, port = split_host(header)
        except ValueError:
            return False
        if port != self.port:
            return False
        if self.local:
            return is_loopback(host)
        return _is_ip(host) or host.lower() in self.names

    def origin_ok(self, origin: str | None, host_header: str | None) -> bool:
        """A WebSocket's Origin is this very server (scheme http, the Host it asked for)."""
        if not origin or not host_header:
            return False
        return origin == f"http://{host_header}"


class RateLimit:
    """A token bucket: ``rate`` messages a second on average, bursts of ``burst``."""

    def __init__(self, rate: float, burst: int, clock=time.monotonic):
        self.rate = rate
        self.burst = burst
        self.clock = clock
        self.tokens = float(burst)
        self.at = clock()

    def allow(self) -> bool:
        now = self.clock()
        self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        self.at = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False


def check_midi(data: object) -> list[int] | str:
    """The bytes of one MIDI message from the page -> the same bytes, or why not (one line).
    Taken: channel messages (note on/off, aftertouch, control change, program change, pitch
    bend), each whole; not system messages (SysEx, clock, active sensing)."""
    if not isinstance(data, list) or not 1 <= len(data) <= 3 or not all(
            isinstance(b, int) and not isinstance(b, bool) and 0 <= b <= 255 for b in data):
        return f"midi: expected the 1 to 3 bytes of a MIDI message (0..255), got {data!r:.80}"
    status = data[0]
    if not 0x80 <= status <= 0xEF:
        return (f"midi: only channel messages (status 0x80..0xEF) are taken, got "
                f"0x{status:02X}")
    want = 2 if 0xC0 <= status <= 0xDF else 3
    if len(data) != want or any(b > 0x7F for b in data[1:]):
        return (f"midi: status 0x{status:02X} takes {want - 1} data byte(s) 0..127, got "
                f"{data[1:]!r:.40}")
    return list(data)


def parse_address(text: str, cfg: UiConfig) -> tuple[str, int]:
    """``--ui [HOST:]PORT`` (empty: the config's) -> (host, port); ConfigError if malformed."""
    if not text:
        return cfg.host, cfg.port
    try:
        if text.isdigit():
            host, port = cfg.host, int(text)
        else:
            host, port = split_host(text)
            if port is None or not host:
                raise ValueError(text)
    except ValueError:
        raise ConfigError(f"--ui: expected [HOST:]PORT, e.g. 8765 or 0.0.0.0:8765, got {text!r}") \
            from None
    if not 0 <= port <= 65535:
        raise ConfigError(f"--ui: expected a port in 0..65535, got {port}")
    return host, port
