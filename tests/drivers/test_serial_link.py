"""Tests of the STX/ETX/LRC link: the sans-I/O state machine and the pyserial adapter."""

from __future__ import annotations

import os
import select
import socket
import threading
import time
from typing import Literal

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from drivers.errors import SerialLinkError
from drivers.serial_link import (
    ACK,
    EOT,
    ETX,
    MAX_PAYLOAD,
    NAK,
    STX,
    BadFrame,
    ControlReceived,
    FrameAcked,
    FrameReceived,
    FrameRetried,
    GarbageSkipped,
    LinkBusyError,
    LinkProtocol,
    LinkTimeoutError,
    PayloadError,
    SendFailed,
    SerialLink,
    UnitKind,
    encode_frame,
    lrc,
)

payloads = st.binary(min_size=1, max_size=64).map(
    lambda b: bytes(0x20 + (x % 0x5F) for x in b))


def frames_of(events: list[object]) -> list[bytes]:
    return [e.payload for e in events if isinstance(e, FrameReceived)]


def test_frame_layout_and_lrc() -> None:
    frame = encode_frame(b"EC01")
    assert frame[0] == STX
    assert frame[-2] == ETX
    expected = ETX
    for b in b"EC01":
        expected ^= b
    assert frame[-1] == expected == lrc(b"EC01")


@pytest.mark.parametrize("bad", [b"", b"A\x02B", b"\x03", bytes([0x7F]), b"x" * (MAX_PAYLOAD + 1)])
def test_payload_rule_is_enforced(bad: bytes) -> None:
    with pytest.raises(PayloadError):
        encode_frame(bad)


def test_good_frame_is_acked_and_delivered() -> None:
    rx = LinkProtocol()
    events = rx.receive_data(encode_frame(b"HELLO"), 0.0)
    assert frames_of(list(events)) == [b"HELLO"]
    assert rx.data_to_send() == bytes([ACK])


def test_bad_lrc_is_naked() -> None:
    rx = LinkProtocol()
    frame = bytearray(encode_frame(b"HELLO"))
    frame[-1] ^= 0x55
    events = rx.receive_data(bytes(frame), 0.0)
    assert [type(e) for e in events] == [BadFrame]
    assert rx.data_to_send() == bytes([NAK])


def test_garbage_between_frames_is_skipped() -> None:
    rx = LinkProtocol()
    data = b"zz\xff" + encode_frame(b"ONE") + b"\x00\x99" + encode_frame(b"TWO")
    events = rx.receive_data(data, 0.0)
    assert frames_of(list(events)) == [b"ONE", b"TWO"]
    assert sum(e.count for e in events if isinstance(e, GarbageSkipped)) == 5
    assert rx.data_to_send() == bytes([ACK, ACK])


def test_stx_inside_a_frame_resynchronises() -> None:
    rx = LinkProtocol()
    cut = encode_frame(b"LOST")[:3]
    events = rx.receive_data(cut + encode_frame(b"KEPT"), 0.0)
    assert frames_of(list(events)) == [b"KEPT"]


def test_partial_frame_is_dropped_after_inter_byte_timeout() -> None:
    rx = LinkProtocol(inter_byte_timeout=0.2)
    frame = encode_frame(b"ABC")
    rx.receive_data(frame[:-1], 0.0)  # the LRC byte was lost on the wire
    assert rx.next_deadline() == pytest.approx(0.2)
    events = rx.tick(0.5)
    assert [type(e) for e in events] == [GarbageSkipped]
    # the retransmission then parses cleanly
    assert frames_of(list(rx.receive_data(frame, 1.0))) == [b"ABC"]


def test_ack_completes_the_send() -> None:
    tx = LinkProtocol()
    tx.send(b"PING", 0.0)
    assert tx.awaiting_ack
    with pytest.raises(LinkBusyError):
        tx.send(b"AGAIN", 0.0)
    events = tx.receive_data(bytes([ACK]), 0.1)
    assert events == [FrameAcked(1)]
    assert not tx.awaiting_ack


@pytest.mark.parametrize("attempts", [1, 2, 3, 5])
def test_naks_give_exactly_max_attempts_then_eot(attempts: int) -> None:
    tx = LinkProtocol(max_attempts=attempts)
    frame = tx.send(b"PING", 0.0)
    transmissions = [frame]
    events: list[object] = []
    for i in range(attempts):
        events += tx.receive_data(bytes([NAK]), float(i))
        transmissions += [u.data for u in tx.outgoing() if u.kind is UnitKind.FRAME]
    assert transmissions == [frame] * attempts
    assert events[-1] == SendFailed(attempts, "nak")
    assert sum(isinstance(e, FrameRetried) for e in events) == attempts - 1
    assert not tx.awaiting_ack
    # EOT was the last unit; a further NAK is just a stray control byte
    assert tx.receive_data(bytes([NAK]), 99.0) == [ControlReceived(NAK)]
    assert tx.data_to_send() == b""


