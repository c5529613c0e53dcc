"""Serve a virtual card to pcscd's vpcd reader driver, so pyscard sees a real card.

The vsmartcard ``vpcd`` driver inside pcscd listens on TCP (slot 0 on 35963,
slot 1 on 35964 in the Debian configuration). A virtual card "is inserted"
when it connects and "is removed" when it closes the socket. Wire format, both
ways: a 2-byte big-endian length, then the payload. A 1-byte payload from vpcd
is a control code (00 power off, 01 power on, 02 reset, 04 get ATR; only the
ATR request gets an answer); a longer one is a C-APDU answered with an R-APDU.

vpcd writes the length and the payload in two writes. With Nagle's algorithm
and delayed ACKs on our side every APDU would then wait ~40 ms, so the card's
socket sets ``TCP_NODELAY`` and re-arms ``TCP_QUICKACK`` (Linux resets it after
each ACK) before every read.

:class:`VpcdCardServer` runs the card in a daemon thread. :meth:`insert` and
:meth:`remove` may be called at any time from any thread. If pcscd goes away
(restart) while the card is inserted, the server keeps reconnecting until pcscd
is back, as a card left in a reader would be seen again.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
from typing import Protocol

from emulator.card.app import CardPoweredOff

__all__ = ["VPCD_BASE_PORT", "ServedCard", "VpcdCardServer", "vpcd_port"]

log = logging.getLogger(__name__)

VPCD_BASE_PORT = 35963
"""TCP port of vpcd slot 0 in the Debian reader.conf; slot n listens on base + n."""

_CTRL_OFF, _CTRL_ON, _CTRL_RESET, _CTRL_ATR = 0x00, 0x01, 0x02, 0x04
_RECONNECT_S = 0.05


def vpcd_port(slot: int, base: int = VPCD_BASE_PORT) -> int:
    """TCP port of a vpcd slot."""
    if slot < 0:
        raise ValueError("slot must be 0 or more")
    return base + slot


class ServedCard(Protocol):
    """What the server needs from a card (``VirtualCard`` provides it)."""

    @property
    def atr(self) -> bytes: ...

    def power_on(self, *, contactless: bool | None = None) -> bytes: ...

    def power_off(self) -> None: ...

    def process(self, apdu: bytes) -> bytes: ...


def _recv_exact(sock: socket.socket, n: int) -> bytes | None:
    buf = bytearray()
    while len(buf) < n:
        # Linux clears TCP_QUICKACK after it fires; re-arm before every read.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
        chunk = sock.recv(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return bytes(buf)


class VpcdCardServer:
    """One virtual card in one vpcd slot, served from a background thread.

    ``card`` must already have been powered once on the right interface (its
    interface is kept across vpcd power cycles). ``process`` raising
    :class:`CardPoweredOff` means "the card left the reader" (a ``remove``
    fault): the server then closes the socket, exactly like a removal.
    """

    def __init__(self, card: ServedCard, *, host: str = "127.0.0.1", port: int = VPCD_BASE_PORT,
                 connect_timeout: float = 2.0) -> None:
        self.card = card
        self.host = host
        self.port = port
        self.connect_timeout = connect_timeout
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None
        self._inserted = False
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._connected = threading.Event()
        self.apdu_count = 0
        self._thread = threading.Thread(target=self._run, name=f"vpcd-card-{port}", daemon=True)
        self._thread.start()

    # --- control (any thread) ------------------------------------------------------
    @property
    def inserted(self) -> bool:
        return self._inserted

    @property
    def connected(self) -> bool:
        """True while the card holds a connection to vpcd (pcscd sees it present)."""
        return self._connected.is_set()

    def insert(self, *, wait: float | None = None) -> bool:
        """Put the card in the slot (connect to vpcd).

        With ``wait`` seconds, block until the connection is up and return
        whether it came up; pcscd notices the card on its next poll.
        """
        self._inserted = True
        self._wake.set()
        if wait is not None:
            return self._connected.wait(wait)
        return True

    def remove(self) -> None:
        """Take the card out (close the socket); pcscd sees the slot empty."""
        self._inserted = False
        self._drop_connection()

    def stop(self) -> None:
        """Remove the card and end the thread."""
        self._stop.set()
        self.remove()
        self._wake.set()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout=5)

    def __enter__(self) -> VpcdCardServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- the thread ---------------------------------------------------------------------
    def _drop_connection(self) -> None:
        with self._lock:
            sock, self._sock = self._sock, None
        self._connected.clear()
        if sock is not None:
            with contextlib.suppress(OSError):  # already gone
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def _connect(self) -> socket.socket | None:
        try:
            sock = socket.create_connection((self.host, self.port), timeout=self.connect_timeout)
        except OSError:
            return None
        sock.settimeout(None)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self._lock:
            if not self._inserted or self._stop.is_set():
                sock.close()
                return None
            self._sock = sock
        self._connected.set()
        log.info("virtual card inserted in vpcd %s:%d", self.host, self.port)
        return sock

    def _run(self) -> None:
        while not self._stop.is_set():
            if not self._inserted:
                self._wake.wait()
                self._wake.clear()
                continue
            sock = self._connect()
            if sock is None:
                # vpcd not listening (pcscd starting or restarting): try again soon.
                self._stop.wait(_RECONNECT_S)
                continue
            # OSError: the socket was closed under us, by a removal or pcscd going away.
            with contextlib.suppress(OSError):
                self._serve(sock)
            self._drop_connection()
            self.card.power_off()
            if self._inserted and not self._stop.is_set():
                log.info("vpcd connection lost; the card stays inserted and reconnects")
                self._stop.wait(_RECONNECT_S)

    def _serve(self, sock: socket.socket) -> None:
        while True:
            header = _recv_exact(sock, 2)
            if header is None:
                return
            length = int.from_bytes(header, "big")
            payload = _recv_exact(sock, length) if length else b""
            if payload is None:
                return
            if len(payload) == 1:
                code = payload[0]
                if code == _CTRL_ATR:
                    self._send(sock, self.card.atr)
                elif code in (_CTRL_ON, _CTRL_RESET):
                    self.card.power_on()
                elif code == _CTRL_OFF:
                    self.card.power_off()
                continue
            try:
                response = self.card.process(payload)
            except CardPoweredOff:
                # A removal fault: leave the reader the way a pulled card does.
                log.info("virtual card removed itself (fault knob)")
                self._inserted = False
                return
            self.apdu_count += 1
            self._send(sock, response)

    @staticmethod
    def _send(sock: socket.socket, payload: bytes) -> None:
        sock.sendall(len(payload).to_bytes(2, "big") + payload)
