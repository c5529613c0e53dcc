"""PIN pad exchange benchmark: request/response round trips with the virtual pad over a pty.

``measure_pinpad_exchange(n)`` times ``n`` status/echo exchanges (frame out,
ACK back, answer frame back, ACK out) through the real stack: ``PinPad`` ->
``SerialLink`` (pyserial) -> pty -> virtual pad thread. ``measure_pin_exchange``
does the same with a PIN request answered by a zero-delay scripted cardholder
(so cardholder time is excluded but the PIN block encryption is in). The
anchor, measured in the same run, is a bare one-byte ping-pong over a pty
between two threads: the floor any serial protocol here can reach.

Run: ``.venv/bin/python -m bench._pinpad [n]``. Target: median exchange <= 5 ms.
"""

from __future__ import annotations

import os
import select
import statistics
import sys
import threading
import time
import tty

from drivers.pinpad import PinPad
from emulator.pinpad import DEFAULT_MASTER_KEY, Cardholder, EnterPin, VirtualPinPad
from iso8583.crypto.des import encrypt_ecb
from iso8583.crypto.kcv import tdes_kcv

TARGET_MS = 5.0
_PIK = bytes.fromhex("807A23AD32B36D457AE91FDF927570EA")
_PAN = "6225880000000019"


def measure_pinpad_exchange(n: int) -> list[float]:
    """Seconds per status/echo request/response round trip, ``n`` samples."""
    with VirtualPinPad() as pad, PinPad.open(pad.path) as client:
        client.status("warm")
        samples = []
        for _ in range(n):
            t0 = time.perf_counter()
            client.status("bench")
            samples.append(time.perf_counter() - t0)
    return samples


def measure_pin_exchange(n: int) -> list[float]:
    """Seconds per PIN request answered at once by the scripted cardholder, ``n`` samples."""
    with VirtualPinPad(cardholder=Cardholder(default=EnterPin("123456"))) as pad, \
            PinPad.open(pad.path) as client:
        client.load_working_key(encrypt_ecb(DEFAULT_MASTER_KEY, _PIK), tdes_kcv(_PIK, 4))
        client.get_pin_block(_PAN, 100, 30)
        samples = []
        for _ in range(n):
            t0 = time.perf_counter()
            client.get_pin_block(_PAN, 100, 30)
            samples.append(time.perf_counter() - t0)
    return samples


def measure_pty_ping(n: int) -> list[float]:
    """Anchor: seconds per one-byte round trip over a bare pty between two threads."""
    master, slave = os.openpty()
    tty.setraw(slave)
    stop = threading.Event()

    def echo() -> None:
        while not stop.is_set():
            ready, _, _ = select.select([master], [], [], 0.05)
            if ready:
                os.write(master, os.read(master, 64))

    thread = threading.Thread(target=echo, daemon=True)
    thread.start()
    samples = []
    try:
        for _ in range(n + 1):
            t0 = time.perf_counter()
            os.write(slave, b"x")
            select.select([slave], [], [], 1.0)
            os.read(slave, 64)
            samples.append(time.perf_counter() - t0)
    finally:
        stop.set()
        thread.join()
        os.close(master)
        os.close(slave)
    return samples[1:]


def main(argv: list[str]) -> int:
    n = int(argv[0]) if argv else 500
    anchor = statistics.median(measure_pty_ping(n)) * 1e3
    echo = statistics.median(measure_pinpad_exchange(n)) * 1e3
    pin = statistics.median(measure_pin_exchange(max(1, n // 5))) * 1e3
    print(f"pty one-byte ping (anchor):   median {anchor:.3f} ms")
    print(f"PIN pad status exchange:      median {echo:.3f} ms  ({echo / anchor:.1f}x anchor)"
          f"  target <= {TARGET_MS} ms: {'ok' if echo <= TARGET_MS else 'MISSED'}")
    print(f"PIN pad PIN exchange (0 s):   median {pin:.3f} ms  ({pin / anchor:.1f}x anchor)"
          f"  target <= {TARGET_MS} ms: {'ok' if pin <= TARGET_MS else 'MISSED'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
