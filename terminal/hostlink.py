"""The terminal's link to the acquirer host: one request out, its answer back.

:class:`TcpHostLink` is a blocking adapter (call it from a thread worker or
``asyncio.to_thread``) over one TCP connection, using the dialect's framing.
It never decides what a missing answer means; it raises
:class:`HostTimeoutError` and the transaction flow reverses, resends or asks.
"""

from __future__ import annotations

import socket
import time

from iso8583.dialect import Dialect, Frame
from iso8583.errors import Iso8583Error
from iso8583.message import Message
from terminal.core.crashpoints import crash_point
from terminal.core.errors import HostLinkError, HostTimeoutError


class TcpHostLink:
    """A connection to ``host:port`` that exchanges one message at a time."""

    def __init__(self, dialect: Dialect, host: str, port: int, *, timeout: float = 10.0,
                 tpdu: bytes | None = None) -> None:
        self.dialect = dialect
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
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def exchange(self, request: Message) -> Frame:
        """Send ``request``; return the answer frame, or raise a HostLinkError."""
        frame = self.dialect.pack(request, tpdu=self.tpdu if self.dialect.spec.tpdu else None)
        sock = self._connect()
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
