"""A pseudo-terminal pair for virtual serial devices: the device serves the master side.

The client (the terminal's driver, pyserial) opens :attr:`PtyPair.path`, the
slave side, as if it were ``/dev/ttyUSB0``. The slave is put in raw mode at
once (a fresh pty echoes and cooks lines), and the device keeps its own slave
descriptor open so the master never reads EIO while clients come and go.
"""

from __future__ import annotations

import contextlib
import os
import tty


class PtyPair:
    """One pty: ``master_fd`` for the virtual device, ``path`` for the client."""

    def __init__(self) -> None:
        self.master_fd, self._slave_fd = os.openpty()
        tty.setraw(self._slave_fd)
        os.set_blocking(self.master_fd, False)
        self.path = os.ttyname(self._slave_fd)
        self._closed = False

    def write(self, data: bytes) -> None:
        """Write all of ``data`` to the client (waits briefly when the pty buffer is full)."""
        view = memoryview(data)
        while view:
            try:
                n = os.write(self.master_fd, view)
            except BlockingIOError:
                os.sched_yield()
                continue
            view = view[n:]

    def read(self, size: int = 4096) -> bytes:
        """Bytes the client wrote, or ``b""`` when there are none right now."""
        try:
            return os.read(self.master_fd, size)
        except (BlockingIOError, InterruptedError):
            return b""

    def close(self) -> None:
        """Close both sides (idempotent)."""
        if self._closed:
            return
        self._closed = True
        for fd in (self.master_fd, self._slave_fd):
            with contextlib.suppress(OSError):
                os.close(fd)
