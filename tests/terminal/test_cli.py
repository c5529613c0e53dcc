"""``pos-terminal`` against a real ``pos-emulator serve`` on loopback (issues 7 and 8).

The host is a subprocess with its own SQLite ledger; ``pos-terminal`` runs
in-process (``terminal.cli.main``) for speed, with the virtual card reader and
the virtual PIN pad. Every refusal checks the message, the exit code, and that
neither the terminal's journal (``journal --json``) nor the host's ledger
(``pos-emulator ledger --json``) changed.

Refund age limit: ``config set refund_age_days 0`` makes every journaled sale too
old (the rule compares the sale's time with now, and any sale is older than
0 days a moment after it was made), so no clock needs to be moved.
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from emulator.host.cli import ledger_report
from emulator.host.ledger import SqliteLedgerStore
from terminal import cli

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
TMK = "CA5D92598DCA48CE8A4C76361A9269E9"
TID, MID = "10000001", "123456789012345"
PASSWORDS = {"99": "admin-9999", "00": "super-0000", "01": "cash-0101", "02": "cash-0202"}


def emulator_bin() -> str:
    found = BIN / "pos-emulator"
    return str(found) if found.exists() else shutil.which("pos-emulator") or "pos-emulator"


@dataclass
class Host:
    """A running ``pos-emulator serve`` and its ledger."""

    proc: subprocess.Popen[bytes] | None
    port: int
    ledger: Path

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def snapshot(self) -> dict[str, Any]:
        """What ``pos-emulator ledger --json`` prints (read in-process: faster)."""
        store = SqliteLedgerStore(self.ledger)
        try:
            report = ledger_report(store.load())
        finally:
            store.close()
        data: dict[str, Any] = json.loads(json.dumps(report))
        return data

    def faults(self, *args: str) -> None:
        subprocess.run([emulator_bin(), "faults", "--ledger", str(self.ledger), *args],
                       capture_output=True, text=True, timeout=30, check=True)


def start_host(workdir: Path) -> Host:
    workdir.mkdir(parents=True, exist_ok=True)
    ledger = workdir / "ledger.db"
    log = workdir / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([emulator_bin(), "serve", "--port", "0", "--ledger", str(ledger)],
                                stdout=out, stderr=subprocess.STDOUT, cwd=workdir)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        match = re.search(r"listening on 127\.0\.0\.1:(\d+)", log.read_text(errors="replace"))
        if match:
            return Host(proc, int(match.group(1)), ledger)
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    proc.kill()
    raise RuntimeError(f"pos-emulator serve did not start (exit {proc.poll()}): "
                       f"{log.read_text(errors='replace')}")


@dataclass
class Result:
    code: int
    out: str
    err: str

    @property
    def json(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.out)
        return data


class Term:
    """``pos-terminal`` in-process on one data directory against one host."""

    def __init__(self, data_dir: Path, host: Host, capsys: pytest.CaptureFixture[str],
                 pw_dir: Path) -> None:
        self.data_dir = data_dir
        self.host = host
        self.capsys = capsys
        self.pw_dir = pw_dir
        self.outputs: list[str] = []

    def pw(self, number: str) -> str:
        return str(self.pw_dir / f"{number}.pw")

    def run(self, *argv: str, operator: str | None = "01", supervisor: str | None = None,
            reader: str | None = None, pinpad: bool = False, lang: str = "en",
            as_json: bool = False, host: str | None = None,
            password_file: str | None = None, supervisor_file: str | None = None) -> Result:
        args = ["--data-dir", str(self.data_dir), "--lang", lang,
                "--host", host or self.host.address, "--timeout", "3"]
        if operator is not None:
            args += ["--operator", operator, "--password-file",
                     password_file or self.pw(operator)]
        if supervisor is not None:
            args += ["--supervisor", supervisor, "--supervisor-password-file",
                     supervisor_file or self.pw(supervisor)]
        if reader is not None:
            args += ["--reader", f"virtual:{reader}"]
        if pinpad:
            args += ["--pinpad", "virtual"]
        if as_json:
            args.append("--json")
        self.capsys.readouterr()
        try:
            code = cli.main([*args, *argv])
        except SystemExit as exc:  # argparse usage errors
            code = int(exc.code or 0)
        captured = self.capsys.readouterr()
        self.outputs += [captured.out, captured.err]
        return Result(code, captured.out, captured.err)

    # shorthands ---------------------------------------------------------------------
    def sale(self, amount: str, card: str = "cup-debit", **kw: Any) -> Result:
        return self.run("sale", amount, reader=card, pinpad=True, **kw)

    def refund(self, amount: str, *which: str, card: str = "cup-debit",
               reason: str = "damaged", **kw: Any) -> Result:
        return self.run("refund", amount, *which, "--reason", reason, "--yes", reader=card,
                        pinpad=True, **kw)

    def journal(self) -> list[dict[str, Any]]:
        records: list[dict[str, Any]] = self.run("journal", as_json=True).json["records"]
        return records

    def state(self) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        """The journal and the host's ledger, to compare before and after."""
        return self.journal(), self.host.snapshot()

    def voucher_of_sale(self, amount: str, card: str = "cup-debit") -> str:
        done = self.sale(amount, card, as_json=True)
        assert done.code == 0, done
        voucher: str = done.json["voucher"]
        return voucher


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A data directory with a terminal and operators 99, 00, 01 and 02 (made once)."""
    base = tmp_path_factory.mktemp("cli-template")
    pw_dir = base / "pw"
    pw_dir.mkdir()
    for number, password in PASSWORDS.items():
        (pw_dir / f"{number}.pw").write_text(password + "\n")
    data = base / "data"
    pw = {n: str(pw_dir / f"{n}.pw") for n in PASSWORDS}
    common = ["--data-dir", str(data), "--lang", "en"]
    assert cli.main([*common, "init", "--tid", TID, "--mid", MID, "--tmk", TMK,
                     "--admin-password-file", pw["99"],
                     "--supervisor-password-file", pw["00"]]) == 0
    for number in ("01", "02"):
        assert cli.main([*common, "--operator", "99", "--password-file", pw["99"],
                         "operator", "add", number, "--new-password-file", pw[number]]) == 0
    return data, pw_dir


@pytest.fixture
def host(tmp_path: Path) -> Iterator[Host]:
    running = start_host(tmp_path / "host")
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def term(tmp_path: Path, host: Host, template: tuple[Path, Path],
         capsys: pytest.CaptureFixture[str]) -> Term:
    data, pw_dir = template
    mine = tmp_path / "terminal"
    shutil.copytree(data, mine)
    return Term(mine, host, capsys, pw_dir)


def refused(term: Term, done: Result, before: tuple[Any, Any], *needles: str,
            code: int = 2) -> None:
    """Exit ``code``, the message says ``needles``, and nothing moved anywhere."""
    assert done.code == code, done
    text = done.out + done.err
    for needle in needles:
        assert needle.lower() in text.lower(), (needle, text)
    assert term.state() == before


# --- issue 7: every bad input a script can give -------------------------------------------

@pytest.mark.parametrize(("amount", "message"), [
    ("0", "more than 0.00"), ("0.00", "more than 0.00"), ("-1.00", "negative"),
    ("abc", "not an amount"), ("12,50", "not an amount"), ("1.234", "not an amount"),
    ("12345678901.00", "more than a message can carry"),
    ("99999999999", "more than a message can carry"),
    ("", "no amount"), ("1e3", "not an amount"),
])
def test_bad_amounts_are_refused_for_sales_and_refunds(term: Term, amount: str,
                                                       message: str) -> None:
    voucher = term.voucher_of_sale("10.00")
    before = term.state()
    refused(term, term.run("sale", "--", amount, reader="cup-debit", pinpad=True), before,
            message)
    refused(term, term.run("refund", "--voucher", voucher, "--reason", "damaged", "--yes",
                           "--", amount, reader="cup-debit", pinpad=True), before, message)


def test_bad_amount_in_json_names_the_error(term: Term) -> None:
    before = term.state()
    done = term.sale("abc", as_json=True)
    refused(term, done, before)
    assert done.json["result"] == "refused"
    assert done.json["exit"] == 2
    assert done.json["cashier"]["en"] == "Amount format: 12.34"


def test_unknown_voucher(term: Term) -> None:
    term.voucher_of_sale("10.00")
    before = term.state()
    refused(term, term.refund("1.00", "--voucher", "999"), before, "no sale with voucher 999")
    refused(term, term.refund("1.00", "--voucher", "12x"), before, "1-6 digits")
    refused(term, term.run("void", "--voucher", "999", reader="cup-debit"), before,
            "no sale with voucher 999")


def test_bad_rrn_or_date_is_refused(term: Term) -> None:
    term.voucher_of_sale("10.00")
    before = term.state()
    refused(term, term.refund("1.00", "--rrn", "12345", "--date", "0101"), before,
            "12 characters")
    refused(term, term.refund("1.00", "--rrn", "000000000001", "--date", "1399"), before,
            "MMDD")
    refused(term, term.refund("1.00", "--rrn", "000000000001"), before, "--date")


def test_an_unknown_rrn_goes_to_the_host_which_declines_it(term: Term) -> None:
    """Not in this journal: it may be another terminal's sale, so the host decides (25)."""
    term.voucher_of_sale("10.00")
    before_host = term.host.snapshot()
    mmdd = time.strftime("%m%d")
    done = term.refund("1.00", "--rrn", "000000009999", "--date", mmdd, as_json=True)
    assert done.code == 1
    assert (done.json["result"], done.json["code"]) == ("declined", "25")
    after = term.host.snapshot()
    assert after["originals"] == before_host["originals"]  # no money moved
    assert [t["status"] for t in after["transactions"] if t["kind"] == "refund"] == ["declined"]


