"""Hardware-path benchmark: APDU round trip and full refund card read through pcscd + vpcd.

Starts its own private pcscd with the vpcd driver (the same harness the HIL
tests use, :mod:`emulator.card.pcscd_harness`), puts a virtual catalogue card
in a vpcd slot and times, through pyscard and :mod:`drivers.pcsc`:

* the APDU round trip (GET DATA 9F36, and SELECT of the PSE), median of N;
* the full refund card read with :mod:`drivers.emv` (application selection to
  the last record; ``refund_ends_with="records"``), contact and contactless,
  median of N; the same read ending in GENERATE AC (AAC) for reference;
* the PIN pad request/response round trip over a pty
  (:func:`bench._pinpad.measure_pinpad_exchange`).

Anchors measured in the same run: the same APDU and the same read through the
in-process transport (no pcscd, no socket), so the ratio shows what the PC/SC
stack costs. Targets: APDU <= 0.5 ms, full read <= 20 ms, PIN pad <= 5 ms.

Run as root: ``.venv/bin/python -m bench.hardware [N]`` (default N = 500).
"""

from __future__ import annotations

import datetime as dt
import statistics
import sys
import time
from collections.abc import Callable
from functools import partial

from drivers.emv import EmvKernel, TerminalConfig, TransactionData, TransactionType
from drivers.pcsc import PcscCardTransport, PcscReader
from drivers.transport import CardTransport
from emulator.card import InProcessCardTransport, VirtualCard
from emulator.card.pcscd_harness import PcscdHarness, unavailable_reason
from emulator.card.vpcd import VpcdCardServer
from emulator.catalogue import card_by_name

APDU_TARGET_MS = 0.5
READ_TARGET_MS = 20.0
PINPAD_TARGET_MS = 5.0

GET_ATC = bytes.fromhex("80CA9F3600")
SELECT_PSE = bytes.fromhex("00A404000E315041592E5359532E444446303100")
REFUND = TransactionData(type=TransactionType.REFUND, amount=1000, date=dt.date(2026, 11, 23),
                         unpredictable_number=bytes.fromhex("01020304"))

RECORDS_ONLY = EmvKernel(TerminalConfig(refund_ends_with="records"))
WITH_AAC = EmvKernel(TerminalConfig(refund_ends_with="aac"))


def median_ms(fn: Callable[[], object], n: int) -> float:
    """Median wall time of ``fn`` in milliseconds over ``n`` calls (after 5 warm-up calls)."""
    for _ in range(5):
        fn()
    samples = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
    return statistics.median(samples) * 1000


def verdict(value: float, target: float) -> str:
    return "OK" if value <= target else "OVER TARGET"


def line(name: str, value_ms: float, target_ms: float | None = None,
         anchor_ms: float | None = None) -> None:
    parts = [f"{name:<56} {value_ms:8.3f} ms"]
    if anchor_ms:
        parts.append(f"x{value_ms / anchor_ms:7.1f} in-process")
    if target_ms is not None:
        parts.append(f"target <= {target_ms:g} ms {verdict(value_ms, target_ms)}")
    print("  ".join(parts), flush=True)


def _measure_reads(kind: str, pcsc: CardTransport, anchor: CardTransport, n: int) -> bool:
    """Time the refund read through PC/SC against the in-process anchor; False on a mismatch."""
    if RECORDS_ONLY.read_card(pcsc, REFUND).pan != RECORDS_ONLY.read_card(anchor, REFUND).pan:
        print(f"bench.hardware: the {kind} read returned a different PAN", file=sys.stderr)
        return False
    apdus = RECORDS_ONLY.read_card(pcsc, REFUND).apdu_count
    line(f"full refund read, {kind} ({apdus} APDUs, to last record)",
         median_ms(lambda: RECORDS_ONLY.read_card(pcsc, REFUND), n), READ_TARGET_MS,
         median_ms(lambda: RECORDS_ONLY.read_card(anchor, REFUND), n))
    line(f"refund read + GENERATE AC (AAC), {kind}",
         median_ms(lambda: WITH_AAC.read_card(pcsc, REFUND), n))
    return True


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    n = int(args[0]) if args else 500
    reason = unavailable_reason()
    if reason is not None:
        print(f"bench.hardware: cannot start a private pcscd: {reason}", file=sys.stderr)
        return 2
    with PcscdHarness() as harness:
        harness.export_socket_env()  # before the first PC/SC context of this process
        print(f"private pcscd ({harness.mode} mode), vpcd slots on ports "
              f"{harness.port(0)}/{harness.port(1)}; N = {n}", flush=True)
        servers: list[VpcdCardServer] = []
        try:
            transports: dict[str, tuple[PcscCardTransport, InProcessCardTransport]] = {}
            for slot, (name, contactless) in enumerate((("cup-debit", False),
                                                        ("visa-credit", True))):
                card = VirtualCard(card_by_name(name))
                card.power_on(contactless=contactless)
                server = VpcdCardServer(card, port=harness.port(slot))
                servers.append(server)
                server.insert(wait=10)
                reader = PcscReader(harness.reader_name(slot))
                reader.wait_for_card(10)
                anchor = InProcessCardTransport(VirtualCard(card_by_name(name)),
                                                contactless=contactless)
                transports["contactless" if contactless else "contact"] = (reader.connect(),
                                                                           anchor)
            contact, contact_anchor = transports["contact"]
            print(f"contact card: {contact.protocol}; contactless card: "
                  f"{transports['contactless'][0].protocol}", flush=True)
            for label, apdu in (("GET DATA 9F36", GET_ATC), ("SELECT PSE", SELECT_PSE)):
                line(f"APDU round trip, {label} (pcscd+vpcd)",
                     median_ms(partial(contact.transmit, apdu), n), APDU_TARGET_MS,
                     median_ms(partial(contact_anchor.transmit, apdu), n))
            for kind, (pcsc, anchor) in transports.items():
                if not _measure_reads(kind, pcsc, anchor, max(50, n // 5)):
                    return 1
            for pcsc, _anchor in transports.values():
                pcsc.close()
        finally:
            for server in servers:
                server.stop()
    try:
        from bench._pinpad import measure_pinpad_exchange  # helper C's module, optional
    except ImportError:
        print("PIN pad exchange: not available (bench._pinpad missing)", flush=True)
        return 0
    pinpad_ms = statistics.median(measure_pinpad_exchange(max(50, n // 5))) * 1000
    line("PIN pad request/response over a pty", pinpad_ms, PINPAD_TARGET_MS)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
