"""``pos-terminal``: the terminal for developers, scripts and QA (and the cashier app's entry).

    pos-terminal [--data-dir D] [--host H:P] [--reader pcsc:NAME|virtual:CARD[:cl]]
                 [--pinpad PORT|virtual] [--dialect cup|iso87] [--lang zh|en] [--json] COMMAND

Commands: init, signon, echo, sale, refund, void, settle, journal, status, recover
(and ui / demo when the cashier app is installed). Amounts are typed as a
cashier types them (``12.34``).

Exit codes: 0 approved (or done), 1 declined by the host (code and reason
printed), 2 refused before sending (bad input or a rule: one clear line),
3 outcome uncertain or host unreachable (and what the terminal does next).
``--json`` prints one object instead of text.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from dataclasses import fields as dataclass_fields
from dataclasses import replace as dataclass_replace
from datetime import datetime
from pathlib import Path
from typing import Any, NoReturn

from drivers.errors import DriverError
from iso8583.dialects import get_dialect
from iso8583.errors import Iso8583Error
from iso8583.responses import explain
from terminal.core.approvals import Approval, ApprovalRequiredError
from terminal.core.audit import AuditAction
from terminal.core.config import TerminalSettings, init_terminal
from terminal.core.errors import (
    ConfigError,
    HostLinkError,
    InputError,
    PendingError,
    RuleError,
    TerminalError,
    UncertainError,
)
from terminal.core.journal import Journal
from terminal.core.money import format_amount, parse_amount
from terminal.core.operators import Operator
from terminal.core.ports import CardRead, CardReader, PinEntry, Purpose, Step
from terminal.core.receipts import Copy, render_text
from terminal.core.records import REASON_TEXT, RefundReason, TxnKind, TxnRecord, TxnStatus
from terminal.core.session import Session, save_policy
from terminal.core.till import ExternalOriginal, Outcome, RefundQuote, Till
from terminal.hostlink import TRACE_ENV, IsoTraceFile, TcpHostLink

EXIT_OK, EXIT_DECLINED, EXIT_REFUSED, EXIT_UNCERTAIN = 0, 1, 2, 3
DATA_ENV = "POS_TERMINAL_DATA"
DEFAULT_DATA = "pos-terminal-data"
DEFAULT_HOST = "127.0.0.1:5858"
TRAINING_ENV = "POS_TRAINING_DATA"
DEFAULT_TRAINING = "pos-training-data"
TPDU = bytes.fromhex("6000030000")



class Refused(Exception):  # noqa: N818 -- control flow: exit 2 with a message
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass
class Ctx:
    args: argparse.Namespace
    data_dir: Path
    lang: str
    as_json: bool
    result: dict[str, Any] = field(default_factory=dict)

    def say(self, zh: str, en: str) -> str:
        return zh if self.lang == "zh" else en

    def out(self, text: str) -> None:
        if not self.as_json:
            print(text)

    def progress(self, step: Step) -> None:
        if self.args.verbose and not self.as_json:
            from terminal.ui.text import step_text  # the one catalogue of on-screen words
            print(f"... {step_text(step, 'zh' if self.lang == 'zh' else 'en')}",
                  file=sys.stderr)


# --- building the till from the command line -----------------------------------------
def _host_address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise InputError(f"--host must be HOST:PORT, got {text!r}")
    return host, int(port)


def _reader(spec: str | None, f55_tags: tuple[int, ...], timeout: float) -> CardReader | None:
    if not spec:
        return None
    kind, _, rest = spec.partition(":")
    if kind == "virtual":
        from terminal.demo_world import virtual_card_reader
        name, _, mode = rest.partition(":")
        try:
            return virtual_card_reader(name, contactless=mode == "cl", f55_tags=f55_tags,
                                       timeout=timeout)
        except KeyError:
            raise InputError(f"no test card named {name!r} (see pos-emulator cards)") from None
    if kind == "pcsc":
        from drivers.pcsc import PcscReader
        from terminal.core.devices import EmvCardReader
        reader = PcscReader(rest or None)

        @contextlib.contextmanager
        def source(timeout: float) -> Iterator[Any]:
            reader.wait_for_card(timeout)
            transport = reader.connect()
            try:
                yield transport
            finally:
                transport.close()

        return EmvCardReader(source, description=f"PC/SC reader {rest or '(first)'}",
                             f55_tags=f55_tags, timeout=timeout, cancel=reader.cancel)
    raise InputError(f"--reader must be pcsc:NAME or virtual:CARD, got {spec!r}")


def _pinpad(spec: str | None, reader_spec: str | None, tmk: Callable[[], bytes],
            timeout: float) -> PinEntry | None:
    if not spec:
        return None
    if spec == "virtual":
        from terminal.demo_world import VirtualPinPadPort, test_card_pin
        pin = None
        if reader_spec and reader_spec.startswith("virtual:"):
            pin = test_card_pin(reader_spec.split(":")[1])
        override = os.environ.get("POS_VIRTUAL_PIN")  # QA: make the cardholder type this
        return VirtualPinPadPort(tmk(), override or pin, timeout=timeout)
    from drivers.pinpad import PinPad
    from terminal.core.devices import SerialPinPad
    return SerialPinPad(PinPad.open(spec), description=f"PIN pad on {spec}", timeout=timeout)


def open_till(ctx: Ctx) -> Till:
    args = ctx.args
    if not (ctx.data_dir / "journal.db").exists():
        raise ConfigError(f"{ctx.data_dir} holds no terminal; run 'pos-terminal --data-dir "
                          f"{ctx.data_dir} init --tid T --mid M --tmk HEX' first",
                          cashier_zh="终端未初始化", cashier_en="Terminal not set up")
    journal = Journal.open(ctx.data_dir)
    try:
        settings = TerminalSettings.from_journal(journal)
        from terminal.core.config import load_tmk
        dialect = get_dialect(args.dialect or settings.dialect)
        host, port = _host_address(args.host or journal.get("host") or DEFAULT_HOST)
        tmk = load_tmk(journal)
    finally:
        journal.close()
    link = TcpHostLink(dialect, host, port, timeout=args.timeout,
                       tpdu=TPDU if dialect.spec.tpdu else None,
                       trace=IsoTraceFile(args.trace, dialect) if args.trace else None)
    reader = _reader(args.reader, dialect.settings.f55_tags, settings.card_timeout_s)
    pinpad = _pinpad(args.pinpad, args.reader, lambda: tmk, settings.pin_timeout_s)
    return Till.open(ctx.data_dir, link=link, reader=reader, pinpad=pinpad)


def read_password(path: str | None, what: str) -> str:
    """A password from a file (``-``: standard input); never from the command line."""
    if path is None:
        raise InputError(f"{what}: give the password in a file (--...-password-file F)")
    try:
        text = sys.stdin.readline() if path == "-" else Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise InputError(f"{what}: cannot read password file {path}: {exc.strerror}") from None
    return text.rstrip("\r\n")


def open_session(ctx: Ctx) -> Session:
    """The till plus the cashier's rules; logs the operator in when the terminal has some."""
    session = Session(open_till(ctx))
    args = ctx.args
    try:
        if args.operator is not None:
            session.login(args.operator, read_password(args.password_file,
                                                       f"operator {args.operator}"),
                          allow_expired=False)
    except BaseException:
        session.till.close()
        raise
    return session