def test_wrong_card(term: Term) -> None:
    voucher = term.voucher_of_sale("10.00")
    before = term.state()
    refused(term, term.refund("1.00", "--voucher", voucher, card="cup-credit"), before,
            "not the card of the original sale")
    refused(term, term.run("void", "--voucher", voucher, reader="cup-credit"), before,
            "not the card of the original sale")


def test_refund_over_the_rest(term: Term) -> None:
    voucher = term.voucher_of_sale("10.00")
    assert term.refund("6.00", "--voucher", voucher).code == 0
    before = term.state()
    refused(term, term.refund("4.01", "--voucher", voucher), before,
            "more than the refundable 4.00")
    assert term.refund("4.00", "--voucher", voucher).code == 0
    before = term.state()
    refused(term, term.refund("0.01", "--voucher", voucher), before,
            "more than the refundable 0.00")


def test_refund_after_the_age_limit(term: Term) -> None:
    voucher = term.voucher_of_sale("10.00")
    # the age limit counts calendar days: make the journaled sale two days old
    conn = sqlite3.connect(term.data_dir / "journal.db")
    with conn:
        conn.execute("UPDATE txn SET created_at = ? WHERE stan = ?",
                     ((datetime.now() - timedelta(days=2)).isoformat(timespec="seconds"),
                      f"{int(voucher):06d}"))
    conn.close()
    assert term.run("config", "set", "refund_age_days", "1", operator="99").code == 0
    before = term.state()
    refused(term, term.refund("1.00", "--voucher", voucher), before, "older than 1 days")


