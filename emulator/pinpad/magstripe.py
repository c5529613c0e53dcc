"""A virtual serial magstripe reader on a pty: swipe a test card and the line comes out.

The line format is the one :mod:`drivers.magstripe` documents (track 1 and
track 2 with sentinels, CR at the end). ``damaged=True`` sends the reader's
``E`` marker for track 2, as a dirty stripe would.
"""

from __future__ import annotations

from emulator.catalogue import TestCard
from emulator.pty_pair import PtyPair


def swipe_line(card: TestCard, *, damaged: bool = False, name: str = "TEST/CARDHOLDER") -> bytes:
    """The bytes a reader sends when ``card`` is swiped."""
    disc = "0000000000"
    track1 = f"%B{card.pan}^{name}^{card.expiry}{card.service_code}{disc}?"
    track2 = ";E?" if damaged else f";{card.pan}={card.expiry}{card.service_code}{disc}?"
    return (track1 + track2 + "\r").encode("ascii")


class VirtualMagstripeReader:
    """Serve swipes on a pty; open :attr:`path` with ``MagstripeReader.open``."""

    def __init__(self) -> None:
        self._pty = PtyPair()
        self.path = self._pty.path

    def swipe(self, card: TestCard, *, damaged: bool = False) -> None:
        self._pty.write(swipe_line(card, damaged=damaged))

    def send_raw(self, data: bytes) -> None:
        """Write anything (noise, half lines) for robustness tests."""
        self._pty.write(data)

    def close(self) -> None:
        self._pty.close()

    def __enter__(self) -> VirtualMagstripeReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