def approval_for(ctx: Ctx, session: Session, kind: TxnKind, amount: int,
                 card: CardRead | None) -> Approval | None:
    """The approval this request needs, from --supervisor; exit 2 names what is missing."""
    reasons = session.required_approvals(kind, amount, card)
    if not reasons:
        return None
    if ctx.args.supervisor is None:
        raise ApprovalRequiredError(reasons)
    return session.approve(reasons, ctx.args.supervisor, read_password(
        ctx.args.supervisor_password_file, f"supervisor {ctx.args.supervisor}"))


# --- results ---------------------------------------------------------------------------
def _record_json(record: TxnRecord) -> dict[str, Any]:
    return {"kind": record.kind.value, "status": record.status.value,
            "code": record.response_code, "rrn": record.rrn, "auth_code": record.auth_code,
            "voucher": record.voucher, "batch": record.batch, "masked_pan": record.pan_masked,
            "amount": format_amount(record.amount), "host_date": record.host_date,
            "original_rrn": record.original_rrn, "reason": record.reason}


def _report(ctx: Ctx, outcome: Outcome) -> int:
    record = outcome.record
    ctx.result.update(_record_json(record))
    names = {TxnKind.SALE: ("消费", "SALE"), TxnKind.REFUND: ("退货", "REFUND"),
             TxnKind.VOID: ("撤销", "VOID"), TxnKind.BALANCE: ("余额查询", "BALANCE")}
    zh_kind, en_kind = names[record.kind]
    if outcome.status is TxnStatus.APPROVED:
        ctx.result["result"] = "approved"
        ctx.out(ctx.say(f"{zh_kind}成功", f"{en_kind} APPROVED")
                + f"  {format_amount(record.amount)} {record.pan_masked}  "
                  f"RRN {record.rrn}  AUTH {record.auth_code or '-'}  "
                  + ctx.say("凭证号", "voucher") + f" {record.voucher}  "
                  + ctx.say("批次", "batch") + f" {record.batch}")
        return EXIT_OK
    if outcome.status is TxnStatus.DECLINED:
        text = explain(record.response_code)
        ctx.result["result"] = "declined"
        ctx.result["reason"] = {"zh": text.zh, "en": text.en}
        ctx.out(ctx.say(f"{zh_kind}失败", f"{en_kind} DECLINED")
                + f" ({record.response_code}): {ctx.say(text.zh, text.en)}"
                + (f" - {ctx.say(text.action_zh, text.action_en)}" if text.action_en else ""))
        return EXIT_DECLINED
    zh, en = outcome.next_step
    ctx.result["result"] = outcome.status.value
    ctx.result["next_step"] = {"zh": zh, "en": en}
    if outcome.card_refused is not None:  # the host approved, the card did not: reversed
        ctx.result["card"] = outcome.card_refused.value
        ctx.out(ctx.say(f"{zh_kind}失败：", f"{en_kind} DECLINED: ") + ctx.say(zh, en))
        return EXIT_DECLINED if outcome.status is TxnStatus.REVERSED else EXIT_UNCERTAIN
    if outcome.status is TxnStatus.REVERSED:
        ctx.out(ctx.say(f"{zh_kind}未完成：主机无有效应答，已冲正（未扣款）",
                        f"{en_kind} NOT DONE: no valid answer; reversed, nothing was charged"))
        return EXIT_UNCERTAIN
    ctx.out(ctx.say(f"{zh_kind}结果未知：", f"{en_kind} OUTCOME UNKNOWN: ") + ctx.say(zh, en))
    return EXIT_UNCERTAIN


# --- commands --------------------------------------------------------------------------
def cmd_init(ctx: Ctx) -> int:
    args = ctx.args
    try:
        tmk = bytes.fromhex(args.tmk)
    except ValueError:
        raise InputError("--tmk must be hex (16, 32 or 48 digits)") from None
    settings = TerminalSettings(tid=args.tid, mid=args.mid, dialect=args.dialect or "cup",
                                lang=ctx.lang, training=args.training,
                                merchant_name=args.merchant_name)
    journal = Journal.open(ctx.data_dir)
    try:
        init_terminal(journal, settings, tmk)
        host = args.init_host or args.host
        if host:
            _host_address(host)
            journal.put("host", host)
        if args.admin_password_file or args.init_supervisor_password_file:
            from terminal.core.operators import OperatorStore
            created = OperatorStore(journal.conn, journal.clock).bootstrap(
                read_password(args.admin_password_file, "administrator 99"),
                read_password(args.init_supervisor_password_file, "supervisor 00"))
            ctx.result["operators_created"] = created
    finally:
        journal.close()
    ctx.result.update({"result": "ok", "tid": args.tid, "mid": args.mid,
                       "data_dir": str(ctx.data_dir)})
    ctx.out(ctx.say(f"终端 {args.tid} 已初始化于 {ctx.data_dir}",
                    f"terminal {args.tid} set up in {ctx.data_dir}"))
    return EXIT_OK