def test_void_after_refund_and_refund_after_void(term: Term) -> None:
    refunded = term.voucher_of_sale("10.00")
    voided = term.voucher_of_sale("20.00")
    assert term.refund("1.00", "--voucher", refunded).code == 0
    assert term.run("void", "--voucher", voided, reader="cup-debit").code == 0
    before = term.state()
    refused(term, term.run("void", "--voucher", refunded, reader="cup-debit"), before,
            "has refunds; it cannot be voided")
    refused(term, term.refund("1.00", "--voucher", voided), before, "was voided")
    refused(term, term.run("void", "--voucher", voided, reader="cup-debit"), before,
            "already voided")


def test_void_of_a_settled_batch_is_refused(term: Term) -> None:
    voucher = term.voucher_of_sale("10.00")
    assert term.run("settle").code == 0
    before = term.state()
    refused(term, term.run("void", "--voucher", voucher, reader="cup-debit"), before,
            "refund it instead")


def test_host_down_wrong_port_is_exit_3_and_nothing_is_journaled(term: Term) -> None:
    voucher = term.voucher_of_sale("10.00")
    before = term.state()
    for done in (term.sale("5.00", host="127.0.0.1:1"),
                 term.refund("1.00", "--voucher", voucher, host="127.0.0.1:1"),
                 term.run("void", "--voucher", voucher, reader="cup-debit",
                          host="127.0.0.1:1")):
        refused(term, done, before, "cannot connect", "nothing was sent", code=3)


