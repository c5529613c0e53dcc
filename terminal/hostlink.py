"""The terminal's link to the acquirer host: one request out, its answer back.

:class:`TcpHostLink` is a blocking adapter (call it from a thread worker or
``asyncio.to_thread``) over one TCP connection, using the dialect's framing.
It never decides what a missing answer means; it raises
:class:`HostTimeoutError` and the transaction flow reverses, resends or asks.

With a trace (``trace=`` an :class:`IsoTraceFile`, or the ``POS_ISO_TRACE``
environment variable naming a file to append to) every frame sent and received
is recorded, masked, in the format of :mod:`iso8583.trace`, before it is sent
and as soon as it has arrived (an answer that does not decode is recorded too).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from datetime import datetime
from os import PathLike
from pathlib import Path

from iso8583.dialect import Dialect, Frame
from iso8583.errors import Iso8583Error
from iso8583.message import Message
from iso8583.trace import HOST_TO_TERMINAL, TERMINAL_TO_HOST, TraceRecorder
from terminal.core.crashpoints import crash_point
from terminal.core.errors import ConfigError, HostLinkError, HostTimeoutError

log = logging.getLogger(__name__)

TRACE_ENV = "POS_ISO_TRACE"
"""Environment variable: a file every host link of the process appends its ISO trace to."""


class IsoTraceFile:
    """The terminal's ISO 8583 trace file: a :class:`TraceRecorder` writing to ``path``.

    ``append=False`` starts the file afresh (one conversation per file, as the
    demo records it); the default appends, so several ``pos-terminal`` runs can
    leave one conversation behind. Each line is appended with its own open and
    close (a few lines per transaction), so nothing stays open between
    transactions and several processes may share one file. Safe to share
    between threads.
    """

    def __init__(self, path: str | PathLike[str], dialect: Dialect, *,
                 append: bool = True) -> None:
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a" if append else "w", encoding="utf-8"):
                pass
        except OSError as exc:
            raise ConfigError(f"cannot write the ISO trace {self.path}: "
                              f"{exc.strerror or exc}") from None
        self._lock = threading.Lock()
        self._closed = False
        with self._lock:
            self.recorder = TraceRecorder(self._write, dialect, by="terminal",
                                          monotonic=time.monotonic, wall=datetime.now)

    def _write(self, line: str) -> None:
        with self.path.open("a", encoding="utf-8") as stream:
            stream.write(line)

    def record(self, direction: str, payload: bytes) -> None:
        """Record one frame payload (no length prefix); never raises."""
        with self._lock:
            if not self._closed:
                self.recorder.record(direction, payload)
                if self.recorder.failed is not None:
                    log.warning("ISO trace %s stopped: %s", self.path, self.recorder.failed)
                    self._closed = True

    def close(self) -> None:
        """Record nothing more."""
        with self._lock:
            self._closed = True

    @classmethod
    def from_env(cls, dialect: Dialect) -> IsoTraceFile | None:
        """The trace ``POS_ISO_TRACE`` names (appended to), or None when it is unset."""
        path = os.environ.get(TRACE_ENV)
        return cls(path, dialect) if path else None


class TcpHostLink:
    """A connection to ``host:port`` that exchanges one message at a time."""

    def __init__(self, dialect: Dialect, host: str, port: int, *, timeout: float = 10.0,
                 tpdu: bytes | None = None, trace: IsoTraceFile | None = None) -> None:
        self.dialect = dialect
        self.trace = trace if trace is not None else IsoTraceFile.from_env(dialect)
        self.address = (host, port)
        self.timeout = timeout
        self.tpdu = tpdu
        self._sock: socket.socket | None = None
        self._decoder = dialect.frame_decoder()

    def _connect(self) -> socket.socket:
        if self._sock is None:
            try:
                sock = socket.create_connection(self.address, timeout=self.timeout)
            except OSError as exc:
                raise HostLinkError(f"cannot connect to {self.address[0]}:{self.address[1]}: "
                                    f"{exc.strerror or exc}") from None
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._sock = sock
            self._decoder = self.dialect.frame_decoder()
        return self._sock

    def open(self) -> None:
        """Connect now (if not connected): an unreachable host is known before anything is
        written to the journal. Raises :class:`HostLinkError`."""
        self._connect()

    def close(self) -> None:
        """Close the connection (the trace stays open: the link may connect again)."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def exchange(self, request: Message) -> Frame:
        """Send ``request``; return the answer frame, or raise a HostLinkError."""
        frame = self.dialect.pack(request, tpdu=self.tpdu if self.dialect.spec.tpdu else None)
        sock = self._connect()
        if self.trace is not None:
            self.trace.record(TERMINAL_TO_HOST, frame[self.dialect.spec.length_bytes:])
        deadline = time.monotonic() + self.timeout
        try:
            sock.sendall(frame)
            crash_point("after_send")
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError
                sock.settimeout(remaining)
                chunk = sock.recv(4096)
                if not chunk:
                    self.close()
                    raise HostTimeoutError("the host closed the connection without an answer")
                payloads = self._decoder.feed(chunk)
                if payloads:
                    if self.trace is not None:
                        self.trace.record(HOST_TO_TERMINAL, payloads[0])
                    return self.dialect.unpack_payload(payloads[0])
        except TimeoutError:
            self.close()
            raise HostTimeoutError(f"no answer within {self.timeout:g} s") from None
        except Iso8583Error as exc:
            self.close()
            raise HostTimeoutError(f"unreadable answer ({exc}); treated as no answer") from None
        except OSError as exc:
            self.close()
            raise HostTimeoutError(f"connection lost: {exc.strerror or exc}") from None

    def __enter__(self) -> TcpHostLink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