def cmd_signon(ctx: Ctx, session: Session) -> int:
    till = session.till
    report = till.resolve(ctx.progress)
    till.sign_on(ctx.progress)
    ctx.result.update({"result": "ok", "batch": till.journal.batch,
                       "resolved": report.resolved})
    ctx.out(ctx.say("签到成功", "SIGNED ON") + f"  batch {till.journal.batch}")
    return EXIT_OK


def cmd_echo(ctx: Ctx, session: Session) -> int:
    session.till.echo(ctx.progress)
    ctx.result["result"] = "ok"
    ctx.out(ctx.say("主机连接正常", "host answered the echo"))
    return EXIT_OK


def _need_reader(till: Till) -> None:
    if till.reader is None:
        raise InputError("this command reads a card: give --reader virtual:CARD or pcsc:NAME")


def cmd_sale(ctx: Ctx, session: Session) -> int:
    till = session.till
    amount = parse_amount(ctx.args.amount)
    _need_reader(till)
    session.required_approvals(TxnKind.SALE, amount, None)  # logged in, if the till has operators
    till.prepare(ctx.progress)
    card = till.read_card(Purpose.SALE, amount, ctx.progress)
    return _report(ctx, session.sale(amount, card, progress=ctx.progress))


def _reason(text: str) -> RefundReason:
    try:
        return RefundReason(text.replace("-", "_"))
    except ValueError:
        choices = ", ".join(r.value for r in RefundReason)
        raise InputError(f"unknown reason {text!r}; one of: {choices}") from None


def _quote_lines(ctx: Ctx, quote: RefundQuote) -> list[str]:
    unknown = ctx.say("本终端无记录（主机核对）", "not in this journal (the host checks)")
    original = quote.original
    label = (f"voucher {original.voucher} RRN {original.rrn}" if isinstance(original, TxnRecord)
             else original.label)
    zh_reason, en_reason = REASON_TEXT[quote.reason]

    def money(value: int | None) -> str:
        return unknown if value is None else format_amount(value)

    return [
        ctx.say("退货确认", "REFUND QUOTE") + f"  ({label})",
        ctx.say("  原交易金额 ", "  original amount   ") + money(quote.original_amount),
        ctx.say("  已退金额   ", "  already refunded  ") + money(quote.already_refunded)
        + (ctx.say(f"（另有 {format_amount(quote.in_doubt)} 待确认）",
                   f" (+{format_amount(quote.in_doubt)} unconfirmed)") if quote.in_doubt else ""),
        ctx.say("  可退金额   ", "  refundable        ") + money(quote.refundable),
        ctx.say("  本次退款   ", "  this refund       ") + format_amount(quote.amount),
        ctx.say("  卡号       ", "  card              ") + quote.masked_pan,
        ctx.say("  原因       ", "  reason            ") + ctx.say(zh_reason, en_reason)
        + (f" ({quote.note})" if quote.note else ""),
    ]


def cmd_refund(ctx: Ctx, session: Session) -> int:
    till = session.till
    args = ctx.args
    amount = parse_amount(args.amount)
    reason = _reason(args.reason)
    _need_reader(till)
    original: TxnRecord | ExternalOriginal | None = None
    if args.voucher is not None:
        original = till.find_by_voucher(args.voucher)
    elif args.rrn is not None:
        if args.date is None:
            raise InputError("--rrn needs --date MMDD (the date of the original sale)")
        original = till.find_by_rrn(args.rrn, args.date)
    card = till.read_card(Purpose.REFUND, amount, ctx.progress)
    if original is None:  # --by-card: this card's refundable sales
        sales = till.refundable_sales(card)
        if not sales:
            raise RuleError("this card has no refundable sale in the journal",
                            cashier_zh="此卡无可退货的交易", cashier_en="No refundable sale")
        if len(sales) > 1 and args.pick is None:
            lines = [f"  {i + 1}: voucher {s.voucher} {s.created_at:%Y-%m-%d %H:%M} "
                     f"{format_amount(s.amount)} refundable {format_amount(left.refundable)}"
                     for i, (s, left) in enumerate(sales)]
            ctx.result["candidates"] = [{"voucher": s.voucher, "rrn": s.rrn,
                                         "refundable": format_amount(left.refundable)}
                                        for s, left in sales]
            raise RuleError("this card has several refundable sales; choose with --pick N or "
                            "--voucher:\n" + "\n".join(lines))
        index = (args.pick or 1) - 1
        if not 0 <= index < len(sales):
            raise InputError(f"--pick must be 1..{len(sales)}")
        original = sales[index][0]
    quote = session.quote_refund(original, card, amount, reason, args.note)
    approval = approval_for(ctx, session, TxnKind.REFUND, amount, card)
    for line in _quote_lines(ctx, quote):
        ctx.out(line)
    ctx.result["quote"] = {
        "original_amount": None if quote.original_amount is None
        else format_amount(quote.original_amount),
        "refundable": None if quote.refundable is None else format_amount(quote.refundable),
        "amount": format_amount(quote.amount), "masked_pan": quote.masked_pan}
    if not args.yes:
        if not sys.stdin.isatty():
            raise InputError("confirm the refund with --yes (no terminal to ask on)")
        answer = input(ctx.say("确认退货? [y/N] ", "Send this refund? [y/N] "))
        if answer.strip().lower() not in ("y", "yes"):
            ctx.result["result"] = "cancelled"
            ctx.out(ctx.say("已取消，未发送", "cancelled; nothing was sent"))
            return EXIT_REFUSED
    if approval is not None:
        ctx.out(ctx.say("主管已授权", "approved by supervisor") + f" {approval.approver}")
    return _report(ctx, session.refund(quote, approval=approval, progress=ctx.progress))


