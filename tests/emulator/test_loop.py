"""emulator.loop: which event loop a host process serves on, and that it serves on it."""

from __future__ import annotations

import asyncio
import inspect
import os
import random
import re
import subprocess
import sys
import tempfile
from datetime import datetime
from pathlib import Path

import pytest

from emulator import loop as host_loop
from emulator.catalogue import card_by_name
from emulator.client import HostClient, run_terminal, sign_on
from emulator.host import AcquirerHost, MemoryLedgerStore, SqliteLedgerStore
from emulator.loop import LOOP_ENV, LoopChoiceError, choose, loop_name
from emulator.server import ServerConfig, acquirer_server
from emulator.simterminal import Approved, SimTerminal

TID = "10000001"
MID = "123456789012345"
TMK = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")

try:
    import uvloop  # type: ignore[import-not-found, unused-ignore]
except ImportError:  # the fallback is tested all the same
    uvloop = None  # type: ignore[assignment, unused-ignore]

needs_uvloop = pytest.mark.skipif(uvloop is None, reason="uvloop is not installed")


def _without_uvloop(monkeypatch: pytest.MonkeyPatch) -> None:
    """As if uvloop were not installed (None in sys.modules: its import fails)."""
    monkeypatch.setitem(sys.modules, "uvloop", None)


# --- the choice ---------------------------------------------------------------------------
@needs_uvloop
def test_auto_and_uvloop_choose_uvloop_when_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(LOOP_ENV, raising=False)
    for given in (None, "auto", "uvloop", " UVLOOP ", ""):
        name, factory = choose(given)
        assert name == "uvloop"
        assert factory is not None
        made = factory()
        try:
            assert isinstance(made, uvloop.Loop)
        finally:
            made.close()


def test_asyncio_is_asyncio_s_own_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    assert choose("asyncio") == ("asyncio", None)
    monkeypatch.setenv(LOOP_ENV, "asyncio")
    assert choose() == ("asyncio", None)


def test_without_uvloop_auto_falls_back_and_uvloop_is_refused(
        monkeypatch: pytest.MonkeyPatch) -> None:
    _without_uvloop(monkeypatch)
    monkeypatch.delenv(LOOP_ENV, raising=False)
    assert choose() == ("asyncio", None)
    assert choose("auto") == ("asyncio", None)
    with pytest.raises(LoopChoiceError, match="uvloop is not installed"):
        choose("uvloop")


def test_an_unknown_loop_is_refused_with_the_choices(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(LOOP_ENV, "trio")
    with pytest.raises(LoopChoiceError, match=r"POS_EMULATOR_LOOP='trio': choose one of "
                                              r"auto, asyncio, uvloop"):
        choose()


def test_run_refusing_a_choice_leaves_no_coroutine_unawaited() -> None:
    async def main() -> int:
        return 1

    coroutine = main()
    with pytest.raises(LoopChoiceError):
        host_loop.run(coroutine, "trio")
    # closed: never awaited, and no warning about it
    assert inspect.getcoroutinestate(coroutine) == inspect.CORO_CLOSED


# --- the host serves on it ----------------------------------------------------------------
async def _serve_one_sale() -> tuple[str, str]:
    """A host on a memory ledger and a terminal's sign-on and sale over real TCP; the
    loop it ran on and the sale's answer."""
    store = MemoryLedgerStore()
    host = AcquirerHost.from_store(store, "cup")
    store.commit([host.provision(TID, MID, TMK)])
    server = acquirer_server(host, store, rng=random.Random(5),
                             config=ServerConfig(port=0, idle_timeout=10, read_timeout=1))
    _, port = await server.start()
    term = SimTerminal("cup", TID, MID, TMK, datetime.now, rng=random.Random(1))
    client = HostClient("127.0.0.1", port, "cup", timeout=5)
    try:
        await sign_on(term, client)
        sale = await run_terminal(term, client, term.sale(card_by_name("cup-debit"), 1_000,
                                                          pin="123456"))
    finally:
        await client.close()
        await server.stop()
    assert isinstance(sale.result, Approved)
    return loop_name(), sale.result.response_code


@pytest.mark.parametrize("choice", ["asyncio", pytest.param("uvloop", marks=needs_uvloop)])
def test_the_host_serves_on_the_loop_chosen(choice: str) -> None:
    assert host_loop.run(_serve_one_sale(), choice) == (choice, "00")


def test_the_host_serves_on_asyncio_when_uvloop_is_missing(
        monkeypatch: pytest.MonkeyPatch) -> None:
    _without_uvloop(monkeypatch)
    assert host_loop.run(_serve_one_sale(), "auto") == ("asyncio", "00")


async def test_the_async_tests_run_on_the_host_s_loop() -> None:
    """tests/emulator/conftest.py: what POS_EMULATOR_LOOP chooses (uvloop when installed)."""
    assert loop_name() == choose()[0]
    assert isinstance(asyncio.get_running_loop(),
                      uvloop.Loop if choose()[0] == "uvloop" else asyncio.BaseEventLoop)


# --- serve says which loop it runs on, and refuses an unknown one ---------------------------
def _banner(env_loop: str, *extra: str) -> tuple[str, subprocess.Popen[str]]:
    with tempfile.TemporaryDirectory(dir="/tmp", prefix="pe-") as tmp:
        env = {**os.environ, "PYTHONUNBUFFERED": "1", LOOP_ENV: env_loop}
        proc = subprocess.Popen(
            [sys.executable, "-m", "emulator", "serve", "--port", "0", "--admin", "none",
             "--ledger", str(Path(tmp) / "ledger.db"), *extra],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
            text=True, env=env)
        assert proc.stdout is not None
        try:
            banner = ""
            while line := proc.stdout.readline():
                banner += line
                if "listening on" in line:
                    break
            proc.terminate()
            assert proc.wait(30) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
        return banner, proc


@pytest.mark.parametrize("env_loop", ["asyncio", pytest.param("uvloop", marks=needs_uvloop)])
def test_serve_announces_the_loop_it_serves_on(env_loop: str) -> None:
    banner, _ = _banner(env_loop)
    assert re.search(rf"listening on 127\.0\.0\.1:\d+ \(.*, loop {env_loop}, no admin", banner), \
        banner


@pytest.mark.parametrize("env_loop", ["asyncio", pytest.param("uvloop", marks=needs_uvloop)])
def test_serve_workers_announce_the_loop_their_workers_serve_on(env_loop: str) -> None:
    if not getattr(SqliteLedgerStore, "multi_process", False):
        pytest.skip("this SQLite ledger runs one worker")
    banner, _ = _banner(env_loop, "--workers", "2")
    assert re.search(rf"workers 2, loop {env_loop}, no admin", banner), banner


def test_serve_refuses_an_unknown_loop_in_one_line() -> None:
    env = {**os.environ, LOOP_ENV: "trio"}
    done = subprocess.run(
        [sys.executable, "-m", "emulator", "serve", "--port", "0", "--admin", "none",
         "--ledger", ":memory:"],
        capture_output=True, text=True, env=env, timeout=60, stdin=subprocess.DEVNULL,
        check=False)
    assert done.returncode == 2
    assert done.stderr == ("pos-emulator: POS_EMULATOR_LOOP='trio': choose one of auto, "
                           "asyncio, uvloop\n")
