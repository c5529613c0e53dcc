"""The asyncio server as an adapter: framing, ordering, group commit, timeouts, faults.

A stand-in host core and a stand-in dialect (plain-text messages inside the real
2-byte framing) keep these tests about the adapter; tests/emulator/test_server_host.py
runs the real host core.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime

import pytest

from emulator.host.faults import FaultPlan, bad_mac, garble
from emulator.server import (
    READ_BUFFER,
    GroupCommitter,
    HostServer,
    ServerConfig,
    ServerStats,
    frame_reply,
)
from iso8583.errors import DecodeError
from iso8583.framing import FrameDecoder

PAN = "6225880000000019"


@dataclass(frozen=True)
class Msg:
    mti: str
    fields: dict[int, str]

    @property
    def amount(self) -> int | None:
        return int(self.fields[4]) if 4 in self.fields else None

    def get(self, key: int) -> str | None:
        return self.fields.get(key)

    def __contains__(self, key: object) -> bool:
        return key in self.fields


@dataclass(frozen=True)
class Unpacked:
    message: Msg


def encode(mti: str, **fields: str) -> bytes:
    parts = [mti] + [f"{k[1:]}={v}" for k, v in fields.items()]
    return " ".join(parts).encode()


class TextDialect:
    """Stand-in dialect: ``MTI f=v f=v`` text inside real 2-byte length framing."""

    def frame_decoder(self) -> FrameDecoder:
        return FrameDecoder(max_length=512)

    def unpack_payload(self, payload: bytes) -> Unpacked:
        try:
            mti, *rest = payload.decode("ascii").split(" ")
            fields = {int(k): v for k, _, v in (p.partition("=") for p in rest)}
        except (UnicodeDecodeError, ValueError):
            raise DecodeError("not a stand-in message") from None
        if not (len(mti) == 4 and mti.isdigit()):
            raise DecodeError("bad MTI", field=0)
        return Unpacked(Msg(mti, fields))


@dataclass(frozen=True)
class Outcome:
    reply: bytes | None
    close: bool
    records: tuple[str, ...]


class StandInHost:
    """Books every 0200 (one record per STAN, duplicates answered without booking)."""

    def __init__(self) -> None:
        self.dialect = TextDialect()
        self.seen: dict[str, bytes] = {}
        self.handled: list[str] = []

    def handle(self, payload: bytes, now: datetime, session: ListSession) -> Outcome:
        outcome = self._handle(payload)
        session.write(outcome.records)
        return outcome

    def _handle(self, payload: bytes) -> Outcome:
        try:
            msg = self.dialect.unpack_payload(payload).message
        except DecodeError:
            return Outcome(None, True, ())
        if msg.get(41) == "UNKNOWN":
            return Outcome(encode(f"{int(msg.mti) + 10:04d}", f39="03"), True, ())
        stan = msg.get(11) or ""
        self.handled.append(stan)
        reply = encode(f"{int(msg.mti) + 10:04d}", f11=stan, f39="00", f64="0123ABCD")
        if msg.mti != "0200":
            return Outcome(reply, False, ())
        if stan in self.seen:
            return Outcome(self.seen[stan], False, ())
        self.seen[stan] = reply
        return Outcome(reply, False, (f"sale {stan} {msg.amount}",))

    def refuse(self, payload: bytes, code: str, now: datetime, session: ListSession) -> Outcome:
        msg = self.dialect.unpack_payload(payload).message
        return Outcome(encode(f"{int(msg.mti) + 10:04d}", f11=msg.get(11) or "", f39=code),
                       False, ())


@dataclass
class ListSession:
    records: list[str] = field(default_factory=list)

    def write(self, records: Sequence[str]) -> None:
        self.records.extend(records)


class ListStore:
    """Sessions commit into a list on the committer's thread; can be told to fail or stall.

    A session that wrote nothing appends no batch.
    """

    # the tests stall a commit while the server's own loop plays the clients: the loop
    # must go on while the gate is shut, so every group runs on the committer's thread
    threaded_sessions = True

    def __init__(self) -> None:
        self.batches: list[list[str]] = []
        self.fail = False
        self.gate = threading.Event()
        self.gate.set()

    @contextmanager
    def session(self) -> Iterator[ListSession]:
        session = ListSession()
        yield session
        self.gate.wait(10)  # the commit (the disk may stall)
        if self.fail:
            raise OSError("disk full")
        if session.records:
            self.batches.append(session.records)

    @property
    def booked(self) -> list[str]:
        return [r for b in self.batches for r in b]


@dataclass
class Rig:
    server: HostServer[ListSession]
    host: StandInHost
    store: ListStore
    port: int

    async def connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.open_connection("127.0.0.1", self.port)


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    host, store = StandInHost(), ListStore()
    server: HostServer[ListSession] = HostServer(
        host, store, host.dialect,
        config=ServerConfig(port=0, idle_timeout=5, read_timeout=0.3, shutdown_timeout=5))
    _, port = await server.start()
    yield Rig(server, host, store, port)
    await server.stop()


async def read_reply(reader: asyncio.StreamReader, timeout: float = 5) -> bytes:
    head = await asyncio.wait_for(reader.readexactly(2), timeout)
    return await asyncio.wait_for(reader.readexactly(int.from_bytes(head, "big")), timeout)


async def sale(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
               stan: str, tid: str = "T0000001") -> bytes:
    writer.write(frame_reply(encode("0200", f4="100", f11=stan, f41=tid)))
    return await read_reply(reader)


async def assert_closed(reader: asyncio.StreamReader, timeout: float = 5) -> None:
    assert await asyncio.wait_for(reader.read(100), timeout) == b""


async def test_pipelined_requests_are_answered_in_order(rig: Rig) -> None:
    reader, writer = await rig.connect()
    stans = [f"{i:06d}" for i in range(1, 21)]
    writer.write(b"".join(frame_reply(encode("0200", f4="1", f11=s)) for s in stans))
    replies = [await read_reply(reader) for _ in stans]
    assert [r.split(b" ")[1].decode() for r in replies] == [f"11={s}" for s in stans]
    assert len(rig.store.booked) == 20
    writer.close()


async def test_frames_split_across_reads_are_reassembled(rig: Rig) -> None:
    reader, writer = await rig.connect()
    framed = frame_reply(encode("0200", f4="1", f11="000001"))
    for i in range(len(framed)):
        writer.write(framed[i:i + 1])
        await writer.drain()
    assert b"39=00" in await read_reply(reader)
    writer.close()


async def test_connections_reading_halves_at_once_keep_their_own_bytes(rig: Rig) -> None:
    """Every connection reads into the server's one buffer: each read is copied out before
    the next, whichever connection it is on."""
    conns = [await rig.connect() for _ in range(20)]
    frames = [frame_reply(encode("0200", f4="1", f11=f"{i:06d}", f41=f"T{i:07d}"))
              for i in range(len(conns))]
    for half in (0, 1):
        for (_, writer), framed in zip(conns, frames, strict=True):
            cut = len(framed) // 2
            writer.write(framed[:cut] if half == 0 else framed[cut:])
            await writer.drain()
        await asyncio.sleep(0.05)
    for i, (reader, writer) in enumerate(conns):
        reply = await read_reply(reader)
        assert f"11={i:06d}".encode() in reply
        assert b"39=00" in reply
        writer.close()


async def test_more_than_a_read_buffer_at_once(rig: Rig) -> None:
    reader, writer = await rig.connect()
    stans = [f"{i:06d}" for i in range(1, 1501)]
    data = b"".join(frame_reply(encode("0200", f4="1", f11=s, f41="T0000001" + "x" * 40))
                    for s in stans)
    assert len(data) > READ_BUFFER
    writer.write(data)
    replies = [await read_reply(reader) for _ in stans]
    assert [r.split(b" ")[1].decode() for r in replies] == [f"11={s}" for s in stans]
    writer.close()


async def test_no_reply_leaves_before_its_records_are_committed(rig: Rig) -> None:
    rig.store.gate.clear()  # the disk stalls
    reader, writer = await rig.connect()
    writer.write(frame_reply(encode("0200", f4="1", f11="000001")))
    with pytest.raises(TimeoutError):
        await read_reply(reader, timeout=0.3)
    assert rig.store.booked == []
    rig.store.gate.set()
    assert b"39=00" in await read_reply(reader)
    assert rig.store.booked == ["sale 000001 1"]
    writer.close()


async def test_a_duplicate_does_not_overtake_the_original_commit(rig: Rig) -> None:
    rig.store.gate.clear()
    r1, w1 = await rig.connect()
    r2, w2 = await rig.connect()
    w1.write(frame_reply(encode("0200", f4="1", f11="000009")))
    await w1.drain()
    await asyncio.sleep(0.05)
    w2.write(frame_reply(encode("0200", f4="1", f11="000009")))  # retransmission
    with pytest.raises(TimeoutError):
        await read_reply(r2, timeout=0.3)  # waits behind the original's commit
    rig.store.gate.set()
    assert await read_reply(r1) == await read_reply(r2)
    assert rig.store.booked == ["sale 000009 1"]
    w1.close()
    w2.close()


async def test_concurrent_connections_share_commits(rig: Rig) -> None:
    rig.store.gate.clear()
    conns = [await rig.connect() for _ in range(30)]
    for i, (_, w) in enumerate(conns):
        w.write(frame_reply(encode("0200", f4="1", f11=f"{i:06d}")))
        await w.drain()
    await asyncio.sleep(0.1)
    rig.store.gate.set()
    for r, _ in conns:
        assert b"39=00" in await read_reply(r)
    assert len(rig.store.booked) == 30
    assert len(rig.store.batches) < 30  # group commit: fewer commits than records
    assert rig.server.stats.largest_batch > 1
    for _, w in conns:
        w.close()


async def test_garbage_closes_only_that_connection(rig: Rig) -> None:
    good_r, good_w = await rig.connect()
    bad_r, bad_w = await rig.connect()
    bad_w.write(b"\x00\x05hello")  # frames fine, not a message: the core refuses
    await assert_closed(bad_r)
    assert b"39=00" in await sale(good_r, good_w, "000001")
    assert rig.store.booked == ["sale 000001 100"]
    good_w.close()


async def test_oversize_length_prefix_closes_before_buffering(rig: Rig) -> None:
    good_r, good_w = await rig.connect()
    bad_r, bad_w = await rig.connect()
    bad_w.write(b"\xff\xff" + b"A" * 100)
    await assert_closed(bad_r)
    assert rig.server.stats.framing_errors == 1
    assert b"39=00" in await sale(good_r, good_w, "000002")
    assert rig.store.booked == ["sale 000002 100"]
    good_w.close()


async def test_half_frame_then_silence_is_closed_after_read_timeout(rig: Rig) -> None:
    good_r, good_w = await rig.connect()
    bad_r, bad_w = await rig.connect()
    bad_w.write(frame_reply(encode("0200", f4="1", f11="000003"))[:7])
    await assert_closed(bad_r)
    assert rig.server.stats.timeouts == 1
    assert b"39=00" in await sale(good_r, good_w, "000004")
    assert rig.store.booked == ["sale 000004 100"]
    good_w.close()


async def test_refusal_with_close_is_answered_then_closed(rig: Rig) -> None:
    reader, writer = await rig.connect()
    writer.write(frame_reply(encode("0200", f4="1", f11="000005", f41="UNKNOWN")))
    assert b"39=03" in await read_reply(reader)
    await assert_closed(reader)
    assert rig.store.booked == []


async def test_idle_connection_is_closed() -> None:
    host, store = StandInHost(), ListStore()
    server: HostServer[ListSession] = HostServer(host, store, host.dialect,
                                         config=ServerConfig(port=0, idle_timeout=0.2))
    _, port = await server.start()
    reader, _ = await asyncio.open_connection("127.0.0.1", port)
    await assert_closed(reader)
    assert server.stats.timeouts == 1
    await server.stop()


async def test_graceful_stop_finishes_in_flight_work(rig: Rig) -> None:
    rig.store.gate.clear()
    idle_r, _ = await rig.connect()
    reader, writer = await rig.connect()
    writer.write(b"".join(frame_reply(encode("0200", f4="1", f11=f"{i:06d}")) for i in range(3)))
    await writer.drain()
    await asyncio.sleep(0.1)
    stopping = asyncio.create_task(rig.server.stop())
    await asyncio.sleep(0.1)
    rig.store.gate.set()
    replies = [await read_reply(reader) for _ in range(3)]
    assert all(b"39=00" in r for r in replies)
    await stopping
    await assert_closed(idle_r)
    assert len(rig.store.booked) == 3
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection("127.0.0.1", rig.port)


async def test_commit_failure_is_fatal_and_nothing_is_answered(rig: Rig) -> None:
    rig.store.fail = True
    reader, writer = await rig.connect()
    writer.write(frame_reply(encode("0200", f4="1", f11="000001")))
    await assert_closed(reader)
    await asyncio.wait_for(rig.server.serve_until_stopped(), 5)
    assert rig.server.fatal is not None


# --- faults over the adapter ---------------------------------------------------------
async def faulty_rig(spec: str) -> Rig:
    host, store = StandInHost(), ListStore()
    server: HostServer[ListSession] = HostServer(
        host, store, host.dialect, faults=FaultPlan.from_specs([spec]), refuse=host.refuse,
        config=ServerConfig(port=0, idle_timeout=5, read_timeout=1))
    _, port = await server.start()
    return Rig(server, host, store, port)


async def test_fault_close_before_books_nothing() -> None:
    rig = await faulty_rig("close-before@once")
    reader, writer = await rig.connect()
    writer.write(frame_reply(encode("0200", f4="1", f11="000001")))
    await assert_closed(reader)
    assert rig.store.booked == []
    assert rig.host.handled == []
    reader, writer = await rig.connect()
    assert b"39=00" in await sale(reader, writer, "000001")
    writer.close()
    await rig.server.stop()


async def test_fault_close_after_books_without_answering() -> None:
    rig = await faulty_rig("close-after@amount=1234")
    reader, writer = await rig.connect()
    writer.write(frame_reply(encode("0200", f4="1234", f11="000001")))
    await assert_closed(reader)
    assert rig.store.booked == ["sale 000001 1234"]
    await rig.server.stop()


async def test_fault_drop_books_and_keeps_the_connection() -> None:
    rig = await faulty_rig("drop@once")
    reader, writer = await rig.connect()
    writer.write(frame_reply(encode("0200", f4="1", f11="000001")))
    with pytest.raises(TimeoutError):
        await read_reply(reader, timeout=0.3)
    assert rig.store.booked == ["sale 000001 1"]
    assert b"11=000002" in await sale(reader, writer, "000002")
    assert rig.server.stats.faults == {"drop": 1}
    writer.close()
    await rig.server.stop()


async def test_fault_twice_and_code() -> None:
    rig = await faulty_rig("twice@mti=0200,once;code=51@mti=0200")
    reader, writer = await rig.connect()
    first = await sale(reader, writer, "000001")
    assert await read_reply(reader) == first
    assert b"39=51" in await sale(reader, writer, "000002")
    assert rig.store.booked == ["sale 000001 100"]  # the forced code books nothing
    writer.close()
    await rig.server.stop()


async def test_fault_bad_mac_and_garble_and_delay() -> None:
    rig = await faulty_rig("bad-mac@amount=1;garble@amount=2;delay=50@amount=3")
    reader, writer = await rig.connect()
    for amount, check in (("1", b"64=0123ABC0"), ("2", None), ("3", b"39=00")):
        writer.write(frame_reply(encode("0200", f4=amount, f11=f"00000{amount}")))
        reply = await read_reply(reader)
        if check is None:
            with pytest.raises(DecodeError):
                TextDialect().unpack_payload(reply)
        else:
            assert check in reply
    assert len(rig.store.booked) == 3
    writer.close()
    await rig.server.stop()


def test_bad_mac_leaves_a_reply_without_mac_alone() -> None:
    plain = encode("0810", f39="00")
    assert bad_mac(TextDialect(), plain) == plain
    assert garble(garble(plain)) == plain


def booking(*records: str) -> Callable[[ListSession, set[object]], Outcome]:
    def work(session: ListSession, stopped: set[object]) -> Outcome:
        session.write(records)
        return Outcome(None, False, records)
    return work


async def test_committer_runs_a_group_in_one_session_in_order() -> None:
    store = ListStore()
    stats = ServerStats()
    committer: GroupCommitter[ListSession] = GroupCommitter(store, stats)
    runner = asyncio.create_task(committer.run())
    await asyncio.gather(*(committer.submit(booking()) for _ in range(5)))
    assert store.batches == []  # nothing written
    results = await asyncio.gather(*(committer.submit(booking(f"r{i}")) for i in range(5)))
    assert store.booked == [f"r{i}" for i in range(5)]
    assert [r.records for r in results] == [(f"r{i}",) for i in range(5)]
    assert len(store.batches) == 1  # queued together: one group, one session
    assert stats.records_committed == 5
    committer.close()
    await runner


@pytest.mark.parametrize(("clash", "clashes", "batches", "reruns"), [
    # another process booked it first: rolled back whole, then run again one request per
    # session (each retried alone)
    ("conflict", 2, [["before"], ["after"]], (0, 1)),
    # a card's balance moved under the group (no lock cycle): run again whole, one session
    ("balance", 1, [["before", "after"]], (1, 0)),
    # and moved again under that rerun: one request per session then
    ("balance", 2, [["before"], ["after"]], (1, 1)),
])
async def test_committer_runs_a_conflicting_group_again(
        clash: str, clashes: int, batches: list[list[str]], reruns: tuple[int, int]) -> None:
    from emulator.host.errors import BalanceMoved, LedgerConflict
    store = ListStore()
    stats = ServerStats()
    committer: GroupCommitter[ListSession] = GroupCommitter(store, stats)
    runner = asyncio.create_task(committer.run())
    attempts: list[int] = []

    def clashing(session: ListSession, stopped: set[object]) -> Outcome:
        attempts.append(len(attempts))
        if len(attempts) <= clashes:
            raise (BalanceMoved("a card's balance moved under the session") if clash == "balance"
                   else LedgerConflict("another process booked it first"))
        session.write(["after"])
        return Outcome(None, False, ("after",))

    first, second = await asyncio.gather(committer.submit(booking("before")),
                                         committer.submit(clashing))
    assert store.batches == batches
    assert (first.records, second.records) == (("before",), ("after",))
    assert stats.conflicts == clashes
    assert (stats.reruns_whole, stats.reruns_one_by_one) == reruns
    committer.close()
    await runner


async def test_gc_freeze_rounds_when_asked() -> None:
    import gc
    host, store = StandInHost(), ListStore()
    server: HostServer[ListSession] = HostServer(
        host, store, host.dialect, config=ServerConfig(port=0, gc_freeze_interval=0.05))
    try:
        _, port = await server.start()
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        assert b"39=00" in await sale(reader, writer, "000001")
        await asyncio.sleep(0.15)
        assert gc.get_freeze_count() > 0
        writer.close()
        await server.stop()
    finally:
        gc.unfreeze()  # give the test process its collector back