@given(st.lists(st.booleans(), min_size=8, max_size=8), st.integers(1, 5))
def test_any_mix_of_naks_and_timeouts_gives_max_attempts_then_eot(
        use_nak: list[bool], attempts: int) -> None:
    tx = LinkProtocol(ack_timeout=1.0, max_attempts=attempts)
    transmissions = [tx.send(b"PING", 0.0)]
    now = 0.0
    events: list[object] = []
    for nak in use_nak:
        if not tx.awaiting_ack:
            break
        now += 1.0
        events += tx.receive_data(bytes([NAK]), now - 0.5) if nak else tx.tick(now)
        units = tx.outgoing()
        transmissions += [u.data for u in units if u.kind is UnitKind.FRAME]
        eots = [u for u in units if u.kind is UnitKind.EOT]
        assert len(eots) == (0 if tx.awaiting_ack else 1)
    assert len(transmissions) == attempts
    assert isinstance(events[-1], SendFailed)
    assert events[-1].attempts == attempts


def test_ack_timeouts_retry_then_eot() -> None:
    tx = LinkProtocol(ack_timeout=0.5)
    tx.send(b"PING", 0.0)
    assert tx.tick(0.4) == []
    assert tx.tick(0.5) == [FrameRetried(2, "ack-timeout")]
    units = tx.outgoing()
    assert [(u.kind, u.attempt) for u in units] == [(UnitKind.FRAME, 2)]
    assert tx.tick(1.0) == [FrameRetried(3, "ack-timeout")]
    tx.outgoing()
    assert tx.tick(1.5) == [SendFailed(3, "ack-timeout")]
    assert tx.data_to_send() == bytes([EOT])
    assert tx.next_deadline() is None


def test_late_ack_after_retry_is_harmless() -> None:
    tx = LinkProtocol(ack_timeout=0.5)
    tx.send(b"PING", 0.0)
    tx.tick(0.6)  # resent
    assert tx.receive_data(bytes([ACK]), 0.7) == [FrameAcked(2)]
    assert tx.receive_data(bytes([ACK]), 0.8) == [ControlReceived(ACK)]


def test_spurious_eot_does_not_fail_the_frame_in_flight() -> None:
    tx = LinkProtocol()
    tx.send(b"PING", 0.0)
    assert tx.receive_data(bytes([EOT]), 0.1) == [ControlReceived(EOT)]
    assert tx.awaiting_ack
    assert tx.receive_data(bytes([ACK]), 0.2) == [FrameAcked(1)]


def test_frame_filter_naks_good_frames() -> None:
    rx = LinkProtocol(frame_filter=lambda p: p != b"NO")
    events = rx.receive_data(encode_frame(b"NO") + encode_frame(b"YES"), 0.0)
    assert [type(e) for e in events] == [BadFrame, FrameReceived]
    assert rx.data_to_send() == bytes([NAK, ACK])


@given(st.lists(payloads, min_size=1, max_size=8), st.data())
@example([b"A"], None)
def test_any_chunking_gives_the_same_frames(msgs: list[bytes], data: st.DataObject | None) -> None:
    stream = b"".join(encode_frame(m) for m in msgs)
    cuts: list[int] = []
    if data is not None:
        cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=20)))
    rx = LinkProtocol()
    events: list[object] = []
    start = 0
    for cut in [*cuts, len(stream)]:
        events += rx.receive_data(stream[start:cut], 0.0)
        start = cut
    assert frames_of(events) == msgs
    assert rx.data_to_send() == bytes([ACK]) * len(msgs)


@given(st.binary(max_size=400), st.lists(st.floats(0, 5), max_size=5))
@example(bytes([STX, ETX]), [])
@example(bytes([STX, 0x41, ETX, STX]), [])
@example(bytes([STX]) + b"A" * (MAX_PAYLOAD + 2), [])
def test_random_bytes_never_crash(blob: bytes, ticks: list[float]) -> None:
    proto = LinkProtocol()
    proto.send(b"X", 0.0)
    events = proto.receive_data(blob, 0.0)
    for t in sorted(ticks):
        events += proto.tick(t)
    allowed = (FrameReceived, BadFrame, FrameAcked, FrameRetried, SendFailed,
               ControlReceived, GarbageSkipped)
    assert all(isinstance(e, allowed) for e in events)
    for u in proto.outgoing():
        assert u.data


@given(st.lists(payloads, min_size=1, max_size=5), st.binary(max_size=30))
def test_frames_after_garbage_still_arrive(msgs: list[bytes], junk: bytes) -> None:
    # Garbage without STX/control bytes can precede frames without losing any.
    junk = bytes(b for b in junk if b not in (STX, EOT, ACK, NAK))
    rx = LinkProtocol()
    events = rx.receive_data(junk + b"".join(encode_frame(m) for m in msgs), 0.0)
    assert frames_of(list(events)) == msgs


