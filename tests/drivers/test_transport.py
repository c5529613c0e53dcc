"""drivers.transport.transmit: a transport's protocol-layer errors come out as the drivers' own."""

from __future__ import annotations

import pytest

from drivers.errors import CardRemovedError, DriverError, ReaderError
from drivers.transport import transmit
from iso8583.errors import CardGoneError, CardTransportError


class _Failing:
    def __init__(self, exc: Exception) -> None:
        self.exc = exc

    @property
    def atr(self) -> bytes:
        return b"\x3b\x00"

    @property
    def contactless(self) -> bool:
        return False

    def transmit(self, apdu: bytes) -> tuple[bytes, int]:
        raise self.exc

    def close(self) -> None:
        pass


@pytest.mark.parametrize(("raised", "expected"), [
    (CardGoneError("gone"), CardRemovedError),
    (CardTransportError("closed"), ReaderError),
    (CardRemovedError("pulled"), CardRemovedError),
    (ReaderError("broken"), ReaderError),
])
def test_errors_come_out_as_driver_errors(raised: Exception,
                                          expected: type[DriverError]) -> None:
    with pytest.raises(expected) as info:
        transmit(_Failing(raised), b"\x00\xa4\x04\x00\x00")
    assert isinstance(info.value, DriverError)
    assert type(info.value) is expected


def test_answers_pass_through() -> None:
    class _Ok(_Failing):
        def transmit(self, apdu: bytes) -> tuple[bytes, int]:
            return b"\x01", 0x9000

    assert transmit(_Ok(ValueError()), b"\x00") == (b"\x01", 0x9000)
