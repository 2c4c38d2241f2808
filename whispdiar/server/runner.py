"""uvicorn for ``whispdiar serve``: the port bound first (a taken port is a one-line
error before any model loads), and SIGINT/SIGTERM as a clean stop.

On the first signal the service stops taking jobs and cancels the running ones (they
stop within seconds, recorded as queued: the next start resumes them), requests waiting
for them get 503, and uvicorn closes the connections and returns; a second signal
skips the wait for open connections. The signal is not raised again afterwards (as
uvicorn would do), so the command ends with its own one line and exit 0.
"""

from __future__ import annotations

import contextlib
import signal
import socket
import threading
from collections.abc import Callable, Iterator
from types import FrameType
from typing import Any

import uvicorn

from ..errors import UsageError

GRACEFUL_SECONDS = 10  # open connections get this long to finish after a stop


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port`` (port 0: a free one)."""
    h = host.strip("[]")
    family = socket.AF_INET6 if ":" in h else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0 if h in ("::", "") else 1)
        sock.bind((h, port))
        sock.listen(128)
    except OSError as e:
        sock.close()
        raise UsageError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    sock.set_inheritable(True)
    return sock


def url(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


class _Server(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, on_stop: Callable[[], None]):
        super().__init__(config)
        self.on_stop = on_stop
        self.stopped_by: int | None = None

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {s: signal.signal(s, self.handle_exit) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self.stopped_by is None:
            self.stopped_by = sig
            # Not in the handler itself: it may run while this thread holds the service's locks.
            threading.Thread(target=self.on_stop, name="whispdiar-stop", daemon=True).start()
        super().handle_exit(sig, frame)


def serve(app: Any, sock: socket.socket, on_stop: Callable[[], None], *, access_log: bool = False) -> int | None:
    """Serve ``app`` on ``sock`` until SIGINT/SIGTERM; the signal that stopped it."""
    config = uvicorn.Config(app, log_level="info" if access_log else "warning", access_log=access_log,
                            lifespan="on", timeout_graceful_shutdown=GRACEFUL_SECONDS, server_header=False)
    server = _Server(config, on_stop)
    server.run(sockets=[sock])
    return server.stopped_by
