"""The server's settings (one frozen record) and the checks a bad setting fails on before anything loads."""

from __future__ import annotations

import ipaddress
import re
import socket
from dataclasses import dataclass
from pathlib import Path

from ..errors import UsageError

LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"})
DEFAULT_PORT = 8765
DEFAULT_QUEUE = 16
DEFAULT_MAX_UPLOAD = 1 << 30  # 1 GiB: 10 h of 64 kbit/s audio, 9 min of 16-bit 16 kHz stereo WAV is 35 MB
DEFAULT_KEEP = 24 * 3600.0
MAX_WORKERS = 16
MIN_TOKEN_LENGTH = 16  # shorter tokens are refused for a non-loopback bind (guessable)

_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*([kmgt]?)i?b?")
_SIZE_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """What ``whispdiar serve`` is started with (``whispdiar.server.create_app`` takes it too).

    ``models``: the whisper models served, loaded at start; the first is the default,
    which requests with any other model name (``whisper-1``, ...) get. ``workers``: jobs
    run at once (each shares the loaded models). ``queue_size``: jobs that may wait
    beyond those; more get 429 at once. ``keep_seconds``: how long a finished job's
    results (and its upload) stay. ``state_dir``: jobs database and files (default
    ``$WHISPDIAR_HOME/server``). ``allowed_hosts``: extra ``Host`` names accepted (``*``:
    any); ``allowed_origins``: browser origins (``https://app.example``) accepted, with
    CORS. ``resume``: restart unfinished jobs after a restart (else: interrupted).
    """

    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    token: str | None = None
    workers: int = 1
    models: tuple[str, ...] = ("base",)
    threads: int | None = None
    queue_size: int = DEFAULT_QUEUE
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD
    keep_seconds: float = DEFAULT_KEEP
    allowed_hosts: tuple[str, ...] = ()
    allowed_origins: tuple[str, ...] = ()
    state_dir: Path | None = None
    speakers_db: Path | None = None
    threshold: float | None = None
    resume: bool = True

    def check(self) -> ServerConfig:
        """Raise UsageError (one line) for a setting that cannot work or is unsafe; returns self."""
        if not self.models:
            raise UsageError("give at least one whisper model to serve (--model)")
        if not 0 <= self.port <= 65535:
            raise UsageError(f"--port must be from 0 to 65535, not {self.port}")
        if not 1 <= self.workers <= MAX_WORKERS:
            raise UsageError(f"--workers must be from 1 to {MAX_WORKERS}, not {self.workers}")
        if self.queue_size < 0:
            raise UsageError(f"--queue must be 0 or more, not {self.queue_size}")
        if self.max_upload_bytes < 1024:
            raise UsageError("--max-upload must be at least 1 KiB")
        if self.keep_seconds < 1:
            raise UsageError("--keep must be at least 1 s")
        if self.token is not None and (not self.token or any(c.isspace() or not c.isprintable() for c in self.token)):
            raise UsageError("the token must be printable characters without spaces")
        loopback = is_loopback(self.host)
        if not loopback and self.token is None:
            raise UsageError(f"--host {self.host} is reachable from other machines: set a token (--token or "
                             "WHISPDIAR_TOKEN) so that only clients that know it are served, or bind 127.0.0.1")
        if not loopback and self.token is not None and len(self.token) < MIN_TOKEN_LENGTH:
            raise UsageError(f"the token is {len(self.token)} characters long; a server reachable from other "
                             f"machines needs at least {MIN_TOKEN_LENGTH} (e.g. python3 -c 'import secrets; "
                             "print(secrets.token_urlsafe())')")
        for origin in self.allowed_origins:
            if origin != "*" and not re.fullmatch(r"https?://[^/\s]+", origin):
                raise UsageError(f"--allow-origin {origin!r}: expected scheme://host[:port], e.g. "
                                 "https://app.example.com (no path)")
        return self

    @property
    def default_model(self) -> str:
        return self.models[0]


def is_loopback(host: str) -> bool:
    """True when ``host`` (an address or a name) reaches this machine only."""
    h = host.strip().strip("[]").lower()
    if h in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(h).is_loopback
    except ValueError:
        pass
    try:  # a name: loopback only if every address it resolves to is
        infos = socket.getaddrinfo(h, None)
    except OSError:
        return False
    return bool(infos) and all(ipaddress.ip_address(i[4][0].split("%")[0]).is_loopback for i in infos)


def parse_size(text: str) -> int:
    """``500M``, ``1G``, ``1.5GiB``, ``800k``, ``1048576`` -> bytes (UsageError otherwise)."""
    m = _SIZE.fullmatch(text.strip().lower())
    if m is None:
        raise UsageError(f"--max-upload {text!r}: expected a size such as 500M or 2G")
    return int(float(m.group(1)) * _SIZE_UNITS[m.group(2)])


def parse_keep(text: str) -> float:
    """``24h``, ``7d``, ``90m``, ``3600s`` -> seconds (UsageError otherwise)."""
    from ..speakers.memory import parse_age

    try:
        return parse_age(text).total_seconds()
    except UsageError:
        raise UsageError(f"--keep {text!r}: expected a number and a unit s, m, h, d or w (e.g. 24h)") from None
