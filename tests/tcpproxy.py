"""A TCP proxy on loopback for cutting a process off from PostgreSQL without touching either.

`Proxy(target_port)` forwards 127.0.0.1:`port` to 127.0.0.1:`target_port`, a thread a direction per
connection. `hang()` stops forwarding but keeps every socket open (packets are acknowledged and dropped,
as a broken network or a stopped server would leave them: nothing fails until a timeout says so);
`cut()` closes every connection and refuses new ones (a lost route: errors at once); `heal()` ends either.
"""

from __future__ import annotations

import socket
import threading
import time


class Proxy:
    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._pairs: list[tuple[socket.socket, socket.socket]] = []
        self._hung = threading.Event()
        self._cut = False
        self._closed = False
        threading.Thread(target=self._accept, daemon=True, name="tcpproxy").start()

    def dsn(self, dsn: str) -> str:
        """`dsn` (a postgresql:// URL on 127.0.0.1:target_port) through this proxy."""
        return dsn.replace(f"127.0.0.1:{self.target_port}", f"127.0.0.1:{self.port}")

    def hang(self) -> None:
        self._hung.set()

    def cut(self) -> None:
        with self._lock:
            self._cut = True
            pairs, self._pairs = self._pairs, []
        for a, b in pairs:
            _close(a)
            _close(b)

    def heal(self) -> None:
        with self._lock:
            self._cut = False
        self._hung.clear()

    def close(self) -> None:
        self._closed = True
        self.cut()
        _close(self._listener)

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                refused = self._cut
            if refused:
                _close(client)
                continue
            try:
                server = socket.create_connection(("127.0.0.1", self.target_port))
            except OSError:
                _close(client)
                continue
            with self._lock:
                self._pairs.append((client, server))
            for src, dst in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                while self._hung.is_set():  # received (so acknowledged) and held back: a black hole
                    time.sleep(0.01)
                    if self._cut or self._closed:
                        return
                dst.sendall(data)
        except OSError:
            pass
        finally:
            _close(src)
            _close(dst)


def _close(s: socket.socket) -> None:
    try:
        s.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    s.close()