def cmd_void(ctx: Ctx, session: Session) -> int:
    till = session.till
    original = till.find_by_voucher(ctx.args.voucher)
    card = till.read_card(Purpose.VOID, original.amount, ctx.progress) if till.reader else None
    quote = session.quote_void(original, card)
    approval = approval_for(ctx, session, TxnKind.VOID, original.amount, card)
    return _report(ctx, session.void(quote, approval=approval, progress=ctx.progress))


def cmd_settle(ctx: Ctx, session: Session) -> int:
    result = session.settle(progress=ctx.progress)
    dom = result.totals.domestic
    ctx.result.update({"result": "ok", "batch": result.batch, "balanced": result.balanced,
                       "uploaded": result.uploaded, "host_received": result.host_received,
                       "host_matched": result.host_matched, "new_batch": result.new_batch,
                       "debit_count": dom.debit_count, "debit_amount": format_amount(
                           dom.debit_amount), "credit_count": dom.credit_count,
                       "credit_amount": format_amount(dom.credit_amount)})
    ctx.out(ctx.say("结算", "SETTLEMENT") + f" batch {result.batch}: "
            + ctx.say("借记", "debits")
            + f" {dom.debit_count} / {format_amount(dom.debit_amount)}, "
            + ctx.say("贷记", "credits") + f" {dom.credit_count} / "
            f"{format_amount(dom.credit_amount)}; "
            + (ctx.say("对账平", "totals agree with the host") if result.balanced else
               ctx.say(f"对账不平，已批上送 {result.uploaded} 笔",
                       f"totals differ; batch uploaded ({result.uploaded} items)"))
            + _host_counts(ctx, result.host_received, result.host_matched)
            + f"; next batch {result.new_batch}")
    return EXIT_OK


def _host_counts(ctx: Ctx, received: int | None, matched: int | None) -> str:
    """What the host said at the end of the batch upload (nothing when it said nothing)."""
    if received is None:
        return ""
    text = ctx.say(f"，主机收到 {received} 笔", f", host received {received}")
    if matched is not None:
        text += ctx.say(f"，相符 {matched} 笔", f", {matched} matched")
    return text


def cmd_status(ctx: Ctx, session: Session) -> int:
    status = session.till.status()
    ctx.result.update({"result": "ok", **{k: v for k, v in status.__dict__.items()
                                          if k != "details"}})
    ctx.out("\n".join([
        f"TID {status.tid}  MID {status.mid}  dialect {status.dialect}"
        + ("  TRAINING" if status.training else ""),
        ctx.say("批次", "batch") + f" {status.batch}  " + ctx.say("下一流水号", "next STAN")
        + f" {status.next_stan}",
        ctx.say("已签到", "signed on") + f": {status.signed_on}",
        ctx.say("待处理冲正/通知", "pending reversals/advices") + f": {status.open_items}",
        ctx.say("读卡器", "reader") + f": {status.reader}",
        ctx.say("密码键盘", "PIN pad") + f": {status.pinpad}"]))
    return EXIT_OK


def cmd_recover(ctx: Ctx, session: Session) -> int:
    report = session.till.recover(ctx.progress)
    ctx.result.update({"result": "ok" if not report.left else "uncertain",
                       "resolved": report.resolved, "left": report.left,
                       "details": list(report.details)})
    for line in report.details:
        ctx.out(line)
    ctx.out(ctx.say(f"已处理 {report.resolved}，剩余 {report.left}",
                    f"resolved {report.resolved}, still open {report.left}"))
    return EXIT_OK if not report.left else EXIT_UNCERTAIN


def cmd_journal(ctx: Ctx, session: Session) -> int:
    args = ctx.args
    if args.what == "export":
        text = session.export(args.format, _when(args.from_), _when(args.to))
        ctx.result.update({"result": "ok", "format": args.format})
        if ctx.as_json:
            ctx.result["export"] = text
        else:
            sys.stdout.write(text if text.endswith("\n") or not text else text + "\n")
        return EXIT_OK
    records = list(session.till.journal.iter_all())
    if args.voucher:
        records = [r for r in records if r.voucher == f"{int(args.voucher):06d}"]
    if args.rrn:
        records = [r for r in records if args.rrn in (r.rrn, r.original_rrn)]
    if args.status:
        records = [r for r in records if r.status.value == args.status]
    if args.kind:
        records = [r for r in records if r.kind.value == args.kind]
    if args.card:
        records = [r for r in records if r.pan_masked.endswith(args.card[-4:])]
    ctx.result.update({"result": "ok", "records": [_record_json(r) for r in records]})
    for r in records:
        ctx.out(f"{r.created_at:%Y-%m-%d %H:%M:%S} {r.kind.value:<7} {r.status.value:<9} "
                f"{r.response_code or '--':<3} batch {r.batch} voucher {r.voucher} "
                f"{format_amount(r.amount):>10} {r.pan_masked} RRN {r.rrn or '-'}"
                + (f" orig {r.original_rrn}" if r.original_rrn else ""))
    if not records:
        ctx.out(ctx.say("无记录", "no records"))
    return EXIT_OK


def _when(text: str | None) -> datetime | None:
    if text is None:
        return None
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        raise InputError(f"date {text!r} is not YYYY-MM-DD[THH:MM]") from None


def _int_arg(text: str) -> int:
    if not text.isdigit():
        raise InputError(f"{text!r} is not a whole number")
    return int(text)


def _manager(ctx: Ctx, session: Session) -> Operator:
    if session.operator is None:
        raise InputError("this command needs --operator (99 or 00) and --password-file")
    return session.operator


