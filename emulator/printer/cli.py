"""``pos-emulator printer``: run the virtual ESC/POS printer on a pty, or render a saved job.

``pos-emulator printer`` prints the device path, then every receipt as it is
cut. Control commands on stdin: ``paper out``, ``paper in``, ``quit``.
``pos-emulator printer --file JOB.bin`` prints the text of a saved job and exits.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading

from emulator.printer.device import VirtualPrinter, render_file
from emulator.signals import stop_on_signal


class _UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise _UsageError(message)


def _parser() -> _Parser:
    p = _Parser(prog="pos-emulator printer", description="virtual ESC/POS receipt printer")
    p.add_argument("--file", help="render this saved ESC/POS job to text and exit")
    p.add_argument("--width", type=int, default=32, help="columns for centring (default 32)")
    p.add_argument("--paper-out", action="store_true", help="start with no paper")
    return p


def _watch(printer: VirtualPrinter, stop: threading.Event) -> None:
    shown = 0
    while not stop.wait(0.1):
        receipts = printer.receipts
        for text in receipts[shown:]:
            print(f"{text}\n-------- cut --------", flush=True)
        shown = len(receipts)


def main(argv: list[str]) -> int:
    """Entry point; returns the exit code (2 on bad arguments or an unreadable file)."""
    try:
        args = _parser().parse_args(argv)
        if args.width < 8:
            raise _UsageError("--width must be at least 8")
    except _UsageError as exc:
        print(f"pos-emulator printer: {exc}", file=sys.stderr)
        return 2
    if args.file:
        try:
            print(render_file(args.file, width=args.width))
        except OSError as exc:
            print(f"pos-emulator printer: cannot read {args.file}: {exc.strerror}",
                  file=sys.stderr)
            return 2
        return 0
    stop = threading.Event()
    on_signal = stop_on_signal(stop)
    in_main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, on_signal) if in_main else None
    try:
        _serve(args, stop)
    finally:
        if in_main:
            signal.signal(signal.SIGTERM, previous)
    return 0


def _serve(args: argparse.Namespace, stop: threading.Event) -> None:
    with VirtualPrinter(width=args.width) as printer:
        printer.paper_out = args.paper_out
        print(printer.path, flush=True)
        watcher = threading.Thread(target=_watch, args=(printer, stop), daemon=True)
        watcher.start()
        try:
            for line in sys.stdin or ():
                words = line.split()
                if words == ["quit"]:
                    break
                if words[:1] == ["paper"] and words[1:] in (["out"], ["in"]):
                    printer.paper_out = words[1] == "out"
                    print("ok", flush=True)
                elif words:
                    print(f"error: unknown command {line.strip()!r}", flush=True)
            else:
                while not stop.wait(0.5):
                    pass
        except KeyboardInterrupt:
            pass
        stop.set()
        watcher.join(timeout=1.0)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