@settings(max_examples=50)
@given(st.lists(payloads, min_size=1, max_size=5), st.sets(st.integers(0, 12), max_size=2))
def test_two_ends_deliver_everything_despite_corruption(msgs: list[bytes],
                                                        corrupt: set[int]) -> None:
    """Sender and receiver in memory; some transmissions get a broken LRC."""
    a = LinkProtocol(max_attempts=3)
    b = LinkProtocol()
    delivered: list[bytes] = []
    transmission = 0
    now = 0.0

    def wire(data: bytes) -> bytes:
        nonlocal transmission
        transmission += 1
        if transmission in corrupt:
            return data[:-1] + bytes([data[-1] ^ 0xFF])
        return data

    for m in msgs:
        to_b = wire(a.send(m, now))
        while True:
            delivered += frames_of(list(b.receive_data(to_b, now)))
            events = a.receive_data(b.data_to_send(), now)
            if any(isinstance(e, FrameAcked) for e in events):
                break
            assert not any(isinstance(e, SendFailed) for e in events)
            to_b = b"".join(wire(u.data) for u in a.outgoing())
    assert delivered == msgs


# --- the pyserial adapter -------------------------------------------------------------
def test_link_over_loop_url_talks_to_itself() -> None:
    with SerialLink.open("loop://", ack_timeout=0.3) as link:
        link.send(b"ECHO")
        assert link.receive(1.0) == b"ECHO"
        with pytest.raises(LinkTimeoutError):
            link.receive(0.05)


def test_open_bad_port_is_a_typed_error() -> None:
    with pytest.raises(SerialLinkError):
        SerialLink.open("/dev/does-not-exist-pos")


class _Peer:
    """The far end of a pty driven by a bare LinkProtocol in a thread."""

    def __init__(self, fd: int, *, naks: int = 0, answer: bytes | None = None) -> None:
        self.fd = fd
        self.naks = naks
        self.answer = answer
        self.got: list[bytes] = []
        self.stop = threading.Event()
        self.proto = LinkProtocol(frame_filter=self._filter)
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def _filter(self, payload: bytes) -> bool:
        if self.naks > 0:
            self.naks -= 1
            return False
        return True

    def run(self) -> None:
        while not self.stop.is_set():
            ready, _, _ = select.select([self.fd], [], [], 0.02)
            if not ready:
                continue
            try:
                data = os.read(self.fd, 256)
            except OSError:
                return
            events = self.proto.receive_data(data, time.monotonic())
            out = self.proto.data_to_send()
            for e in events:
                if isinstance(e, FrameReceived):
                    self.got.append(e.payload)
                    if self.answer is not None:
                        out += self.proto.send(self.answer, time.monotonic())
            os.write(self.fd, out)


def _pty_link() -> tuple[SerialLink, int]:
    master, slave = os.openpty()
    path = os.ttyname(slave)
    link = SerialLink.open(path, ack_timeout=0.2)
    os.close(slave)
    return link, master


def test_link_over_a_pty_sends_and_receives() -> None:
    link, master = _pty_link()
    peer = _Peer(master, answer=b"PONG")
    try:
        link.send(b"PING")
        assert link.receive(2.0) == b"PONG"
        assert peer.got == [b"PING"]
    finally:
        peer.stop.set()
        peer.thread.join()
        link.close()
        os.close(master)


def test_link_over_a_pty_recovers_from_two_naks_and_fails_on_three() -> None:
    link, master = _pty_link()
    peer = _Peer(master, naks=2)
    try:
        link.send(b"ONE")
        assert peer.got == [b"ONE"]
        peer.naks = 3
        with pytest.raises(SerialLinkError, match="3 attempts"):
            link.send(b"TWO")
        assert peer.got == [b"ONE"]
    finally:
        peer.stop.set()
        peer.thread.join()
        link.close()
        os.close(master)


def test_link_over_a_socket_url() -> None:
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    got: list[bytes] = []

    def serve() -> None:
        conn, _ = server.accept()
        proto = LinkProtocol()
        with conn:
            while not got:
                data = conn.recv(256)
                if not data:
                    return
                events = proto.receive_data(data, time.monotonic())
                out = proto.data_to_send()
                for e in events:
                    if isinstance(e, FrameReceived):
                        got.append(e.payload)
                        out += proto.send(b"OVER-TCP", time.monotonic())
                conn.sendall(out)
            conn.recv(1)  # the ACK of our answer

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        with SerialLink.open(f"socket://127.0.0.1:{port}", ack_timeout=0.5) as link:
            link.send(b"HELLO")
            assert link.receive(2.0) == b"OVER-TCP"
        assert got == [b"HELLO"]
    finally:
        t.join(timeout=2)
        server.close()


def test_trace_records_units_with_redaction() -> None:
    class Sink:
        def __init__(self) -> None:
            self.units: list[tuple[str, bytes]] = []

        def serial(self, direction: Literal["out", "in"], data: bytes) -> None:
            self.units.append((direction, data))

    sink = Sink()
    def mask(p: bytes) -> bytes:
        return p[:2] + b"*" * (len(p) - 2)

    with SerialLink.open("loop://", trace=sink, redact=mask) as link:
        link.send(b"PN1234")
        link.receive(1.0)
    tx = [d for direction, d in sink.units if direction == "out"]
    assert encode_frame(b"PN****") in tx
    assert all(b"1234" not in d for _, d in sink.units)
