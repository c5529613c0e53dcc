"""A sans-I/O simulated POS terminal: builds MACed requests and checks the host's answers.

Used by the host's rule tests, the socket client of the server tests, the fault
test and the load benchmark.  It holds what a real terminal holds (TID, MID,
TMK, working keys, STAN, batch, the approvals of the open batch) and speaks the
dialect's transaction profiles; it does no I/O and reads the time only through
the ``clock`` it is given.

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
from emulator.host.errors import NotSignedOnError, ResponseError, ResponseMacError
from iso8583 import composite, tlv
from iso8583.dialect import Dialect
from iso8583.dialects import get_dialect
from iso8583.message import Message
from iso8583.settlement import SettlementTotals, SettleResult

Clock = Callable[[], datetime]

STAN_MAX = 999_999
#: Codes the host answers without a MAC (it has no key it trusts for this terminal).
UNMACED_CODES = frozenset({"A0", "77", "03", "30"})


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
    date: str | None  # request F13 (MMDD): the original date a refund sends in 61.3
    scheme: str | None  # card organisation (CUP, VIS, MCC)
    pan: str | None = field(default=None, repr=False)
    balance: int | None = None  # balance inquiry: available balance in fen
    balanced: bool | None = None  # settlement: both halves of F48 agree
    original: Approved | None = field(default=None, repr=False)  # void/refund: what it names
    response_code: str = "00"


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


def _mmdd(now: datetime) -> str:
    return now.strftime("%m%d")


class SimTerminal:
    """One simulated terminal (see the module docstring)."""

    def __init__(self, dialect: Dialect | str, tid: str, mid: str, tmk: bytes, clock: Clock,
                 *, rng: random.Random | None = None, stan: int = 1,
                 batch: str = "000001") -> None:
        self.dialect = get_dialect(dialect) if isinstance(dialect, str) else dialect
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

    # --- building blocks -------------------------------------------------------
    def _new(self, kind: str, *, stan: str | None = None) -> Message:
        profile = self.dialect.transactions[kind]
        msg = self.dialect.message(profile.mti)
        if profile.processing_code is not None:
            msg[3] = profile.processing_code
        msg[11] = stan if stan is not None else self._take_stan()
        now = self._clock()
        msg[12] = now.strftime("%H%M%S")
        msg[13] = _mmdd(now)
        if profile.condition_code is not None:
            msg[25] = profile.condition_code
        msg[41] = self.tid
        msg[42] = self.mid
        return msg

    def _f60(self, kind: str, *, read_capability: str = "", ic_condition: str = "") -> str:
        profile = self.dialect.transactions[kind]
        return composite.F60(msg_type=profile.f60_type or "00", batch=self.batch,
                             net_code=profile.net_code or "000",
                             read_capability=read_capability,
                             ic_condition=ic_condition).encode()

    def _card_fields(self, msg: Message, card: TestCard, *, pin: str | None, chip: bool,
                     amount: int, txn_type: int) -> None:
        use_chip = chip and card.chip
        msg[2] = card.pan
        msg[14] = card.expiry
        msg[22] = ("05" if use_chip else "02") + ("1" if pin is not None else "2")
        if use_chip:
            msg[23] = "0" + card.psn
        if pin is not None:
            msg[26] = "06"
            assert self.keys is not None
            msg[52] = security.encrypt_pin(self.keys.pik, pin, card.pan)
            if self.dialect.settings.security_control is not None:
                msg[53] = self.dialect.settings.security_control
        msg[35] = card.track2
        if use_chip and txn_type == 0x00:
            msg[55] = self._icc_data(card, amount, txn_type)

    def _icc_data(self, card: TestCard, amount: int, txn_type: int) -> bytes:
        """F55 as a chip answers GENERATE AC: ARQC over the AC input tags, plus the context."""
        atc = self._atc.get(card.pan, 0) + 1
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
            0x9F10: bytes.fromhex("07010103A0A000010A01000000000000"),
        }
        tags = {tag: values[tag] for tag in security.AC_INPUT_TAGS if tag in values}
        arqc = security.compute_arqc(card.imk_ac, card.pan, card.psn, tags)
        out: dict[int, bytes] = {0x9F26: arqc, 0x9F27: b"\x80"}
        out.update(values)
        out[0x9F33] = bytes.fromhex("E0E1C8")
        out[0x9F34] = bytes.fromhex("420300")
        out[0x9F35] = b"\x22"
        if card.aid is not None:
            out[0x84] = card.aid
        return tlv.encode(out)

    def _network(self, msg: Message, kind: str, net_code: str) -> None:
        """Network management code: 60.3 (CUP) or F70 (iso87, batch and form still in F60)."""
        profile = self.dialect.transactions[kind]
        if profile.f60_type is None and 70 in self.dialect.fields:
            msg[70] = profile.net_code or net_code
        msg[60] = composite.F60(msg_type="00", batch=self.batch, net_code=net_code).encode()

    def _finish(self, msg: Message, info: _Sent, *, mac: bool = True) -> Message:
        if mac:
            security.apply_mac(self.dialect, self._mak(), msg)
        self._sent[(msg.mti, str(msg[11]))] = info
        return msg

    def remac(self, request: Message) -> Message:
        """Re-MAC ``request`` (in place) with the current MAK, e.g. to resend after re-sign-on."""
        return security.apply_mac(self.dialect, self._mak(), request)

    # --- requests ------------------------------------------------------------
    def sign_on_request(self, form: int = 3) -> Message:
        """0800 sign-on asking for working keys in F62 form 1, 3 or 4 (60.3 001/003/004)."""
        net_code = {1: "001", 3: "003", 4: "004"}[form]
        msg = self._new("sign_on")
        self._network(msg, "sign_on", net_code)
        return self._finish(msg, _Sent("sign_on", None, self.batch), mac=False)

    def accept_sign_on(self, response: Message) -> None:
        """Load the working keys of a 0810; raises on a refusal or a bad check value."""
        if response.mti != "0810":
            raise ResponseError(f"expected 0810, got {response.mti}")
        if response.response_code != "00":
            raise ResponseError(f"sign-on refused with {response.response_code}")
        f62 = response.get(62)
        if isinstance(f62, str):  # iso87 carries F62 as text: the key block in hex
            try:
                f62 = bytes.fromhex(f62)
            except ValueError:
                raise ResponseError("sign-on answer F62 is not hex") from None
        if not isinstance(f62, bytes):
            raise ResponseError("sign-on answer carries no F62 working keys")
        self.keys = security.unwrap_keys(self._tmk, f62)
        f60 = response.get(60)
        if isinstance(f60, str):
            self.batch = composite.F60.decode(f60).batch

    def sign_off(self) -> Message:
        msg = self._new("sign_off")
        self._network(msg, "sign_off", "002")
        return self._finish(msg, _Sent("sign_off", None, self.batch), mac=False)

    def echo(self) -> Message:
        """0820 echo test (60.3 = 301)."""
        msg = self._new("echo")
        self._network(msg, "echo", "301")
        return self._finish(msg, _Sent("echo", None, self.batch), mac=False)

    def sale(self, card: TestCard, amount: int, *, pin: str | None = None,
             chip: bool = True) -> Message:
        """0200 sale (消费) of ``amount`` fen; F55 with an ARQC when read from the chip."""
        self._mak()
        msg = self._new("sale")
        msg[4] = amount
        msg[49] = self.currency
        self._card_fields(msg, card, pin=pin, chip=chip, amount=amount, txn_type=0x00)
        msg[60] = self._f60("sale", read_capability="5" if chip and card.chip else "2",
                            ic_condition="0")
        return self._finish(msg, _Sent("sale", card.scheme, self.batch))

    def balance(self, card: TestCard, *, pin: str | None = None, chip: bool = True) -> Message:
        """0200 balance inquiry (余额查询, F3 310000); the answer's F54 carries the balance."""
        self._mak()
        msg = self._new("balance")
        msg[49] = self.currency
        self._card_fields(msg, card, pin=pin, chip=chip, amount=0, txn_type=0x31)
        msg[60] = self._f60("balance", read_capability="5" if chip and card.chip else "2",
                            ic_condition="0")
        return self._finish(msg, _Sent("balance", card.scheme, self.batch))

    def void(self, original: Approved, *, card: TestCard | None = None,
             pin: str | None = None) -> Message:
        """0200 void (消费撤销) of an approved sale of this batch, full amount.

        Without ``card`` the PAN is keyed from the original (entry mode 012).
        """
        self._mak()
        if original.pan is None or original.amount is None:
            raise ValueError("the original has no PAN or amount to void")
        msg = self._new("void")
        msg[4] = original.amount
        msg[49] = self.currency
        if card is not None:
            self._card_fields(msg, card, pin=pin, chip=False, amount=original.amount,
                              txn_type=0x20)
        else:
            msg[2] = original.pan
            msg[22] = "012"
        if original.rrn is not None:
            msg[37] = original.rrn
        if original.auth_code is not None:
            msg[38] = original.auth_code
        msg[60] = self._f60("void")
        msg[61] = composite.F61(original.batch, original.stan).encode()
        return self._finish(msg, _Sent("void", original.scheme, self.batch, original))

    def refund(self, original: Approved, amount: int, *, card: TestCard | None = None,
               pin: str | None = None) -> Message:
        """Refund (退货) of ``amount`` fen against an approved sale: F37 + F61 name it."""
        self._mak()
        if original.pan is None:
            raise ValueError("the original has no PAN to refund to")
        msg = self._new("refund")
        msg.mti = self.dialect.settings.refund_mti
        msg[4] = amount
        msg[49] = self.currency
        if card is not None:
            self._card_fields(msg, card, pin=pin, chip=False, amount=amount, txn_type=0x20)
        else:
            msg[2] = original.pan
            msg[22] = "012"
        if original.rrn is not None:
            msg[37] = original.rrn
        msg[60] = self._f60("refund")
        msg[61] = composite.F61(original.batch, original.stan, original.date).encode()
        org_field = self.dialect.settings.card_organisation_field
        if org_field is not None and original.scheme is not None:
            msg[org_field] = composite.F63(original.scheme).encode()
        return self._finish(msg, _Sent("refund", original.scheme, self.batch, original))

    def reversal(self, request: Message, reason: str) -> Message:
        """0400 reversal (冲正) of ``request`` with F39 = reason (98, 96, A0, 06).

        Copies the original's identifying fields, STAN included, and drops the
        PIN block, track data and the cryptogram; the host matches it by TID,
        batch, STAN, MTI and amount.
        """
        self._mak()
        orig_info = self._sent.get((request.mti, str(request.get(11))))
        msg = self.dialect.message("0400")
        for number in (2, 3, 4, 11, 14, 22, 23, 25, 37, 38, 41, 42, 49, 60, 61, 63):
            value = request.get(number)
            if value is not None:
                msg[number] = value
        msg[39] = reason
        if self.dialect.settings.reversal_original_data == "f90":
            # iso87: the reversal is a new message; F90 names the original
            msg[11] = self._take_stan()
            date, time = request.get(13), request.get(12)
            when = (date if isinstance(date, str) else "0000") + (
                time if isinstance(time, str) else "000000")
            msg[90] = composite.F90(request.mti, str(request.get(11)), when).encode()
        batch = orig_info.batch if orig_info else self.batch
        info = _Sent("reversal", orig_info.scheme if orig_info else None, batch,
                     reverses=(request.mti, str(request.get(11))))
        security.apply_mac(self.dialect, self._mak(), msg)
        self._sent[("0400", str(msg[11]))] = info
        return msg

    def settlement(self, totals: SettlementTotals | None = None) -> Message:
        """0500 settlement (结算) of the open batch; totals default to this terminal's own."""
        self._mak()
        msg = self._new("settlement")
        msg[48] = (totals if totals is not None else self.totals()).encode()
        msg[49] = self.currency
        msg[60] = self._f60("settlement")
        return self._finish(msg, _Sent("settlement", None, self.batch))

    def batch_upload(self, item: Approved) -> Message:
        """0320 batch upload (批上送) of one approved financial transaction of the open batch.

        60.3 = 201 for magnetic-stripe/keyed items, 203 for chip items (CUP);
        F61 names the item by batch + STAN + date, F37 by RRN.
        """
        self._mak()
        if item.pan is None or item.amount is None:
            raise ValueError("only financial approvals can be uploaded")
        msg = self._new("batch_upload")
        msg[2] = item.pan
        msg[3] = {"sale": "000000", "void": "200000", "refund": "200000"}.get(item.kind, "000000")
        msg[4] = item.amount
        msg[49] = self.currency
        if item.rrn is not None:
            msg[37] = item.rrn
        if item.auth_code is not None:
            msg[38] = item.auth_code
        net_code = "201"
        msg[60] = composite.F60(msg_type="00", batch=self.batch, net_code=net_code).encode()
        msg[61] = composite.F61(item.batch, item.stan, item.date).encode()
        return self._finish(msg, _Sent("batch_upload", item.scheme, self.batch, item))

    def batch_upload_end(self, count: int) -> Message:
        """0320 end of batch upload (60.3 = 202) with the number of items sent in F48 (n4)."""
        self._mak()
        msg = self._new("batch_upload_end")
        msg[48] = f"{count:04d}"
        msg[60] = self._f60("batch_upload_end")
        return self._finish(msg, _Sent("batch_upload_end", None, self.batch))

    def batch_upload_all(self) -> list[Message]:
        """Every approved sale/refund of the open batch as 0320s, then the end marker."""
        items = [a for a in self.approvals
                 if a.batch == self.batch and a.kind in ("sale", "refund")
                 and (a.batch, a.stan) not in self._voided]
        return [*(self.batch_upload(a) for a in items), self.batch_upload_end(len(items))]

    # --- answers ---------------------------------------------------------------
    def check_response(self, request: Message, response: Message, *,
                       body: bytes | None = None) -> Result:
        """Check an answer belongs to ``request`` and its MAC verifies; record approvals.

        Raises :class:`ResponseError` for a foreign answer (MTI, STAN or TID
        differ) and :class:`ResponseMacError` for a MAC that does not verify;
        the caller treats both as no answer.  ``body`` is the answer's body as
        received (MTI onwards); without it the answer is re-encoded for the MAC.
        """
        if response.mti != request.response_mti:
            raise ResponseError(f"answer {response.mti} does not match request {request.mti}")
        if response.get(11) != request.get(11) or response.tid != request.tid:
            raise ResponseError("answer STAN/TID does not match the request")
        code = response.response_code or ""
        key = (request.mti, str(request.get(11)))
        info = self._sent.get(key) or _Sent("unknown", None, self.batch)
        macs = request.mti not in ("0800", "0820")
        if macs and not (code in UNMACED_CODES and self.dialect.spec.mac_field not in response):
            if body is None:
                body = self.dialect.encode(response)
            if self.keys is None or not security.received_mac_ok(
                    self.dialect, self.keys.mak, body, response):
                raise ResponseMacError(f"answer to STAN {request.stan} fails its MAC")
        if code != "00":
            return Declined(info.kind, request.mti, str(request.get(11)), code)
        return self._record(request, response, info)

    def _record(self, request: Message, response: Message, info: _Sent) -> Approved:
        balance: int | None = None
        f54 = response.get(54)
        if isinstance(f54, str) and len(f54) >= 20:
            sign = -1 if f54[7] == "D" else 1
            balance = sign * int(f54[8:20])
        balanced: bool | None = None
        f48 = response.get(48)
        if info.kind == "settlement" and isinstance(f48, str):
            try:
                _, dom, fore = SettlementTotals.decode(f48)
                balanced = dom is SettleResult.BALANCED and fore is SettleResult.BALANCED
            except ValueError:
                balanced = False
        pan = request.pan
        approved = Approved(
            kind=info.kind, mti=request.mti, stan=str(request.get(11)), batch=info.batch,
            amount=request.amount, rrn=response.rrn, auth_code=response.auth_code,
            date=str(request.get(13)) if 13 in request else None, scheme=info.scheme,
            pan=pan, balance=balance, balanced=balanced, original=info.original)
        if info.kind in ("sale", "void", "refund"):
            self.approvals.append(approved)
            if info.kind == "void" and info.original is not None:
                self._voided.add((info.original.batch, info.original.stan))
        elif info.kind == "reversal" and info.reverses is not None:
            self._undo(info.batch, info.reverses)
        elif info.kind == "settlement" and balanced:
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
