"""A TCP proxy on loopback that injects network faults between a client and a server:
the server down (connections refused, open ones cut), connections reset, or every
chunk delayed. The operator reaches S3 through it in the fault suite."""

from __future__ import annotations

import contextlib
import enum
import re
import socket
import struct
import threading
import time
from types import TracebackType

from tunegate_cluster.control_plane import LOOPBACK


class Fault(enum.Enum):
    NONE = "none"
    DOWN = "down"  # nothing listens: refused, as a stopped server
    RESET = "reset"  # accepted, then reset (RST), as an overloaded load balancer
    SLOW = "slow"  # every chunk delayed, as a congested link


class FaultProxy:
    """Forwards 127.0.0.1:port to `target`; `inject` changes the fault at any moment."""

    def __init__(self, target_host: str, target_port: int, *, slow_seconds: float = 2.0) -> None:
        self.target = (target_host, target_port)
        self.slow_seconds = slow_seconds
        self.fault = Fault.NONE
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._closed = threading.Event()
        self._listener: socket.socket | None = None
        self._armed: tuple[re.Pattern[bytes], Fault, threading.Event] | None = None
        self.port: int = 0
        self._listen_on(0)
        assert self._listener is not None
        self.port = int(self._listener.getsockname()[1])
        self._acceptor = threading.Thread(target=self._accept_loop, daemon=True)
        self._acceptor.start()

    @property
    def endpoint(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def inject(self, fault: Fault) -> None:
        with self._lock:
            self.fault = fault
            # The listener goes before the open connections are cut: a client that sees
            # its connection cut and reconnects at once must find nothing listening.
            if fault is Fault.DOWN and self._listener is not None:
                _stop_listening(self._listener)
                self._listener = None
            if fault in (Fault.DOWN, Fault.RESET):
                self._cut_open_connections()
            if fault is not Fault.DOWN and self._listener is None:
                self._listen_on(self.port)

    def arm(self, request: re.Pattern[bytes], fault: Fault, tripped: threading.Event) -> None:
        """Inject `fault` the moment a client sends bytes matching `request` (an HTTP
        request line, say); that request is cut, not forwarded. Fires once."""
        with self._lock:
            self._armed = (request, fault, tripped)

    def close(self) -> None:
        self._closed.set()
        with self._lock:
            self._cut_open_connections()
            if self._listener is not None:
                _stop_listening(self._listener)
                self._listener = None

    def __enter__(self) -> FaultProxy:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- internals ------------------------------------------------------------------

    def _listen_on(self, port: int) -> None:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((LOOPBACK, port))
        listener.listen(128)
        listener.settimeout(0.2)
        self._listener = listener

    def _cut_open_connections(self) -> None:
        for sock in list(self._open):
            _reset(sock)
        self._open.clear()

    def _accept_loop(self) -> None:
        while not self._closed.is_set():
            listener = self._listener
            if listener is None:
                time.sleep(0.05)
                continue
            try:
                client, _ = listener.accept()
            except (TimeoutError, OSError):
                continue  # a timeout, or the listener closed by `inject`
            with self._lock:
                fault = self.fault
            if fault is Fault.RESET:
                _reset(client)
                continue
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        try:
            server = socket.create_connection(self.target, timeout=10)
        except OSError:
            _reset(client)
            return
        with self._lock:
            # accepted just before a fault came in: it must not get through
            if self.fault in (Fault.DOWN, Fault.RESET):
                for sock in (client, server):
                    _reset(sock)
                return
            self._open.update((client, server))
        pumps = [
            threading.Thread(target=self._pump, args=(client, server, True), daemon=True),
            threading.Thread(target=self._pump, args=(server, client, False), daemon=True),
        ]
        for pump in pumps:
            pump.start()
        for pump in pumps:
            pump.join()
        with self._lock:
            self._open.difference_update((client, server))
        for sock in (client, server):
            with contextlib.suppress(OSError):
                sock.close()

    def _pump(self, source: socket.socket, sink: socket.socket, from_client: bool) -> None:
        try:
            while chunk := source.recv(65536):
                if from_client and self._trips(chunk):
                    return
                if self.fault is Fault.SLOW:
                    time.sleep(self.slow_seconds)
                sink.sendall(chunk)
        except OSError:
            pass
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)

    def _trips(self, chunk: bytes) -> bool:
        with self._lock:
            armed = self._armed
            if armed is None or not armed[0].search(chunk):
                return False
            self._armed = None
        armed[2].set()  # before the cut, so the client that sees the cut also sees this
        self.inject(armed[1])
        return True


def _reset(sock: socket.socket) -> None:
    """Close with an RST (linger 0), as a crashed peer's kernel answers. Shutting the
    read side first wakes a pump blocked in recv (close alone does not)."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RD)
    with contextlib.suppress(OSError):
        sock.close()


def _stop_listening(listener: socket.socket) -> None:
    """Close a listener another thread may be blocked on in accept: close alone keeps it
    listening until that accept returns; shutdown ends it at once."""
    with contextlib.suppress(OSError):
        listener.shutdown(socket.SHUT_RDWR)
    listener.close()
