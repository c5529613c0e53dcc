"""``pos-emulator terminal ...`` and ``pos-emulator ledger``: provisioning and ledger views.

The ``pos-emulator`` dispatcher (``emulator.cli``) hands the words after the
sub-command to :func:`terminal_main` or :func:`ledger_main`.  Bad input never
ends in a traceback: one line on stderr and exit code 2.  PANs are shown masked
and a TMK only with ``--reveal`` (otherwise its check value).

Terminals are written straight into the ledger (a SQLite file or a
``postgresql://`` database, see ``emulator.host.ledger.open_store``). A
``pos-emulator serve`` running on the same ledger sees an added, removed or
re-keyed terminal with its next request (the host reads the terminal's row in
every request's transaction). A re-keyed terminal must sign on again.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from emulator.host import upload
from emulator.host.errors import HostError
from emulator.host.ledger import (
    LedgerSnapshot,
    TransactionRow,
    is_postgres_url,
    key_text,
    open_store,
    provisioned,
    removed_row,
    safe_ledger_name,
)
from emulator.host.terminals import (
    DEMO_MID,
    DEMO_TID,
    DEMO_TMK,
    LEDGER_ENV,
    check_mid,
    check_tid,
    default_ledger_path,
    parse_tmk,
)
from iso8583.crypto.kcv import tdes_kcv
from iso8583.errors import Iso8583Error
from iso8583.settlement import SettlementTotals


class _UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    """argparse that reports bad usage as one line (the caller prints it, exit 2)."""

    def error(self, message: str) -> NoReturn:
        raise _UsageError(f"{self.prog}: {message}")


def _ledger_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ledger", default=None,
                        help=f"SQLite ledger file or postgresql://... URL (default: "
                             f"${LEDGER_ENV} or {default_ledger_path()})")


def _fail(message: str) -> int:
    print(message, file=sys.stderr)
    return 2


def _yuan(fen: int | None) -> str:
    if fen is None:
        return "-"
    sign = "-" if fen < 0 else ""
    return f"{sign}{abs(fen) // 100}.{abs(fen) % 100:02d}"


# --- terminal ---------------------------------------------------------------------------
def _terminal_parser() -> _Parser:
    parser = _Parser(prog="pos-emulator terminal", description="Provision host terminals.")
    sub = parser.add_subparsers(dest="action", required=True, parser_class=_Parser)
    add = sub.add_parser("add", help="add or replace a terminal (TID, MID, TMK)")
    add.add_argument("--tid", help="terminal id, 8 characters")
    add.add_argument("--mid", help="merchant id, 15 characters")
    add.add_argument("--tmk", help="terminal master key in hex (default: a random 16-byte key)")
    add.add_argument("--demo", action="store_true",
                     help=f"the demo terminal {DEMO_TID} / {DEMO_MID} with the published test TMK")
    _ledger_arg(add)
    remove = sub.add_parser("remove", help="remove a terminal (the host answers it 03)")
    remove.add_argument("--tid", required=True, help="terminal id, 8 characters")
    _ledger_arg(remove)
    rekey = sub.add_parser("rekey", help="give a terminal a new TMK (it must sign on again)")
    rekey.add_argument("--tid", required=True, help="terminal id, 8 characters")
    rekey.add_argument("--tmk", help="new master key in hex (default: a random 16-byte key)")
    _ledger_arg(rekey)
    listing = sub.add_parser("list", help="list provisioned terminals")
    listing.add_argument("--reveal", action="store_true", help="show TMKs in clear")
    listing.add_argument("--json", action="store_true")
    _ledger_arg(listing)
    return parser


def terminal_main(argv: Sequence[str]) -> int:
    """``pos-emulator terminal add|remove|rekey|list``; returns the exit code."""
    try:
        args = _terminal_parser().parse_args(list(argv))
        path: str = args.ledger or str(default_ledger_path())
        if args.action == "add":
            return _terminal_add(args, path)
        if args.action in ("remove", "rekey"):
            return _terminal_change(args, path)
        return _terminal_list(args, path)
    except _UsageError as exc:
        return _fail(str(exc))
    except (HostError, Iso8583Error, OSError) as exc:
        return _fail(f"pos-emulator terminal: {exc}")


def _terminal_add(args: argparse.Namespace, path: str) -> int:
    if args.demo:
        if args.tid or args.mid or args.tmk:
            raise _UsageError("pos-emulator terminal add: --demo takes no --tid/--mid/--tmk")
        tid, mid, tmk = DEMO_TID, DEMO_MID, DEMO_TMK
    else:
        if not args.tid or not args.mid:
            raise _UsageError("pos-emulator terminal add: --tid and --mid are required "
                              "(or --demo)")
        tid, mid, tmk = check_tid(args.tid), check_mid(args.mid), parse_tmk(args.tmk)
    store = open_store(path)
    try:  # one row read and written: independent of the ledger's size
        store.commit([provisioned(store.terminal(tid), tid, mid, tmk)])
    finally:
        store.close()
    print(f"terminal {tid} merchant {mid} added to {safe_ledger_name(path)} "
          f"(TMK check value {tdes_kcv(tmk).hex().upper()})")
    return 0


def _terminal_change(args: argparse.Namespace, path: str) -> int:
    tid = check_tid(args.tid)
    tmk = parse_tmk(args.tmk) if args.action == "rekey" else b""
    store = open_store(path)
    try:
        old = store.terminal(tid)
        if old is None or old.removed:
            return _fail(f"pos-emulator terminal {args.action}: no terminal {tid} in "
                         f"{safe_ledger_name(path)}")
        if args.action == "remove":
            store.commit([removed_row(old)])
        else:
            store.commit([provisioned(old, tid, old.mid, tmk)])
    finally:
        store.close()
    if args.action == "remove":
        print(f"terminal {tid} removed from {safe_ledger_name(path)}")
    else:
        print(f"terminal {tid} re-keyed in {safe_ledger_name(path)} (TMK check value "
              f"{tdes_kcv(tmk).hex().upper()}); it must sign on again")
    return 0


def _terminal_list(args: argparse.Namespace, path: str) -> int:
    snapshot = _open_snapshot(path)
    rows = []
    for term in (t for t in snapshot.terminals if not t.removed):
        tmk = bytes.fromhex(term.tmk)
        row: dict[str, object] = {
            "tid": term.tid, "mid": term.mid, "batch": term.batch,
            "signed_on": term.signed_on, "tmk_kcv": tdes_kcv(tmk).hex().upper()}
        if args.reveal:
            row["tmk"] = term.tmk
        rows.append(row)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print(f"no terminals in {safe_ledger_name(path)}")
        return 0
    print(f"{'TID':<8}  {'MID':<15}  {'batch':<6}  {'signed on':<9}  TMK")
    for row in rows:
        key = row["tmk"] if args.reveal else f"kcv {row['tmk_kcv']}"
        print(f"{row['tid']!s:<8}  {row['mid']!s:<15}  {row['batch']!s:<6}  "
              f"{'yes' if row['signed_on'] else 'no':<9}  {key}")
    return 0


def _open_snapshot(path: str) -> LedgerSnapshot:
    if not is_postgres_url(path) and not Path(path).exists():
        raise HostError(f"no ledger at {path}")
    store = open_store(path)
    try:
        return store.load()
    finally:
        store.close()


# --- ledger -------------------------------------------------------------------------------
def _ledger_parser() -> _Parser:
    parser = _Parser(prog="pos-emulator ledger",
                     description="Print the host ledger: transactions (masked PAN), refunds "
                                 "against each original, batch totals.")
    _ledger_arg(parser)
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    return parser


def ledger_report(snapshot: LedgerSnapshot) -> dict[str, list[dict[str, object]]]:
    """The ledger as plain data: what ``pos-emulator ledger --json`` prints."""
    txns = [_txn_view(t) for t in snapshot.transactions]
    originals: list[dict[str, object]] = []
    refunds_by_original: dict[str, list[TransactionRow]] = {}
    for txn in snapshot.transactions:
        if txn.kind == "refund" and txn.original is not None:
            refunds_by_original.setdefault(txn.original, []).append(txn)
    for txn in snapshot.transactions:
        if txn.kind != "sale" or txn.response_code != "00":
            continue
        standing = txn.status == "approved"
        originals.append({
            "key": key_text(txn.key), "rrn": txn.rrn, "pan": txn.pan_masked,
            "amount": txn.amount, "status": txn.status, "refunded": txn.refunded,
            "refundable_amount": (txn.amount or 0) - txn.refunded if standing else 0,
            "refunds": [{"key": key_text(r.key), "rrn": r.rrn, "amount": r.amount,
                         "status": r.status, "response_code": r.response_code}
                        for r in refunds_by_original.get(key_text(txn.key), [])],
        })
    batches: dict[tuple[str, str], dict[str, object]] = {}
    totals: dict[tuple[str, str], SettlementTotals] = {}
    for txn in snapshot.transactions:
        if txn.kind in ("sale", "refund") and txn.status == "approved" and txn.scheme \
                and txn.amount is not None:
            key = (txn.tid, txn.batch)
            totals[key] = totals.get(key, SettlementTotals()).add(
                txn.scheme, txn.amount, credit=txn.kind == "refund")
    for row in snapshot.batches:
        batches[(row.tid, row.batch)] = {"settled": row.settled, "balanced": row.balanced}
    for key in sorted(set(totals) | set(batches)):
        total = totals.get(key, SettlementTotals())
        info = batches.get(key, {"settled": False, "balanced": None})
        batches[key] = {"tid": key[0], "batch": key[1], **info,
                        "domestic": _half(total.domestic), "foreign": _half(total.foreign)}
    return {"transactions": txns, "originals": originals,
            "batches": [batches[k] for k in sorted(batches)],
            "uploads": upload.report(snapshot.uploads, snapshot.transactions)}


def _half(half: object) -> dict[str, int]:
    return {name: int(getattr(half, name)) for name in
            ("debit_count", "debit_amount", "credit_count", "credit_amount")}


def _txn_view(txn: TransactionRow) -> dict[str, object]:
    return {"received_at": txn.received_at, "tid": txn.tid, "batch": txn.batch,
            "stan": txn.stan, "mti": txn.mti, "kind": txn.kind, "pan": txn.pan_masked,
            "scheme": txn.scheme, "amount": txn.amount, "rrn": txn.rrn,
            "auth_code": txn.auth_code, "response_code": txn.response_code,
            "status": txn.status, "original": txn.original}


def ledger_main(argv: Sequence[str]) -> int:
    """``pos-emulator ledger [--ledger PATH] [--json]``; returns the exit code."""
    try:
        args = _ledger_parser().parse_args(list(argv))
        path: str = args.ledger or str(default_ledger_path())
        report = ledger_report(_open_snapshot(path))
    except _UsageError as exc:
        return _fail(str(exc))
    except (HostError, Iso8583Error, OSError) as exc:
        return _fail(f"pos-emulator ledger: {exc}")
    if args.json:
        print(json.dumps(report, indent=2, ensure_ascii=False))
        return 0
    _print_report(report)
    return 0


def _print_report(report: dict[str, list[dict[str, object]]]) -> None:
    print("Transactions")
    print(f"  {'received':<19}  {'TID':<8}  {'batch':<6}  {'STAN':<6}  {'MTI':<4}  "
          f"{'kind':<16}  {'card':<19}  {'amount':>12}  {'RRN':<12}  code  status")
    for t in report["transactions"]:
        received = str(t["received_at"])[:19]
        amount = t["amount"] if isinstance(t["amount"], int) else None
        print(f"  {received:<19}  {t['tid']!s:<8}  {t['batch']!s:<6}  {t['stan']!s:<6}  "
              f"{t['mti']!s:<4}  {t['kind']!s:<16}  {t['pan'] or '-'!s:<19}  "
              f"{_yuan(amount):>12}  {t['rrn'] or '-'!s:<12}  {t['response_code']!s:<4}  "
              f"{t['status']}")
    print()
    print("Refunds against originals")
    for o in report["originals"]:
        amount = o["amount"] if isinstance(o["amount"], int) else None
        refunded = o["refunded"] if isinstance(o["refunded"], int) else 0
        refundable = o["refundable_amount"] if isinstance(o["refundable_amount"], int) else 0
        print(f"  RRN {o['rrn']}  {o['pan']}  amount {_yuan(amount)}  refunded "
              f"{_yuan(refunded)}  refundable {_yuan(refundable)}  [{o['status']}]")
        refunds = o["refunds"] if isinstance(o["refunds"], list) else []
        for r in refunds:
            print(f"      refund RRN {r['rrn']}  {_yuan(r['amount'])}  {r['response_code']}  "
                  f"{r['status']}")
    print()
    print("Batches")
    for b in report["batches"]:
        dom = b["domestic"] if isinstance(b["domestic"], dict) else {}
        fore = b["foreign"] if isinstance(b["foreign"], dict) else {}
        state = "settled" if b["settled"] else "open"
        balanced = {True: "balanced", False: "NOT balanced", None: ""}[
            b["balanced"] if isinstance(b["balanced"], bool) else None]
        print(f"  {b['tid']} batch {b['batch']} {state} {balanced}".rstrip())
        for name, half in (("domestic", dom), ("foreign", fore)):
            print(f"      {name:<8}  debit {half.get('debit_count', 0)} / "
                  f"{_yuan(half.get('debit_amount', 0))}  credit {half.get('credit_count', 0)} / "
                  f"{_yuan(half.get('credit_amount', 0))}")
    if report.get("uploads"):
        print()
        print("Batch uploads (item by item)")
        for u in report["uploads"]:
            amount = u["amount"] if isinstance(u["amount"], int) else None
            print(f"  {u['tid']} batch {u['batch']}  item {u['item_batch']}/{u['item_stan']}  "
                  f"RRN {u['rrn'] or '-'}  {_yuan(amount)}  {u['verdict']}")