def test_host_stopped_is_exit_3_and_nothing_is_journaled(term: Term) -> None:
    voucher = term.voucher_of_sale("10.00")
    journal_before, ledger_before = term.state()
    term.host.stop()
    done = term.refund("1.00", "--voucher", voucher, as_json=True)
    assert done.code == 3
    assert done.json["result"] == "unreachable"
    assert term.journal() == journal_before
    assert term.host.snapshot() == ledger_before


def test_card_removed_during_the_read(term: Term, monkeypatch: pytest.MonkeyPatch) -> None:
    from drivers.errors import CardRemovedError
    from terminal import demo_world
    from terminal.core.devices import EmvCardReader

    def pulled_out(name: str, *, contactless: bool = False,
                   f55_tags: tuple[int, ...] = (), timeout: float = 60.0) -> EmvCardReader:
        del name, contactless, timeout

        @contextlib.contextmanager
        def source(timeout: float) -> Iterator[Any]:
            if timeout >= 0:  # always: the card leaves before the kernel reads it
                raise CardRemovedError("card removed during the transaction")
            yield None

        return EmvCardReader(source, description="a card pulled out", f55_tags=f55_tags)

    voucher = term.voucher_of_sale("10.00")
    before = term.state()
    monkeypatch.setattr(demo_world, "virtual_card_reader", pulled_out)
    refused(term, term.sale("5.00"), before, "card removed")
    refused(term, term.refund("1.00", "--voucher", voucher), before, "card removed")


def test_a_stripe_only_card_in_the_chip_reader_is_a_clear_refusal(term: Term) -> None:
    before = term.state()
    done = term.sale("5.00", "cup-magstripe")
    refused(term, done, before, "chip")


def test_unknown_virtual_card_and_no_reader(term: Term) -> None:
    before = term.state()
    refused(term, term.sale("5.00", "no-such-card"), before, "no test card named")
    refused(term, term.run("sale", "5.00"), before, "reads a card")


def test_pin_card_without_a_pin_pad(term: Term) -> None:
    term.voucher_of_sale("10.00")
    before = term.state()
    done = term.run("sale", "5.00", reader="cup-debit", as_json=True)
    refused(term, done, before)
    assert done.json["cashier"]["en"] == "No PIN pad"
    assert "no PIN pad is configured" in done.json["error"]
    # a card without PIN goes through without a pad
    assert term.run("sale", "5.00", reader="cup-nopin").code == 0


def test_reason_other_needs_a_note_and_unknown_reasons(term: Term) -> None:
    voucher = term.voucher_of_sale("10.00")
    before = term.state()
    refused(term, term.refund("1.00", "--voucher", voucher, reason="other"), before,
            "needs a note")
    refused(term, term.refund("1.00", "--voucher", voucher, reason="bored"), before,
            "unknown reason")


def test_a_refund_without_yes_and_no_tty_sends_nothing(term: Term) -> None:
    voucher = term.voucher_of_sale("10.00")
    before = term.state()
    done = term.run("refund", "1.00", "--voucher", voucher, "--reason", "damaged",
                    reader="cup-debit", pinpad=True)
    refused(term, done, before, "--yes", "REFUND QUOTE")


def test_a_declined_magic_amount_is_exit_1(term: Term) -> None:
    done = term.sale("12.51", as_json=True)
    assert done.code == 1
    assert (done.json["result"], done.json["code"]) == ("declined", "51")
    assert done.json["reason"]["en"]


# --- issue 8: operators and approvals -------------------------------------------------------

