"""``pos-emulator serve`` starts with what serving needs, and no more.

The start-up after a crash is Python's start and serve's imports (issue 10: first
echo < 1 s). These tests fail when serve's import set grows back to modules it
does not use: the supervisor (one worker), the trace tools (no --trace), the other
sub-commands' modules.
"""

from __future__ import annotations

import asyncio
import gc
import json
import subprocess
import sys
from pathlib import Path

import pytest

from emulator import cli
from emulator.host.errors import HostError
from emulator.startup import freeze_startup, gc_paused
from emulator.workers import WORKER_TIMEOUT, Supervisor, WorkerSpec

#: modules a one-worker serve without --trace does not load (top-level names: any of
#: their submodules too)
NOT_FOR_SERVE = (
    "emulator.workers",  # the supervisor of --workers N
    "emulator.trace", "iso8583.trace", "iso8583.pretty",  # --trace only
    "emulator.host.cli", "emulator.card", "emulator.pinpad", "emulator.printer",
    "emulator.replay", "emulator.client", "emulator.simterminal",  # other sub-commands
    "drivers", "terminal", "textual", "smartcard", "serial",
    "shutil", "tempfile",  # the supervisor's (once-rule claims)
)


def _loaded(code: str) -> list[str]:
    out = subprocess.run([sys.executable, "-c", code + "\nimport json, sys\n"
                          "print(json.dumps(sorted(sys.modules)))\n"],
                         capture_output=True, text=True, check=True).stdout
    loaded: list[str] = json.loads(out.splitlines()[-1])
    return loaded


def _unwanted(loaded: list[str]) -> list[str]:
    return [m for m in loaded if any(m == n or m.startswith(n + ".") for n in NOT_FOR_SERVE)]


def test_serve_loads_only_what_serving_needs() -> None:
    # what `serve` loads before it listens: the CLI, a store, the host, the server
    loaded = _loaded(
        "from emulator import cli\n"
        "from emulator.host import AcquirerHost, open_store\n"
        "from emulator.server import ServerConfig, acquirer_server\n"
        "store = open_store(':memory:')\n"
        "host = AcquirerHost.from_store(store, 'cup')\n"
        "acquirer_server(host, store, config=ServerConfig())\n")
    assert "emulator.server" in loaded
    assert _unwanted(loaded) == []


def test_a_worker_process_loads_no_trace_tools() -> None:
    loaded = _loaded("import emulator.workers\n")
    assert [m for m in _unwanted(loaded) if m != "emulator.workers"] == []


def test_serve_help_names_the_watchdog_default(capsys: pytest.CaptureFixture[str]) -> None:
    # the parser does not import emulator.workers; its help text says the default
    with pytest.raises(SystemExit):
        cli.main(["serve", "--help"])
    assert f"(default {WORKER_TIMEOUT:g})" in " ".join(capsys.readouterr().out.split())


def test_gc_paused_restores_the_collector_as_it_was() -> None:
    assert gc.isenabled()
    with gc_paused():
        assert not gc.isenabled()
    assert gc.isenabled()
    gc.disable()
    try:
        with gc_paused():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_what_a_pause_made_is_not_walked_by_the_next_young_collection() -> None:
    # the block's objects go to the oldest generation when the collector comes back on:
    # the first young collection after it does not walk them all
    assert gc.isenabled()
    assert gc.get_freeze_count() == 0
    with gc_paused():
        made = [[n] for n in range(20_000)]
    assert gc.get_freeze_count() == 0  # moved, not frozen
    assert gc.get_count()[0] < 1_000
    oldest = {id(o) for o in gc.get_objects(generation=2)}
    assert all(id(o) in oldest for o in made[::1000])


def test_a_pause_leaves_frozen_objects_frozen() -> None:
    gc.freeze()
    try:
        frozen = gc.get_freeze_count()
        with gc_paused():
            made = [[n] for n in range(1_000)]
        assert gc.get_freeze_count() == frozen  # gc.unfreeze() would have thawed them
        assert made
    finally:
        gc.unfreeze()  # give the test process its collector back


def test_freeze_startup_moves_the_heap_to_the_permanent_generation() -> None:
    code = ("import gc\nfrom emulator.startup import freeze_startup\n"
            "freeze_startup()\nassert gc.get_freeze_count() > 1000, gc.get_freeze_count()\n")
    subprocess.run([sys.executable, "-c", code], check=True)
    assert callable(freeze_startup)


def test_workers_load_while_the_supervisor_checks_the_ledger(tmp_path: Path) -> None:
    # serve --workers N: the worker processes start before the supervisor's own look at
    # the ledger (prepare), and none is told its configuration (so none opens the ledger
    # or listens) before that returned
    seen: list[tuple[bool, bool]] = []

    async def start() -> tuple[str, int]:
        supervisor = Supervisor(WorkerSpec(str(tmp_path / "ledger.db")), 2)

        def prepare() -> None:
            for slot in supervisor.slots:
                running = slot.proc is not None and slot.proc.returncode is None
                seen.append((running, slot.listening is not None and not slot.listening.done()))

        try:
            return await supervisor.start(prepare)
        finally:
            supervisor.request_stop()
            await supervisor.wait()

    # on asyncio's loop, as serve runs the supervisor (emulator.loop: not the host's loop)
    address = asyncio.run(start())
    assert seen == [(True, True), (True, True)]
    assert address[1] > 0


def test_wait_returns_after_a_start_that_failed(tmp_path: Path) -> None:
    # a caller that stops the supervisor whatever start() did (the test above): request_stop
    # then finds nothing to stop, and wait() must not wait for a stop that never comes
    async def start_then_stop() -> tuple[str, int]:
        supervisor = Supervisor(WorkerSpec(str(tmp_path / "no" / "such" / "ledger.db")), 2)
        try:
            await supervisor.start()
        except HostError as exc:
            error = str(exc)
        else:
            raise AssertionError("started over a ledger that cannot be opened")
        supervisor.request_stop()
        return error, await asyncio.wait_for(supervisor.wait(), 10)

    error, _ = asyncio.run(start_then_stop())
    assert "cannot open ledger" in error


def test_workers_over_a_ledger_that_cannot_be_opened_is_one_line(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "emulator", "serve", "--port", "0", "--workers", "2",
         "--ledger", str(tmp_path / "no" / "such" / "ledger.db"), "--admin", "none"],
        capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=60, check=False)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1, proc.stderr  # no worker's failure logged after it
    assert "cannot open ledger" in proc.stderr
