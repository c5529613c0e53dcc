"""Every answer of the host pinned byte for byte over a seeded workload (CUP and iso87).

The host's hot path is tuned for CPU (encoding, MAC, fingerprints, ARQC, fewer SQL
statements); none of that may change a single byte of an answer. A seeded mix of
sign-ons, chip and stripe sales, refunds, voids, reversals, balances, settlements,
batch uploads, retransmissions, changed duplicates, bad MACs, unknown terminals and
garbage runs through the host on each ledger backend, in groups of requests per
session as the server runs them, and a short hash of each answer (and whether the
connection closes) is compared with ``answers-<dialect>.txt`` beside this file,
which was recorded before the tuning. Regenerate only for an intended change of
answers: ``PIN_ANSWERS=record pytest tests/emulator/host/test_answers_pinned.py``.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import random
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from emulator.catalogue import card_by_name
from emulator.host import AcquirerHost
from emulator.host.ledger import LedgerStore, TransactionRow
from emulator.simterminal import Approved, SimTerminal
from iso8583.dialects import get_dialect
from iso8583.errors import ResponseError
from iso8583.message import Message

HERE = Path(__file__).parent
START = datetime(2026, 11, 23, 10, 30, 0)
MID = "123456789012345"
TMK = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")
CARDS = ("cup-debit", "cup-credit", "visa-credit", "mastercard", "cup-magstripe",
         "cup-expired", "cup-blocked", "cup-low-funds", "cup-nopin")
PINS = {"cup-debit": "123456", "cup-credit": "111111", "mastercard": "4315",
        "cup-magstripe": "888888", "cup-expired": "123456", "cup-blocked": "123456",
        "cup-low-funds": "123456"}


class Driver:
    """Seeded terminals talking to one host; records (label, reply, close) per request."""

    def __init__(self, dialect: str, store: LedgerStore, seed: int = 11) -> None:
        self.rng = random.Random(seed)
        self.host = AcquirerHost.from_store(store, dialect,
                                            random_bytes=random.Random(seed).randbytes)
        self.store = store
        self.dialect = self.host.dialect
        self.tpdu = bytes.fromhex("6000030000") if self.dialect.spec.tpdu else None
        self.now = START
        tids = [f"{71_000_000 + i:08d}" for i in range(5)]
        for tid in tids:
            self.host.provision(tid, MID, TMK)
        self.terms = [SimTerminal(dialect, tid, MID, TMK, lambda: self.now,
                                  rng=random.Random(tid)) for tid in tids]
        self.sales: dict[str, list[tuple[Approved, int]]] = {t.tid: [] for t in self.terms}
        self.sent: dict[str, list[Message]] = {t.tid: [] for t in self.terms}
        self.log: list[tuple[str, bytes | None, bool]] = []

    def payload(self, msg: Message) -> bytes:
        return self.dialect.payload(msg, tpdu=self.tpdu)

    def run_group(self, items: list[tuple[str, SimTerminal | None, Message | None, bytes]]
                  ) -> None:
        with self.store.session() as s:
            outs = [self.host.handle(p, self.now, s) for _, _, _, p in items]
        for (label, term, msg, _), out in zip(items, outs, strict=True):
            self.log.append((label, out.reply, out.close))
            self.now += timedelta(seconds=1)
            if term is None or msg is None or out.reply is None:
                continue
            frame = self.dialect.unpack_payload(out.reply)
            try:
                res = term.check_response(msg, frame.message, body=frame.body)
            except ResponseError:  # a refused answer (a replay of another) is still pinned
                continue
            if isinstance(res, Approved) and res.kind == "sale" and res.amount:
                self.sales[term.tid].append((res, res.amount))

    def step(self, term: SimTerminal) -> tuple[str, Message | None, bytes]:
        rng = self.rng
        roll = rng.random()
        sales = self.sales[term.tid]
        if roll < 0.38 or not sales:
            name = rng.choice(CARDS)
            card = card_by_name(name)
            amount = rng.choice((100, 250, 1000, 99_999_00, 305, 1212, 1313, 1414, 1441,
                                 1551, 1554, 1555, 1561, 1596, 1598, 4200))
            chip = rng.random() < 0.7 and name != "cup-magstripe"
            pin = PINS.get(name) if rng.random() < 0.85 else None
            if pin is not None and rng.random() < 0.05:
                pin = "000000"
            msg = term.sale(card, amount, pin=pin, chip=chip)
            return f"sale {name} {amount} chip={chip}", msg, self.payload(msg)
        if roll < 0.62:
            i = rng.randrange(len(sales))
            orig, left = sales[i]
            amount = min(left, rng.choice((100, 200, 1000, left + 100)))
            msg = term.refund(orig, max(amount, 1))
            if rng.random() < 0.5:
                sales.pop(i)
            return f"refund {amount}", msg, self.payload(msg)
        if roll < 0.68:
            orig, _ = sales.pop(rng.randrange(len(sales)))
            msg = term.void(orig)
            return "void", msg, self.payload(msg)
        if roll < 0.74 and self.sent[term.tid]:
            target = self.sent[term.tid][-1]
            if target.mti in ("0200", "0220"):
                msg = term.reversal(target, rng.choice(("98", "96", "06")))
                return f"reversal of {target.mti}", msg, self.payload(msg)
        if roll < 0.78:
            name = rng.choice(CARDS)
            msg = term.balance(card_by_name(name), pin=PINS.get(name))
            return f"balance {name}", msg, self.payload(msg)
        if roll < 0.84 and self.sent[term.tid]:  # retransmission, byte for byte
            target = self.sent[term.tid][rng.randrange(len(self.sent[term.tid]))]
            return "retransmission", None, self.payload(target)
        if roll < 0.87 and self.sent[term.tid]:  # same key, other content: 94
            target = self.sent[term.tid][-1].copy()
            if 4 in target:
                target[4] = f"{int(str(target[4])) + 1:012d}"
            return "changed duplicate", None, self.payload(term.remac(target))
        if roll < 0.90:  # a flipped MAC bit
            msg = term.sale(card_by_name("cup-debit"), 100, pin="123456")
            flipped = bytearray(self.payload(msg))
            flipped[-1] ^= 0x01
            return "bad mac", None, bytes(flipped)
        if roll < 0.92:
            msg = term.echo()
            return "echo", msg, self.payload(msg)
        if roll < 0.94:
            msg = self.terms[0].sale(card_by_name("cup-debit"), 100, pin="123456")
            msg[41] = "99999999"
            return "unknown terminal", None, self.payload(msg)
        if roll < 0.96:
            return "garbage", None, bytes(rng.randrange(256) for _ in range(rng.randrange(40)))
        msg = term.sale(card_by_name("cup-credit"), 700, pin="111111")
        whole = self.payload(msg)
        cut = rng.randrange(10, len(whole) - 1)
        return "truncated", None, whole[:cut]

    def run(self, groups: int = 40) -> list[tuple[str, bytes | None, bool]]:
        signon = []
        for term in self.terms:
            msg = term.sign_on_request()
            signon.append(("sign-on", term, msg, self.payload(msg)))
        with self.store.session() as s:
            outs = [self.host.handle(p, self.now, s) for _, _, _, p in signon]
        for (label, term, _, _), out in zip(signon, outs, strict=True):
            self.log.append((label, out.reply, out.close))
            assert out.reply is not None
            assert term is not None
            term.accept_sign_on(self.dialect.unpack_payload(out.reply).message)
        for g in range(groups):
            items: list[tuple[str, SimTerminal | None, Message | None, bytes]] = []
            for _ in range(self.rng.choice((1, 3, 9, 17))):
                term = self.rng.choice(self.terms)
                label, sent, payload = self.step(term)
                if sent is not None:
                    self.sent[term.tid].append(sent)
                items.append((f"{term.tid} {label}", term, sent, payload))
            self.run_group(items)
            if g == groups // 2:  # settle and upload one terminal's batch mid-way
                term = self.terms[1]
                msg = term.settlement()
                self.run_group([("settlement", term, msg, self.payload(msg))])
                uploads = term.batch_upload_all() if self.dialect.settings.batch_upload else []
                for up in uploads:
                    self.run_group([("batch upload", term, up, self.payload(up))])
        return self.log


def _lines(dialect: str, log: list[tuple[str, bytes | None, bool]]) -> list[str]:
    out = []
    codec = get_dialect(dialect)
    for label, reply, close in log:
        digest = hashlib.sha256(reply).hexdigest()[:16] if reply is not None else "-"
        code = codec.unpack_payload(reply).message.response_code if reply is not None else "-"
        out.append(f"{digest} {code} {'close' if close else 'keep'} {label}")
    return out


@pytest.mark.parametrize("dialect", ["cup", "iso87"])
def test_every_answer_is_byte_for_byte_the_recorded_one(dialect: str,
                                                        ledger_store: LedgerStore) -> None:
    got = _lines(dialect, Driver(dialect, ledger_store).run())
    golden = HERE / f"answers-{dialect}.txt"
    if os.environ.get("PIN_ANSWERS") == "record":
        golden.write_text("\n".join(got) + "\n", encoding="utf-8")
    want = golden.read_text(encoding="utf-8").splitlines()
    for i, (g, w) in enumerate(zip(got, want, strict=False)):
        assert g == w, f"answer {i} differs: got {g!r}, recorded {w!r}"
    assert len(got) == len(want)


def test_a_request_stored_with_an_old_form_fingerprint_is_still_recognised(
        ledger_store: LedgerStore) -> None:
    """Rows booked before the ``v2:`` fingerprints hold the old form (an HMAC of the
    re-encoded request without its MAC): a retransmission of such a request still gets
    its stored answer byte for byte, and other content under its key still gets 94."""
    driver = Driver("cup", ledger_store)
    driver.run(groups=0)  # sign-ons only
    term = driver.terms[0]
    sale = term.sale(card_by_name("cup-debit"), 1000, pin="123456")
    first = driver.host.handle(driver.payload(sale), START)
    ledger_store.commit(first.records)
    booked = next(r for r in first.records if isinstance(r, TransactionRow))
    assert booked.fingerprint.startswith("v2:")
    clone = sale.copy()
    del clone[64]
    old = hmac.new(ledger_store.secret, driver.dialect.encode(clone), hashlib.sha256).hexdigest()
    ledger_store.commit([replace(booked, fingerprint=old)])

    again = driver.host.handle(driver.payload(sale), START + timedelta(seconds=30))
    assert again.reply == first.reply
    assert again.records == ()
    changed = sale.copy()
    changed[4] = "000000001001"
    other = driver.host.handle(driver.payload(term.remac(changed)), START)
    assert other.response_code == "94"
