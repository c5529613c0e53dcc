"""TcpHostLink against real sockets on 127.0.0.1: answers, silence, hang-ups, garbage."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator

import pytest

from iso8583.dialects import get_dialect
from iso8583.message import Message
from terminal.errors import HostLinkError, HostTimeoutError
from terminal.hostlink import TcpHostLink

CUP = get_dialect("cup")


def _serve(behaviour: Callable[[socket.socket], None]) -> Iterator[int]:
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]

    def run() -> None:
        conn, _ = server.accept()
        with conn:
            behaviour(conn)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    yield port
    server.close()
    thread.join(timeout=2)


def _request() -> Message:
    return CUP.message("0820", {11: 1, 41: "10000001", 42: "123456789012345",
                                60: "00000001301"})


@pytest.fixture
def echo_port() -> Iterator[int]:
    def answer(conn: socket.socket) -> None:
        decoder = CUP.frame_decoder()
        while True:
            data = conn.recv(4096)
            if not data:
                return
            for payload in decoder.feed(data):
                frame = CUP.unpack_payload(payload)
                reply = frame.message.copy()
                reply.mti = "0830"
                reply[39] = "00"
                assert frame.tpdu is not None
                # answer in two pieces to exercise reassembly
                wire = CUP.pack(reply, tpdu=CUP.reply_tpdu(frame.tpdu))
                conn.sendall(wire[:3])
                conn.sendall(wire[3:])
    yield from _serve(answer)


def test_exchange_returns_the_answer(echo_port: int) -> None:
    with TcpHostLink(CUP, "127.0.0.1", echo_port, timeout=2,
                     tpdu=bytes.fromhex("6000030000")) as link:
        frame = link.exchange(_request())
        assert frame.message.mti == "0830"
        assert frame.tpdu == bytes.fromhex("6000000003")
        assert link.exchange(_request()).message.response_code == "00"


@pytest.mark.parametrize("behaviour", ["silent", "hang_up", "garbage"])
def test_no_usable_answer_is_a_timeout(behaviour: str) -> None:
    def misbehave(conn: socket.socket) -> None:
        conn.recv(4096)
        if behaviour == "silent":
            conn.recv(4096)  # until the client gives up
        elif behaviour == "garbage":
            conn.sendall(b"\x00\x05\x61\x00\x00\x00\x00")
            conn.recv(4096)

    for port in _serve(misbehave):
        link = TcpHostLink(CUP, "127.0.0.1", port, timeout=0.5)
        with pytest.raises(HostTimeoutError):
            link.exchange(_request())
        link.close()


def test_unreachable_host_is_a_link_error() -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    with pytest.raises(HostLinkError) as err:
        TcpHostLink(CUP, "127.0.0.1", port, timeout=0.5).exchange(_request())
    assert err.value.cashier_en