def test_operator_add_list_passwd_unlock(term: Term) -> None:
    listed = term.run("operator", "list", operator="99", as_json=True)
    assert listed.code == 0
    assert [o["number"] for o in listed.json["operators"]] == ["00", "01", "02", "99"]
    # a cashier may not add operators
    done = term.run("operator", "add", "03", "--new-password-file", term.pw("02"))
    assert done.code == 2
    assert "may not manage" in done.err
    assert term.run("operator", "add", "03", "--name", "Zhao", "--new-password-file",
                    term.pw("02"), operator="00").code == 0
    # passwd: a cashier changes their own password with the old one
    new_pw = term.data_dir.parent / "new.pw"
    new_pw.write_text("new-pass-0303\n")
    assert term.run("operator", "passwd", "03", "--old-password-file", term.pw("02"),
                    "--new-password-file", str(new_pw), operator=None).code == 0
    assert term.run("status", operator=None, as_json=True).code == 0
    assert term.run("journal", operator="03", password_file=str(new_pw)).code == 0
    # five wrong passwords lock 03
    codes = [term.run("journal", operator="03", password_file=term.pw("02")).code
             for _ in range(5)]
    assert codes == [2] * 5
    locked = term.run("journal", operator="03", password_file=str(new_pw))
    assert locked.code == 2
    assert "locked" in locked.err
    shown = term.run("operator", "list", operator="00", as_json=True).json["operators"]
    assert next(o for o in shown if o["number"] == "03")["locked_until"] is not None
    assert term.run("operator", "unlock", "03", operator="00").code == 0
    assert term.run("journal", operator="03", password_file=str(new_pw)).code == 0
    audit = term.run("audit", operator="99", as_json=True).json["entries"]
    actions = [(e["action"], e["operator"]) for e in audit]
    assert ("operator_change", "00") in actions
    assert ("password_change", "03") in actions
    assert ("unlock", "00") in actions


def test_a_terminal_with_operators_needs_a_login(term: Term) -> None:
    before = term.state()
    refused(term, term.sale("5.00", operator=None), before, "log in first")


def test_missing_approval_exits_2_and_names_it(term: Term) -> None:
    voucher = term.voucher_of_sale("800.00")
    before = term.state()
    done = term.refund("600.00", "--voucher", voucher, as_json=True)
    refused(term, done, before)
    assert done.json["error"] == "approval needed: over_amount"
    assert done.json["cashier"]["en"] == \
        "Supervisor approval needed: Refund above the approval amount"
    text = term.refund("600.00", "--voucher", voucher)
    refused(term, text, before, "over_amount")
    zh = term.refund("600.00", "--voucher", voucher, lang="zh", as_json=True)
    assert "退货金额超过授权限额" in zh.json["cashier"]["zh"]


def test_with_the_supervisor_the_refund_goes_and_the_audit_names_the_approver(
        term: Term) -> None:
    voucher = term.voucher_of_sale("800.00")
    done = term.refund("600.00", "--voucher", voucher, supervisor="00")
    assert done.code == 0, done
    assert "approved by supervisor 00" in done.out
    assert "REFUND APPROVED" in done.out
    entries = term.run("audit", as_json=True).json["entries"]
    approval = next(e for e in entries if e["action"] == "approval")
    assert (approval["operator"], approval["approver"]) == ("01", "00")
    assert approval["detail"]["reasons"] == ["over_amount"]
    refund = next(e for e in entries if e["action"] == "refund")
    assert (refund["operator"], refund["approver"]) == ("01", "00")
    assert refund["detail"]["reason"] == "damaged"
    text = term.run("audit", "--action", "approval")
    assert "approver 00" in text.out


