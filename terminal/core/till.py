"""The till: sign-on, sale, refund, void, reversal and advice, settlement, recovery.

:class:`Till` drives the ports (host link, card reader, PIN pad), the journal and
the protocol (:class:`iso8583.terminal.TerminalProtocol`); it holds no socket,
no Textual and no clock of its own. Every money-moving request follows one
order: rules checked -> written to the journal with its armed reversal or
advice -> sent -> answer recorded (follow-up stood down) in one transaction.
A request without a valid answer leaves its follow-up due, and
:meth:`Till.resolve` sends every due follow-up before any new transaction and
before settlement.

The refund is two calls so a screen can show the quote before anything moves:
:meth:`Till.quote_refund` checks every rule and returns what the cashier
confirms; :meth:`Till.refund` sends it.

A contact chip sale keeps the card in the reader across the host exchange
(:attr:`CardRead.held`): the host's answer (F39 and the ARPC, tag 91 of F55)
goes back to the card in the second GENERATE AC. A TC completes the sale; an
AAC, or a card gone before it answered, after the host approved, makes the
armed reversal due with reason 06 and sends it at once (the cashier sees the
sale declined). Refunds and voids are not completed: the card gives an AAC (or
no cryptogram) to a refund read and nothing goes back to it.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from enum import StrEnum
from pathlib import Path

from iso8583.crypto.signon import WorkingKeys, encrypted_pik
from iso8583.dialect import Dialect
from iso8583.dialects import get_dialect
from iso8583.errors import Iso8583Error, KeyCheckError, ResponseError, ResponseMacError
from iso8583.masking import mask_pan, mask_text
from iso8583.message import Message
from iso8583.responses import ResponseCode, TerminalAction, explain
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
    upload_icc_data,
)
from terminal.core import rules
from terminal.core.config import TerminalSettings, load_tmk
from terminal.core.crashpoints import crash_point
from terminal.core.errors import (
    CardLeftReaderError,
    DeviceError,
    HostLinkError,
    HostTimeoutError,
    InputError,
    OriginalNotFoundError,
    PendingError,
    RefundAmountError,
    RefundTooOldError,
    SignOnError,
    TerminalError,
)
from terminal.core.journal import Journal, NewTxn, OpenItem
from terminal.core.ports import (
    CardDecision,
    CardRead,
    CardReader,
    HeldCard,
    HostLink,
    PinEntry,
    Printer,
    Progress,
    Purpose,
    Step,
)
from terminal.core.records import RefundReason, TxnKind, TxnRecord, TxnStatus

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]

#: The reversal reasons of DESIGN.md section 4 (F39 of the 0400).
REASON_NO_ANSWER = "98"
REASON_TERMINAL_FAULT = "96"
REASON_MAC_FAILED = "A0"
REASON_CARD_DECLINED = "06"  # "other": the card declined (AAC) or left after the approval
PIK_UNDER_TMK = "pik_under_tmk"
#: Journal meta key: the batch upload under way (settlement id, items sent, items acknowledged).
UPLOAD_PROGRESS = "batch_upload_progress"


def _ignore(step: Step) -> None:
    del step


@dataclass(frozen=True)
class _NoAnswer:
    reason: str  # the reversal reason this failure calls for
    error: str


@dataclass(frozen=True)
class ExternalOriginal:
    """An original named by RRN + date that this terminal's journal does not hold."""

    rrn: str
    date: str  # MMDD the host answered the original with

    @property
    def label(self) -> str:
        return f"RRN {self.rrn} / {self.date}"


Original = TxnRecord | ExternalOriginal


@dataclass(frozen=True)
class RefundQuote:
    """What the cashier confirms before a refund is sent (nothing has moved yet)."""

    original: Original
    ref: OriginalRef
    card: CardRead
    amount: int
    reason: RefundReason
    note: str | None
    original_amount: int | None  # None: the original is not in this journal
    already_refunded: int | None
    in_doubt: int
    refundable: int | None  # before this refund

    @property
    def remaining_after(self) -> int | None:
        return None if self.refundable is None else self.refundable - self.amount

    @property
    def masked_pan(self) -> str:
        return self.card.masked_pan


@dataclass(frozen=True)
class VoidQuote:
    original: TxnRecord
    card: CardRead | None
    amount: int


class CardEnding(StrEnum):
    """Why a chip sale the host approved did not complete on the card (it is reversed)."""

    DECLINED = "declined"  # the second GENERATE AC gave an AAC (e.g. the ARPC failed)
    REMOVED = "removed"  # the card left the reader before the second GENERATE AC
    FAILED = "failed"  # the card answered the second GENERATE AC with an error


_CARD_ENDING_TEXT = {
    CardEnding.DECLINED: ("主机已批准但卡片拒绝交易",
                          "Approved by the host but declined by the card"),
    CardEnding.REMOVED: ("卡片在交易完成前被拔出", "Card removed before the sale was completed"),
    CardEnding.FAILED: ("卡片未能完成交易", "The card could not complete the sale"),
}


@dataclass(frozen=True)
class Outcome:
    """How a request ended, for the screen, the receipt and the exit code.

    ``card_refused``: the host approved a chip sale the card then refused; the
    sale is reversed (``status`` REVERSED, or UNCERTAIN while the reversal waits).
    """

    kind: TxnKind
    status: TxnStatus
    record: TxnRecord
    response: ResponseCode | None
    card_refused: CardEnding | None = None

    @property
    def approved(self) -> bool:
        return self.status is TxnStatus.APPROVED

    @property
    def code(self) -> str | None:
        return self.record.response_code

    @property
    def next_step(self) -> tuple[str, str]:
        """What the terminal will do about an open outcome (zh, en)."""
        if self.card_refused is not None:
            zh, en = _CARD_ENDING_TEXT[self.card_refused]
            if self.status is TxnStatus.REVERSED:
                return zh + "：已冲正，未扣款", en + ": reversed, nothing was charged"
            return zh + "：终端将自动冲正", en + ": the terminal will reverse it"
        if self.status is TxnStatus.UNCERTAIN:
            if self.kind is TxnKind.REFUND:
                return ("结果未知：终端将重发退货通知直到主机应答",
                        "Outcome unknown: the terminal resends the refund advice until answered")
            return ("结果未知：终端将自动冲正", "Outcome unknown: the terminal will reverse it")
        if self.status is TxnStatus.REVERSED:
            return ("已冲正，未扣款", "Reversed: nothing was charged")
        return ("", "")


