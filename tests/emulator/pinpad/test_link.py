"""Tests of the virtual pad's device-side link and its fault knobs (no I/O)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from emulator.pinpad.link import ACK, EOT, ETX, NAK, STX, DeviceLink, LinkFaults, lrc


def frame(payload: bytes) -> bytes:
    return bytes([STX]) + payload + bytes([ETX, lrc(payload)])


def test_good_frame_is_acked_and_delivered() -> None:
    link = DeviceLink(LinkFaults())
    assert link.receive(frame(b"EC01"), 0.0) == [b"EC01"]
    assert link.due(0.0) == bytes([ACK])


def test_bad_lrc_and_junk_get_a_nak() -> None:
    link = DeviceLink(LinkFaults())
    bad = bytearray(frame(b"EC01"))
    bad[-1] ^= 1
    assert link.receive(bytes(bad), 0.0) == []
    assert link.receive(bytes([STX, 0x41, 0x01]), 0.0) == []
    assert link.due(0.0) == bytes([NAK, NAK])


def test_nak_next_rejects_good_frames() -> None:
    faults = LinkFaults(nak_next=2)
    link = DeviceLink(faults)
    assert link.receive(frame(b"A") * 3, 0.0) == [b"A"]
    assert link.due(0.0) == bytes([NAK, NAK, ACK])
    assert faults.nak_next == 0


def test_late_ack_is_written_later() -> None:
    link = DeviceLink(LinkFaults(ack_delay=0.7))
    link.receive(frame(b"A"), 1.0)
    assert link.due(1.5) == b""
    assert link.next_deadline() == 1.7
    assert link.due(1.7) == bytes([ACK])


def test_bad_lrc_on_attempt_one_then_good_retry() -> None:
    link = DeviceLink(LinkFaults(bad_lrc_on={1}))
    link.send(b"EC0100", 0.0)
    first = link.due(0.0)
    assert first[:-1] == frame(b"EC0100")[:-1]
    assert first[-1] != lrc(b"EC0100")
    link.receive(bytes([NAK]), 0.1)
    assert link.due(0.1) == frame(b"EC0100")
    link.receive(bytes([ACK]), 0.2)
    assert link.idle


def test_three_failed_attempts_then_eot() -> None:
    link = DeviceLink(LinkFaults(bad_lrc_on={1, 2, 3}), ack_timeout=0.5)
    link.send(b"X", 0.0)
    link.due(0.0)
    link.receive(bytes([NAK]), 0.1)
    link.tick(0.7)  # ACK timeout counts as a failed attempt too
    sent = link.due(0.7)
    assert sent.count(bytes([STX])) == 2
    link.receive(bytes([NAK]), 0.8)
    assert link.due(0.8) == bytes([EOT])
    assert link.send_failures == 1
    assert link.frames_sent == 3


def test_drop_byte_and_spurious_eot() -> None:
    link = DeviceLink(LinkFaults(drop_byte_on={1}, spurious_eot=1))
    link.send(b"ABCDEF", 0.0)
    out = link.due(0.0)
    assert out[0] == EOT
    assert len(out) == 1 + len(frame(b"ABCDEF")) - 1


def test_answers_queue_behind_the_frame_in_flight() -> None:
    link = DeviceLink(LinkFaults())
    link.send(b"ONE", 0.0)
    link.send(b"TWO", 0.0)
    assert link.due(0.0) == frame(b"ONE")
    link.receive(bytes([ACK]), 0.1)
    assert link.due(0.1) == frame(b"TWO")


def test_silent_pad_reads_and_writes_nothing() -> None:
    link = DeviceLink(LinkFaults(silent=True))
    assert link.receive(frame(b"A"), 0.0) == []
    link.send(b"B", 0.0)
    assert link.due(10.0) == b""


@given(st.binary(max_size=300))
def test_random_bytes_never_crash(blob: bytes) -> None:
    link = DeviceLink(LinkFaults())
    link.send(b"Z", 0.0)
    for payload in link.receive(blob, 0.0):
        assert all(0x20 <= b <= 0x7E for b in payload)
    link.tick(5.0)
    link.due(5.0)
