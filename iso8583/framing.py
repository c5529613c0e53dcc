"""Sans-I/O framing: a length prefix before every message on a byte stream.

:class:`FrameDecoder` takes whatever chunks the transport delivers and hands
back whole payloads. It never buffers more than one frame's worth beyond what
the caller gave it, and it rejects a declared length above the configured
maximum as soon as the prefix is seen, before reading the body.
"""

from __future__ import annotations

from iso8583.errors import EncodeError, FramingError


def encode_length(payload: bytes, length_bytes: int = 2) -> bytes:
    """Prefix ``payload`` with its length, binary big-endian, excluding itself."""
    limit = 1 << (8 * length_bytes)
    if len(payload) >= limit:
        raise EncodeError(f"payload of {len(payload)} bytes does not fit a "
                          f"{length_bytes}-byte length prefix", field="length")
    return len(payload).to_bytes(length_bytes, "big") + payload


class FrameDecoder:
    """Reassembles length-prefixed frames from arbitrary chunks.

    >>> dec = FrameDecoder()
    >>> dec.feed(b"\\x00\\x03ab")
    []
    >>> dec.feed(b"c\\x00")
    [b'abc']
    """

    def __init__(self, *, length_bytes: int = 2, max_length: int = 4096,
                 allow_empty: bool = False) -> None:
        if length_bytes not in (1, 2, 4):
            raise ValueError("length_bytes must be 1, 2 or 4")
        self._size = length_bytes
        self._max = max_length
        self._allow_empty = allow_empty
        self._buffer = bytearray()
        self._offset = 0  # stream offset of the buffer start, for error positions
        self._broken: FramingError | None = None

    @property
    def buffered(self) -> int:
        """Bytes held waiting for the rest of a frame."""
        return len(self._buffer)

    @property
    def broken(self) -> bool:
        return self._broken is not None

    def feed(self, data: bytes) -> list[bytes]:
        """Add received bytes; return every payload now complete, in order.

        Raises :class:`FramingError` for a length over the maximum (or zero,
        unless allowed); after that the stream cannot be trusted and every
        later call raises the same error.
        """
        if self._broken is not None:
            raise self._broken
        buffer = self._buffer
        buffer += data
        frames: list[bytes] = []
        size = self._size
        while len(buffer) >= size:
            declared = int.from_bytes(buffer[:size], "big")
            if declared > self._max or (declared == 0 and not self._allow_empty):
                self._broken = FramingError(
                    f"declared frame length {declared} outside 1..{self._max}",
                    field="length", pos=self._offset)
                buffer.clear()
                raise self._broken
            end = size + declared
            if len(buffer) < end:
                break
            frames.append(bytes(buffer[size:end]))
            del buffer[:end]
            self._offset += end
        return frames

    def eof(self) -> None:
        """The stream ended: raise :class:`FramingError` if a frame was cut short."""
        if self._buffer:
            raise FramingError(f"stream ended inside a frame ({len(self._buffer)} bytes held)",
                               field="length", pos=self._offset)