def cmd_operator(ctx: Ctx, session: Session) -> int:
    args = ctx.args
    store = session.operators
    if args.action == "list":
        ops = store.list(include_inactive=True)
        ctx.result.update({"result": "ok", "operators": [
            {"number": o.number, "name": o.name, "role": o.role.value, "active": o.active,
             "locked_until": o.locked_until.isoformat() if o.locked_until else None,
             "failed_tries": o.failed_tries} for o in ops]})
        for o in ops:
            lock = f" locked until {o.locked_until:%Y-%m-%d %H:%M}" if o.locked_until else ""
            ctx.out(f"{o.number} {o.role.value:<10} {o.name or '-':<12} "
                    f"{'active' if o.active else 'inactive'}{lock}")
        return EXIT_OK
    if args.action == "expiry":  # the administrator: days a password lasts ('off': never)
        if args.number is None:
            raise InputError("operator expiry DAYS (or 'off')")
        days = None if args.number.lower() in ("off", "none", "0") else _int_arg(args.number)
        store.set_password_expiry(days, by=_manager(ctx, session))
        ctx.result.update({"result": "ok", "password_expiry_days": days})
        ctx.out(ctx.say("密码有效期", "password expiry") + f": {days if days else '-'}")
        return EXIT_OK
    if args.number is None:
        raise InputError(f"operator {args.action} needs the operator number")
    if args.action == "add":
        op = store.add(args.number, read_password(args.new_password_file, "new operator"),
                       by=_manager(ctx, session), name=args.name or "")
        ctx.out(ctx.say(f"已添加操作员 {op.number}", f"operator {op.number} added"))
    elif args.action == "passwd":
        new = read_password(args.new_password_file, "new password")
        if session.operator is not None and session.operator.number != args.number:
            store.reset_password(args.number, new, by=session.operator)
        else:
            store.change_password(args.number, read_password(args.old_password_file,
                                                              "old password"), new)
        ctx.out(ctx.say(f"操作员 {args.number} 密码已更改", f"password of {args.number} changed"))
    elif args.action == "unlock":
        store.unlock(args.number, by=_manager(ctx, session))
        ctx.out(ctx.say(f"操作员 {args.number} 已解锁", f"operator {args.number} unlocked"))
    elif args.action == "deactivate":
        store.deactivate(args.number, by=_manager(ctx, session))
        ctx.out(ctx.say(f"操作员 {args.number} 已停用", f"operator {args.number} deactivated"))
    ctx.result.update({"result": "ok", "number": args.number, "action": args.action})
    return EXIT_OK


def cmd_refund_status(ctx: Ctx, session: Session) -> int:
    args = ctx.args
    record = session.find_refund(voucher=args.voucher, rrn=args.rrn)
    if args.resolve and record.status in (TxnStatus.PENDING, TxnStatus.UNCERTAIN):
        session.resolve(progress=ctx.progress)
        record = session.till.journal.record(record.id)
    view = session.refund_status(record)
    ctx.result.update({"result": "ok", "refund": _record_json(record),
                       "status": json.loads(view.to_json())})
    for label, value in view.lines(ctx.lang):  # type: ignore[arg-type]
        ctx.out(f"{label}: {value}")
    if args.print_proof and record.status is TxnStatus.APPROVED:
        proof = session.refund_proof(record, lang="both")
        _print(ctx, session, render_text(proof, 42))
    return EXIT_OK


def _print(ctx: Ctx, session: Session, text: str) -> None:
    printer = session.till.printer
    if printer is not None:
        printer.print_text(text)
    ctx.result["printed"] = text
    ctx.out(text)


def cmd_reprint(ctx: Ctx, session: Session) -> int:
    args = ctx.args
    journal = session.till.journal
    if args.voucher is not None:
        found = [r for r in journal.by_voucher(args.voucher) if r.status is TxnStatus.APPROVED]
        if not found:
            raise RuleError(f"no approved transaction with voucher {args.voucher}")
        record = found[0]
    else:
        approved = [r for r in journal.iter_all() if r.status is TxnStatus.APPROVED]
        if not approved:
            raise RuleError("nothing approved to reprint yet")
        record = approved[-1]
    if args.proof:
        receipt = session.refund_proof(record, lang="both", reprint=True)
    else:
        receipt = session.receipt(record, Copy(args.copy), lang="both", reprint=True)
    _print(ctx, session, render_text(receipt, args.width))
    ctx.result["result"] = "ok"
    return EXIT_OK


def cmd_report(ctx: Ctx, session: Session) -> int:
    args = ctx.args
    if args.flagged:
        flags = session.audit.flagged()
        ctx.result.update({"result": "ok", "flagged": [
            {"id": f.id, "txn_id": f.txn_id, "at": f.at.isoformat(), "operator": f.operator,
             "explanation": f.explanation, "follow_up_txn_id": f.follow_up_txn_id}
            for f in flags]})
        for f in flags:
            rec = session.till.journal.record(f.txn_id)
            ctx.out(f"flag {f.id}: {rec.kind.value} voucher {rec.voucher} "
                    f"{format_amount(rec.amount)} {rec.pan_masked} by {f.operator or '-'}: "
                    f"{f.explanation}" + (f" -> follow-up row {f.follow_up_txn_id}"
                                          if f.follow_up_txn_id else ""))
        if not flags:
            ctx.out(ctx.say("无标记交易", "no flagged transactions"))
        return EXIT_OK
    report = session.report(day=_when(args.day), batch=args.batch, start=_when(args.from_),
                            end=_when(args.to))
    ctx.result.update({"result": "ok", "report": json.loads(report.to_json())})
    ctx.out(report.render_text(ctx.lang, 42))  # type: ignore[arg-type]
    return EXIT_OK


def cmd_audit(ctx: Ctx, session: Session) -> int:
    args = ctx.args
    entries = session.audit.entries(_when(args.from_), _when(args.to),
                                    AuditAction(args.action) if args.action else None)
    ctx.result.update({"result": "ok", "entries": [
        {"id": e.id, "at": e.at.isoformat(), "operator": e.operator, "action": e.action.value,
         "txn_id": e.txn_id, "approver": e.approver, "detail": e.detail} for e in entries]})
    for e in entries:
        ctx.out(f"{e.at:%Y-%m-%d %H:%M:%S} {e.action.value:<16} op {e.operator or '-':<3} "
                + (f"approver {e.approver} " if e.approver else "")
                + (f"row {e.txn_id} " if e.txn_id else "")
                + json.dumps(e.detail, ensure_ascii=False, sort_keys=True))
    return EXIT_OK


