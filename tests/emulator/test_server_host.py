"""The real host core behind the real server, on 127.0.0.1 with real sockets.

The ledger is SQLite, and (the ``live`` tests, and ``serve --ledger postgresql://``)
PostgreSQL in the tests' private cluster.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import random
import re
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pytest

from emulator.catalogue import card_by_name
from emulator.client import (
    ConnectionLostError,
    HostClient,
    NoAnswerError,
    run_terminal,
    sign_on,
)
from emulator.host import AcquirerHost, LedgerSession, LedgerStore, SqliteLedgerStore
from emulator.host.faults import FaultPlan
from emulator.server import HostServer, ServerConfig, acquirer_server
from emulator.simterminal import Approved, Declined, SimTerminal

TID = "10000001"
MID = "123456789012345"
TMK = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")
DEBIT = card_by_name("cup-debit")


@dataclass
class Host:
    server: HostServer[LedgerSession]
    host: AcquirerHost
    store: LedgerStore
    port: int

    def terminal(self, tid: str = TID, seed: int = 1) -> SimTerminal:
        return SimTerminal("cup", tid, MID, TMK, datetime.now, rng=random.Random(seed))

    def client(self, timeout: float = 3.0) -> HostClient:
        return HostClient("127.0.0.1", self.port, "cup", timeout=timeout)

    def booked(self) -> int:
        return len(self.store.load().transactions)


_schemas = itertools.count(1)


async def start_host(path: Path, *, faults: FaultPlan | None = None,
                     tids: tuple[str, ...] = (TID,), store: LedgerStore | None = None) -> Host:
    store = store if store is not None else SqliteLedgerStore(path / "ledger.db")
    host = AcquirerHost.from_store(store, "cup")
    store.commit([host.provision(tid, MID, TMK) for tid in tids])
    server = acquirer_server(host, store, faults=faults, rng=random.Random(5), config=ServerConfig(
        port=0, idle_timeout=10, read_timeout=0.3, shutdown_timeout=5))
    _, port = await server.start()
    return Host(server, host, store, port)


@pytest.fixture(params=["sqlite", "postgresql"])
async def live(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Host]:
    store: LedgerStore | None = None
    if request.param == "postgresql":
        from emulator.host.pgledger import PostgresLedgerStore
        store = PostgresLedgerStore(request.getfixturevalue("pg_dsn"),
                                    schema=f"serverhost{next(_schemas)}")
    rig = await start_host(tmp_path, store=store)
    yield rig
    await rig.server.stop()
    rig.store.close()


async def signed_on(rig: Host) -> tuple[SimTerminal, HostClient]:
    term, client = rig.terminal(), rig.client()
    await sign_on(term, client)
    return term, client


async def test_sale_then_refund_over_the_wire(live: Host) -> None:
    term, client = await signed_on(live)
    sale = await run_terminal(term, client, term.sale(DEBIT, 12_300, pin="123456"))
    assert isinstance(sale.result, Approved)
    refund = await run_terminal(term, client, term.refund(sale.result, 5_000))
    assert isinstance(refund.result, Approved)
    rows = {r.kind: r for r in live.store.load().transactions}
    assert rows["sale"].refunded == 5_000
    assert rows["refund"].amount == 5_000
    await client.close()


async def test_pipelined_requests_on_one_connection_are_answered_in_order(live: Host) -> None:
    term, client = await signed_on(live)
    requests = [term.sale(DEBIT, 100 * (i + 1), pin="123456") for i in range(8)]
    for request in requests:
        await client.send(request)
    frames = [await client.receive() for _ in requests]
    assert [f.message.stan for f in frames] == [r.stan for r in requests]
    assert all(isinstance(term.check_response(r, f.message, body=f.body), Approved)
               for r, f in zip(requests, frames, strict=True))
    await client.close()


async def test_a_duplicate_gets_the_stored_answer_and_books_once(live: Host) -> None:
    term, client = await signed_on(live)
    request = term.sale(DEBIT, 4_200, pin="123456")
    first = await client.exchange(request)
    second = live.client()
    again = await second.exchange(request)
    assert again.message.rrn == first.message.rrn
    assert again.message.response_code == first.message.response_code == "00"
    assert [r.kind for r in live.store.load().transactions] == ["sale"]
    await client.close()
    await second.close()


# --- bad input: each closes or refuses that connection only, the ledger is untouched ---
async def assert_other_connections_still_served(rig: Host, term: SimTerminal,
                                                client: HostClient) -> None:
    sale = await run_terminal(term, client, term.sale(DEBIT, 700, pin="123456"))
    assert isinstance(sale.result, Approved)


async def test_garbage_bytes(live: Host) -> None:
    term, client = await signed_on(live)
    before = live.booked()
    bad = live.client(timeout=2)
    await bad.send_bytes(b"\x00\x20" + bytes(range(32)))  # framed, not a message
    with pytest.raises(ConnectionLostError):
        await bad.receive()
    assert live.booked() == before
    await assert_other_connections_still_served(live, term, client)
    await client.close()


async def test_unframed_garbage(live: Host) -> None:
    term, client = await signed_on(live)
    before = live.booked()
    bad = live.client(timeout=2)
    await bad.send_bytes(b"GET / HTTP/1.0\r\n\r\n")  # 'GE' = a 18245-byte length: too long
    with pytest.raises(ConnectionLostError):
        await bad.receive()
    assert live.booked() == before
    await assert_other_connections_still_served(live, term, client)
    await client.close()


async def test_oversize_length_prefix(live: Host) -> None:
    term, client = await signed_on(live)
    before = live.booked()
    bad = live.client(timeout=2)
    await bad.send_bytes(b"\xff\xf0" + b"\x60" * 64)
    with pytest.raises(ConnectionLostError):
        await bad.receive()
    assert live.server.stats.framing_errors == 1
    assert live.booked() == before
    await assert_other_connections_still_served(live, term, client)
    await client.close()


async def test_half_frame_then_silence(live: Host) -> None:
    term, client = await signed_on(live)
    before = live.booked()
    bad = live.client(timeout=3)
    frame = term.dialect.pack(term.sale(DEBIT, 800, pin="123456"), tpdu=bad.tpdu)
    await bad.send_bytes(frame[: len(frame) // 2])
    # served while the stalled connection still hangs
    sale = await run_terminal(term, client, term.sale(DEBIT, 700, pin="123456"))
    assert isinstance(sale.result, Approved)
    with pytest.raises(ConnectionLostError):
        await bad.receive()  # closed after the read timeout, not answered
    assert live.server.stats.timeouts == 1
    assert live.booked() == before + 1  # only the other terminal's sale
    await client.close()


async def test_valid_frame_for_an_unknown_terminal(live: Host) -> None:
    term, client = await signed_on(live)
    before = live.booked()
    stranger = live.terminal(tid="99999999")
    stranger.keys = term.keys  # even with keys it knows, the host does not know the TID
    bad = live.client(timeout=2)
    answer = await bad.exchange(stranger.sale(DEBIT, 900, pin="123456"))
    assert answer.message.response_code == "03"
    with pytest.raises(NoAnswerError):
        await bad.receive()  # and the connection is closed
    assert live.booked() == before
    await assert_other_connections_still_served(live, term, client)
    await client.close()


async def test_graceful_shutdown_finishes_in_flight_work(tmp_path: Path) -> None:
    rig = await start_host(tmp_path, faults=FaultPlan.from_specs(["delay=300@mti=0200"]))
    term, client = await signed_on(rig)
    request = term.sale(DEBIT, 1_000, pin="123456")
    await client.send(request)
    await asyncio.sleep(0.1)  # the host has it and is answering slowly
    await rig.server.stop()
    frame = await client.receive()
    assert isinstance(term.check_response(request, frame.message, body=frame.body), Approved)
    assert rig.booked() == 1
    rig.store.close()


# --- faults against the real core ---------------------------------------------------------
async def test_code_fault_declines_without_booking_and_with_a_good_mac(tmp_path: Path) -> None:
    rig = await start_host(tmp_path, faults=FaultPlan.from_specs(["code=51@amount=1000"]))
    term, client = await signed_on(rig)
    result = await run_terminal(term, client, term.sale(DEBIT, 1_000, pin="123456"))
    assert isinstance(result.result, Declined)
    assert result.result.response_code == "51"
    assert rig.booked() == 0
    await client.close()
    await rig.server.stop()
    rig.store.close()


async def test_bad_mac_answer_is_reversed_with_a0_and_the_terminal_signs_on_again(
        tmp_path: Path) -> None:
    rig = await start_host(tmp_path, faults=FaultPlan.from_specs(["bad-mac@mti=0200,once"]))
    term, client = await signed_on(rig)
    old_keys = term.keys
    result = await run_terminal(term, client, term.sale(DEBIT, 1_500, pin="123456"))
    assert result.result is None
    assert result.reversal_reason == "A0"
    assert result.signed_on_again
    assert term.keys != old_keys
    statuses = sorted((r.kind, r.status) for r in rig.store.load().transactions)
    assert statuses == [("reversal", "acknowledged"), ("sale", "reversed")]
    await client.close()
    await rig.server.stop()
    rig.store.close()


async def test_lost_refund_answer_is_resent_never_reversed(tmp_path: Path) -> None:
    rig = await start_host(tmp_path, faults=FaultPlan.from_specs(["close-after@mti=0220,once"]))
    term, client = await signed_on(rig)
    sale = await run_terminal(term, client, term.sale(DEBIT, 3_000, pin="123456"))
    assert isinstance(sale.result, Approved)
    refund = await run_terminal(term, client, term.refund(sale.result, 1_000))
    assert isinstance(refund.result, Approved)
    assert refund.attempts == 2
    kinds = sorted(r.kind for r in rig.store.load().transactions)
    assert kinds == ["refund", "sale"]
    assert next(r for r in rig.store.load().transactions if r.kind == "sale").refunded == 1_000
    await client.close()
    await rig.server.stop()
    rig.store.close()


async def test_iso87_dialect_over_the_wire(tmp_path: Path) -> None:
    store = SqliteLedgerStore(tmp_path / "iso87.db")
    host = AcquirerHost.from_store(store, "iso87")
    store.commit([host.provision(TID, MID, TMK)])
    server = acquirer_server(host, store, config=ServerConfig(port=0))
    _, port = await server.start()
    term = SimTerminal("iso87", TID, MID, TMK, datetime.now, rng=random.Random(3))
    client = HostClient("127.0.0.1", port, "iso87", timeout=3)
    await sign_on(term, client)
    sale = await run_terminal(term, client, term.sale(DEBIT, 5_500, pin="123456"))
    assert isinstance(sale.result, Approved)
    refund = await run_terminal(term, client, term.refund(sale.result, 500))
    assert isinstance(refund.result, Approved)
    await client.close()
    await server.stop()
    assert sorted(r.kind for r in store.load().transactions) == ["refund", "sale"]
    store.close()


def test_serve_on_postgresql_never_prints_the_password(pg_dsn: str, tmp_path: Path) -> None:
    """``pos-emulator serve --ledger postgresql://user:password@...``: the banner, and the
    ledger it books into, over the wire."""
    import psycopg
    database = f"serve{os.getpid()}_{next(_schemas)}"
    with psycopg.connect(pg_dsn, autocommit=True) as admin:  # a database of its own
        admin.execute(f'CREATE DATABASE "{database}"')
    own = pg_dsn.replace("@/postgres?", f"@/{database}?")
    url = own.replace("postgresql://postgres@", "postgresql://postgres:Sup3rSecret@")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "emulator", "serve", "--port", "0", "--ledger", url,
         "--admin", "none"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
        env=env, cwd=tmp_path)
    try:
        assert proc.stdout is not None
        banner = proc.stdout.readline() + proc.stdout.readline()
        found = re.search(r"listening on 127\.0\.0\.1:(\d+)", banner)
        assert found, banner
        assert "postgresql://postgres@" in banner
        demo = SimTerminal("cup", "10000001", MID, bytes.fromhex(
            "CA5D92598DCA48CE8A4C76361A9269E9"), datetime.now, rng=random.Random(2))

        async def day() -> None:
            client = HostClient("127.0.0.1", int(found.group(1)), "cup", timeout=5)
            await sign_on(demo, client)
            sale = await run_terminal(demo, client, demo.sale(DEBIT, 1_000, pin="123456"))
            assert isinstance(sale.result, Approved)
            await client.close()

        asyncio.run(day())
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
        out, err = proc.communicate(timeout=5)
        assert "Sup3rSecret" not in banner + out + err
        assert "Traceback" not in err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    from emulator.host import open_store
    store = open_store(own)
    try:
        assert [t.kind for t in store.load().transactions if t.tid == "10000001"][-1] == "sale"
    finally:
        store.close()
