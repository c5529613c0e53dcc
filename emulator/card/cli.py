"""``pos-emulator card``: put a virtual test card into a vpcd reader slot of pcscd.

    pos-emulator card --slot 0 --card cup-debit [--contactless] [--t0]
                      [--faults SPEC] [--vpcd-host 127.0.0.1] [--vpcd-port PORT]
    pos-emulator card --list

The card is inserted at start. On a terminal, type ``i`` + Enter to insert it
again, ``r`` to remove it, ``q`` to quit; SIGINT and SIGTERM stop cleanly (the
card is removed first). Fault specs are described in
:mod:`emulator.card.faults`. Until ``emulator/cli.py`` dispatches to it, run it
as ``python -m emulator.card.cli``.
"""

from __future__ import annotations

import argparse
import select
import signal
import sys
import threading

from emulator.card.app import VirtualCard
from emulator.card.faults import CardFaults, FaultSpecError, parse_card_faults
from emulator.card.vpcd import VPCD_BASE_PORT, VpcdCardServer, vpcd_port
from emulator.catalogue import CARDS, TestCard, card_by_name
from emulator.signals import stop_on_signal

__all__ = ["main"]


class _UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise _UsageError(message)


def _mask(pan: str) -> str:
    # Display masking as everywhere else: first six and last four digits.
    return pan[:6] + "*" * (len(pan) - 10) + pan[-4:] if len(pan) > 10 else "*" * len(pan)


def _parser() -> _Parser:
    p = _Parser(prog="pos-emulator card",
                description="Serve a virtual EMV test card to pcscd's vpcd driver.")
    p.add_argument("--slot", type=int, choices=(0, 1), default=0, help="vpcd slot (0 or 1)")
    p.add_argument("--card", help="catalogue card name (see --list)")
    p.add_argument("--contactless", action="store_true", help="present the contactless interface")
    p.add_argument("--t0", action="store_true",
                   help="answer like a T=0 card: 61xx + GET RESPONSE, 6Cxx on a wrong Le")
    p.add_argument("--faults", default="", help="card fault spec, e.g. 'remove@read_record:2'")
    p.add_argument("--vpcd-host", default="127.0.0.1", help="host where pcscd's vpcd listens")
    p.add_argument("--vpcd-port", type=int, default=None,
                   help=f"port of slot 0 (default {VPCD_BASE_PORT}); slot n uses port + n")
    p.add_argument("--list", action="store_true", help="list the catalogue chip cards and exit")
    return p


def _describe(card: TestCard) -> str:
    interfaces = "/".join(k for k, ok in (("contact", card.contact),
                                          ("contactless", card.contactless)) if ok)
    return f"{card.name:<16} {_mask(card.pan)}  {card.label:<16} {interfaces}  {card.status}"


def _build(args: argparse.Namespace) -> tuple[VirtualCard, CardFaults]:
    if not args.card:
        raise _UsageError("--card NAME is required (see --list)")
    try:
        card = card_by_name(args.card)
    except KeyError as exc:
        raise _UsageError(str(exc.args[0])) from None
    if not card.chip:
        raise _UsageError(f"{card.name} is a magnetic-stripe card: it has no chip to serve")
    try:
        faults = parse_card_faults(args.faults)
    except FaultSpecError as exc:
        raise _UsageError(f"--faults: {exc}") from None
    virtual = VirtualCard(card, t0=args.t0, faults=faults)
    try:
        virtual.power_on(contactless=args.contactless)
    except ValueError as exc:
        raise _UsageError(str(exc)) from None
    virtual.power_off()
    return virtual, faults


def main(argv: list[str] | None = None) -> int:
    """Run the card server until stopped; 0 on a clean stop, 2 on bad input."""
    try:
        args = _parser().parse_args(argv)
        if args.list:
            for card in CARDS:
                if card.chip:
                    print(_describe(card))
            return 0
        virtual, _faults = _build(args)
    except _UsageError as exc:
        print(f"pos-emulator card: {exc}", file=sys.stderr)
        return 2
    base = args.vpcd_port if args.vpcd_port is not None else VPCD_BASE_PORT
    port = vpcd_port(args.slot, base)
    stop = threading.Event()
    old = {s: signal.signal(s, stop_on_signal(stop)) for s in (signal.SIGINT, signal.SIGTERM)}
    server = VpcdCardServer(virtual, host=args.vpcd_host, port=port)
    try:
        iface = "contactless" if args.contactless else "contact"
        print(f"serving {virtual.card.name} ({_mask(virtual.card.pan)}, {virtual.card.label}, "
              f"{iface}{', T=0' if args.t0 else ''}) in vpcd slot {args.slot} at "
              f"{args.vpcd_host}:{port}", flush=True)
        if not server.insert(wait=2.0):
            print(f"vpcd at {args.vpcd_host}:{port} is not reachable yet; retrying "
                  "(is pcscd with vsmartcard-vpcd running?)", file=sys.stderr, flush=True)
        interactive = sys.stdin is not None and sys.stdin.isatty()
        if interactive:
            print("keys: i + Enter insert, r + Enter remove, q + Enter quit", flush=True)
        while not stop.is_set():
            if not interactive:
                stop.wait(0.5)
                continue
            ready, _, _ = select.select([sys.stdin], [], [], 0.2)
            if not ready:
                continue
            line = sys.stdin.readline()
            if not line:
                interactive = False
                continue
            command = line.strip().lower()
            if command == "i":
                ok = server.insert(wait=2.0)
                print("card inserted" if ok else "inserted; vpcd not reachable yet", flush=True)
            elif command == "r":
                server.remove()
                print("card removed", flush=True)
            elif command == "q":
                break
            elif command:
                print("keys: i insert, r remove, q quit", flush=True)
    finally:
        server.stop()
        for sig, handler in old.items():
            signal.signal(sig, handler)
    print(f"stopped after {server.apdu_count} APDUs", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