def test_wrong_supervisor_password(term: Term) -> None:
    voucher = term.voucher_of_sale("800.00")
    before = term.state()
    wrong = str(term.data_dir.parent / "wrong.pw")
    Path(wrong).write_text("not-the-password\n")
    done = term.refund("600.00", "--voucher", voucher, supervisor="00", supervisor_file=wrong,
                       as_json=True)
    refused(term, done, before)
    assert done.json["error"] == "wrong password for operator 00"
    assert done.json["cashier"]["en"] == "Wrong password, 4 tries left"
    ops = term.run("operator", "list", operator="99", as_json=True).json["operators"]
    assert next(o for o in ops if o["number"] == "00")["failed_tries"] == 1
    for _ in range(4):
        assert term.refund("600.00", "--voucher", voucher, supervisor="00",
                           supervisor_file=wrong).code == 2
    locked = term.refund("600.00", "--voucher", voucher, supervisor="00")
    refused(term, locked, before, "locked")
    assert term.run("operator", "unlock", "00", operator="99").code == 0
    assert term.refund("600.00", "--voucher", voucher, supervisor="00").code == 0


def test_a_cashier_cannot_approve(term: Term) -> None:
    voucher = term.voucher_of_sale("800.00")
    before = term.state()
    refused(term, term.refund("600.00", "--voucher", voucher, supervisor="02"), before,
            "cannot approve")


def test_voids_need_a_supervisor_when_configured(term: Term) -> None:
    voucher = term.voucher_of_sale("30.00")
    assert term.run("config", "set", "policy.void_needs_supervisor", "yes",
                    operator="99").code == 0
    before = term.state()
    refused(term, term.run("void", "--voucher", voucher, reader="cup-debit"), before,
            "approval needed: void")
    assert term.run("void", "--voucher", voucher, reader="cup-debit", supervisor="00").code == 0
    config = term.run("audit", "--action", "config_change", as_json=True).json["entries"]
    assert config[-1]["detail"] == {"setting": "policy.void_needs_supervisor", "value": "yes"}


def test_a_likely_duplicate_needs_approval(term: Term) -> None:
    voucher = term.voucher_of_sale("300.00")
    assert term.refund("100.00", "--voucher", voucher).code == 0
    before = term.state()
    refused(term, term.refund("100.00", "--voucher", voucher), before,
            "approval needed: likely_duplicate")
    assert term.refund("100.00", "--voucher", voucher, supervisor="00").code == 0


def test_daily_limit_across_commands(term: Term) -> None:
    voucher = term.voucher_of_sale("300.00")
    assert term.run("config", "set", "policy.operator_daily_refund_count", "1",
                    operator="99").code == 0
    assert term.refund("1.00", "--voucher", voucher).code == 0
    before = term.state()
    refused(term, term.refund("2.00", "--voucher", voucher), before,
            "operator_daily_limit")
    assert term.refund("2.00", "--voucher", voucher, operator="02").code == 0


# --- issue 8: paper, status, reports, audit ---------------------------------------------------

def test_reprint_is_marked_duplicate(term: Term) -> None:
    voucher = term.voucher_of_sale("10.00")
    last = term.run("reprint", "--last")
    assert last.code == 0
    assert "重打印 DUPLICATE" in last.out
    assert "622588******0019" in last.out
    merchant = term.run("reprint", "--voucher", voucher, "--copy", "merchant", "--width", "32")
    assert merchant.code == 0
    assert "MERCHANT COPY" in merchant.out
    assert "重打印" in merchant.out
    assert max(len(line) for line in merchant.out.splitlines()) <= 32 * 2
    entries = term.run("audit", "--action", "reprint", as_json=True).json["entries"]
    assert [e["detail"]["copy"] for e in entries] == ["cardholder", "merchant"]
    missing = term.run("reprint", "--voucher", "999")
    assert missing.code == 2


