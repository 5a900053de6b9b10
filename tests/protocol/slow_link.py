"""A slow network line for tests: a TCP proxy on loopback whose connections share one line of a given speed.

Each direction carries at most `bytes_per_second` across all of the proxy's connections together: bytes are
forwarded in small pieces, each piece waits for its turn on the line, so a small message on a second connection waits
for one piece of a large transfer, not for all of it. That is a line without a deep buffer; a real link that queues
seconds of data delays the small message by that much more.
"""

import contextlib
import socket
import threading
import time

# The pieces the line forwards. 8 KiB take 8 ms at 1 MB/s: small enough for other connections to slip in between.
PIECE_BYTES = 8192


class Line:
    """One direction of the link: a piece of n bytes occupies it for n / bytes_per_second seconds, in turn."""

    def __init__(self, bytes_per_second: float) -> None:
        self._seconds_per_byte = 1.0 / bytes_per_second
        self._lock = threading.Lock()
        self._free_at = 0.0

    def carry(self, size: int) -> None:
        """Wait until a piece of `size` bytes has crossed the line."""
        with self._lock:
            start = max(time.monotonic(), self._free_at)
            self._free_at = start + size * self._seconds_per_byte
            done_at = self._free_at
        time.sleep(max(0.0, done_at - time.monotonic()))


class SlowLink:
    """Forwards 127.0.0.1:`port` to 127.0.0.1:`target_port` through a slow uplink and a slow downlink."""

    def __init__(self, target_port: int, bytes_per_second: float) -> None:
        self._target_port = target_port
        self._uplink = Line(bytes_per_second)
        self._downlink = Line(bytes_per_second)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._sockets: list[socket.socket] = [self._listener]
        self._lock = threading.Lock()  # guards _sockets against close()
        self._closed = threading.Event()
        threading.Thread(target=self._accept, name="slow-link-accept", daemon=True).start()

    @property
    def endpoint(self) -> str:
        return f"tcp://127.0.0.1:{self.port}"

    def close(self) -> None:
        """Close the listener and every forwarded connection; idempotent."""
        with self._lock:
            self._closed.set()
            sockets, self._sockets = self._sockets, []
        for sock in sockets:
            with contextlib.suppress(OSError):  # wakes a thread blocked in accept() or recv() on it
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(("127.0.0.1", self._target_port))
            except OSError:
                client.close()
                continue
            with self._lock:
                if self._closed.is_set():
                    client.close()
                    server.close()
                    return
                self._sockets += [client, server]
            for source, target, line in ((client, server, self._uplink), (server, client, self._downlink)):
                threading.Thread(target=self._forward, args=(source, target, line), daemon=True).start()

    def _forward(self, source: socket.socket, target: socket.socket, line: Line) -> None:
        try:
            while piece := source.recv(PIECE_BYTES):
                line.carry(len(piece))
                target.sendall(piece)
        except OSError:
            pass
        with contextlib.suppress(OSError):  # pass the end of the stream on, as the far end would see it
            target.shutdown(socket.SHUT_WR)