def cmd_flag(ctx: Ctx, session: Session) -> int:
    args = ctx.args
    journal = session.till.journal
    found = journal.by_voucher(args.voucher)
    if not found:
        raise RuleError(f"no transaction with voucher {args.voucher}")
    if args.follow_up_voucher is not None:
        follow = journal.by_voucher(args.follow_up_voucher)
        if not follow or args.flag_id is None:
            raise InputError("--follow-up-voucher needs --flag-id and a known voucher")
        flag = session.audit.link_follow_up(args.flag_id, follow[0].id,
                                            operator=session.operator_number)
        ctx.result.update({"result": "ok", "flag_id": flag.id})
        ctx.out(ctx.say("已关联后续交易", "follow-up linked") + f" (flag {flag.id})")
        return EXIT_OK
    if not args.explain:
        raise InputError("flag needs --explain TEXT")
    flag_id = session.audit.flag(found[0].id, session.operator_number, args.explain)
    ctx.result.update({"result": "ok", "flag_id": flag_id})
    ctx.out(ctx.say("已标记", "flagged") + f" (flag {flag_id})")
    return EXIT_OK


def cmd_config(ctx: Ctx, session: Session) -> int:
    args = ctx.args
    till = session.till
    settings = {**till.settings.to_meta()}
    policy = session.policy
    if args.action == "show":
        shown = {k.removeprefix("setting."): v for k, v in settings.items()}
        shown.update({f"policy.{f.name}": str(getattr(policy, f.name))
                      for f in dataclass_fields(policy)})
        ctx.result.update({"result": "ok", "config": shown})
        for key, shown_value in sorted(shown.items()):
            ctx.out(f"{key} = {shown_value}")
        return EXIT_OK
    if args.key is None or args.value is None:
        raise InputError("config set KEY VALUE")
    manager = _manager(ctx, session)
    if args.key.startswith("policy."):
        name = args.key.removeprefix("policy.")
        known = {f.name: f for f in dataclass_fields(policy)}
        if name not in known:
            raise InputError(f"unknown policy setting {name}; one of: {', '.join(known)}")
        current = getattr(policy, name)
        value: object
        if args.value.lower() in ("none", "off", "-"):
            value = None
        elif isinstance(current, bool):
            value = args.value.lower() in ("1", "true", "yes", "on")
        elif "amount" in name or name.endswith("_above"):
            value = parse_amount(args.value)
        else:
            value = int(args.value)
        changes: dict[str, Any] = {name: value}
        save_policy(till, dataclass_replace(policy, **changes))
    else:
        key = f"setting.{args.key}"
        if key not in settings or args.key in ("tid", "mid"):
            raise InputError(f"unknown or fixed setting {args.key}")
        till.journal.put(key, args.value)
        TerminalSettings.from_journal(till.journal)  # refuses a bad value
    session.audit.append(AuditAction.CONFIG_CHANGE, manager.number,
                         detail={"setting": args.key, "value": args.value})
    ctx.result.update({"result": "ok", args.key: args.value})
    ctx.out(f"{args.key} = {args.value}")
    return EXIT_OK


