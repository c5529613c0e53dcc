"""No full PAN, track data, key or PIN leaves the terminal's care (issue 8 acceptance).

Two full flows, one through ``pos-terminal`` against a real ``pos-emulator serve``
and one through :class:`Session` over the in-memory rig (with lost answers, a
reversal and an advice resend), with every logger at DEBUG into a file. Then
every place a secret could end up is searched: the journal database and its
WAL/SHM files, the audit table, the log files, every printed receipt (text and
ESC/POS) and everything the CLI printed.

What is searched for, per test card: the full PAN, the track-2 data (``D`` and
``=`` separators), the PIN next to the PAN (either order), the clear ISO 9564
format-0 PIN block; and the TMK and the working keys (PIK, MAK, TDK) as upper
and lower hex and as raw bytes.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from emulator.catalogue import CARDS
from emulator.host.terminals import DEMO_TMK
from iso8583.crypto import pinblock
from iso8583.crypto.signon import WorkingKeys
from iso8583.trace import parse_trace
from terminal.core.approvals import ApprovalPolicy
from terminal.core.journal import Journal
from terminal.core.ports import Purpose
from terminal.core.receipts import Copy, Receipt, render_escpos, render_text
from terminal.core.records import RefundReason, TxnKind, TxnRecord, TxnStatus
from terminal.core.session import Session, save_policy
from terminal.hostlink import TRACE_ENV
from tests.terminal.core.harness import TMK as RIG_TMK
from tests.terminal.core.harness import make_rig
from tests.terminal.test_cli import MID, PASSWORDS, TID, TMK, Term, start_host


def needles(keys: list[bytes]) -> dict[str, bytes]:
    """Every secret, named, as the bytes to look for."""
    out: dict[str, bytes] = {}
    for card in CARDS:
        out[f"PAN {card.name}"] = card.pan.encode()
        track = card.track2
        out[f"track2 {card.name}"] = track.encode()
        out[f"track2= {card.name}"] = track.replace("D", "=").encode()
        if card.pin:
            out[f"PAN+PIN {card.name}"] = (card.pan + card.pin).encode()
            out[f"PIN+PAN {card.name}"] = (card.pin + card.pan).encode()
            clear = pinblock.clear_format0(card.pin, card.pan)
            out[f"clear PIN block {card.name}"] = clear.hex().upper().encode()
            out[f"clear PIN block lc {card.name}"] = clear.hex().encode()
            out[f"clear PIN block raw {card.name}"] = clear
    for i, key in enumerate(keys):
        out[f"key {i} hex"] = key.hex().upper().encode()
        out[f"key {i} hex lc"] = key.hex().encode()
        out[f"key {i} raw"] = key
    return out


def key_list(tmk: bytes, working: WorkingKeys | None) -> list[bytes]:
    keys = [tmk]
    if working is not None:
        keys += [working.pik, working.mak] + ([working.tdk] if working.tdk else [])
    return keys


def leaks(where: str, data: bytes, secrets: dict[str, bytes]) -> list[str]:
    return [f"{name} in {where}" for name, needle in secrets.items() if needle in data]


def journal_files(data_dir: Path) -> list[Path]:
    return sorted(p for p in data_dir.iterdir() if p.name.startswith("journal.db"))


def audit_dump(journal: Journal) -> bytes:
    rows = journal.conn.execute("SELECT * FROM audit ORDER BY id").fetchall()
    flags = journal.conn.execute("SELECT * FROM flag ORDER BY id").fetchall()
    return "\n".join(repr(tuple(r)) for r in [*rows, *flags]).encode()


@contextlib.contextmanager
def debug_log(path: Path) -> Iterator[None]:
    root = logging.getLogger()
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setLevel(logging.DEBUG)
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
        handler.close()


def receipt_bytes(receipts: list[Receipt]) -> bytes:
    out = b""
    for receipt in receipts:
        for width in (32, 42, 48):
            out += render_text(receipt, width).encode() + render_escpos(receipt, width)
    return out


# --- through pos-terminal ---------------------------------------------------------------

def test_no_secret_after_a_full_cli_flow(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    iso_trace = tmp_path / "iso-trace.jsonl"  # every host link of the flow records here
    monkeypatch.setenv(TRACE_ENV, str(iso_trace))
    host = start_host(tmp_path / "host")
    log = tmp_path / "terminal.log"
    pw_dir = tmp_path / "pw"
    pw_dir.mkdir()
    for number, password in PASSWORDS.items():
        (pw_dir / f"{number}.pw").write_text(password + "\n")
    data = tmp_path / "terminal"
    term = Term(data, host, capsys, pw_dir)
    try:
        with debug_log(log):
            assert term.run("init", "--tid", TID, "--mid", MID, "--tmk", TMK,
                            "--admin-password-file", term.pw("99"),
                            "--supervisor-password-file", term.pw("00"),
                            operator=None).code == 0
            assert term.run("operator", "add", "01", "--new-password-file", term.pw("01"),
                            operator="99").code == 0
            vouchers = {}
            for card, amount in (("cup-debit", "800.00"), ("cup-credit", "300.00"),
                                 ("visa-credit", "120.00"), ("mastercard", "90.00"),
                                 ("cup-nopin", "40.00")):
                done = term.sale(amount, card, as_json=True)
                assert done.code == 0, done
                vouchers[card] = done.json["voucher"]
            assert term.sale("12.51").code == 1  # declined
            assert term.refund("600.00", "--voucher", vouchers["cup-debit"],
                               supervisor="00").code == 0
            assert term.refund("50.00", "--voucher", vouchers["cup-credit"], card="cup-credit",
                               reason="other", ).code == 2  # no note: refused
            assert term.run("refund", "50.00", "--voucher", vouchers["cup-credit"],
                            "--reason", "other", "--note", "card 6225880000000019 said",
                            "--yes", reader="cup-credit", pinpad=True).code == 0
            assert term.refund("20.00", "--voucher", vouchers["visa-credit"],
                               card="visa-credit").code == 0
            assert term.run("void", "--voucher", vouchers["mastercard"], reader="mastercard",
                            pinpad=True).code == 0
            assert term.run("void", "--voucher", vouchers["cup-nopin"]).code == 0  # keyed
            refund_voucher = term.run("journal", "--kind", "refund", as_json=True) \
                .json["records"][0]["voucher"]
            for argv in (["reprint", "--last"], ["reprint", "--last", "--copy", "merchant"],
                         ["reprint", "--voucher", refund_voucher, "--proof"],
                         ["refund-status", "--voucher", refund_voucher, "--print-proof"],
                         ["report"], ["journal"], ["journal", "export", "--format", "csv"],
                         ["journal", "export", "--format", "json"], ["audit"], ["status"]):
                assert term.run(*argv).code == 0, argv
                assert term.run(*argv, as_json=True).code == 0, argv
                assert term.run(*argv, lang="zh").code == 0, argv
            assert term.run("flag", "--voucher", refund_voucher, "--explain",
                            "wrong card 6225880000000019?").code == 0
            assert term.run("-v", "settle").code == 0
            assert term.run("report", "--batch", "000001", as_json=True).code == 0
            assert term.run("config", "show", operator="99").code == 0
    finally:
        host.stop()
    journal = Journal.open(data)
    try:
        working = journal.load_keys()
        audit = audit_dump(journal)
    finally:
        journal.close()
    secrets = needles(key_list(bytes.fromhex(TMK), working))
    found: list[str] = []
    for path in journal_files(data):
        found += leaks(path.name, path.read_bytes(), secrets)
    found += leaks("audit table", audit, secrets)
    found += leaks("terminal log", log.read_bytes(), secrets)
    found += leaks("pos-emulator serve log", (tmp_path / "host" / "serve.log").read_bytes(),
                   secrets)
    found += leaks("CLI output", "\n".join(term.outputs).encode(), secrets)
    found += leaks("ISO 8583 trace", iso_trace.read_bytes(), secrets)
    assert found == [], found
    assert b"622588******0019" in "\n".join(term.outputs).encode()  # the search does look
    assert b'"2":"622588******0019"' in iso_trace.read_bytes()  # the trace recorded sales
    assert_trace_masked(iso_trace)


def assert_trace_masked(path: Path) -> None:
    """Every PIN block, key field and MAC in an ISO trace is starred, every PAN substituted."""
    entries = parse_trace(path.read_text(encoding="utf-8"), name=path.name)
    assert entries
    pans = {card.pan for card in CARDS}
    for entry in entries:
        message = entry.message()
        assert message is not None, entry.error
        for number, value in message.fields.items():
            if number in (52, 62, 64):
                assert value == b"*" * len(value), (entry.line, number)
        assert message.get(2) not in pans, entry.line


def test_no_secret_in_the_checked_in_traces() -> None:
    traces = sorted((Path(__file__).resolve().parents[1] / "traces").glob("*.jsonl"))
    assert traces, "tests/traces holds the demo's recorded ISO 8583 trace"
    secrets = needles([DEMO_TMK])
    found: list[str] = []
    for path in traces:
        found += leaks(path.name, path.read_bytes(), secrets)
        assert_trace_masked(path)
    assert found == [], found


# --- through Session over the rig -------------------------------------------------------------

def test_no_secret_after_a_full_rig_flow(tmp_path: Path) -> None:
    log = tmp_path / "rig.log"
    receipts: list[Receipt] = []
    with debug_log(log):
        rig = make_rig(tmp_path)
        save_policy(rig.till, ApprovalPolicy(void_needs_supervisor=True))
        session = Session(rig.till)
        session.operators.bootstrap(PASSWORDS["99"], PASSWORDS["00"])
        admin = session.operators.login("99", PASSWORDS["99"])
        session.operators.add("01", PASSWORDS["01"], by=admin)
        session.login("01", PASSWORDS["01"])
        sales: dict[str, TxnRecord] = {}
        for name, amount in (("cup-debit", 800_00), ("cup-credit", 300_00),
                             ("visa-credit", 120_00), ("mastercard", 90_00)):
            out = session.sale(amount, rig.card(name, Purpose.SALE, amount))
            assert out.approved
            sales[name] = out.record
        rig.link.faults.append("drop_after")  # a reversed sale
        assert session.sale(33_00, rig.card("cup-debit", Purpose.SALE, 33_00)).status \
            is TxnStatus.REVERSED
        rig.link.faults.append("bad_mac")  # a reversal with A0 and a new sign-on
        session.sale(34_00, rig.card("cup-debit", Purpose.SALE, 34_00))
        refunds = []
        for name, amount in (("cup-debit", 600_00), ("cup-credit", 50_00),
                             ("visa-credit", 20_00)):
            quote = session.quote_refund(sales[name], rig.card(name, Purpose.REFUND, amount),
                                         amount, RefundReason.DAMAGED,
                                         "customer said 6225880000000019")
            reasons = session.required_approvals(TxnKind.REFUND, amount, quote.card)
            approval = session.approve(reasons, "00", PASSWORDS["00"]) if reasons else None
            if name == "cup-credit":
                rig.link.faults.append("drop_after")  # the advice is resent
            out = session.refund(quote, approval=approval)
            assert out.approved
            refunds.append(out.record)
        void_quote = session.quote_void(sales["mastercard"],
                                        rig.card("mastercard", Purpose.VOID, 90_00))
        approval = session.approve(session.required_approvals(
            TxnKind.VOID, 90_00, void_quote.card), "00", PASSWORDS["00"])
        void = session.void(void_quote, approval=approval).record
        session.audit.flag(refunds[0].id, "01", "PAN 6225880000000019 keyed by mistake")
        for record in [*sales.values(), *refunds, void]:
            for copy in Copy:
                for lang in ("zh", "en", "both"):
                    receipts.append(session.receipt(record, copy, lang=lang))
                    receipts.append(session.receipt(record, copy, lang=lang,
                                                    reprint=True))
        for record in refunds:
            receipts.append(session.refund_proof(record))
            receipts.append(session.refund_proof(record, reprint=True))
        report = session.report()
        texts = [report.render_text(), report.to_json(), session.export("csv"),
                 session.export("json")]
        texts += [session.refund_status(r).to_json() for r in refunds]
        session.settle()
        texts.append(session.report(batch="000001").to_json())
        secrets = needles(key_list(RIG_TMK, rig.till.journal.load_keys()))
        found: list[str] = []
        rig.till.journal.conn.commit()
        for path in journal_files(rig.data_dir):  # with the WAL still open
            found += leaks(path.name, path.read_bytes(), secrets)
        found += leaks("audit table", audit_dump(rig.till.journal), secrets)
        for message in rig.link.sent:  # the encrypted PIN blocks must not be kept either
            block = message.get(52)
            if isinstance(block, bytes):
                secrets[f"encrypted PIN block {block.hex()}"] = block.hex().upper().encode()
                secrets[f"encrypted PIN block raw {block.hex()}"] = block
        for path in journal_files(rig.data_dir):
            found += leaks(path.name + " (PIN blocks)", path.read_bytes(),
                           {k: v for k, v in secrets.items() if "encrypted" in k})
    found += leaks("receipts", receipt_bytes(receipts), secrets)
    found += leaks("reports/exports/status", "\n".join(texts).encode(), secrets)
    found += leaks("rig log", log.read_bytes(), secrets)
    assert found == [], found
    assert len(receipts) > 40
    assert b"622588******0019" in receipt_bytes(receipts[:1])  # the search does look
