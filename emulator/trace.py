"""The host's ISO 8583 trace file: every frame the server receives or sends, masked.

A thin file adapter over :class:`iso8583.trace.TraceRecorder` (the line format,
the masking and the tools that read a trace live there). The server calls it
with each complete request payload as it is taken and each reply payload as it
is written (a reply a fault drops is not written, so it is not in the trace).
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from datetime import datetime
from os import PathLike
from pathlib import Path
from typing import IO, Any

from emulator.host.errors import HostError
from iso8583.dialect import Dialect
from iso8583.trace import TraceRecorder

log = logging.getLogger(__name__)


class HostTraceFile:
    """Records frames to ``path`` (appended; ``append=False`` starts it afresh).

    Called from the server's event loop only. Each line goes to the file in one
    unbuffered write(2) on an O_APPEND descriptor, so the workers of one host
    (``serve --workers N --trace FILE``, ``worker`` their index, named in each
    worker's meta line) can share the file: their lines interleave whole, in the
    order they were written.
    """

    def __init__(self, path: str | PathLike[str], dialect: Dialect, *,
                 append: bool = True, worker: int | None = None) -> None:
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._stream: IO[bytes] = self.path.open("ab" if append else "wb", buffering=0)
        except OSError as exc:
            raise HostError(f"cannot write the ISO trace {self.path}: "
                            f"{exc.strerror or exc}") from None
        meta: dict[str, Any] = {} if worker is None else {"worker": worker,
                                                          "pid": os.getpid()}
        self.recorder = TraceRecorder(self._write, dialect, by="host",
                                      monotonic=time.monotonic, wall=datetime.now, meta=meta)

    def _write(self, line: str) -> None:
        data = line.encode()
        if self._stream.write(data) != len(data):  # a regular file: only when it is full
            raise OSError("the trace's line was cut short (disk full?)")

    def __call__(self, direction: str, payload: bytes) -> None:
        """Record one frame payload (no length prefix); never raises."""
        if not self._stream.closed:
            self.recorder.record(direction, payload)
            if self.recorder.failed is not None:
                log.warning("ISO trace %s stopped: %s", self.path, self.recorder.failed)
                with contextlib.suppress(OSError):
                    self._stream.close()

    def close(self) -> None:
        self._stream.close()
