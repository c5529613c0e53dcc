"""A sans-I/O simulated POS terminal: a stateful test double over the terminal protocol.

Used by the host's rule tests, the socket client of the server tests, the fault
test and the load benchmark.  It holds what a real terminal holds (TID, MID,
TMK, working keys, STAN, batch, the approvals of the open batch) and the chip
of its test cards (ARQC); how each message is built, MACed and checked is
:class:`iso8583.terminal.TerminalProtocol`'s, never written here again.  It
does no I/O and reads the time only through the ``clock`` it is given.

Typical use::

    term = SimTerminal("cup", "10000001", "123456789012345", tmk, clock)
    term.accept_sign_on(host_answer(term.sign_on_request()))
    sale = term.sale(card_by_name("cup-debit"), 12_300, pin="123456")
    result = term.check_response(sale, host_answer(sale))   # Approved | Declined
    refund = term.refund(result, 5_000)                      # after an Approved sale

A request for which no answer arrives is reversed with
``term.reversal(request, "98")``; refunds are resent, never reversed, in the
CUP dialect (``dialect.settings.refund_reversible``).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime

from emulator.catalogue import TestCard
from emulator.host import security
from emulator.host.errors import NotSignedOnError
from iso8583 import tlv
from iso8583.codec import FieldValue
from iso8583.crypto.message_mac import apply_mac_encoded
from iso8583.dialect import Dialect
from iso8583.dialects import get_dialect
from iso8583.errors import ResponseError, ResponseMacError
from iso8583.framing import encode_length
from iso8583.message import Message
from iso8583.quickinit import quick_init
from iso8583.responses import UNMACED_CODES
from iso8583.settlement import SettlementTotals
from iso8583.terminal import (
    Answer,
    CardInput,
    OriginalRef,
    RequestContext,
    TerminalProtocol,
    UploadChunk,
    UploadItem,
    plan_upload,
)

Clock = Callable[[], datetime]

STAN_MAX = 999_999

__all__ = ["STAN_MAX", "UNMACED_CODES", "Approved", "Clock", "Declined", "ResponseError",
           "ResponseMacError", "Result", "SimTerminal"]


@quick_init  # one per answer: see iso8583.quickinit
@dataclass(frozen=True)
class Approved:
    """An approved answer as the terminal records it (the original of a later void/refund)."""

    kind: str  # sale, void, refund, balance, reversal, settlement, batch_upload, ...
    mti: str  # request MTI
    stan: str
    batch: str
    amount: int | None
    rrn: str | None
    auth_code: str | None
    date: str | None  # the ANSWER's F13 (MMDD): the original date a refund sends in 61.3
    scheme: str | None  # card organisation (CUP, VIS, MCC)
    pan: str | None = field(default=None, repr=False)
    balance: int | None = None  # balance inquiry: available balance in fen
    balanced: bool | None = None  # settlement: both halves of F48 agree
    original: Approved | None = field(default=None, repr=False)  # void/refund: what it names
    response_code: str = "00"

    def ref(self) -> OriginalRef:
        """This approval as the original a void or refund names."""
        return OriginalRef(self.batch, self.stan, self.date, self.rrn, self.auth_code,
                           self.amount or 0, self.scheme)


@quick_init  # one per answer: see iso8583.quickinit
@dataclass(frozen=True)
class Declined:
    """A refusal (any F39 other than 00)."""

    kind: str
    mti: str
    stan: str
    response_code: str


Result = Approved | Declined


@dataclass
class _Sent:
    kind: str
    scheme: str | None
    batch: str
    original: Approved | None = None
    reverses: tuple[str, str] | None = None  # (MTI, STAN) of the request a reversal undoes


class SimTerminal:
    """One simulated terminal (see the module docstring)."""

    def __init__(self, dialect: Dialect | str, tid: str, mid: str, tmk: bytes, clock: Clock,
                 *, rng: random.Random | None = None, stan: int = 1,
                 batch: str = "000001") -> None:
        self.dialect = get_dialect(dialect) if isinstance(dialect, str) else dialect
        self.protocol = TerminalProtocol(self.dialect, tid, mid)
        self.tid = tid
        self.mid = mid
        self._tmk = tmk
        self._clock = clock
        self._rng = rng if rng is not None else random.Random()
        self._next_stan = stan
        self.batch = batch
        self.keys: security.WorkingKeys | None = None
        self.approvals: list[Approved] = []
        self._voided: set[tuple[str, str]] = set()  # (batch, stan) of voided sales
        self._sent: dict[tuple[str, str], _Sent] = {}
        self._atc: dict[str, int] = {}
        self.currency = self.dialect.settings.currency
        #: the MACed request built last: (it, its MTI and fields then, its encoded body)
        self._packed: tuple[Message, str, dict[int, FieldValue], bytes] | None = None

    # --- state ---------------------------------------------------------------
    @property
    def signed_on(self) -> bool:
        return self.keys is not None

    @property
    def stan(self) -> str:
        """The STAN the next request will carry."""
        return f"{self._next_stan:06d}"

    def _take_stan(self) -> str:
        stan = self.stan
        self._next_stan = 1 if self._next_stan >= STAN_MAX else self._next_stan + 1
        return stan

    def _ctx(self) -> RequestContext:
        return RequestContext(self._take_stan(), self.batch, self._clock())

    def _mak(self) -> bytes:
        if self.keys is None:
            raise NotSignedOnError(f"terminal {self.tid} is not signed on")
        return self.keys.mak

    def totals(self) -> SettlementTotals:
        """Totals of the open batch from the approvals this terminal saw."""
        totals = SettlementTotals()
        for item in self.approvals:
            if item.batch != self.batch or item.amount is None or item.scheme is None:
                continue
            if item.kind == "sale" and (item.batch, item.stan) not in self._voided:
                totals = totals.add(item.scheme, item.amount, credit=False)
            elif item.kind == "refund":
                totals = totals.add(item.scheme, item.amount, credit=True)
        return totals

    def close_batch(self) -> None:
        """Start the next batch (after a settlement, and a batch upload if it was needed)."""
        self.approvals = [a for a in self.approvals if a.batch != self.batch]
        self._voided = {v for v in self._voided if v[0] != self.batch}
        number = int(self.batch) + 1
        self.batch = f"{1 if number > STAN_MAX else number:06d}"

    # --- the card and the PIN pad of this double ---------------------------------
    def _card(self, card: TestCard, *, chip: bool, amount: int, txn_type: int) -> CardInput:
        """The test card as the reader gives it: chip (with F55 for a sale) or stripe."""
        use_chip = chip and card.chip
        icc = self._icc_data(card, amount, txn_type) if use_chip and txn_type == 0x00 else None
        return CardInput(card.pan, card.expiry, "chip" if use_chip else "stripe",
                         card.psn if use_chip else None, card.track2, icc, card.scheme)

    def _pin_block(self, pin: str | None, pan: str) -> bytes | None:
        if pin is None:
            return None
        assert self.keys is not None
        return security.encrypt_pin(self.keys.pik, pin, pan)

    def _icc_data(self, card: TestCard, amount: int, txn_type: int) -> bytes:
        """F55 as a chip answers GENERATE AC: ARQC over the AC input tags, plus the context."""
        # F55's ATC (9F36) is two bytes: after 65,535 chip sales on one card the simulated
        # card counts from 1 again (a real one would refuse to go on)
        atc = self._atc.get(card.pan, 0) % 0xFFFF + 1
        self._atc[card.pan] = atc
        now = self._clock()
        values: dict[int, bytes] = {
            0x9F02: bytes.fromhex(f"{amount:012d}"),
            0x9F03: bytes(6),
            0x9F1A: bytes.fromhex("0" + self.currency),
            0x95: bytes(5),
            0x5F2A: bytes.fromhex("0" + self.currency),
            0x9A: bytes.fromhex(now.strftime("%y%m%d")),
            0x9C: bytes([txn_type]),
            0x9F37: self._rng.getrandbits(32).to_bytes(4, "big"),
            0x82: bytes.fromhex("7C00"),
            0x9F36: atc.to_bytes(2, "big"),
            0x9F10: security.card_iad(card),  # the layout of the card's CVN
        }
        arqc = security.card_cryptogram(card, values)
        out: dict[int, bytes] = {0x9F26: arqc, 0x9F27: b"\x80"}
        out.update(values)
        out[0x9F33] = bytes.fromhex("E0E1C8")
        out[0x9F34] = bytes.fromhex("420300")
        out[0x9F35] = b"\x22"
        if card.aid is not None:
            out[0x84] = card.aid
        return tlv.encode(out)

    def _finish(self, msg: Message, info: _Sent) -> Message:
        """MAC (network management stays unMACed) and remember what was sent."""
        if self.protocol.macs(msg):  # the body the MAC was computed over, kept for pack()
            body = apply_mac_encoded(self.dialect, self._mak(), msg)
            self._packed = (msg, msg.mti, dict(msg.raw_items()), body)
        self._sent[(msg.mti, str(msg[11]))] = info
        return msg

    def pack(self, request: Message, *, tpdu: bytes | None = None) -> bytes:
        """``dialect.pack(request, tpdu=tpdu)``; for the request built last, unchanged since,
        without encoding it again (its MAC was computed over the same bytes)."""
        packed = self._packed
        body = None
        if packed is not None and packed[0] is request and packed[1] == request.mti \
                and packed[2] == request.raw_items():
            body = packed[3]
        return encode_length(self.dialect.payload(request, tpdu=tpdu, body=body),
                             self.dialect.spec.length_bytes)

    def remac(self, request: Message) -> Message:
        """Re-MAC ``request`` (in place) with the current MAK, e.g. to resend after re-sign-on."""
        return self.protocol.mac(request, self._mak())

    # --- requests ------------------------------------------------------------
    def sign_on_request(self, form: int = 3) -> Message:
        """0800 sign-on asking for working keys in F62 form 1, 3 or 4 (60.3 001/003/004)."""
        msg = self.protocol.sign_on(self._ctx(), form)
        return self._finish(msg, _Sent("sign_on", None, self.batch))

    def accept_sign_on(self, response: Message) -> None:
        """Load the working keys of a 0810; raises on a refusal or a bad check value."""
        result = self.protocol.accept_sign_on(self._tmk, response)
        self.keys = result.keys
        if result.batch is not None:
            self.batch = result.batch

    def sign_off(self) -> Message:
        msg = self.protocol.sign_off(self._ctx())
        return self._finish(msg, _Sent("sign_off", None, self.batch))

    def echo(self) -> Message:
        """0820 echo test (60.3 = 301)."""
        msg = self.protocol.echo(self._ctx())
        return self._finish(msg, _Sent("echo", None, self.batch))

    def sale(self, card: TestCard, amount: int, *, pin: str | None = None,
             chip: bool = True) -> Message:
        """0200 sale (消费) of ``amount`` fen; F55 with an ARQC when read from the chip."""
        self._mak()
        ctx = self._ctx()
        card_in = self._card(card, chip=chip, amount=amount, txn_type=0x00)
        msg = self.protocol.sale(ctx, amount, card_in, self._pin_block(pin, card.pan))
        return self._finish(msg, _Sent("sale", card.scheme, self.batch))

    def balance(self, card: TestCard, *, pin: str | None = None, chip: bool = True) -> Message:
        """0200 balance inquiry (余额查询, F3 310000); the answer's F54 carries the balance."""
        self._mak()
        ctx = self._ctx()
        card_in = self._card(card, chip=chip, amount=0, txn_type=0x31)
        msg = self.protocol.balance(ctx, card_in, self._pin_block(pin, card.pan))
        return self._finish(msg, _Sent("balance", card.scheme, self.batch))

    def void(self, original: Approved, *, card: TestCard | None = None,
             pin: str | None = None) -> Message:
        """0200 void (消费撤销) of an approved sale of this batch, full amount.

        Without ``card`` the PAN is keyed from the original (entry mode 012).
        """
        self._mak()
        if original.pan is None or original.amount is None:
            raise ValueError("the original has no PAN or amount to void")
        ctx = self._ctx()
        if card is not None:
            card_in = self._card(card, chip=False, amount=original.amount, txn_type=0x20)
        else:
            card_in = CardInput(original.pan, scheme=original.scheme)
        msg = self.protocol.void(ctx, original.ref(), card_in,
                                 self._pin_block(pin, card_in.pan))
        return self._finish(msg, _Sent("void", original.scheme, self.batch, original))

    def refund(self, original: Approved, amount: int, *, card: TestCard | None = None,
               pin: str | None = None) -> Message:
        """Refund (退货) of ``amount`` fen against an approved sale: F37 + F61 name it."""
        self._mak()
        if original.pan is None:
            raise ValueError("the original has no PAN to refund to")
        ctx = self._ctx()
        if card is not None:
            card_in = self._card(card, chip=False, amount=amount, txn_type=0x20)
        else:
            card_in = CardInput(original.pan, scheme=original.scheme)
        msg = self.protocol.refund(ctx, original.ref(), amount, card_in,
                                   self._pin_block(pin, card_in.pan))
        return self._finish(msg, _Sent("refund", original.scheme, self.batch, original))

    def reversal(self, request: Message, reason: str) -> Message:
        """0400 reversal (冲正) of ``request`` with F39 = reason (98, 96, A0, 06).

        Copies the original's identifying fields, STAN included, and drops the
        PIN block, track data and the cryptogram; the host matches it by TID,
        batch, STAN, MTI and amount.  Where the dialect's reversal is a new
        message (F90), it takes a STAN of its own.
        """
        self._mak()
        orig_info = self._sent.get((request.mti, str(request.get(11))))
        new_message = self.dialect.settings.reversal_original_data == "f90"
        msg = self.protocol.reversal(request, reason, self._ctx() if new_message else None)
        batch = orig_info.batch if orig_info else self.batch
        info = _Sent("reversal", orig_info.scheme if orig_info else None, batch,
                     reverses=(request.mti, str(request.get(11))))
        return self._finish(msg, info)

    def settlement(self, totals: SettlementTotals | None = None) -> Message:
        """0500 settlement (结算) of the open batch; totals default to this terminal's own."""
        self._mak()
        msg = self.protocol.settlement(self._ctx(), totals if totals is not None
                                       else self.totals())
        return self._finish(msg, _Sent("settlement", None, self.batch))

    def batch_upload(self, item: Approved) -> Message:
        """0320 batch upload (批上送) of one approved financial transaction of the open batch.

        60.3 = 201 (the double uploads no ICC data); F61 names the item by batch +
        STAN + the answer's date, F37 by RRN.
        """
        self._mak()
        msg = self.protocol.batch_upload(self._ctx(), self._upload_item(item))
        return self._finish(msg, _Sent("batch_upload", item.scheme, self.batch, item))

    @staticmethod
    def _upload_item(item: Approved) -> UploadItem:
        if item.pan is None or item.amount is None:
            raise ValueError("only financial approvals can be uploaded")
        return UploadItem(item.kind, item.pan, item.amount, item.batch, item.stan, item.date,
                          item.rrn, item.auth_code, scheme=item.scheme)

    def batch_upload_chunk(self, chunk: UploadChunk) -> Message:
        """One 0320 of a batch upload: up to 8 stripe items in F48, or one advice/chip item."""
        self._mak()
        msg = self.protocol.upload(self._ctx(), chunk)
        return self._finish(msg, _Sent("batch_upload", None, self.batch))

    def batch_upload_end(self, count: int) -> Message:
        """0320 end of batch upload (60.3 = 202) with the number of items sent in F48 (n4)."""
        self._mak()
        msg = self.protocol.batch_upload_end(self._ctx(), count)
        return self._finish(msg, _Sent("batch_upload_end", None, self.batch))

    def batch_upload_all(self) -> list[Message]:
        """Every approved sale/refund of the open batch as 0320s, then the end marker."""
        items = [a for a in self.approvals
                 if a.batch == self.batch and a.kind in ("sale", "refund")
                 and (a.batch, a.stan) not in self._voided]
        chunks = plan_upload(self.dialect.settings.batch_upload,
                             [self._upload_item(a) for a in items])
        return [*(self.batch_upload_chunk(c) for c in chunks), self.batch_upload_end(len(items))]

    # --- answers ---------------------------------------------------------------
    def check_response(self, request: Message, response: Message, *,
                       body: bytes | None = None) -> Result:
        """Check an answer belongs to ``request`` and its MAC verifies; record approvals.

        Raises :class:`ResponseError` for a foreign answer (MTI, STAN or TID
        differ) and :class:`ResponseMacError` for a MAC that does not verify;
        the caller treats both as no answer.  ``body`` is the answer's body as
        received (MTI onwards); without it the answer is re-encoded for the MAC.
        """
        answer = self.protocol.check_response(
            request, response, body=body, mak=self.keys.mak if self.keys is not None else None)
        info = self._sent.get((request.mti, str(request.get(11)))) or _Sent(
            "unknown", None, self.batch)
        if not answer.approved:
            return Declined(info.kind, request.mti, str(request.get(11)), answer.code)
        return self._record(request, answer, info)

    def _record(self, request: Message, answer: Answer, info: _Sent) -> Approved:
        approved = Approved(
            kind=info.kind, mti=request.mti, stan=str(request.get(11)), batch=info.batch,
            amount=request.amount, rrn=answer.rrn, auth_code=answer.auth_code,
            date=answer.date, scheme=info.scheme, pan=request.pan, balance=answer.balance,
            balanced=answer.settle_balanced, original=info.original)
        if info.kind in ("sale", "void", "refund"):
            self.approvals.append(approved)
            if info.kind == "void" and info.original is not None:
                self._voided.add((info.original.batch, info.original.stan))
        elif info.kind == "reversal" and info.reverses is not None:
            self._undo(info.batch, info.reverses)
        elif info.kind == "settlement" and answer.settle_balanced:
            self.close_batch()
        return approved

    def _undo(self, batch: str, reverses: tuple[str, str]) -> None:
        mti, stan = reverses
        kept: list[Approved] = []
        for item in self.approvals:
            if item.mti == mti and item.stan == stan and item.batch == batch:
                if item.kind == "void" and item.original is not None:
                    self._voided.discard((item.original.batch, item.original.stan))
                continue
            kept.append(item)
        self.approvals = kept

    def forget(self, requests: Iterable[Message]) -> None:
        """Drop bookkeeping of requests that will never be answered or reversed."""
        for msg in requests:
            self._sent.pop((msg.mti, str(msg.get(11))), None)
