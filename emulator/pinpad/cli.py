"""``pos-emulator pinpad``: run the virtual PIN pad on a pty and script the cardholder from stdin.

Prints the device path to give the terminal (``PIN pad URL``), then reads
control commands, one per line, from stdin::

    pin DIGITS [DELAY [PER_DIGIT]]
                            next PIN entry: wait DELAY s, type DIGITS PER_DIGIT s
                            apart, then Enter
    cancel [DELAY]          next PIN entry: press Cancel
    walkaway                next PIN entry: never answer (the pad times out)
    fault bad-lrc N[,N..]   corrupt the LRC on these attempt numbers
    fault drop-byte N[,N..] drop a byte on these attempt numbers
    fault nak N             NAK the next N frames from the terminal
    fault late-ack SECONDS  hold every ACK back this long
    fault silent on|off     answer nothing
    fault eot N             send N spurious EOTs before the next answer
    fault clear             no faults
    status                  show the display, keys and counters
    quit                    stop

With stdin closed the pad serves until interrupted (Ctrl-C / SIGTERM).
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading

from emulator.pinpad.cardholder import Cardholder, EnterPin
from emulator.pinpad.device import DEFAULT_BDK, DEFAULT_KSN, DEFAULT_MASTER_KEY, VirtualPinPad
from emulator.pinpad.link import LinkFaults
from emulator.signals import stop_on_signal


class _UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise _UsageError(message)


def _hex_key(text: str, length: int) -> bytes:
    try:
        value = bytes.fromhex(text)
    except ValueError:
        raise argparse.ArgumentTypeError("not hex") from None
    if len(value) != length:
        raise argparse.ArgumentTypeError(f"must be {length} bytes ({2 * length} hex digits)")
    return value


def _parser() -> _Parser:
    p = _Parser(prog="pos-emulator pinpad", description="virtual serial PIN pad on a pty")
    p.add_argument("--master-key", type=lambda t: _hex_key(t, 16), default=DEFAULT_MASTER_KEY,
                   help="terminal master key the PIN key is wrapped under (32 hex)")
    p.add_argument("--bdk", type=lambda t: _hex_key(t, 16), default=DEFAULT_BDK,
                   help="DUKPT base derivation key (32 hex)")
    p.add_argument("--ksn", type=lambda t: _hex_key(t, 10), default=DEFAULT_KSN,
                   help="initial DUKPT key serial number (20 hex)")
    p.add_argument("--pin", default=None,
                   help="PIN the cardholder types whenever nothing else is scripted")
    p.add_argument("--ack-timeout", type=float, default=0.5)
    return p


def _numbers(text: str) -> set[int]:
    return {int(x) for x in text.split(",") if x}


def apply_command(line: str, pad: VirtualPinPad) -> str | None:
    """Run one control command; return a reply line, or None for ``quit``."""
    words = line.split()
    if not words:
        return ""
    cmd, args = words[0].lower(), words[1:]
    ch, faults = pad.cardholder, pad.faults
    try:
        if cmd == "quit":
            return None
        if cmd == "pin":
            ch.enter_pin(args[0], delay=float(args[1]) if len(args) > 1 else 0.0,
                         per_digit=float(args[2]) if len(args) > 2 else 0.0)
        elif cmd == "cancel":
            ch.press_cancel(delay=float(args[0]) if args else 0.0)
        elif cmd == "walkaway":
            ch.walk_away()
        elif cmd == "fault":
            _fault(args, faults)
            pad.wake()
        elif cmd == "status":
            d = pad.device
            return (f"display={' / '.join(d.display_lines)} session_key={d.session_pik is not None}"
                    f" pin_entries={d.pin_entries} frames_sent={pad.link.frames_sent}"
                    f" send_failures={pad.link.send_failures}")
        else:
            return f"error: unknown command {cmd!r}"
    except (IndexError, ValueError) as exc:
        return f"error: {cmd}: {exc or 'missing argument'}"
    return "ok"


def _fault(args: list[str], faults: LinkFaults) -> None:
    kind = args[0]
    if kind == "clear":
        faults.clear()
    elif kind == "bad-lrc":
        faults.bad_lrc_on = _numbers(args[1])
    elif kind == "drop-byte":
        faults.drop_byte_on = _numbers(args[1])
    elif kind == "nak":
        faults.nak_next = int(args[1])
    elif kind == "late-ack":
        faults.ack_delay = float(args[1])
    elif kind == "silent":
        faults.silent = args[1] == "on"
    elif kind == "eot":
        faults.spurious_eot = int(args[1])
    else:
        raise ValueError(f"unknown fault {kind!r}")


def main(argv: list[str]) -> int:
    """Entry point; returns the exit code (2 on bad arguments)."""
    try:
        args = _parser().parse_args(argv)
        default = EnterPin(args.pin) if args.pin else None
    except (_UsageError, ValueError) as exc:
        print(f"pos-emulator pinpad: {exc}", file=sys.stderr)
        return 2
    stop = threading.Event()
    on_signal = stop_on_signal(stop)
    in_main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, on_signal) if in_main else None
    try:
        return _serve(args, default, stop)
    finally:
        if in_main:
            signal.signal(signal.SIGTERM, previous)


def _serve(args: argparse.Namespace, default: EnterPin | None, stop: threading.Event) -> int:
    pad = VirtualPinPad(master_key=args.master_key, bdk=args.bdk, initial_ksn=args.ksn,
                        cardholder=Cardholder(default), ack_timeout=args.ack_timeout)
    with pad:
        print(pad.path, flush=True)
        try:
            for line in sys.stdin or ():
                reply = apply_command(line, pad)
                if reply is None:
                    return 0
                if reply:
                    print(reply, flush=True)
            while not stop.wait(0.5):
                pass
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
