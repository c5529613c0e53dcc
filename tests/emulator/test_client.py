"""HostClient and run_terminal: answer matching, timeouts, and a terminal's recovery."""

from __future__ import annotations

import socket
from datetime import datetime
from pathlib import Path

import pytest

from emulator.catalogue import card_by_name
from emulator.client import (
    AnswerTimeoutError,
    ConnectionLostError,
    GarbledAnswerError,
    GaveUpError,
    HostClient,
    recovery_policy,
    resend_until_answered,
    run_terminal,
    sign_on,
)
from emulator.host.faults import FaultPlan
from emulator.host.security import WorkingKeys
from emulator.simterminal import Approved, SimTerminal
from iso8583.dialects import get_dialect
from tests.emulator.test_server_host import MID, TMK, Host, start_host

DEBIT = card_by_name("cup-debit")
NOW = datetime(2026, 11, 23, 10, 0)


def test_recovery_policy_follows_the_dialect() -> None:
    for name in ("cup", "iso87"):
        dialect = get_dialect(name)
        term = SimTerminal(dialect, "10000001", MID, TMK, lambda: NOW)
        term.keys = WorkingKeys(bytes(16), bytes(16), None)
        sale = term.sale(DEBIT, 100, pin="123456")
        assert recovery_policy(dialect, sale) == "reverse"
        approved = Approved("sale", "0200", sale.stan or "", term.batch, 100, "000000000001",
                            "000001", "1123", "CUP", DEBIT.pan)
        refund = term.refund(approved, 50)
        expected = "resend" if name == "cup" else "reverse"  # CUP refunds are advices
        assert recovery_policy(dialect, refund) == expected
        assert recovery_policy(dialect, term.void(approved)) == "reverse"
        assert recovery_policy(dialect, term.reversal(sale, "98")) == "resend"
        assert recovery_policy(dialect, term.balance(DEBIT, pin="123456")) == "none"
        assert recovery_policy(dialect, term.settlement()) == "resend"


async def with_host(tmp_path: Path, spec: str) -> tuple[Host, SimTerminal, HostClient]:
    rig = await start_host(tmp_path, faults=FaultPlan.from_specs([spec]))
    term, client = rig.terminal(), rig.client(timeout=0.5)
    await sign_on(term, client)
    return rig, term, client


async def close(rig: Host, client: HostClient) -> None:
    await client.close()
    await rig.server.stop()
    rig.store.close()


async def test_a_second_copy_of_an_answer_is_dropped(tmp_path: Path) -> None:
    rig, term, client = await with_host(tmp_path, "twice@mti=0200,once")
    first = term.sale(DEBIT, 100, pin="123456")
    answer = await client.exchange(first)
    assert answer.message.stan == first.stan
    second = term.sale(DEBIT, 200, pin="123456")
    answer = await client.exchange(second)  # the copy of the first answer arrives first
    assert answer.message.stan == second.stan
    assert client.stray_answers == 1
    await close(rig, client)


async def test_no_answer_times_out(tmp_path: Path) -> None:
    rig, term, client = await with_host(tmp_path, "drop@mti=0200")
    with pytest.raises(AnswerTimeoutError):
        await client.exchange(term.sale(DEBIT, 100, pin="123456"))
    await close(rig, client)


async def test_garbled_answer(tmp_path: Path) -> None:
    rig, term, client = await with_host(tmp_path, "garble@mti=0200")
    with pytest.raises(GarbledAnswerError):
        await client.exchange(term.sale(DEBIT, 100, pin="123456"))
    await close(rig, client)


async def test_closed_before_answer(tmp_path: Path) -> None:
    rig, term, client = await with_host(tmp_path, "close-before@mti=0200")
    with pytest.raises(ConnectionLostError):
        await client.exchange(term.sale(DEBIT, 100, pin="123456"))
    assert not client.connected
    await close(rig, client)


async def test_unanswered_sale_is_reversed_with_98(tmp_path: Path) -> None:
    rig, term, client = await with_host(tmp_path, "drop@mti=0200,once")
    exchange = await run_terminal(term, client, term.sale(DEBIT, 1_100, pin="123456"))
    assert exchange.result is None
    assert exchange.reversal_reason == "98"
    assert isinstance(exchange.reversal, Approved)
    rows = sorted((r.kind, r.status) for r in rig.store.load().transactions)
    assert rows == [("reversal", "acknowledged"), ("sale", "reversed")]
    await close(rig, client)


async def test_sale_lost_before_booking_is_reversed_and_nothing_is_booked(tmp_path: Path) -> None:
    rig, term, client = await with_host(tmp_path, "close-before@mti=0200,once")
    exchange = await run_terminal(term, client, term.sale(DEBIT, 1_200, pin="123456"))
    assert exchange.result is None
    assert exchange.reversal_reason == "98"
    rows = sorted((r.kind, r.status) for r in rig.store.load().transactions)
    assert rows == [("reversal", "acknowledged")]  # acknowledged, nothing undone
    await close(rig, client)


async def test_gives_up_when_the_host_is_gone() -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    client = HostClient("127.0.0.1", port, "cup", timeout=0.2, connect_timeout=0.2)
    term = SimTerminal("cup", "10000001", MID, TMK, lambda: NOW)
    with pytest.raises(ConnectionLostError):
        await client.connect()
    with pytest.raises(GaveUpError):
        await sign_on(term, client, max_attempts=3)
    with pytest.raises(GaveUpError):
        await resend_until_answered(term, client, term.echo(), max_attempts=2)
