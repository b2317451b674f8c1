"""A small TCP proxy in front of redis-server that makes the faults real networks make.

Modes (switch at any time with ``proxy.mode = ...``):

- ``pass``: forward both ways.
- ``delay``: hold every reply ``delay_s`` before forwarding it (past the client's timeout).
- ``drop_reply``: forward the command, swallow its reply, then close the connection: the
  command ran on the server but the client never hears it.
- ``reset``: forward the command, send back only the first byte of the reply, then close.
- ``blackhole``: accept and read, forward nothing, answer nothing.

With ``once`` set, the proxy goes back to ``pass`` after the first reply it swallowed.

``faults`` counts the replies that a fault swallowed, so a test can wait on it.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from types import TracebackType

from prism_limiter.engine._devserver import free_port


class FaultProxy:
    def __init__(self, target_port: int, delay_s: float = 2.0) -> None:
        self.target_port = target_port
        self.port = free_port()
        self.mode = "pass"
        self.once = False  # back to "pass" after the first swallowed reply
        self.delay_s = delay_s
        self.faults = 0
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", self.port))
        self._listener.settimeout(0.2)
        self._threads: list[threading.Thread] = []
        self._sockets: list[socket.socket] = []

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def __enter__(self) -> FaultProxy:
        thread = threading.Thread(target=self._accept, daemon=True)
        thread.start()
        self._threads.append(thread)
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._closing.set()
        for sock in [self._listener, *self._sockets]:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)  # wakes a thread blocked in recv()
            with contextlib.suppress(OSError):
                sock.close()
        for thread in self._threads:
            thread.join(timeout=5)

    def _count_fault(self) -> None:
        with self._lock:
            self.faults += 1
            if self.once:
                self.mode = "pass"

    def _accept(self) -> None:
        while not self._closing.is_set():
            try:
                client, _ = self._listener.accept()
            except (TimeoutError, OSError):
                continue
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            self._sockets += [client, upstream]
            for args in ((client, upstream, False), (upstream, client, True)):
                thread = threading.Thread(target=self._pump, args=args, daemon=True)
                thread.start()
                self._threads.append(thread)

    def _pump(self, src: socket.socket, dst: socket.socket, replies: bool) -> None:
        try:
            while not self._closing.is_set():
                data = src.recv(65536)
                if not data:
                    break
                mode = self.mode
                if mode == "blackhole":
                    continue
                if not replies:
                    dst.sendall(data)
                    continue
                if mode == "delay":
                    time.sleep(self.delay_s)
                elif mode == "drop_reply":
                    self._count_fault()
                    break
                elif mode == "reset":
                    dst.sendall(data[:1])
                    self._count_fault()
                    break
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
