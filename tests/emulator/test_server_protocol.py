"""The per-connection protocol with an in-memory transport: no sockets at all.

Checks ordering behind commits and delays, back-pressure on a pipelining terminal,
and that a reply is never written before its commit completes.
"""

from __future__ import annotations

import asyncio

from emulator.host.faults import FaultPlan
from emulator.server import MAX_PIPELINE, HostServer, ServerConfig, _HostConnection, frame_reply
from tests.emulator.test_server import ListSession, ListStore, StandInHost, encode


class FakeTransport(asyncio.Transport):
    """Collects what the server writes; records pause/resume/close calls."""

    def __init__(self) -> None:
        super().__init__()
        self.written: list[bytes] = []
        self.reading = True
        self.closed = False
        self.aborted = False
        self.protocol: _HostConnection | None = None

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written.append(bytes(data))

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def is_reading(self) -> bool:
        return self.reading

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        if not self.closed and self.protocol is not None:
            self.closed = True
            self.protocol.connection_lost(None)

    def abort(self) -> None:
        self.aborted = True
        self.close()

    def stans(self) -> list[str]:
        out = []
        for chunk in self.written:
            text = chunk[2:].decode()
            out.append(next(p[3:] for p in text.split(" ") if p.startswith("11=")))
        return out


def make(spec: str | None = None) -> tuple[HostServer[ListSession], ListStore, _HostConnection,
                                           FakeTransport, asyncio.Task[None]]:
    host, store = StandInHost(), ListStore()
    server: HostServer[ListSession] = HostServer(
        host, store, host.dialect, config=ServerConfig(idle_timeout=5, read_timeout=5),
        faults=FaultPlan.from_specs([spec]) if spec else None, refuse=host.refuse)
    committer = asyncio.create_task(server._committer.run())
    conn = _HostConnection(server)
    transport = FakeTransport()
    transport.protocol = conn
    conn.connection_made(transport)
    return server, store, conn, transport, committer


def sale(stan: int, amount: int = 1) -> bytes:
    return frame_reply(encode("0200", f4=str(amount), f11=f"{stan:06d}"))


async def settle(rounds: int = 20) -> None:
    for _ in range(rounds):
        await asyncio.sleep(0.01)


async def test_replies_wait_for_the_commit_and_keep_request_order() -> None:
    server, store, conn, transport, committer = make()
    store.gate.clear()
    conn.data_received(b"".join(sale(i) for i in range(1, 6)))
    await settle()
    assert transport.written == []  # nothing before the commit
    store.gate.set()
    await settle()
    assert transport.stans() == [f"{i:06d}" for i in range(1, 6)]
    assert store.booked == [f"sale {i:06d} 1" for i in range(1, 6)]
    server._committer.close()
    await committer


async def test_a_delayed_reply_holds_back_the_next_ones() -> None:
    server, _, conn, transport, committer = make("delay=1000@amount=7")
    conn.data_received(sale(1, 7) + sale(2) + sale(3))
    await settle(5)
    assert transport.written == []  # 000002 and 000003 are committed but must wait
    await asyncio.sleep(1.2)
    assert transport.stans() == ["000001", "000002", "000003"]
    server._committer.close()
    await committer


async def test_a_terminal_that_pipelines_too_much_is_paused_then_resumed() -> None:
    server, store, conn, transport, committer = make()
    store.gate.clear()
    conn.data_received(b"".join(sale(i) for i in range(MAX_PIPELINE + 5)))
    assert not transport.is_reading()
    store.gate.set()
    await settle()
    assert transport.is_reading()
    assert len(transport.written) == MAX_PIPELINE + 5
    server._committer.close()
    await committer


async def test_framing_error_closes_after_the_replies_owed() -> None:
    server, store, conn, transport, committer = make()
    store.gate.clear()
    conn.data_received(sale(1))
    conn.data_received(b"\xff\xff")  # an over-long length prefix
    assert not transport.is_closing()  # 000001 is still owed its answer
    store.gate.set()
    await settle()
    assert transport.stans() == ["000001"]
    assert transport.is_closing()
    assert server.stats.framing_errors == 1
    server._committer.close()
    await committer


async def test_commit_failure_aborts_without_answering() -> None:
    server, store, conn, transport, committer = make()
    store.fail = True
    conn.data_received(sale(1))
    await settle()
    assert transport.written == []
    assert transport.aborted
    assert server.fatal is not None
    await committer
    await server.serve_until_stopped()