# --- argument parsing ----------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pos-terminal", description=__doc__.split("\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="exit codes: 0 approved, 1 declined, 2 refused "
                                            "before sending, 3 uncertain/unreachable")
    parser.add_argument("--data-dir", type=Path,
                        help=f"terminal data directory (default ${DATA_ENV} or ./{DEFAULT_DATA})")
    parser.add_argument("--host", help=f"acquirer host HOST:PORT (default {DEFAULT_HOST}, or "
                                       "the one given at init)")
    parser.add_argument("--reader", help="pcsc:NAME (a PC/SC reader) or virtual:CARD[:cl] "
                                         "(a test card in-process; :cl contactless)")
    parser.add_argument("--pinpad", help="serial port of the PIN pad, or 'virtual'")
    parser.add_argument("--dialect", choices=("cup", "iso87"))
    parser.add_argument("--lang", choices=("zh", "en"))
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--timeout", type=float, default=10.0, help="host answer timeout (s)")
    parser.add_argument("--operator", help="log in as this operator (01-98 cashier, 00 "
                                           "supervisor, 99 administrator)")
    parser.add_argument("--password-file", help="the operator's password, in a file (- stdin)")
    parser.add_argument("--supervisor", help="supervisor approving a refund/void that needs it")
    parser.add_argument("--supervisor-password-file", help="the supervisor's password file")
    parser.add_argument("--verbose", "-v", action="store_true", help="say every step")
    parser.add_argument("--trace", metavar="FILE",
                        help=f"record every ISO 8583 frame to FILE (masked JSONL, appended; "
                             f"read it with 'pos-iso trace show FILE'); {TRACE_ENV}=FILE does "
                             f"the same for every command")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    init = sub.add_parser("init", help="make the data directory a terminal")
    init.add_argument("--tid", required=True)
    init.add_argument("--mid", required=True)
    init.add_argument("--tmk", required=True, help="terminal master key, hex")
    init.add_argument("--merchant-name", default="POS-REFUND DEMO SHOP")
    init.add_argument("--training", action="store_true")
    init.add_argument("--host", dest="init_host", help="acquirer HOST:PORT to remember")
    init.add_argument("--admin-password-file", help="create operator 99 with this password")
    init.add_argument("--supervisor-password-file", dest="init_supervisor_password_file",
                      help="create supervisor 00 with this password")
    sub.add_parser("signon", help="sign on (working keys, PIN key into the pad)")
    sub.add_parser("echo", help="echo test of the host link")
    sale = sub.add_parser("sale", help="消费: a sale to create originals")
    sale.add_argument("amount")
    refund = sub.add_parser("refund", help="退货: refund to the card of the original")
    refund.add_argument("amount")
    which = refund.add_mutually_exclusive_group(required=True)
    which.add_argument("--voucher", help="voucher (凭证号) of the original sale")
    which.add_argument("--rrn", help="RRN of the original (with --date)")
    which.add_argument("--by-card", action="store_true", help="the card's refundable sales")
    refund.add_argument("--date", help="MMDD of the original (with --rrn)")
    refund.add_argument("--pick", type=int, help="with --by-card: which sale (1 = newest)")
    refund.add_argument("--reason", required=True,
                        help="damaged, not_received, wrong_transaction, duplicate_charge, "
                             "customer_cancelled, other (needs --note)")
    refund.add_argument("--note")
    refund.add_argument("--yes", action="store_true", help="send without asking")
    void = sub.add_parser("void", help="撤销: void a sale of the open batch")
    void.add_argument("--voucher", required=True)
    sub.add_parser("settle", help="结算: settle the open batch")
    journal = sub.add_parser("journal", help="list the journal, or 'journal export'")
    journal.add_argument("what", nargs="?", choices=("list", "export"), default="list")
    journal.add_argument("--format", choices=("csv", "json"), default="csv")
    journal.add_argument("--from", dest="from_", help="YYYY-MM-DD[THH:MM] (export)")
    journal.add_argument("--to", help="YYYY-MM-DD[THH:MM], exclusive (export)")
    journal.add_argument("--voucher")
    journal.add_argument("--rrn")
    journal.add_argument("--status", choices=[s.value for s in TxnStatus])
    journal.add_argument("--kind", choices=[k.value for k in TxnKind])
    journal.add_argument("--card", help="last four digits of the card")
    sub.add_parser("status", help="terminal state")
    sub.add_parser("recover", help="resolve every uncertain request with the host")
    operator = sub.add_parser("operator", help="operators: add, passwd, list, unlock, "
                                                "deactivate, expiry DAYS")
    operator.add_argument("action", choices=("add", "passwd", "list", "unlock", "deactivate",
                                             "expiry"))
    operator.add_argument("number", nargs="?", help="operator number (expiry: days or 'off')")
    operator.add_argument("--name")
    operator.add_argument("--new-password-file")
    operator.add_argument("--old-password-file")
    status_p = sub.add_parser("refund-status", help="what the terminal knows about a refund")
    which_refund = status_p.add_mutually_exclusive_group(required=True)
    which_refund.add_argument("--voucher")
    which_refund.add_argument("--rrn")
    status_p.add_argument("--resolve", action="store_true",
                          help="resolve an uncertain refund with the host first")
    status_p.add_argument("--print-proof", action="store_true",
                          help="print the 退款凭证 refund proof for the cardholder's bank")
    reprint = sub.add_parser("reprint", help="reprint a receipt (marked 重打印 DUPLICATE)")
    which_receipt = reprint.add_mutually_exclusive_group()
    which_receipt.add_argument("--voucher")
    which_receipt.add_argument("--last", action="store_true", help="the last approved (default)")
    reprint.add_argument("--copy", choices=("merchant", "cardholder"), default="cardholder")
    reprint.add_argument("--proof", action="store_true", help="the refund proof instead")
    reprint.add_argument("--width", type=int, choices=(32, 42, 48), default=42)
    report = sub.add_parser("report", help="reports for a day, a batch or a date range")
    report.add_argument("--day", help="YYYY-MM-DD (default today)")
    report.add_argument("--batch")
    report.add_argument("--from", dest="from_")
    report.add_argument("--to")
    report.add_argument("--flagged", action="store_true", help="flagged operator errors")
    audit = sub.add_parser("audit", help="the audit log")
    audit.add_argument("--from", dest="from_")
    audit.add_argument("--to")
    audit.add_argument("--action", choices=[a.value for a in AuditAction])
    flag = sub.add_parser("flag", help="flag a mistaken transaction, or link its follow-up")
    flag.add_argument("--voucher", required=True)
    flag.add_argument("--explain")
    flag.add_argument("--flag-id", type=int)
    flag.add_argument("--follow-up-voucher")
    ui = sub.add_parser("ui", help="the cashier app (the default command)")
    ui.add_argument("--training", action="store_true",
                    help="培训: against the bundled emulator, with its own journal")
    ui.add_argument("--training-dir", type=Path,
                    help=f"training data (default ${TRAINING_ENV} or ./{DEFAULT_TRAINING})")
    ui.add_argument("--in-process", action="store_true",
                    help="training: attach the virtual card in-process, not through pcscd")
    ui.add_argument("--ascii", action="store_true",
                    help="English and ASCII borders for the raw Linux console (default there)")
    demo = sub.add_parser("demo", help="training app in a terminal, else the scripted "
                                       "walkthrough")
    demo.add_argument("--script", action="store_true", help="the scripted walkthrough")
    demo.add_argument("--training-dir", type=Path)
    demo.add_argument("--in-process", action="store_true")
    demo.add_argument("--trace", dest="demo_trace", metavar="FILE",
                      help="with --script: record the ISO 8583 conversation to FILE (afresh)")
    web = sub.add_parser("web", help="serve the training app to a browser on loopback")
    web.add_argument("--port", type=int, default=8000)
    web.add_argument("--bind", default="127.0.0.1", help="address to listen on")
    web.add_argument("--training-dir", type=Path)
    web.add_argument("--in-process", action="store_true")
    config = sub.add_parser("config", help="show or set settings and the approval policy")
    config.add_argument("action", choices=("show", "set"))
    config.add_argument("key", nargs="?")
    config.add_argument("value", nargs="?")
    return parser


COMMANDS: dict[str, Callable[[Ctx, Session], int]] = {
    "signon": cmd_signon, "echo": cmd_echo, "sale": cmd_sale, "refund": cmd_refund,
    "void": cmd_void, "settle": cmd_settle, "status": cmd_status, "recover": cmd_recover,
    "journal": cmd_journal, "operator": cmd_operator, "refund-status": cmd_refund_status,
    "reprint": cmd_reprint, "report": cmd_report, "audit": cmd_audit, "flag": cmd_flag,
    "config": cmd_config,
}


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # usage errors are exit 2 like rule refusals
        self.print_usage(sys.stderr)
        self.exit(EXIT_REFUSED, f"pos-terminal: {message}\n")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    parser.__class__ = _Parser
    args = parser.parse_args(argv)
    lang = args.lang or ("zh" if os.environ.get("LANG", "").startswith("zh") else "en")
    data_dir = args.data_dir or Path(os.environ.get(DATA_ENV) or DEFAULT_DATA)
    ctx = Ctx(args, data_dir, lang, args.json)
    if args.command is None:  # the cashier app is the default
        args = parser.parse_args([*(sys.argv[1:] if argv is None else argv), "ui"])
        ctx = Ctx(args, data_dir, lang, args.json)
    if args.command in ("ui", "demo", "web"):
        return _run_app(ctx)
    code = _run(ctx)
    if ctx.as_json:
        ctx.result.setdefault("exit", code)
        print(json.dumps(ctx.result, ensure_ascii=False, sort_keys=True))
    return code