def test_refund_status_with_arrival_window_and_proof(term: Term) -> None:
    voucher = term.voucher_of_sale("100.00")
    refund = term.refund("40.00", "--voucher", voucher, as_json=True).json
    by_voucher = term.run("refund-status", "--voucher", refund["voucher"])
    assert by_voucher.code == 0
    assert "Status: Refund approved" in by_voucher.out
    assert "Expected arrival: 1-3 working days after settlement" in by_voucher.out
    assert f"Original RRN: {refund['original_rrn']}" in by_voucher.out
    assert "Settlement: not settled yet" in by_voucher.out
    by_rrn = term.run("refund-status", "--rrn", refund["rrn"], as_json=True)
    assert by_rrn.json["status"]["state"] == "approved"
    assert by_rrn.json["status"]["card_type"] == "debit"
    zh = term.run("refund-status", "--rrn", refund["rrn"], lang="zh")
    assert "预计到账: 结算后1-3个工作日到账" in zh.out
    proof = term.run("refund-status", "--voucher", refund["voucher"], "--print-proof")
    assert "退款凭证 REFUND PROOF" in proof.out
    assert refund["rrn"] in proof.out
    assert refund["original_rrn"] in proof.out
    assert "RMB -40.00" in proof.out
    assert term.run("settle").code == 0
    after = term.run("refund-status", "--voucher", refund["voucher"])
    assert "Settlement: settled, host agreed [000001]" in after.out
    credit = term.voucher_of_sale("50.00", "visa-credit")
    visa = term.refund("5.00", "--voucher", credit, card="visa-credit", as_json=True).json
    shown = term.run("refund-status", "--voucher", visa["voucher"])
    assert "up to 7-15 working days after settlement" in shown.out
    unknown = term.run("refund-status", "--voucher", "999")
    assert unknown.code == 2
    assert "no refund" in unknown.err


def test_refund_status_of_an_uncertain_refund_and_resolve(term: Term) -> None:
    voucher = term.voucher_of_sale("100.00")
    # the host books the refund advice but closes the connection without answering
    term.host.faults("add", "close-after@mti=0220")
    done = term.refund("25.00", "--voucher", voucher, as_json=True)
    assert done.code == 3
    assert done.json["result"] == "uncertain"
    assert "resend" in done.json["next_step"]["en"]
    status = term.run("refund-status", "--voucher", done.json["voucher"], as_json=True)
    assert status.json["status"]["state"] == "uncertain"
    assert "advice" in status.json["status"]["next_step"][1]
    term.host.faults("clear")
    resolved = term.run("refund-status", "--voucher", done.json["voucher"], "--resolve",
                        as_json=True)
    assert resolved.code == 0
    assert resolved.json["status"]["state"] == "approved"
    refunds = [t for t in term.host.snapshot()["transactions"] if t["kind"] == "refund"]
    assert [(t["status"], t["amount"]) for t in refunds] == [("approved", 25_00)]
    assert resolved.json["status"]["rrn"] == refunds[0]["rrn"]


def test_report_json_totals_equal_the_journal_and_the_host(term: Term) -> None:
    debit = term.voucher_of_sale("100.00")
    visa = term.voucher_of_sale("50.00", "visa-credit")
    voided = term.voucher_of_sale("20.00")
    assert term.sale("12.51").code == 1
    assert term.refund("30.00", "--voucher", debit).code == 0
    assert term.refund("10.00", "--voucher", visa, card="visa-credit").code == 0
    assert term.run("void", "--voucher", voided, reader="cup-debit").code == 0
    report = term.run("report", as_json=True).json["report"]
    records = term.journal()

    def total(kind: str) -> int:
        fen = [int(r["amount"].replace(".", "")) for r in records
               if r["kind"] == kind and r["status"] == "approved"]
        return sum(fen)

    assert report["totals"]["sale"] == {"count": 2, "amount": 150_00}
    assert report["totals"]["refund"] == {"count": 2, "amount": total("refund")}
    assert report["totals"]["void"] == {"count": 1, "amount": total("void")}
    assert report["totals"]["sale"]["amount"] == total("sale") - total("void")
    assert report["declined"] == 1
    assert report["net"] == 110_00
    assert report["refunds_by_card_type"] == {"credit": {"count": 1, "amount": 10_00},
                                              "debit": {"count": 1, "amount": 30_00}}
    (batch,) = term.host.snapshot()["batches"]
    settled = term.run("settle", as_json=True).json
    assert settled["balanced"] is True
    (host_batch,) = term.host.snapshot()["batches"]
    dom, foreign = host_batch["domestic"], host_batch["foreign"]
    assert report["domestic"]["sale"] == {"count": dom["debit_count"],
                                          "amount": dom["debit_amount"]}
    assert report["domestic"]["refund"] == {"count": dom["credit_count"],
                                            "amount": dom["credit_amount"]}
    assert report["foreign"]["sale"] == {"count": foreign["debit_count"],
                                         "amount": foreign["debit_amount"]}
    assert report["foreign"]["refund"] == {"count": foreign["credit_count"],
                                           "amount": foreign["credit_amount"]}
    assert host_batch["settled"] is True
    del batch
    by_batch = term.run("report", "--batch", "000001", as_json=True).json["report"]
    assert by_batch["totals"] == report["totals"]
    assert [s["balanced"] for s in by_batch["settlements"]] == [1]
    text = term.run("report", "--batch", "000001")
    assert "REFUNDS BY REASON" in text.out


