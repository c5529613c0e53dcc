"""The control channel: dispatch without sockets, then over Unix and TCP sockets."""

from __future__ import annotations

import asyncio
import os
import stat
import tempfile
from pathlib import Path

import pytest

from emulator.admin import (
    AdminAddress,
    AdminError,
    AdminServer,
    admin_dispatch,
    admin_request,
    default_admin_address,
    parse_admin_address,
)
from emulator.host.faults import FaultPlan


def stats() -> dict[str, object]:
    return {"requests": 7}


def test_dispatch_add_list_clear_stats() -> None:
    plan = FaultPlan()
    added = admin_dispatch(plan, stats, {"cmd": "add", "spec": "drop@p=0.5;twice@once"})
    assert added["ok"] is True
    assert added["added"] == ["drop@p=0.5", "twice@once"]
    listed = admin_dispatch(plan, stats, {"cmd": "list"})
    assert [f["spec"] for f in listed["faults"]] == ["drop@p=0.5", "twice@once"]  # type: ignore[attr-defined]
    assert admin_dispatch(plan, stats, {"cmd": "stats"})["stats"] == {"requests": 7}
    assert admin_dispatch(plan, stats, {"cmd": "clear"})["cleared"] == 2
    assert not plan


@pytest.mark.parametrize("request_", [
    [], "list", {"cmd": "explode"}, {"cmd": "add"}, {"cmd": "add", "spec": 3},
    {"cmd": "add", "spec": "nonsense"},
])
def test_dispatch_refuses_bad_requests(request_: object) -> None:
    plan = FaultPlan()
    answer = admin_dispatch(plan, stats, request_)
    assert answer["ok"] is False
    assert isinstance(answer["error"], str)
    assert not plan


def test_addresses() -> None:
    assert parse_admin_address("unix:/tmp/x.sock") == AdminAddress(path=Path("/tmp/x.sock"))
    assert parse_admin_address("./a/b.sock").path == Path("./a/b.sock")
    assert parse_admin_address("tcp:127.0.0.1:5859") == AdminAddress(port=5859)
    assert parse_admin_address("5859") == AdminAddress(port=5859)
    assert parse_admin_address("localhost:1") == AdminAddress(host="localhost", port=1)
    assert default_admin_address("/x/y/ledger.db").path == Path("/x/y/ledger.db.admin.sock")
    for bad in ("unix:", "tcp:host:port", "99999", ""):
        with pytest.raises(AdminError):
            parse_admin_address(bad)


async def roundtrip(address: AdminAddress) -> None:
    plan = FaultPlan()
    server = AdminServer(plan, stats)
    bound = await server.start(address)
    answer = await asyncio.to_thread(admin_request, bound, {"cmd": "add", "spec": "garble@once"})
    assert answer["ok"] is True
    assert [r.spec for r in plan.rules] == ["garble@once"]
    answer = await asyncio.to_thread(admin_request, bound, {"cmd": "frobnicate"})
    assert answer["ok"] is False
    await server.stop()
    with pytest.raises(AdminError):
        await asyncio.to_thread(admin_request, bound, {"cmd": "list"}, timeout=1)


async def test_tcp_channel() -> None:
    await roundtrip(AdminAddress(port=0))


async def test_unix_channel_is_private_and_removed_on_stop() -> None:
    with tempfile.TemporaryDirectory(dir="/tmp") as tmp:
        path = Path(tmp) / "a.sock"
        plan = FaultPlan()
        server = AdminServer(plan, stats)
        await server.start(AdminAddress(path=path))
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        second = AdminServer(plan, stats)
        with pytest.raises(AdminError, match="in use"):
            await second.start(AdminAddress(path=path))
        await server.stop()
        assert not path.exists()
        await roundtrip(AdminAddress(path=path))


async def test_stale_socket_file_is_replaced_and_long_path_refused() -> None:
    with tempfile.TemporaryDirectory(dir="/tmp") as tmp:
        path = Path(tmp) / "stale.sock"
        path.write_bytes(b"")
        server = AdminServer(FaultPlan(), stats)
        await server.start(AdminAddress(path=path))
        await server.stop()
    with pytest.raises(AdminError, match="too long"):
        await AdminServer(FaultPlan(), stats).start(AdminAddress(path=Path("/tmp/" + "x" * 120)))


async def test_garbage_on_the_channel_gets_an_error_line() -> None:
    server = AdminServer(FaultPlan(), stats)
    bound = await server.start(AdminAddress(port=0))
    reader, writer = await asyncio.open_connection(bound.host, bound.port)
    writer.write(b"\xff\xfe not json\n")
    line = await asyncio.wait_for(reader.readline(), 5)
    assert b'"ok": false' in line
    writer.close()
    await server.stop()