def _training_dir(ctx: Ctx) -> Path:
    given: Path | None = getattr(ctx.args, "training_dir", None)
    return given or Path(os.environ.get(TRAINING_ENV) or DEFAULT_TRAINING)


def _run_app(ctx: Ctx) -> int:
    """ui / demo / web: the cashier app (training or this data directory's terminal)."""
    args = ctx.args
    if args.command == "web":
        from terminal.ui.web import serve
        command = [sys.executable, "-m", "terminal.cli", "--lang", ctx.lang, "ui", "--training",
                   "--training-dir", str(_training_dir(ctx))]
        if args.in_process:
            command.append("--in-process")
        return serve(command, host=args.bind, port=args.port)
    if args.command == "demo" and (args.script or not sys.stdout.isatty()):
        from terminal import demo
        if not args.script:
            print("pos-terminal: standard output is not a terminal, so this runs the scripted "
                  "walkthrough instead of the cashier app (pos-terminal demo --script does "
                  "the same; pos-terminal ui --training starts the app).", flush=True)
        return demo.main((["--in-process"] if args.in_process else [])
                         + (["--trace", trace] if (trace := args.demo_trace or args.trace)
                            else []))
    try:
        from terminal.ui.app import run_app, run_app_loading
    except ImportError as exc:  # pragma: no cover - textual is a dependency
        return _fail(ctx, EXIT_REFUSED, "error", f"the cashier app cannot start: {exc}")
    training = args.command == "demo" or args.training
    # the raw Linux console cannot draw CJK or box characters
    ascii_only = bool(getattr(args, "ascii", False)) or os.environ.get("TERM") == "linux"
    try:
        if training:
            from terminal.demo_world import training_session
            print(ctx.say("正在启动培训终端（收单模拟器、虚拟读卡器、虚拟密码键盘）...",
                          "starting the training till (acquirer emulator, virtual card reader, "
                          "virtual PIN pad)..."), file=sys.stderr, flush=True)
            session, world = training_session(_training_dir(ctx), lang=ctx.lang,
                                              in_process=args.in_process)
            try:
                from terminal.demo_world import TRAINING_OPERATORS
                hint = "  ".join(f"{n}/{pw}" for n, pw, _ in TRAINING_OPERATORS)
                return run_app(session, lang=ctx.lang, training=True, world=world,
                               login_hint=hint, ascii_only=ascii_only)
            finally:
                session.till.close()
                world.stop()
        if not (ctx.data_dir / "journal.db").exists():
            open_till(ctx)  # says how to set the terminal up, before any screen
        return run_app_loading(lambda: Session(open_till(ctx)), lang=ctx.lang,
                               ascii_only=ascii_only)
    except TerminalError as exc:
        return _fail(ctx, EXIT_REFUSED, "error", exc.message, exc.cashier_zh, exc.cashier_en)


def _fail(ctx: Ctx, code: int, result: str, message: str, zh: str = "", en: str = "") -> int:
    ctx.result.update({"result": result, "error": message})
    if zh or en:
        ctx.result["cashier"] = {"zh": zh, "en": en}
    if not ctx.as_json:
        cashier = ctx.say(zh, en)
        said = f" ({cashier})" if cashier and cashier.lower() not in message.lower() else ""
        print(f"pos-terminal: {message}{said}", file=sys.stderr)
    return code


def _run(ctx: Ctx) -> int:
    till: Till | None = None
    try:
        if ctx.args.command == "init":
            return cmd_init(ctx)
        session = open_session(ctx)
        till = session.till
        return COMMANDS[ctx.args.command](ctx, session)
    except (RuleError, ConfigError) as exc:
        return _fail(ctx, EXIT_REFUSED, "refused", exc.message, exc.cashier_zh, exc.cashier_en)
    except (PendingError, UncertainError) as exc:
        return _fail(ctx, EXIT_UNCERTAIN, "uncertain", exc.message, exc.cashier_zh,
                     exc.cashier_en)
    except HostLinkError as exc:
        return _fail(ctx, EXIT_UNCERTAIN, "unreachable",
                     f"{exc.message} (nothing was sent; owed reversals/advices are resent "
                     "at the next command or 'recover')", exc.cashier_zh, exc.cashier_en)
    except TerminalError as exc:  # devices, sign-on, journal: nothing left in doubt
        return _fail(ctx, EXIT_REFUSED, "error", exc.message, exc.cashier_zh, exc.cashier_en)
    except Iso8583Error as exc:
        return _fail(ctx, EXIT_REFUSED, "error", f"protocol error: {exc}")
    except Refused as exc:
        return _fail(ctx, EXIT_REFUSED, "refused", exc.message)
    except DriverError as exc:  # a device outside the core's adapters (opening a port)
        return _fail(ctx, EXIT_REFUSED, "error", exc.message, exc.cashier_zh, exc.cashier_en)
    except (OSError, ValueError) as exc:
        # never a traceback, and never exit 1 ("declined") for a failure of our own: if
        # anything was sent, the journal holds its follow-up for 'recover'
        return _fail(ctx, EXIT_UNCERTAIN, "error", f"unexpected {type(exc).__name__}: {exc}; "
                     "run 'pos-terminal recover' before the next transaction")
    finally:
        if till is not None:
            till.close()


if __name__ == "__main__":
    sys.exit(main())