@dataclass(frozen=True)
class ResolveReport:
    resolved: int
    left: int
    details: tuple[str, ...] = ()


@dataclass(frozen=True)
class SettleOutcome:
    batch: str
    totals: SettlementTotals
    balanced: bool
    uploaded: int  # items of the batch upload the host acknowledged (0 when totals agreed)
    new_batch: str
    response: ResponseCode
    host_received: int | None = None  # end of the upload: items the host says it holds
    host_matched: int | None = None  # ... and how many of them agree with its ledger


@dataclass(frozen=True)
class _Uploaded:
    acknowledged: int
    received: int | None
    matched: int | None


@dataclass
class TillStatus:
    tid: str
    mid: str
    dialect: str
    batch: str
    next_stan: str
    signed_on: bool
    open_items: int
    host_reachable: bool | None
    reader: str
    pinpad: str
    training: bool
    details: dict[str, str] = field(default_factory=dict)


class Till:
    """One terminal: its journal, its settings and its devices (see the module docstring)."""

    def __init__(self, journal: Journal, settings: TerminalSettings, *, link: HostLink,
                 reader: CardReader | None = None, pinpad: PinEntry | None = None,
                 printer: Printer | None = None,
                 clock: Clock = datetime.now,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.journal = journal
        self.settings = settings
        self.link = link
        self.reader = reader
        self.pinpad = pinpad
        self.printer = printer
        self.clock = clock
        self._monotonic = monotonic
        self.dialect: Dialect = get_dialect(settings.dialect)
        self.protocol = TerminalProtocol(self.dialect, settings.tid, settings.mid)
        self._tmk = load_tmk(journal)
        self._keys_cache: WorkingKeys | None = None
        self._last_contact: float | None = None
        self._pik_loaded = False
        self.host_reachable: bool | None = None

    @classmethod
    def open(cls, data_dir: Path, *, link: HostLink, reader: CardReader | None = None,
             pinpad: PinEntry | None = None, clock: Clock = datetime.now) -> Till:
        journal = Journal.open(data_dir, clock)
        try:
            settings = TerminalSettings.from_journal(journal)
            return cls(journal, settings, link=link, reader=reader, pinpad=pinpad, clock=clock)
        except TerminalError:
            journal.close()
            raise

    def close(self) -> None:
        """Close the link, the devices that can be closed, and the journal."""
        self.link.close()
        for device in (self.pinpad, self.printer, self.reader):
            closer = getattr(device, "close", None)
            if callable(closer):
                try:
                    closer()
                except Exception as exc:  # closing must not hide the journal's close
                    log.warning("closing %s: %s", type(device).__name__, exc)
        self.journal.close()

    # --- state -----------------------------------------------------------------------
    def _keys(self) -> WorkingKeys | None:
        if self._keys_cache is None:
            self._keys_cache = self.journal.load_keys()
        return self._keys_cache

    @property
    def signed_on(self) -> bool:
        """Signed on today with working keys the host still trusts."""
        return (self._keys() is not None
                and self.journal.get("signed_on_date") == self.clock().date().isoformat())

    def status(self) -> TillStatus:
        return TillStatus(
            tid=self.settings.tid, mid=self.settings.mid, dialect=self.settings.dialect,
            batch=self.journal.batch, next_stan=self.journal.peek_stan(),
            signed_on=self.signed_on, open_items=self.journal.open_count(),
            host_reachable=self.host_reachable,
            reader=self.reader.describe() if self.reader else "none",
            pinpad=self.pinpad.describe() if self.pinpad else "none",
            training=self.settings.training)

    def _ctx(self, stan: str) -> RequestContext:
        return RequestContext(stan=stan, batch=self.journal.batch, now=self.clock())

    # --- host exchanges ------------------------------------------------------------------
    def _send(self, request: Message) -> Answer | _NoAnswer:
        """MAC, send and check one request; any failure to get a valid answer is _NoAnswer."""
        keys = self._keys()
        mak = keys.mak if keys is not None else None
        if mak is not None:
            self.protocol.mac(request, mak)
        try:
            frame = self.link.exchange(request)
        except HostTimeoutError as exc:
            self.host_reachable = False
            return _NoAnswer(REASON_NO_ANSWER, exc.message)
        except HostLinkError as exc:
            self.host_reachable = False
            return _NoAnswer(REASON_NO_ANSWER, exc.message)
        except Iso8583Error as exc:  # a link that hands up an undecodable answer
            return _NoAnswer(REASON_NO_ANSWER, f"unreadable answer: {exc}")
        self.host_reachable = True
        self._last_contact = self._monotonic()
        try:
            return self.protocol.check_response(request, frame.message, body=frame.body, mak=mak)
        except ResponseMacError as exc:
            return _NoAnswer(REASON_MAC_FAILED, str(exc))
        except (ResponseError, Iso8583Error) as exc:
            return _NoAnswer(REASON_NO_ANSWER, f"answer does not belong to the request: {exc}")

    def _lost_keys(self) -> None:
        """The host no longer trusts our MAK (A0/77, or its answer fails our MAC check)."""
        self.journal.forget_keys()
        self._keys_cache = None

    def sign_on(self, progress: Progress = _ignore) -> WorkingKeys:
        """0800 sign-on: working keys checked by their check values, the PIK into the PIN pad."""
        progress(Step.SIGNING_ON)
        self.link.open()
        stan = self.journal.take_stan()
        request = self.protocol.sign_on(self._ctx(stan), form=self.settings.signon_form)
        try:
            frame = self.link.exchange(request)
        except HostLinkError as exc:
            self.host_reachable = False
            raise HostTimeoutError(f"sign-on got no answer: {exc.message}",
                                   cashier_zh="签到失败：主机无应答",
                                   cashier_en="Sign-on failed: no answer") from None
        self.host_reachable = True
        self._last_contact = self._monotonic()
        try:
            result = self.protocol.accept_sign_on(self._tmk, frame.message)
        except KeyCheckError as exc:
            raise SignOnError(f"sign-on keys rejected: {exc}",
                              cashier_zh="签到失败：工作密钥校验错",
                              cashier_en="Sign-on failed: key check value") from None
        except (ResponseError, Iso8583Error) as exc:
            raise SignOnError(f"sign-on refused: {exc}") from None
        self.journal.save_keys(result.keys, self.clock().date())
        self._keys_cache = result.keys
        if result.batch is not None and result.batch != self.journal.batch \
                and not self.journal.batch_records(self.journal.batch) \
                and not self.journal.open_settlements():
            self.journal.set_batch(result.batch)
        f62 = frame.message.get(62)
        raw = bytes.fromhex(f62) if isinstance(f62, str) else f62
        if isinstance(raw, bytes):
            pik, check = encrypted_pik(raw)
            # still under the TMK: kept so a restarted PIN pad can be loaded again
            self.journal.put_secret(PIK_UNDER_TMK, pik + check)
            self._pik_loaded = False
            self._load_pin_key()
        log.info("signed on, batch %s", self.journal.batch)
        return result.keys

    def echo(self, progress: Progress = _ignore) -> None:
        """0820 echo test: raises HostLinkError when the host does not answer."""
        progress(Step.ECHO)
        self.link.open()
        stan = self.journal.take_stan()
        try:
            self.link.exchange(self.protocol.echo(self._ctx(stan)))
        except HostLinkError:
            self.host_reachable = False
            raise
        self.host_reachable = True
        self._last_contact = self._monotonic()

    def prepare(self, progress: Progress = _ignore, *, echo_if_idle: bool = False) -> None:
        """Before a new transaction: owed follow-ups resolved, signed on, link checked."""
        report = self.resolve(progress)
        if report.left:
            raise PendingError(f"{report.left} reversal(s)/advice(s) are still unanswered; "
                               "no new transaction until the host answers them")
        if not self.signed_on:
            self.sign_on(progress)
        elif echo_if_idle and self._idle_seconds() > self.settings.echo_idle_s:
            self.echo(progress)

    def _idle_seconds(self) -> float:
        """Seconds since the host last answered (this process, or the journal's record)."""
        if self._last_contact is not None:
            return self._monotonic() - self._last_contact
        last = self.journal.last_host_contact()
        return float("inf") if last is None else (self.clock() - last).total_seconds()

    # --- cards and PINs ------------------------------------------------------------------
    def _load_pin_key(self) -> None:
        """Put the PIK (as F62 carried it, under the TMK) into the PIN pad, once per pad."""
        if self.pinpad is None or self._pik_loaded:
            return
        stored = self.journal.get_secret(PIK_UNDER_TMK)
        if stored is None:
            return
        try:
            self.pinpad.load_working_key(stored[:-4], stored[-4:])
        except TerminalError:
            raise
        except Exception as exc:
            raise DeviceError(f"PIN pad did not take the PIN key: {exc}",
                              cashier_zh="密码键盘装载密钥失败",
                              cashier_en="PIN pad key load failed") from exc
        self._pik_loaded = True

    def read_card(self, purpose: Purpose, amount: int, progress: Progress = _ignore) -> CardRead:
        if self.reader is None:
            raise DeviceError("no card reader is configured", cashier_zh="未配置读卡器",
                              cashier_en="No card reader")
        if amount < 0:
            raise InputError(f"amount {amount} is negative", cashier_zh="金额不能为负",
                             cashier_en="Amount cannot be negative")
        progress(Step.READING_CARD)
        return self.reader.read_card(purpose, amount, self.clock(), self.journal.peek_stan())

    def cancel_card_wait(self) -> None:
        """Stop waiting for a card (safe: nothing has been written or sent for it yet)."""
        if self.reader is not None:
            self.reader.cancel()

    def _pin_block(self, card: CardRead, amount: int, *, wanted: bool,
                   progress: Progress) -> bytes | None:
        if not wanted or not card.wants_online_pin:
            return None
        if self.pinpad is None:
            raise DeviceError("the card asks for a PIN and no PIN pad is configured",
                              cashier_zh="未连接密码键盘", cashier_en="No PIN pad")
        self._load_pin_key()
        progress(Step.WAITING_PIN)
        return self.pinpad.get_pin_block(card.card.pan, amount)

    def _new_txn(self, kind: TxnKind, mti: str, ctx: RequestContext, amount: int,
                 card: CardInput, read: CardRead | None, **extra: object) -> NewTxn:
        return NewTxn(
            kind=kind, mti=mti, stan=ctx.stan, batch=ctx.batch, amount=amount,
            currency=self.dialect.settings.currency, pan_masked=mask_pan(card.pan),
            pan_hash=self.journal.vault.pan_hash(card.pan), scheme=card.scheme,
            entry_mode=None, card_label=read.label if read else None,
            aid=read.aid if read else None, training=self.settings.training,
            cryptogram_type=read.cryptogram_type if read else None,
            cryptogram=read.cryptogram if read else None,
            **extra)  # type: ignore[arg-type]

    # --- the money-moving exchange -------------------------------------------------------
    def _financial(self, kind: TxnKind, build: Callable[[RequestContext], Message],
                   describe: Callable[[RequestContext, Message], NewTxn],
                   progress: Progress, *,
                   on_new_keys: Callable[[], None] | None = None,
                   held: HeldCard | None = None) -> Outcome:
        """Write, send, record; after an A0/77 answer sign on and try once more.

        ``on_new_keys`` runs after that sign-on: a PIN block made under the old
        PIK is useless, so the sale asks the cardholder again. ``held``: the card
        still in the reader, completed with the final answer (or with none) before
        the answer is recorded; its armed reversal stays armed until then.
        """
        profile = self.dialect.transactions[kind.value]
        follow_up = {"reverse": "reversal", "resend": "advice"}.get(profile.on_timeout)
        if kind is TxnKind.REFUND and follow_up == "reversal" \
                and not self.dialect.settings.refund_reversible:
            follow_up = "advice"
        for attempt in (1, 2):
            progress(Step.CONNECTING)
            self.link.open()  # unreachable: HostLinkError here, nothing written
            txn_id, request = self._begin(build, describe, follow_up)
            crash_point("after_begin")
            progress(Step.SENDING)
            result = self._send(request)
            if isinstance(result, _NoAnswer):
                decision, _ = self._complete_card(held, None)
                return self._unanswered(kind, txn_id, request, result, follow_up, progress,
                                        decision=decision)
            crash_point("after_answer")
            retry = result.action is TerminalAction.SIGN_ON_AGAIN and attempt == 1
            decision, refused = (None, None) if retry else self._complete_card(held, result)
            if refused is not None:
                return self._card_refused(kind, txn_id, request, result, decision, refused,
                                          progress)
            crypt_type = decision.cryptogram_type if decision else None
            crypt = decision.cryptogram if decision else None
            if result.action is TerminalAction.SIGN_ON_AGAIN:
                self.journal.answered(txn_id, status=TxnStatus.DECLINED, code=result.code,
                                      rrn=result.rrn, auth_code=result.auth_code,
                                      host_date=result.date, host_time=result.time,
                                      cryptogram_type=crypt_type, cryptogram=crypt)
                self._lost_keys()
                if retry:
                    self.sign_on(progress)
                    if on_new_keys is not None:
                        on_new_keys()
                    continue
            else:
                self.journal.answered(
                    txn_id, status=TxnStatus.APPROVED if result.approved else TxnStatus.DECLINED,
                    code=result.code, rrn=result.rrn, auth_code=result.auth_code,
                    host_date=result.date, host_time=result.time,
                    cryptogram_type=crypt_type, cryptogram=crypt)
            crash_point("after_record")
            record = self.journal.record(txn_id)
            return Outcome(kind, record.status, record, explain(result.code))
        raise AssertionError("unreachable")  # pragma: no cover

    def _begin(self, build: Callable[[RequestContext], Message],
               describe: Callable[[RequestContext, Message], NewTxn],
               follow_up: str | None) -> tuple[int, Message]:
        """Take the STAN and write the request it names in one journal commit (a crash in
        between can neither lose nor reuse the STAN); the request, not yet MACed."""
        built: list[Message] = []

        def make(stan: str) -> tuple[NewTxn, bytes]:
            ctx = self._ctx(stan)
            request = build(ctx)
            built.append(request)
            txn = describe(ctx, request)
            entry = str(request.get(22) or "") or None
            return (NewTxn(**{**txn.__dict__, "entry_mode": entry}),
                    self.dialect.encode(request))

        txn_id = self.journal.begin_new(make, follow_up=follow_up)
        return txn_id, built[0]

    def _complete_card(self, held: HeldCard | None, answer: Answer | None
                       ) -> tuple[CardDecision | None, CardEnding | None]:
        """Second GENERATE AC of a held card with the host's ``answer`` (None: no answer,
        8A = Z3); the card's decision and, when the host approved but the card did not
        accept, why."""
        if held is None:
            return None, None
        approved = answer is not None and answer.approved
        code = answer.code if answer is not None else None
        try:
            decision = held.complete(
                issuer_auth_data=answer.issuer_auth_data if answer is not None else None,
                approved=approved,
                response_code=code if code and len(code) == 2 and code.isascii() else None)
        except CardLeftReaderError as exc:
            log.warning("second GENERATE AC: %s", exc.message)
            return None, CardEnding.REMOVED if approved else None
        except DeviceError as exc:
            log.warning("second GENERATE AC failed: %s", exc.message)
            return None, CardEnding.FAILED if approved else None
        if approved and not decision.accepted:
            return decision, CardEnding.DECLINED
        return decision, None

    def _card_refused(self, kind: TxnKind, txn_id: int, request: Message, answer: Answer,
                      decision: CardDecision | None, ending: CardEnding,
                      progress: Progress) -> Outcome:
        """The host approved, the card did not: record the answer with the reversal due
        (reason 06) in one write, then reverse at once."""
        log.warning("%s STAN %s: approved by the host, card %s: reversing", kind,
                    request.get(11), ending.value)
        reversal, stan = self._build_reversal(request, REASON_CARD_DECLINED)
        self.journal.card_declined(
            txn_id, code=answer.code, rrn=answer.rrn, auth_code=answer.auth_code,
            host_date=answer.date, host_time=answer.time, reason=REASON_CARD_DECLINED,
            error=f"card {ending.value} after the host approved",
            reversal=self.dialect.encode(reversal), reversal_stan=stan,
            cryptogram_type=decision.cryptogram_type if decision else None,
            cryptogram=decision.cryptogram if decision else None)
        crash_point("after_record")
        try:
            self.resolve(progress)
        except TerminalError as exc:
            log.warning("reversing after the card declined failed: %s", exc.message)
        record = self.journal.record(txn_id)
        return Outcome(kind, record.status, record, explain(record.response_code),
                       card_refused=ending)

    def _unanswered(self, kind: TxnKind, txn_id: int, request: Message, failure: _NoAnswer,
                    follow_up: str | None, progress: Progress, *,
                    decision: CardDecision | None = None) -> Outcome:
        log.warning("%s STAN %s: no valid answer (%s)", kind, request.get(11), failure.error)
        crypt_type = decision.cryptogram_type if decision else None
        crypt = decision.cryptogram if decision else None
        if follow_up == "reversal":
            reversal, stan = self._build_reversal(request, failure.reason)
            self.journal.no_answer(txn_id, reason=failure.reason, error=failure.error,
                                   reversal=self.dialect.encode(reversal), reversal_stan=stan,
                                   cryptogram_type=crypt_type, cryptogram=crypt)
        else:
            self.journal.no_answer(txn_id, reason=failure.reason, error=failure.error,
                                   cryptogram_type=crypt_type, cryptogram=crypt)
        if failure.reason == REASON_MAC_FAILED:
            self._lost_keys()
        try:
            self.resolve(progress)
        except TerminalError as exc:
            log.warning("resolving after no answer failed: %s", exc.message)
        record = self.journal.record(txn_id)
        return Outcome(kind, record.status, record,
                       explain(record.response_code) if record.response_code else None)

    def _build_reversal(self, request: Message, reason: str) -> tuple[Message, str | None]:
        clean = request.copy()
        clean.pop(self.dialect.spec.mac_field)
        if self.dialect.settings.reversal_original_data == "f90":
            stan = self.journal.take_stan()
            return self.protocol.reversal(clean, reason, self._ctx(stan)), stan
        return self.protocol.reversal(clean, reason), None

    # --- resolving what is owed ------------------------------------------------------------
    def resolve(self, progress: Progress = _ignore) -> ResolveReport:
        """Send every due reversal and advice (and those a crash left armed) until answered,
        then finish a settlement left without an answer."""
        report = self._resolve_items(progress)
        details = list(report.details)
        done = report.resolved
        for row in self.journal.open_settlements():
            try:
                self._finish_settlement(row, progress)
                done += 1
                details.append(f"settlement of batch {row['batch']}: finished")
            except HostLinkError as exc:
                details.append(f"settlement of batch {row['batch']}: {exc.message}")
                break
        left = self.journal.open_count() + len(self.journal.open_settlements())
        return ResolveReport(done, left, tuple(details))

    def _resolve_items(self, progress: Progress) -> ResolveReport:
        items = self.journal.open_items()
        if not items:
            return ResolveReport(0, 0)
        progress(Step.RESOLVING)
        done = 0
        details: list[str] = []
        for item in items:
            try:
                if self._resolve_one(item, progress):
                    done += 1
                    details.append(f"{item.action} of journal row {item.txn_id}: answered")
                else:
                    details.append(f"{item.action} of journal row {item.txn_id}: no answer yet")
            except HostLinkError as exc:
                self.journal.attempt_failed(item.id, exc.message)
                details.append(f"{item.action} of journal row {item.txn_id}: {exc.message}")
                break
        return ResolveReport(done, self.journal.open_count(), tuple(details))

    def _resolve_one(self, item: OpenItem, progress: Progress) -> bool:
        crash_point("in_resolve")
        stored = self.dialect.decode(item.message)
        if item.action == "reversal":
            if item.state == "armed":  # a crash left the request's outcome unknown
                reversal, stan = self._build_reversal(stored, REASON_NO_ANSWER)
                self.journal.no_answer(item.txn_id, reason=REASON_NO_ANSWER,
                                       error="restarted with the outcome unknown",
                                       reversal=self.dialect.encode(reversal),
                                       reversal_stan=stan)
                stored = reversal
            message = stored
            step = Step.REVERSING
        else:
            if item.state == "armed":
                self.journal.no_answer(item.txn_id, reason=REASON_NO_ANSWER,
                                       error="restarted with the outcome unknown")
            message = stored
            step = Step.RESENDING
        try:
            result = self._until_answered(lambda ctx: message.copy(), step, progress,
                                          fresh_stan=False,
                                          failed=lambda error: self.journal.attempt_failed(
                                              item.id, error))
        except HostTimeoutError:
            return False
        if item.action == "reversal":
            status = TxnStatus.REVERSED if result.approved else TxnStatus.UNCERTAIN
            self.journal.resolved(item, code=result.code, txn_status=status)
        else:
            status = TxnStatus.APPROVED if result.approved else TxnStatus.DECLINED
            self.journal.resolved(item, code=result.code, txn_status=status,
                                  rrn=result.rrn, auth_code=result.auth_code,
                                  host_date=result.date, host_time=result.time)
        return True

    # --- sale --------------------------------------------------------------------------
    def sale(self, amount: int, card: CardRead, *, operator: str | None = None,
             progress: Progress = _ignore) -> Outcome:
        """消费: the card was read for ``amount``; PIN where the card asks for it.

        A held chip card is completed with the host's answer (module docstring)
        and let go whatever happens; an approved sale the card refuses comes back
        reversed (or uncertain while the reversal is owed) with ``card_refused``.
        """
        try:
            if amount <= 0:
                raise InputError("sale amount must be more than 0.00")
            self.prepare(progress)
            pin = [self._pin_block(card, amount, wanted=True, progress=progress)]

            def ask_again() -> None:
                pin[0] = self._pin_block(card, amount, wanted=True, progress=progress)

            return self._financial(
                TxnKind.SALE,
                lambda ctx: self.protocol.sale(ctx, amount, card.card, pin[0]),
                lambda ctx, msg: self._new_txn(TxnKind.SALE, msg.mti, ctx, amount, card.card,
                                               card, operator=operator),
                progress, on_new_keys=ask_again, held=card.held)
        finally:
            card.release()

    # --- finding originals ---------------------------------------------------------------
    def find_by_voucher(self, voucher: str) -> TxnRecord:
        if not voucher.strip().isdigit() or len(voucher.strip()) > 6:
            raise InputError(f"voucher number {voucher!r} is not 1-6 digits",
                             cashier_zh="凭证号应为1-6位数字", cashier_en="Voucher: 1-6 digits")
        found = [r for r in self.journal.by_voucher(voucher.strip())
                 if r.kind is TxnKind.SALE]
        if not found:
            raise OriginalNotFoundError(f"no sale with voucher {voucher} in this journal")
        open_batch = [r for r in found if r.batch == self.journal.batch]
        return (open_batch or found)[0]

    def find_by_rrn(self, rrn: str, mmdd: str) -> Original:
        """An original named by RRN + the date the host answered it (MMDD)."""
        rrn = rrn.strip()
        if len(rrn) != 12 or not rrn.isalnum():
            raise InputError(f"RRN {rrn!r} is not 12 characters",
                             cashier_zh="参考号应为12位", cashier_en="RRN: 12 characters")
        if len(mmdd) != 4 or not mmdd.isdigit() or not (1 <= int(mmdd[:2]) <= 12
                                                       and 1 <= int(mmdd[2:]) <= 31):
            raise InputError(f"date {mmdd!r} is not MMDD", cashier_zh="日期格式MMDD",
                             cashier_en="Date: MMDD")
        for record in self.journal.by_rrn(rrn):
            if record.kind is TxnKind.SALE and record.host_date in (mmdd, None):
                return record
        return ExternalOriginal(rrn, mmdd)

    def refundable_sales(self, card: CardRead) -> list[tuple[TxnRecord, rules.Refundable]]:
        """This card's sales that still have money to give back, newest first."""
        out = []
        for sale in self.journal.sales_for_card(self.journal.vault.pan_hash(card.card.pan)):
            children = self.journal.children(sale.id)
            if rules.is_voided(children):
                continue
            left = rules.refundable_of(sale, children)
            if left.refundable > 0:
                out.append((sale, left))
        return out

    def history(self, original: TxnRecord) -> list[TxnRecord]:
        """An original's voids and refunds, oldest first."""
        return self.journal.children(original.id)

    def pan_of(self, record: TxnRecord) -> str:
        """The full PAN of a journaled request, opened from its sealed copy (never shown)."""
        message = self.dialect.decode(self.journal.request_of(record.id))
        pan = message.get(2)
        if not isinstance(pan, str):
            raise OriginalNotFoundError(f"journal row {record.id} holds no PAN")
        return pan

    # --- refund ------------------------------------------------------------------------
    def quote_refund(self, original: Original, card: CardRead, amount: int,
                     reason: RefundReason, note: str | None = None) -> RefundQuote:
        """Check every rule and return the quote to confirm; raises a RuleError otherwise."""
        if reason is RefundReason.OTHER and not (note and note.strip()):
            raise InputError("reason 'other' needs a note", cashier_zh="请填写退货原因说明",
                             cashier_en="Reason 'other' needs a note")
        if note:  # a cashier may type a card number: never journal or print it whole
            note = mask_text(note)
        now = self.clock()
        if isinstance(original, TxnRecord):
            children = self.journal.children(original.id)
            left = rules.check_refund(original, children,
                                      pan_hash=self.journal.vault.pan_hash(card.card.pan),
                                      amount=amount, now=now,
                                      age_limit_days=self.settings.refund_age_days)
            ref = OriginalRef(batch=original.batch, stan=original.stan, date=original.host_date,
                              rrn=original.rrn, auth_code=original.auth_code,
                              amount=original.amount, scheme=original.scheme or card.card.scheme)
            return RefundQuote(original, ref, card, amount, reason, note, original.amount,
                               left.refunded, left.in_doubt, left.refundable)
        if amount <= 0:
            raise RefundAmountError("refund amount must be more than 0.00")
        if _age_days(original.date, now.date()) > self.settings.refund_age_days:
            raise RefundTooOldError(f"original of {original.date} is older than "
                                    f"{self.settings.refund_age_days} days")
        # Not in this journal: 61.1/61.2 unknown (zeros); the host checks amount and card.
        ref = OriginalRef(batch="000000", stan="000000", date=original.date, rrn=original.rrn,
                          auth_code=None, amount=amount, scheme=card.card.scheme)
        return RefundQuote(original, ref, card, amount, reason, note, None, None, 0, None)

    def refund(self, quote: RefundQuote, *, operator: str | None = None,
               progress: Progress = _ignore) -> Outcome:
        """退货: send a confirmed quote (rules re-checked: the journal may have moved)."""
        quote = self.quote_refund(quote.original, quote.card, quote.amount, quote.reason,
                                  quote.note)
        self.prepare(progress, echo_if_idle=True)
        pin = [self._pin_block(quote.card, quote.amount, wanted=self.settings.pin_on_refund,
                               progress=progress)]

        def ask_again() -> None:
            pin[0] = self._pin_block(quote.card, quote.amount,
                                     wanted=self.settings.pin_on_refund, progress=progress)

        original = quote.original
        record = original if isinstance(original, TxnRecord) else None
        return self._financial(
            TxnKind.REFUND,
            lambda ctx: self.protocol.refund(ctx, quote.ref, quote.amount, quote.card.card,
                                             pin[0]),
            lambda ctx, msg: self._new_txn(
                TxnKind.REFUND, msg.mti, ctx, quote.amount, quote.card.card, quote.card,
                original_id=record.id if record else None, original_rrn=quote.ref.rrn,
                original_batch=quote.ref.batch, original_stan=quote.ref.stan,
                original_date=quote.ref.date, original_amount=quote.original_amount,
                reason=quote.reason.value, note=quote.note, operator=operator),
            progress, on_new_keys=ask_again)

    # --- void --------------------------------------------------------------------------
    def quote_void(self, original: TxnRecord, card: CardRead | None = None) -> VoidQuote:
        pan_hash = self.journal.vault.pan_hash(card.card.pan) if card else None
        rules.check_void(original, self.journal.children(original.id), pan_hash=pan_hash,
                         open_batch=self.journal.batch)
        return VoidQuote(original, card, original.amount)

    def void(self, quote: VoidQuote, *, operator: str | None = None,
             progress: Progress = _ignore) -> Outcome:
        """撤销: same batch, unsettled, full amount, once."""
        quote = self.quote_void(quote.original, quote.card)
        self.prepare(progress)
        original = quote.original
        card = quote.card
        pin: list[bytes | None] = [None]
        if card is not None:
            card_input = card.card
            pin[0] = self._pin_block(card, quote.amount, wanted=self.settings.pin_on_refund,
                                     progress=progress)
        else:  # keyed from the journal's sealed copy of the sale
            card_input = CardInput(pan=self.pan_of(original), entry="manual",
                                   scheme=original.scheme)

        def ask_again() -> None:
            if card is not None:
                pin[0] = self._pin_block(card, quote.amount,
                                         wanted=self.settings.pin_on_refund, progress=progress)

        ref = OriginalRef(batch=original.batch, stan=original.stan, date=original.host_date,
                          rrn=original.rrn, auth_code=original.auth_code,
                          amount=original.amount, scheme=original.scheme)
        return self._financial(
            TxnKind.VOID,
            lambda ctx: self.protocol.void(ctx, ref, card_input, pin[0]),
            lambda ctx, msg: self._new_txn(
                TxnKind.VOID, msg.mti, ctx, original.amount, card_input, quote.card,
                original_id=original.id, original_rrn=original.rrn,
                original_batch=original.batch, original_stan=original.stan,
                original_date=original.host_date, original_amount=original.amount,
                operator=operator),
            progress, on_new_keys=ask_again)

    # --- settlement --------------------------------------------------------------------
    def batch_totals(self, batch: str | None = None) -> SettlementTotals:
        """What the open batch owes and is owed, as the host counts it."""
        batch = batch or self.journal.batch
        records = self.journal.batch_records(batch)
        voided = {r.original_id for r in records
                  if r.kind is TxnKind.VOID and r.status is TxnStatus.APPROVED}
        totals = SettlementTotals()
        for record in records:
            if record.status is not TxnStatus.APPROVED or record.scheme is None:
                continue
            if record.kind is TxnKind.SALE and record.id not in voided:
                totals = totals.add(record.scheme, record.amount, credit=False)
            elif record.kind is TxnKind.REFUND:
                totals = totals.add(record.scheme, record.amount, credit=True)
        return totals

    def settle(self, progress: Progress = _ignore) -> SettleOutcome:
        """结算: resolve what is owed, compare totals, upload the batch on mismatch, close it.

        The settlement is written to the journal before it is sent; one left
        without an answer (host down, crash) is finished before anything else,
        since the host may already have closed the batch.
        """
        self._resolve_items(progress)
        unfinished = self.journal.open_settlements()
        if unfinished:
            return self._finish_settlement(unfinished[0], progress)
        self.prepare(progress)
        batch = self.journal.batch
        totals = self.batch_totals(batch)
        settlement_id = self.journal.new_settlement(batch, {"f48": totals.encode()})
        return self._finish_settlement(self.journal.settlement(settlement_id), progress)

    def _finish_settlement(self, row: sqlite3.Row, progress: Progress) -> SettleOutcome:
        settlement_id, batch = int(row["id"]), str(row["batch"])
        totals = SettlementTotals.decode(json.loads(row["totals"])["f48"])[0]
        if row["balanced"] is None:
            answer = self._retrying(lambda ctx: self.protocol.settlement(
                RequestContext(ctx.stan, batch, ctx.now), totals), progress)
            if not answer.approved:
                self.journal.settlement_refused(settlement_id, answer.code)
                raise TerminalError(f"settlement refused with {answer.code}",
                                    cashier_zh=f"结算失败({answer.code})",
                                    cashier_en=f"Settlement refused ({answer.code})")
            balanced = bool(answer.settle_balanced)
            # journaled before the upload: after a restart the upload resumes, no new 0500
            self.journal.settlement_result(settlement_id, balanced=balanced, uploaded=False)
            code = answer.code
        else:  # the host answered before a restart; what is left is the upload
            balanced, code = bool(row["balanced"]), "00"
        uploaded = _Uploaded(0, None, None)
        if not balanced:
            uploaded = self._batch_upload(settlement_id, batch, progress)
        self.journal.settlement_result(settlement_id, balanced=balanced,
                                       uploaded=uploaded.acknowledged > 0)
        new_batch = self.journal.close_batch(settlement_id)
        return SettleOutcome(batch, totals, balanced, uploaded.acknowledged, new_batch,
                             explain(code), uploaded.received, uploaded.matched)

    def _retrying(self, build: Callable[[RequestContext], Message],
                  progress: Progress) -> Answer:
        """Non-financial exchanges (settlement, batch upload): retried, never reversed."""
        return self._until_answered(build, Step.SENDING, progress, fresh_stan=True)

    def _until_answered(self, build: Callable[[RequestContext], Message], step: Step,
                        progress: Progress, *, fresh_stan: bool,
                        failed: Callable[[str], None] | None = None) -> Answer:
        """Send until a valid answer, up to ``max_resend`` tries, signing on again as needed.

        A resend (``fresh_stan`` False) repeats the same message, so the host
        answers it from its store; a retry takes a new STAN each time.
        """
        last = "no attempt"
        for _ in range(max(1, self.settings.max_resend)):
            if not self.signed_on:
                self.sign_on(progress)
            progress(step)
            self.link.open()
            stan = self.journal.take_stan() if fresh_stan else self.journal.peek_stan()
            result = self._send(build(self._ctx(stan)))
            crash_point("after_resolve_send")
            if isinstance(result, _NoAnswer):
                last = result.error
                if failed is not None:
                    failed(result.error)
                if result.reason == REASON_MAC_FAILED:
                    self._lost_keys()
                continue
            if result.action is TerminalAction.SIGN_ON_AGAIN:
                self._lost_keys()
                continue
            return result
        raise HostTimeoutError(f"no valid answer after {self.settings.max_resend} tries: {last}")

    def _upload_builder(self, chunk: UploadChunk,
                        batch: str) -> Callable[[RequestContext], Message]:
        return lambda ctx: self.protocol.upload(RequestContext(ctx.stan, batch, ctx.now), chunk)

    def _upload_items(self, batch: str) -> list[UploadItem]:
        """The batch's standing sales and refunds (what the totals count), as sent."""
        records = self.journal.batch_records(batch)
        voided = {r.original_id for r in records
                  if r.kind is TxnKind.VOID and r.status is TxnStatus.APPROVED}
        items = []
        for record in records:
            if record.status is not TxnStatus.APPROVED or record.id in voided \
                    or record.kind not in (TxnKind.SALE, TxnKind.REFUND):
                continue
            sent = self.dialect.decode(self.journal.request_of(record.id))
            icc, entry, seq = sent.get(55), sent.get(22), sent.get(23)
            items.append(UploadItem(
                kind=record.kind.value, pan=self.pan_of(record), amount=record.amount,
                batch=record.batch, stan=record.stan, date=record.host_date, rrn=record.rrn,
                auth_code=record.auth_code,
                icc_data=upload_icc_data(icc, record.cryptogram_type, record.cryptogram)
                if isinstance(icc, bytes) else None,
                scheme=record.scheme, entry_mode=entry if isinstance(entry, str) else None,
                card_seq=seq if isinstance(seq, str) else None))
        return items

    def _batch_upload(self, settlement_id: int, batch: str, progress: Progress) -> _Uploaded:
        """批上送 after an unbalanced settlement: every item, then the end with the count.

        The dialect packs the items (CUP: stripe items 8 per 0320 in F48, chip
        items one each with F55, refunds one each). After each answered 0320 the
        journal notes its items (``UPLOAD_PROGRESS``), so a restart sends only
        the rest; an item whose answer a crash lost goes again, and the host
        keeps one row per item. The end always carries the batch's whole count.
        """
        profile = self.dialect.settings.batch_upload
        if profile is None and "batch_upload" not in self.dialect.transactions:
            log.warning("settlement of batch %s did not balance; dialect %s has no batch "
                        "upload", batch, self.dialect.name)
            return _Uploaded(0, None, None)
        progress(Step.UPLOADING)
        items = self._upload_items(batch)
        state = json.loads(self.journal.get(UPLOAD_PROGRESS) or "{}")
        if state.get("settlement") != settlement_id:
            state = {"settlement": settlement_id, "sent": [], "acknowledged": []}
        sent, acked = set(state["sent"]), set(state["acknowledged"])
        for chunk in plan_upload(profile, [i for i in items if _item_key(i) not in sent]):
            answer = self._retrying(self._upload_builder(chunk, batch), progress)
            keys = [_item_key(i) for i in chunk.items]
            sent.update(keys)
            if answer.approved:
                acked.update(keys)
            else:
                log.warning("host refused %d upload item(s) of batch %s with %s",
                            len(keys), batch, answer.code)
            self.journal.put(UPLOAD_PROGRESS, json.dumps(
                {"settlement": settlement_id, "sent": sorted(sent), "acknowledged": sorted(acked)}))
        end = self._retrying(lambda ctx: self.protocol.batch_upload_end(
            RequestContext(ctx.stan, batch, ctx.now), len(items)), progress)
        counts = end.upload_counts
        if counts is not None and counts.received != len(items):
            log.warning("batch %s: uploaded %d items, the host holds %d", batch, len(items),
                        counts.received)
        return _Uploaded(len(acked), counts.received if counts else None,
                         counts.matched if counts else None)

    # --- maintenance ------------------------------------------------------------------------
    def recover(self, progress: Progress = _ignore) -> ResolveReport:
        """After a restart: resolve every uncertain request before anything else."""
        return self.resolve(progress)

    def uncertain(self) -> Sequence[TxnRecord]:
        return self.journal.records("status IN ('pending', 'uncertain')")


def _item_key(item: UploadItem) -> str:
    """How the upload progress names an item: batch/STAN (never the PAN)."""
    return f"{item.batch}/{item.stan}"


def _age_days(mmdd: str, today: date) -> int:
    """Days since MMDD, taking the most recent such date not after ``today``."""
    month, day = int(mmdd[:2]), int(mmdd[2:])
    for year in (today.year, today.year - 1):
        try:
            when = date(year, month, day)
        except ValueError:
            continue
        if when <= today:
            return (today - when).days
    return 366


__all__ = ["CardEnding", "ExternalOriginal", "Outcome", "RefundQuote", "ResolveReport",
           "SettleOutcome", "Till", "TillStatus", "VoidQuote", "timedelta"]
