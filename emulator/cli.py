"""``pos-emulator``: run the acquirer host and the emulated hardware from the command line.

Sub-commands::

    pos-emulator serve [--host 127.0.0.1] [--port 5858] [--ledger PATH|postgresql://...]
                       [--dialect cup|iso87]
                       [--faults SPEC ...] [--admin ADDR|none] [--workers N]
    pos-emulator faults add SPEC | clear | list | stats [--admin ADDR] [--ledger PATH]
    pos-emulator terminal ...     (provisioning: emulator.host.cli)
    pos-emulator ledger ...       (ledger views: emulator.host.cli)
    pos-emulator card ...         (virtual EMV card)
    pos-emulator pinpad ...       (virtual serial PIN pad)
    pos-emulator printer ...      (virtual receipt printer)
    pos-emulator replay TRACE     (replay a recorded ISO 8583 trace: emulator.replay)

``serve`` provisions the demo terminal when the ledger has no terminal yet, prints
where it listens and stops cleanly on SIGINT/SIGTERM (exit 0). Bad input ends with
one line on stderr and exit code 2, never a traceback. Fault specs are documented
in :mod:`emulator.faults`. ``serve --workers N`` runs N host processes on the port
and a supervisor that owns the admin channel (:mod:`emulator.workers`).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import logging
import random
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NoReturn

from emulator.startup import freeze_startup, gc_paused

with gc_paused():  # start-up: see emulator.startup
    from emulator.admin import (
        AdminAddress,
        AdminError,
        AdminServer,
        admin_request,
        default_admin_address,
        parse_admin_address,
    )
    from emulator.host import AcquirerHost, HostError, LedgerStore, open_store, safe_ledger_name
    from emulator.host.faults import FaultPlan, FaultSpecError, parse_spec
    from emulator.host.ledger import MEMORY_LEDGERS, is_postgres_url
    from emulator.loop import choose, loop_name
    from emulator.loop import run as run_host
    from emulator.server import DEFAULT_PORT, ServerConfig, acquirer_server

PROG = "pos-emulator"

#: sub-commands that belong to other parts of the emulator: module, function
_DELEGATES: dict[str, tuple[str, str]] = {
    "terminal": ("emulator.host.cli", "terminal_main"),
    "ledger": ("emulator.host.cli", "ledger_main"),
    "card": ("emulator.card.cli", "main"),
    "pinpad": ("emulator.pinpad.cli", "main"),
    "printer": ("emulator.printer.cli", "main"),
    "replay": ("emulator.replay", "main"),
}


class _UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    """argparse that reports bad usage as one line instead of exiting."""

    def error(self, message: str) -> NoReturn:
        raise _UsageError(f"{self.prog}: {message}")


def _fail(message: str) -> int:
    print(f"{PROG}: {message}", file=sys.stderr)
    return 2


def _parser() -> _Parser:
    parser = _Parser(prog=PROG, description="Acquirer host and hardware emulator.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    serve = sub.add_parser("serve", help="run the acquirer host")
    serve.add_argument("--host", default="127.0.0.1",
                       help="address to bind (default 127.0.0.1: loopback only)")
    serve.add_argument("--port", type=int, default=DEFAULT_PORT,
                       help=f"TCP port (default {DEFAULT_PORT}; 0 picks a free one)")
    serve.add_argument("--ledger", default=None,
                       help="SQLite ledger file, postgresql://... database URL, or :memory: "
                            "(default: $POS_EMULATOR_LEDGER or pos-emulator-ledger.db)")
    serve.add_argument("--dialect", choices=("cup", "iso87"), default="cup")
    serve.add_argument("--faults", action="append", default=[], metavar="SPEC",
                       help="fault rules, e.g. 'delay=200@p=0.1' (repeatable)")
    serve.add_argument("--fault-seed", type=int, default=None,
                       help="seed the fault dice for a reproducible run")
    serve.add_argument("--admin", default=None, metavar="ADDR",
                       help="control channel: unix:PATH, tcp:127.0.0.1:PORT or 'none' "
                            "(default: <ledger>.admin.sock)")
    serve.add_argument("--idle-timeout", type=float, default=300.0, metavar="SECONDS")
    serve.add_argument("--read-timeout", type=float, default=10.0, metavar="SECONDS")
    serve.add_argument("--shutdown-timeout", type=float, default=10.0, metavar="SECONDS")
    serve.add_argument("--workers", type=int, default=1, metavar="N",
                       help="host processes sharing the port (SO_REUSEPORT) and the ledger "
                            "(default 1; more need a postgresql://... or SQLite ledger)")
    # the default is emulator.workers.WORKER_TIMEOUT (a test checks this text names it):
    # not imported here, serve with one worker does not load the supervisor
    serve.add_argument("--worker-timeout", type=float, default=None, metavar="SECONDS",
                       help="with --workers: a worker that does not answer the supervisor "
                            "for this long is killed and restarted (default 10)")
    serve.add_argument("-v", "--verbose", action="store_true", help="log each connection event")
    serve.add_argument("--trace", type=Path, default=None, metavar="FILE",
                       help="record every ISO 8583 frame to FILE (masked JSONL, appended; "
                            "read it with 'pos-iso trace show FILE'); with --workers every "
                            "worker appends its lines to FILE")

    faults = sub.add_parser("faults", help="change a running host's faults")
    faults.add_argument("action", choices=("add", "clear", "list", "stats"))
    faults.add_argument("spec", nargs="?", help="fault spec for 'add'")
    faults.add_argument("--admin", default=None, metavar="ADDR",
                        help="the host's control channel (default: <ledger>.admin.sock)")
    faults.add_argument("--ledger", default=None,
                        help="ledger of the running host (locates the default control socket)")
    faults.add_argument("--json", action="store_true", help="print the raw answer")
    for name in _DELEGATES:
        sub.add_parser(name, help=f"see '{PROG} {name} --help'", add_help=False)
    return parser


def _ledger_path(given: str | None) -> str:
    """The ledger spec: --ledger, else $POS_EMULATOR_LEDGER, else the default file."""
    if given:
        return given
    from emulator.host.terminals import default_ledger_path
    return str(default_ledger_path())


def _admin_address(given: str | None, ledger: str) -> AdminAddress:
    if given:
        return parse_admin_address(given)
    if is_postgres_url(ledger) or ledger.strip().lower() in MEMORY_LEDGERS:
        # no file to sit next to: a socket in the working directory
        return default_admin_address(Path("pos-emulator-host"))
    return default_admin_address(ledger)


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``pos-emulator``; returns the exit code."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list and args_list[0] in _DELEGATES:
        return _delegate(args_list[0], args_list[1:])
    try:
        args = _parser().parse_args(args_list)
    except _UsageError as exc:
        print(exc, file=sys.stderr)
        return 2
    try:
        if args.command == "serve":
            return _serve(args)
        return _faults(args)
    except (AdminError, FaultSpecError) as exc:
        return _fail(str(exc))


def _delegate(name: str, argv: list[str]) -> int:
    module_name, function = _DELEGATES[name]
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        return _fail(f"'{name}' is not available in this installation ({exc.name} is missing)")
    entry: Callable[[list[str]], int] = getattr(module, function)
    return int(entry(argv))


# --- faults (admin client) --------------------------------------------------------------
def _faults(args: argparse.Namespace) -> int:
    address = _admin_address(args.admin, _ledger_path(args.ledger))
    if args.action == "add":
        if not args.spec:
            return _fail("faults add needs a SPEC, e.g. 'drop@p=0.1'")
        parse_spec(args.spec)  # refuse a bad spec here, with the same message
        request: dict[str, object] = {"cmd": "add", "spec": args.spec}
    elif args.spec:
        return _fail(f"faults {args.action} takes no SPEC")
    else:
        request = {"cmd": args.action}
    answer = admin_request(address, request)
    if not answer.get("ok"):
        return _fail(str(answer.get("error", "the host refused the request")))
    if args.json or args.action == "stats":
        print(json.dumps(answer, indent=2, sort_keys=True))
        return 0
    rules = answer.get("faults")
    if args.action == "clear":
        print(f"cleared {answer.get('cleared', 0)} fault rule(s)")
    elif isinstance(rules, list):
        if not rules:
            print("no faults")
        for rule in rules:
            if isinstance(rule, dict):
                state = "armed" if rule.get("armed") else "spent"
                print(f"{rule.get('spec')}\tfired={rule.get('fired')}\t{state}")
    return 0


# --- serve --------------------------------------------------------------------------
def _serve(args: argparse.Namespace) -> int:
    if not 0 <= args.port <= 65535:
        return _fail(f"port must be 0..65535, got {args.port}")
    for name in ("idle_timeout", "read_timeout", "shutdown_timeout"):
        if getattr(args, name) <= 0:
            return _fail(f"--{name.replace('_', '-')} must be positive")
    plan = FaultPlan.from_specs(args.faults)
    ledger = _ledger_path(args.ledger)
    try:
        choose()  # $POS_EMULATOR_LOOP: refused here, before anything starts
    except HostError as exc:
        return _fail(str(exc))
    if args.workers != 1:
        from emulator.workers import workers_refusal

        refusal = workers_refusal(str(ledger), args.workers)
        if refusal is not None:
            return _fail(refusal)
    admin: AdminAddress | None = None
    if (args.admin or "").lower() != "none":
        admin = _admin_address(args.admin, ledger)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = ServerConfig(host=args.host, port=args.port, idle_timeout=args.idle_timeout,
                          read_timeout=args.read_timeout, shutdown_timeout=args.shutdown_timeout,
                          gc_freeze_interval=1.0)  # this process only serves
    if args.workers > 1:
        return _serve_workers(args, config, admin, ledger)
    try:
        with gc_paused():  # loads the store's modules (psycopg for postgresql://)
            store = open_store(ledger)
    except HostError as exc:
        return _fail(str(exc))
    try:
        host = AcquirerHost.from_store(store, args.dialect)
        _demo_terminal(host)
        rng = random.Random(args.fault_seed)
        freeze_startup()  # this process only serves
        return run_host(_run(host, store, config, plan, rng, admin, ledger, args.dialect,
                             args.trace))
    except HostError as exc:
        return _fail(str(exc))
    finally:
        store.close()


def _demo_terminal(host: AcquirerHost) -> None:
    """Provision the demo terminal in a ledger that has no terminal yet."""
    from emulator.host.terminals import DEMO_MID, DEMO_TID, DEMO_TMK

    if not host.any_terminal():  # one row at most, whatever the ledger holds
        host.provision(DEMO_TID, DEMO_MID, DEMO_TMK)
        print(f"{PROG}: new ledger: provisioned the demo terminal TID {DEMO_TID} "
              f"MID {DEMO_MID}", flush=True)


def _check_ledger(ledger: str, dialect: str) -> None:
    """The supervisor's look at the ledger before its workers open it: it opens (else
    HostError, one clear line) and has a terminal (the demo one when new)."""
    with gc_paused():
        store = open_store(ledger)
    try:
        _demo_terminal(AcquirerHost.from_store(store, dialect))
    finally:
        store.close()  # each worker opens its own connection


async def _run(host: AcquirerHost, store: LedgerStore, config: ServerConfig,
               plan: FaultPlan, rng: random.Random, admin: AdminAddress | None, ledger: str,
               dialect: str, trace_path: Path | None = None) -> int:
    from emulator.trace import HostTraceFile
    trace = HostTraceFile(trace_path, host.dialect) if trace_path is not None else None
    server = acquirer_server(host, store, config=config, faults=plan, rng=rng, trace=trace)
    try:
        bound = await server.start()
    except OSError as exc:
        return _fail(f"cannot listen on {config.host}:{config.port}: {exc.strerror}")
    admin_server: AdminServer | None = None
    if admin is not None:
        admin_server = AdminServer(plan, server.stats.as_dict)
        try:
            admin = await admin_server.start(admin)
        except AdminError:
            await server.stop()
            raise
    server.install_signal_handlers()
    where = f"admin {admin}" if admin is not None else "no admin channel"
    print(f"{PROG}: listening on {bound[0]}:{bound[1]} (dialect {dialect}, ledger "
          f"{safe_ledger_name(ledger)} ({server.commit_mode}), loop {loop_name()}, "
          f"{where}, faults: {'; '.join(r.spec for r in plan.rules) or 'none'})", flush=True)
    await server.serve_until_stopped()
    if admin_server is not None:
        await admin_server.stop()
    if server.fatal is not None:
        print(f"{PROG}: stopped: the ledger refused a commit ({server.fatal})", file=sys.stderr)
        return 1
    print(f"{PROG}: stopped ({server.stats.requests} requests, "
          f"{server.stats.records_committed} records committed)", flush=True)
    return 0


def _serve_workers(args: argparse.Namespace, config: ServerConfig, admin: AdminAddress | None,
                   ledger: str) -> int:
    from emulator.workers import WORKER_TIMEOUT, WorkerSpec, supervise

    spec = WorkerSpec(ledger, args.dialect, config, tuple(args.faults), args.fault_seed,
                      args.verbose,
                      None if args.trace is None else str(args.trace.resolve()))

    def announce(bound: tuple[str, int], admin: AdminAddress | None, loop: str,
                 commits: str) -> None:
        where = f"admin {admin}" if admin is not None else "no admin channel"
        print(f"{PROG}: listening on {bound[0]}:{bound[1]} (dialect {args.dialect}, ledger "
              f"{safe_ledger_name(ledger)} ({commits}), workers {args.workers}, loop {loop}, "
              f"{where}, "
              f"faults: {'; '.join(args.faults) or 'none'})", flush=True)

    try:
        # the workers load their modules while the supervisor checks the ledger. The
        # supervisor serves no terminal: asyncio's loop (see emulator.loop), its workers
        # the host's
        code, stats = asyncio.run(supervise(
            spec, args.workers, admin, announce,
            worker_timeout=WORKER_TIMEOUT if args.worker_timeout is None else args.worker_timeout,
            prepare=lambda: _check_ledger(ledger, args.dialect)))
    except HostError as exc:  # WorkerError, or the ledger the supervisor checked
        return _fail(str(exc))
    print(f"{PROG}: stopped ({stats.get('requests', 0)} requests, "
          f"{stats.get('records_committed', 0)} records committed, {args.workers} workers)",
          flush=True)
    return code


def run(argv: Sequence[str] | None = None) -> NoReturn:
    """``python -m emulator``."""
    sys.exit(main(list(argv) if argv is not None else None))