def test_journal_export_csv_has_masked_pans_only(term: Term) -> None:
    voucher = term.voucher_of_sale("10.00")
    term.voucher_of_sale("20.00", "visa-credit")
    assert term.refund("1.00", "--voucher", voucher).code == 0
    done = term.run("journal", "export", "--format", "csv")
    assert done.code == 0
    lines = done.out.strip().splitlines()
    assert lines[0].startswith("id,created_at,kind,status,amount")
    assert len(lines) == 4
    assert "622588******0019" in done.out
    assert "476173******0010" in done.out
    assert not re.search(r"\d{13,19}", done.out.replace("******", "-"))
    as_json = term.run("journal", "export", "--format", "json", as_json=True).json
    assert "6225880000000019" not in as_json["export"]
    today = time.strftime("%Y-%m-%d")
    empty = term.run("journal", "export", "--from", "2000-01-01", "--to", "2000-01-02")
    assert empty.out.strip().count("\n") == 0
    ranged = term.run("journal", "export", "--from", today)
    assert ranged.out.strip().count("\n") == 3


def test_flag_follow_up_and_report_flagged(term: Term) -> None:
    voucher = term.voucher_of_sale("100.00")
    wrong = term.refund("50.00", "--voucher", voucher, as_json=True).json
    flagged = term.run("flag", "--voucher", wrong["voucher"], "--explain",
                       "refunded 50.00 instead of 5.00", operator="00", as_json=True)
    assert flagged.code == 0
    flag_id = flagged.json["flag_id"]
    follow = term.voucher_of_sale("45.00")
    linked = term.run("flag", "--voucher", wrong["voucher"], "--flag-id", str(flag_id),
                      "--follow-up-voucher", follow, operator="00")
    assert linked.code == 0
    report = term.run("report", "--flagged", as_json=True).json["flagged"]
    assert len(report) == 1
    assert report[0]["explanation"] == "refunded 50.00 instead of 5.00"
    assert report[0]["operator"] == "00"
    assert report[0]["follow_up_txn_id"] is not None
    text = term.run("report", "--flagged")
    assert f"voucher {wrong['voucher']}" in text.out
    assert "-> follow-up row" in text.out
    audit = term.run("audit", "--action", "flag", as_json=True).json["entries"]
    assert len(audit) == 2
    missing = term.run("flag", "--voucher", wrong["voucher"])
    assert missing.code == 2
    assert "--explain" in missing.err


def test_a_sale_the_card_declines_after_approval_is_reversed(term: Term) -> None:
    term.host.faults("add", "corrupt-arpc@once")  # the host approves; its ARPC fails the card
    done = term.sale("12.00", as_json=True)
    assert done.code == 1
    assert (done.json["result"], done.json["card"]) == ("reversed", "declined")
    assert done.json["next_step"]["en"] == ("Approved by the host but declined by the card: "
                                            "reversed, nothing was charged")
    shown = term.sale("13.00")  # the next one completes with a TC
    assert shown.code == 0
    sales = [(t["status"], t["amount"]) for t in term.host.snapshot()["transactions"]
             if t["kind"] == "sale"]
    assert sales == [("reversed", 12_00), ("approved", 13_00)]
    with contextlib.closing(sqlite3.connect(term.data_dir / "journal.db")) as db:
        assert [r[0] for r in db.execute("SELECT cryptogram_type FROM txn ORDER BY id")] \
            == ["AAC", "TC"]
