"""Virtual receipt printer on a pty: decodes ESC/POS, answers status, can run out of paper.

``paper_out`` is the knob: while it is set the printer answers ``DLE EOT``
queries with the paper-end bits and the offline bit, and throws print data
away as a real printer with no paper would (the bytes are counted in
:attr:`VirtualPrinter.lost_bytes`). Receipts land in :attr:`receipts`, one
string per cut.
"""

from __future__ import annotations

import contextlib
import select
import threading
import time

from emulator.printer.escpos import EscPosDecoder, render
from emulator.pty_pair import PtyPair

ONLINE = 0x12  # fixed bits 1 and 4 of every ESC/POS status byte
OFFLINE = 0x08
PAPER_END = 0x60
PAPER_END_STOP = 0x20


def status_byte(n: int, *, paper_out: bool) -> int:
    """The answer to ``DLE EOT n`` for a printer with or without paper."""
    if n == 1:
        return ONLINE | (OFFLINE if paper_out else 0)
    if n == 2:
        return ONLINE | (PAPER_END_STOP if paper_out else 0)
    if n == 4:
        return ONLINE | (PAPER_END if paper_out else 0)
    return ONLINE


class VirtualPrinter:
    """Serve a virtual ESC/POS printer on :attr:`path` until :meth:`stop`."""

    def __init__(self, *, width: int = 32) -> None:
        self.decoder = EscPosDecoder(width=width)
        self.paper_out = False
        self.lost_bytes = 0
        self._paperless = EscPosDecoder(width=width)  # tracks commands while printing nothing
        self._pty = PtyPair()
        self.path = self._pty.path
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="virtual-printer", daemon=True)

    @property
    def receipts(self) -> list[str]:
        with self._lock:
            return list(self.decoder.receipts)

    def wait_for_receipts(self, count: int = 1, timeout: float = 2.0) -> list[str]:
        """Wait until ``count`` receipts have been cut (the pty delivers asynchronously)."""
        deadline = time.monotonic() + timeout
        while True:
            receipts = self.receipts
            if len(receipts) >= count or time.monotonic() >= deadline:
                return receipts
            time.sleep(0.005)

    def current(self) -> str:
        with self._lock:
            return self.decoder.current()

    def start(self) -> VirtualPrinter:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=2.0)
        self._pty.close()

    def __enter__(self) -> VirtualPrinter:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def feed(self, data: bytes) -> bytes:
        """Process bytes from the host; return the status answers to send back."""
        with self._lock:
            if self.paper_out:
                self.lost_bytes += len(data)
                queries = self._paperless.feed(data)
            else:
                queries = self.decoder.feed(data)
            return bytes(status_byte(n, paper_out=self.paper_out) for n in queries)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                ready, _, _ = select.select([self._pty.master_fd], [], [], 0.1)
            except (OSError, ValueError):
                return
            if not ready:
                continue
            data = self._pty.read()
            if not data:
                continue
            answer = self.feed(data)
            if answer:
                with contextlib.suppress(OSError):
                    self._pty.write(answer)


def render_file(path: str, *, width: int = 32) -> str:
    """The text an ESC/POS job saved in a file would print."""
    with open(path, "rb") as f:
        return render(f.read(), width=width)
