"""The host's ledger in PostgreSQL (psycopg 3): ``pos-emulator serve --ledger postgresql://...``.

Same tables, records and session API as :class:`~emulator.host.ledger.SqliteLedgerStore`,
and the same SQL (:class:`~emulator.host.ledger.SqlSession`), so several host
processes, each with its own connection, share one ledger:

* a session is one transaction at READ COMMITTED; what a rule must not let
  another process change under it is read ``FOR UPDATE``: the original a void or
  refund names (so two refunds of one sale, or a void and a refund, serialize and
  can never exceed it) and the request a reversal undoes; a request and its
  reversal serialize on an advisory lock of the request's key;
* card balances are hot rows every worker touches (a test catalogue has a handful
  of cards): a session reads them without a lock and, at commit, locks the ones it
  moved in a fixed order, replays its moves on the current values and checks
  every sale still fits (else BalanceMoved, a LedgerConflict: the session runs again
  whole and declines it). Held for the commit only, and never in two orders: no
  deadlocks on them;
* a new transaction row is a plain INSERT: a concurrent duplicate of the same
  request in another process fails with a unique violation, which (like a
  deadlock or a serialization failure) raises
  :class:`~emulator.host.errors.LedgerConflict`: the caller rolls back and runs
  the session again, and then finds the stored answer;
* RRNs come from a SEQUENCE, taken ``RRN_BLOCK`` at a time by each process (workers
  never wait on each other for one; numbers are unique, not gap-free);
* round trips and statements are what a request costs here (each one costs the
  host and PostgreSQL more CPU than the rules' own work on it), so a whole group of
  requests takes one before its rules run: the server hands the host every request
  of the group first (AcquirerHost.prefetch), and ``lock_requests`` takes every
  sale, void and refund's locks at once (pos_prepare_many, in one fixed order:
  batches shared, request keys, originals FOR UPDATE, each sorted, so two groups
  never wait on each other in a cycle) and brings back, as text rows, each one's
  terminal row, own rows, tombstone, batch, card balance and the original a refund
  or void names. A request's ``lock_request`` is served from them unless a write of
  the session touched them since (a refund after another refund of the same sale,
  a duplicate, a void naming a sale booked earlier in the group): then it reads
  again, alone (pos_prepare_one: the same for one request, and a group of one).
  Writes are held and sent when a read could see them, else at commit, one
  multi-row statement per table, all in one round trip (libpq pipeline mode; a
  failure among them fails the whole session, which is rolled back and run
  again). BEGIN rides with the session's first
  statement and COMMIT with its last writes (after the card balances' check,
  pos_move_balances), so a group costs two round trips. Under the server the second
  is only sent (commits ahead, on by default: session_ahead, CommitInFlight), the
  event loop serving meanwhile; or, with commits ahead off and POS_PG_ONE_TRIP=1, a
  group's COMMIT carries the next group's start (one round trip a group in steady
  state: session_open, OpenSession, PgSession.commit_then). The statements go
  straight through libpq, prepared once per connection;
* a lock not granted within ``LOCK_TIMEOUT_MS`` is a LedgerConflict too (two
  processes' groups that lock the same originals in two orders would otherwise
  wait for PostgreSQL's deadlock check, 1 s, every time; the server then runs the
  group again one request per session);
* a lost connection raises :class:`~emulator.host.errors.LedgerUnavailable`; the
  next session reconnects (one that died while idle is replaced at the session's first
  round trip, which never carries COMMIT).

Why READ COMMITTED + row locks rather than SERIALIZABLE: the rules know exactly
which rows decide a booking, so locking them costs nothing extra (the lock rides
in the read) and rarely aborts work; SERIALIZABLE would abort and rerun a whole
group of requests on any overlapping read (every sale of a card reads its
balance; settlement totals read a whole batch), and a group is up to a few
hundred requests. (Measured first with the balance row locked FOR UPDATE at its
read: two workers deadlocked on the hot cards in nearly every group, each
deadlock costing PostgreSQL's deadlock_timeout of 1 s: 17 TPS.)

psycopg is optional: importing this module without it raises
:class:`~emulator.host.errors.LedgerError` with an install hint.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import operator
import os
import secrets
import select
import struct
import threading
from collections import deque
from collections.abc import Callable, Generator, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

from emulator.host.errors import BalanceMoved, LedgerConflict, LedgerError, LedgerUnavailable
from emulator.host.ledger import (
    BALANCES_FROM_TRANSACTIONS,
    BATCH_SELECT,
    SCHEMA_VERSION,
    TERMINAL_COLUMNS,
    TERMINAL_SELECT,
    TOMBSTONE_SOURCES,
    TOMBSTONE_UPSERT,
    TXN_COLUMNS,
    TXN_INSERT,
    TXN_ON_CONFLICT,
    TXN_SELECT,
    UPLOAD_SELECT,
    BalanceRow,
    BatchRow,
    LedgerRecord,
    LedgerSnapshot,
    RequestLock,
    SqlSession,
    TerminalRow,
    TombstoneRow,
    TransactionRow,
    TxnKey,
    batch_of,
    is_postgres_url,
    key_text,
    safe_ledger_name,
    terminal_of,
    tombstone_of,
    transaction_of,
    upload_of,
)

try:
    import psycopg  # type: ignore[import-not-found, unused-ignore]
    from psycopg import errors as pg_errors  # type: ignore[import-not-found, unused-ignore]
    from psycopg import pq, sql  # type: ignore[import-not-found, unused-ignore]
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise LedgerError("the PostgreSQL ledger needs psycopg 3: "
                      "pip install 'psycopg[binary]>=3.1'") from exc

INSTALL_HINT = ("PostgreSQL ledger: pip install 'psycopg[binary]>=3.1'; server: "
                "apt-get install postgresql (Debian) and a database URL postgresql://...")


def _as_text(columns: Sequence[str], alias: str, width: int) -> str:
    """``columns`` of ``alias`` as text, padded with NULLs to ``width`` (one UNION layout)."""
    cast = [f"{alias}.{c}::text" for c in columns]
    return ", ".join(cast + ["NULL"] * (width - len(cast)))


_WIDTH = len(TXN_COLUMNS)
_TXN_TEXT = _as_text(TXN_COLUMNS, "t", _WIDTH)
_TOMBSTONE_TEXT = _as_text(("tid", "batch", "stan", "proc", "amount"), "x", _WIDTH)
_BATCH_TEXT = _as_text(("tid", "batch", "settled", "host_totals", "terminal_totals",
                        "balanced"), "b", _WIDTH)
_BALANCE_TEXT = _as_text(("pan_hash", "spent"), "c", _WIDTH)
_TERMINAL_TEXT = _as_text(TERMINAL_COLUMNS, "m", _WIDTH)
_PREPARE_RETURNS = (f"RETURNS TABLE (r_tag TEXT, "
                    f"{', '.join(f'r{i} TEXT' for i in range(1, _WIDTH + 1))})")
# Every connection of the store starts with these settings (libpq's startup options: no
# round trip). The prepare functions' statements (and pos_move_balances', and the
# connection's prepared statements) are planned once per connection (a plan made for each
# call's arrays cost PostgreSQL 3-5 times the statements' own work), and that plan must
# stay an index lookup per key whatever the tables held when it was made: made on a new,
# empty ledger it would otherwise scan whole tables for good (the cost of a request
# growing with the ledger). (memoize: a cache in front of a join's inner side that is one
# index probe a key anyway.) They used to be the functions' own SET clauses, which
# PostgreSQL saves, sets and restores on every call: ~80k of its ~1,080k fixed
# instructions a group (callgrind on the backend, deterministic replay of groups of 2-16:
# fixed 1,077k -> 996k; a group of 2: 1,503k -> 1,438k). A process of an earlier version
# (its connections without them) runs these functions planned with its own settings
# until its next opening, whose schema run puts the SET clauses back (this code's next
# opening takes them off again): slower for it, never wrong.
_PLAN_OPTIONS = ("-c plan_cache_mode=force_generic_plan -c enable_seqscan=off "
                 "-c enable_bitmapscan=off -c enable_hashjoin=off -c enable_mergejoin=off "
                 "-c enable_memoize=off")


def _options(dsn: str) -> str:
    """libpq's startup options for a connection to ``dsn``: the DSN's own (or PGOPTIONS's,
    which an explicit value would override), then _PLAN_OPTIONS (last: they win)."""
    given = psycopg.conninfo.conninfo_to_dict(dsn).get("options") \
        or os.environ.get("PGOPTIONS")
    return f"{given} {_PLAN_OPTIONS}" if given else _PLAN_OPTIONS


# The rows a booking reads next (see _PREPARE_FNS), as RETURN QUERY's branches by tag:
# for a group's arrays (pos_prepare_many) and for one request's scalars (pos_prepare_one).
_MANY_READS = {
    "k": f"""SELECT 'k', {_TXN_TEXT} FROM unnest(p_tid, p_batch, p_stan) AS k(tid, batch, stan)
        JOIN transactions t ON t.tid = k.tid AND t.batch = k.batch AND t.stan = k.stan""",  # noqa: S608
    "o": f"SELECT 'o', {_TXN_TEXT} FROM transactions t WHERE t.rrn = ANY(p_rrn)",  # noqa: S608
    "s": f"""SELECT 's', {_TOMBSTONE_TEXT}
        FROM unnest(p_tid, p_batch, p_stan) AS k(tid, batch, stan)
        JOIN tombstones x ON x.tid = k.tid AND x.batch = k.batch AND x.stan = k.stan""",  # noqa: S608
    "b": f"""SELECT 'b', {_BATCH_TEXT} FROM unnest(p_tid, p_batch) AS k(tid, batch)
        JOIN batches b ON b.tid = k.tid AND b.batch = k.batch""",  # noqa: S608
    "p": f"SELECT 'p', {_BALANCE_TEXT} FROM balances c WHERE c.pan_hash = ANY(p_pan)",  # noqa: S608
    "m": f"SELECT 'm', {_TERMINAL_TEXT} FROM terminals m WHERE m.tid = ANY(p_tid)",  # noqa: S608
}
_ONE_READS = {
    "k": f"""SELECT 'k', {_TXN_TEXT} FROM transactions t
        WHERE t.tid = p_tid AND t.batch = p_batch AND t.stan = p_stan""",  # noqa: S608
    "o": f"SELECT 'o', {_TXN_TEXT} FROM transactions t WHERE t.rrn = p_rrn",  # noqa: S608
    "s": f"""SELECT 's', {_TOMBSTONE_TEXT} FROM tombstones x
        WHERE x.tid = p_tid AND x.batch = p_batch AND x.stan = p_stan""",  # noqa: S608
    "b": f"""SELECT 'b', {_BATCH_TEXT} FROM batches b
        WHERE b.tid = p_tid AND b.batch = p_batch""",  # noqa: S608
    "p": f"SELECT 'p', {_BALANCE_TEXT} FROM balances c WHERE c.pan_hash = p_pan",  # noqa: S608
    "m": f"SELECT 'm', {_TERMINAL_TEXT} FROM terminals m WHERE m.tid = p_tid",  # noqa: S608
}


# A request's other rows (its terminal, batch, tombstone and, for one request, its card's
# balance: at most one each) as ONE row, tagged x, instead of a padded branch each (m, b,
# s, p): PostgreSQL sets up every branch of the UNION on every call, a projection and a
# tuple descriptor of the full width each, and the padding NULLs cost about as much to set
# up as columns (callgrind, a call of the one-request form for a sale: 427k -> 395k
# instructions). The keys are the request's (the lock's), so only what the host cannot
# know comes back: r1-r2 tid, batch; r3-r11 the terminal's columns after tid (mid NULL: no
# terminal); r12-r15 the batch's settled, host_totals, terminal_totals, balanced (settled
# NULL: no batch); r16-r18 the tombstone's stan, proc, amount (stan NULL: none); r19-r20
# the card's pan_hash and spent (NULL: no row). A group's cards keep their own branch (p:
# one probe a card, = ANY; a probe a request, joined here, cost more from ~8 requests
# on: a group of 16, +91k instructions). (_Prepared reads them.)
_SIDE_TEXT = ", ".join(
    ["k.tid", "k.batch"] + [f"m.{c}::text" for c in TERMINAL_COLUMNS[1:]]
    + ["b.settled::text", "b.host_totals", "b.terminal_totals", "b.balanced::text",
       "x.stan", "x.proc", "x.amount::text", "c.pan_hash", "c.spent::text"])
_SIDE_JOINS = """LEFT JOIN terminals m ON m.tid = k.tid
        LEFT JOIN batches b ON b.tid = k.tid AND b.batch = k.batch
        LEFT JOIN tombstones x ON x.tid = k.tid AND x.batch = k.batch AND x.stan = k.stan"""
_MANY_READS["x"] = f"""SELECT 'x', {_SIDE_TEXT.replace("c.pan_hash, c.spent::text", "NULL, NULL")}
        FROM unnest(p_tid, p_batch, p_stan) AS k(tid, batch, stan)
        {_SIDE_JOINS}"""  # noqa: S608
_ONE_READS["x"] = f"""SELECT 'x', {_SIDE_TEXT}
        FROM (SELECT p_tid AS tid, p_batch AS batch, p_stan AS stan) k
        {_SIDE_JOINS}
        LEFT JOIN balances c ON c.pan_hash = p_pan"""  # noqa: S608


def _reads(branches: dict[str, str], tags: str) -> str:
    """The UNION ALL of ``branches``' ``tags``, in that order (a RETURN QUERY's)."""
    return "\n    UNION ALL\n    ".join(branches[tag] for tag in tags)


# pos_prepare_one's locks: the batch's (shared), then the request's; the v2 form takes
# both in one statement (its target list, evaluated left to right)
_BATCH_LOCK = "pg_advisory_xact_lock_shared(8584, hashtext(p_tid || '/' || p_batch))"
_REQUEST_LOCK = "pg_advisory_xact_lock(8583, hashtext(p_tid || '/' || p_batch || '/' || p_stan))"
_ONE_LOCKS = f"    PERFORM {_BATCH_LOCK};\n    PERFORM {_REQUEST_LOCK};"
_ONE_LOCKS_TOGETHER = f"    PERFORM {_BATCH_LOCK},\n            {_REQUEST_LOCK};"


def _one_fn(name: str, locks: str, sale_tags: str, refund_tags: str) -> str:
    """A pos_prepare_one function (a request's scalars): ``locks``, then (when an original
    is named) its row's lock, then the reads by tag, as :func:`_many_fn`."""
    head = f"CREATE OR REPLACE FUNCTION {name}(p_tid TEXT, p_batch TEXT, p_stan TEXT,"
    return f"""{head}
{" " * (head.index("(") + 1)}p_pan TEXT, p_rrn TEXT)
{_PREPARE_RETURNS} AS $$
BEGIN
{locks}
    IF p_rrn IS NULL THEN  -- no original named: none to lock or read
        RETURN QUERY
        {_reads(_ONE_READS, sale_tags)};
        RETURN;
    END IF;
    PERFORM 1 FROM transactions t WHERE t.rrn = p_rrn FOR UPDATE;
    RETURN QUERY
    {_reads(_ONE_READS, refund_tags)};
END $$ LANGUAGE plpgsql VOLATILE;"""


def _many_fn(name: str, sale_tags: str, refund_tags: str) -> str:
    """A pos_prepare_many function: the group's batch then request advisory locks, in
    hash order, then (when an original is named) its row's lock, then its reads by tag:
    ``sale_tags`` with no RRN, ``refund_tags`` with. One text for every version."""
    head = f"CREATE OR REPLACE FUNCTION {name}(p_tid TEXT[], p_batch TEXT[], p_stan TEXT[],"
    return f"""{head}
{" " * (head.index("(") + 1)}p_pan TEXT[], p_rrn TEXT[])
{_PREPARE_RETURNS} AS $$
BEGIN
    PERFORM pg_advisory_xact_lock_shared(8584, h) FROM (
        SELECT DISTINCT hashtext(t || '/' || b) AS h FROM unnest(p_tid, p_batch) AS u(t, b)
    ) x ORDER BY h;
    PERFORM pg_advisory_xact_lock(8583, h) FROM (
        SELECT DISTINCT hashtext(t || '/' || b || '/' || s) AS h
        FROM unnest(p_tid, p_batch, p_stan) AS u(t, b, s)
    ) x ORDER BY h;
    IF p_rrn IS NULL THEN  -- no original named (_prepare): none to lock or read
        RETURN QUERY
        {_reads(_MANY_READS, sale_tags)};
        RETURN;
    END IF;
    PERFORM 1 FROM transactions t WHERE t.rrn = ANY(p_rrn) ORDER BY t.rrn FOR UPDATE;
    RETURN QUERY
    {_reads(_MANY_READS, refund_tags)};
END $$ LANGUAGE plpgsql VOLATILE;"""  # noqa: S608 (the module's own constants only)


# A booking's first step for a whole group (PgSession.lock_requests), or for one request
# (lock_request): every lock pos_prepare takes, for every request named (the arrays run in
# parallel), in one fixed order -- batches (shared), request keys, originals by RRN (FOR
# UPDATE), each sorted -- so two processes' groups never wait on each other in a cycle.
# Then (a fresh snapshot: after the locks) the rows each booking reads next, one row each
# (a key named twice: its rows twice), as text, tagged: k a request key's rows, o an
# original, s a tombstone, b a batch, p a card balance, m a terminal. (Text columns, not
# JSON: building JSONB cost PostgreSQL more than the reads. No DISTINCT of the keys in
# the reads: its hash aggregates and CTE cost more to set up than a repeated probe.)
# PostgreSQL sets up every branch of the UNION on every call, a branch that can find
# nothing too: with no original named (p_rrn NULL: a sale; a group of sales, whose RRNs
# _prepare sends as NULL, not as an array of NULLs) the functions leave the RRNs' lock and
# branch out (callgrind, a call: pos_prepare_one of a sale 393k -> 361k instructions,
# pos_prepare_many of two sales 686k -> 632k). (Before, an older process's functions
# found no row for a NULL array either.)
_PREPARE_FNS = f"""
{_many_fn("pos_prepare_many", "ksbpm", "kosbpm")}
-- pos_prepare_many for one request (a group of one, or a request that reads its rows
-- again): the same locks, in the same order, and the same rows, from scalars -- plain
-- index probes, no arrays to unnest, sort or join (PostgreSQL ~25-30% less CPU a call).
{_one_fn("pos_prepare_one", _ONE_LOCKS, "ksbpm", "kosbpm")}
-- What this code calls (_prepare): pos_prepare_many and pos_prepare_one with a request's
-- other rows as one row (x, see _SIDE_TEXT); the two above stay as they were for older
-- processes running beside this one (their rows, tagged m, b, s, p). The same locks in
-- the same order. The one-request form takes both advisory locks in one statement (its
-- target list, evaluated left to right: the batch's, then the request's): a statement
-- fewer to set up a call (~6k instructions).
{_many_fn("pos_prepare_many_v2", "kxp", "koxp")}
{_one_fn("pos_prepare_one_v2", _ONE_LOCKS_TOGETHER, "kx", "kox")}
-- A terminal by TID, for a request whose terminal no lock read with it (a sign-on, the
-- second request of a terminal in a group). A plain prepared SELECT got a generic plan
-- made while terminals held a row or two, which scanned the table whole until an
-- ANALYZE happened to invalidate it; planned here, it stays an index probe.
CREATE OR REPLACE FUNCTION pos_terminal(p_tid TEXT)
{_PREPARE_RETURNS} AS $$
BEGIN
    RETURN QUERY SELECT 'm', {_TERMINAL_TEXT} FROM terminals m WHERE m.tid = p_tid;
END $$ LANGUAGE plpgsql STABLE;
"""  # noqa: S608 -- the module's own column lists, never input

# The transactions' columns statements select by (their keys); the others, what a booking
# carries (the answer, the fingerprint, the amounts and states), keep no statistics: the
# host's statements are planned generic, as index probes by key (_PLAN_OPTIONS), so no
# plan reads them, and autovacuum's ANALYZE of a growing ledger spent its CPU on them,
# next to the bookings: 0.14-0.21 s a run over 15,800 rows, 0.04-0.05 s without them
# (ANALYZE transactions, backend CPU, after a bench.host_load round). Set only when one
# still has statistics, and not at any price: the ALTER waits for a VACUUM or ANALYZE of
# the table (a long manual one too), and a host's start must not; after 200 ms it is left
# for the next schema run (statistics only cost CPU, never a result).
_STATISTICS_KEYS = ("tid", "batch", "stan", "mti", "rrn", "pan_hash")
_PAYLOAD_COLUMNS = tuple(c for c in TXN_COLUMNS if c not in _STATISTICS_KEYS)
_NO_STATISTICS = f"""DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = 'transactions'::regclass
               AND attname = ANY('{{{",".join(_PAYLOAD_COLUMNS)}}}'::name[])
               AND attstattarget IS DISTINCT FROM 0) THEN
        PERFORM set_config('lock_timeout', '200ms', true);
        BEGIN
            ALTER TABLE transactions
                {", ".join(f"ALTER COLUMN {c} SET STATISTICS 0" for c in _PAYLOAD_COLUMNS)};
        EXCEPTION WHEN lock_not_available THEN
            RAISE NOTICE 'transactions is being vacuumed: its statistics targets wait';
        END;
        PERFORM set_config('lock_timeout', '0', true);
    END IF;
END $$;
"""  # noqa: S608 -- the module's own column lists, never input

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    name TEXT PRIMARY KEY,
    value BYTEA NOT NULL
);
CREATE TABLE IF NOT EXISTS counters (
    name TEXT PRIMARY KEY,
    value BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS terminals (
    tid TEXT PRIMARY KEY,
    mid TEXT NOT NULL,
    tmk TEXT NOT NULL,
    pik TEXT NOT NULL DEFAULT '',
    mak TEXT NOT NULL DEFAULT '',
    tdk TEXT NOT NULL DEFAULT '',
    batch TEXT NOT NULL,
    signed_on BOOLEAN NOT NULL DEFAULT FALSE,
    generation BIGINT NOT NULL DEFAULT 0,
    removed BOOLEAN NOT NULL DEFAULT FALSE
);
CREATE TABLE IF NOT EXISTS transactions (
    seq BIGSERIAL PRIMARY KEY,
    tid TEXT NOT NULL,
    batch TEXT NOT NULL,
    stan TEXT NOT NULL,
    mti TEXT NOT NULL,
    kind TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    status TEXT NOT NULL,
    response_code TEXT NOT NULL,
    received_at TEXT NOT NULL,
    response TEXT NOT NULL,
    pan_masked TEXT,
    pan_hash TEXT,
    scheme TEXT,
    amount BIGINT,
    rrn TEXT UNIQUE,
    auth_code TEXT,
    date TEXT,
    original TEXT,
    refunded BIGINT NOT NULL DEFAULT 0,
    voided_by TEXT,
    UNIQUE (tid, batch, stan, mti)
);
-- Dropped (made by earlier versions): transactions_original and refunds_original, indexes
-- no statement reads through (refunds per original come from transactions.original, read
-- with a whole ledger; the one reader of original, schema 2's migration, runs once). Each
-- cost every booking an index insert, and every write statement on its table the index's
-- opening; PostgreSQL's instructions a group of 6 requests (callgrind on the backend,
-- deterministic replay): 2,705k -> 2,625k (-3.0%). An older
-- process's schema run makes them again (CREATE INDEX IF NOT EXISTS): it needs neither;
-- the next opening of this code finds its mark changed and drops them again.
DROP INDEX IF EXISTS transactions_original;
""" + _NO_STATISTICS + """CREATE TABLE IF NOT EXISTS refunds (
    refund_key TEXT PRIMARY KEY,
    original_key TEXT NOT NULL,
    amount BIGINT NOT NULL,
    status TEXT NOT NULL
);
DROP INDEX IF EXISTS refunds_original;
CREATE TABLE IF NOT EXISTS batches (
    tid TEXT NOT NULL,
    batch TEXT NOT NULL,
    settled BOOLEAN NOT NULL,
    host_totals TEXT NOT NULL,
    terminal_totals TEXT NOT NULL,
    balanced BOOLEAN,
    PRIMARY KEY (tid, batch)
);
CREATE TABLE IF NOT EXISTS uploads (
    tid TEXT NOT NULL,
    batch TEXT NOT NULL,
    stan TEXT NOT NULL,
    rrn TEXT,
    item_batch TEXT NOT NULL,
    item_stan TEXT NOT NULL,
    amount BIGINT NOT NULL,
    matched BOOLEAN NOT NULL,
    PRIMARY KEY (tid, batch, stan)
);
CREATE TABLE IF NOT EXISTS balances (
    pan_hash TEXT PRIMARY KEY,
    spent BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS tombstones (
    tid TEXT NOT NULL,
    batch TEXT NOT NULL,
    stan TEXT NOT NULL,
    proc TEXT,
    amount BIGINT,
    PRIMARY KEY (tid, batch, stan)
);
CREATE SEQUENCE IF NOT EXISTS rrn_seq CACHE 32;
-- A booking's first step, in one statement, as processes before pos_prepare_many took
-- it (kept for them while they run beside this one): the lock on the request's key,
-- then (each plpgsql statement takes a fresh snapshot, so after the lock) the rows the
-- booking reads next.
-- p_rrn: the original a void or refund names, read and locked (FOR UPDATE) after the lock
CREATE OR REPLACE FUNCTION pos_prepare(p_tid TEXT, p_batch TEXT, p_stan TEXT, p_pan TEXT,
                                       p_rrn TEXT)
RETURNS JSONB AS $$
DECLARE
    v_original JSONB;
BEGIN
    -- shared: money moves of a batch pass each other; a settlement takes it exclusively
    PERFORM pg_advisory_xact_lock_shared(8584, hashtext(p_tid || '/' || p_batch));
    PERFORM pg_advisory_xact_lock(8583, hashtext(p_tid || '/' || p_batch || '/' || p_stan));
    IF p_rrn IS NOT NULL THEN
        SELECT to_jsonb(t) - 'seq' INTO v_original FROM transactions t WHERE t.rrn = p_rrn
            FOR UPDATE;
    END IF;
    RETURN jsonb_build_object(
        'original', v_original,
        'txns', (SELECT coalesce(jsonb_agg(to_jsonb(t) - 'seq'), '[]'::jsonb) FROM transactions t
                 WHERE t.tid = p_tid AND t.batch = p_batch AND t.stan = p_stan),
        'tombstone', (SELECT to_jsonb(x) FROM tombstones x
                      WHERE x.tid = p_tid AND x.batch = p_batch AND x.stan = p_stan),
        'batch', (SELECT to_jsonb(b) FROM batches b WHERE b.tid = p_tid AND b.batch = p_batch),
        'spent', (SELECT spent FROM balances WHERE pan_hash = p_pan),
        'terminal', (SELECT to_jsonb(m) FROM terminals m WHERE m.tid = p_tid));
END $$ LANGUAGE plpgsql VOLATILE;
-- the four-argument form older processes call
CREATE OR REPLACE FUNCTION pos_prepare(p_tid TEXT, p_batch TEXT, p_stan TEXT, p_pan TEXT)
RETURNS JSONB AS $$ SELECT pos_prepare(p_tid, p_batch, p_stan, p_pan, NULL::TEXT) $$
LANGUAGE sql VOLATILE;
-- A session's card balances at its commit (PgSession.flush), in one statement: p_pan sorted,
-- each card's net move and room (the most its balance may have been spent before the
-- session's moves for every sale among them to still fit; NULL: no limit). The rows are
-- locked in PAN-hash order, then (a fresh snapshot: after the locks) checked and moved; a
-- sale that no longer fits raises serialization_failure (BalanceMoved: run again). A
-- card's first use inserts its row: two at once clash (unique violation: run again) --
-- also when the other's row was committed after the UPDATE here (it was skipped then, and
-- this session's move on it lost). Up to 4 cards (a group of a few cards, the usual): each
-- card's UPDATE, one after the other in p_pan's order, locks its row itself, and a card
-- that no longer fits stops there -- the same locks in the same order, each row moved on
-- its current value. A statement a card costs PostgreSQL less than the general case's
-- lock, UPDATE and aggregate up to 4 cards (callgrind, a call: 1 card 112k -> 92k
-- instructions (was its own one-card path), 2 cards 236k -> 155k, 3 cards 267k -> 216k;
-- beyond, each card costs the loop ~60k and the general case ~30k).
CREATE OR REPLACE FUNCTION pos_move_balances(p_pan TEXT[], p_total BIGINT[], p_room BIGINT[])
RETURNS VOID AS $$
DECLARE
    v_moved TEXT[];
    v_over BOOLEAN;
BEGIN
    IF cardinality(p_pan) <= 4 THEN
        FOR i IN 1 .. cardinality(p_pan) LOOP
            UPDATE balances c SET spent = c.spent + p_total[i] WHERE c.pan_hash = p_pan[i]
                RETURNING c.spent - p_total[i] > p_room[i] INTO v_over;
            IF NOT FOUND THEN
                INSERT INTO balances (pan_hash, spent) VALUES (p_pan[i], p_total[i]);
                v_over := 0 > p_room[i];
            END IF;
            EXIT WHEN v_over;
        END LOOP;
    ELSE
        PERFORM 1 FROM balances c WHERE c.pan_hash = ANY(p_pan) ORDER BY c.pan_hash FOR UPDATE;
        WITH u AS (UPDATE balances c SET spent = c.spent + m.total
                   FROM unnest(p_pan, p_total, p_room) AS m(pan, total, room)
                   WHERE c.pan_hash = m.pan
                   RETURNING c.pan_hash, c.spent - m.total > m.room AS over)
        SELECT coalesce(array_agg(pan_hash), '{}'), coalesce(bool_or(over), FALSE)
            INTO v_moved, v_over FROM u;
        IF cardinality(v_moved) < cardinality(p_pan) THEN
            INSERT INTO balances (pan_hash, spent)
                SELECT m.pan, m.total FROM unnest(p_pan, p_total) AS m(pan, total)
                WHERE m.pan <> ALL(v_moved);
            v_over := v_over OR coalesce((SELECT bool_or(0 > m.room)
                FROM unnest(p_pan, p_room) AS m(pan, room) WHERE m.pan <> ALL(v_moved)), FALSE);
        END IF;
    END IF;
    IF v_over THEN
        RAISE EXCEPTION 'a card''s balance moved under this session'
            USING ERRCODE = 'serialization_failure';
    END IF;
END $$ LANGUAGE plpgsql VOLATILE;
-- planned as the prepare functions are (_PLAN_OPTIONS): balances grows with every new
-- card, and a plan made while it held a handful kept scanning it whole (test_pgledger)
""" + _PREPARE_FNS  # noqa: S608
# What a store's opening reads first (one round trip): the mark the last schema run
# left, the PAN key, and the schema's catalog as it is now: its functions (oid and
# xmin: CREATE OR REPLACE FUNCTION, by any process of any version, writes a new row)
# and its tables, indexes and sequences (oid: dropped and made again, a new one).
_SCHEMA_STATE = """
SELECT (SELECT value FROM meta WHERE name = 'schema_mark'),
       (SELECT value FROM meta WHERE name = 'pan_key'),
       (SELECT string_agg(p.oid::text || ':' || p.xmin::text, ',' ORDER BY p.oid)
          FROM pg_proc p WHERE p.pronamespace = n.oid)
       || '/' || (SELECT string_agg(c.oid::text, ',' ORDER BY c.oid)
                    FROM pg_class c WHERE c.relnamespace = n.oid)
  FROM pg_namespace n WHERE n.nspname = current_schema()
"""


def _schema_mark(catalog: str | None) -> bytes:
    """What the schema run of this code leaves in meta: its DDL and version, and the
    catalog the run left (so any later change to it, another version's run included,
    makes the next opening run the DDL again)."""
    text = f"{SCHEMA_VERSION}\n{_SCHEMA}\n{catalog}"
    return hashlib.sha256(text.encode()).digest()


# schema 1 announced provisioning with NOTIFY for a host that cached terminals;
# the host now reads the terminal row per request
_DROP_SCHEMA_1 = """
DROP TRIGGER IF EXISTS terminals_changed ON terminals;
DROP FUNCTION IF EXISTS pos_terminals_changed();
DELETE FROM counters WHERE name = 'terminals_version';
"""

_R = TypeVar("_R")
# (a SerializationFailure is a BalanceMoved, translated before these: see translate)
_CONFLICTS = (pg_errors.DeadlockDetected, pg_errors.UniqueViolation,
              pg_errors.LockNotAvailable)


#: The environment variable that turns commits ahead off ("0") or on (any other value) for
#: stores that do not say (PostgresLedgerStore's commit_ahead; unset: on in a host that is
#: one process, off in each of several; every process of ``serve --workers`` inherits it).
COMMIT_AHEAD_ENV = "POS_PG_COMMIT_AHEAD"
#: The environment variable that turns one round trip a group on ("1") or off (any other
#: value) for stores that do not say (PostgresLedgerStore's one_trip, session_open; unset:
#: on in each process of a host of several, off in a host that is one process).
ONE_TRIP_ENV = "POS_PG_ONE_TRIP"
#: How long a session waits for a row or advisory lock before it gives up (LedgerConflict).
LOCK_TIMEOUT_MS = 100
#: RRNs a process takes from the sequence in one round trip (a restart leaves a gap).
RRN_BLOCK = 256
_TXN_TYPES = tuple("bigint" if c in ("amount", "refunded") else "text" for c in TXN_COLUMNS)
# A session's bookings (and its upserts) go out as one statement each, the rows as one JSON
# array of arrays (_columns): one parameter, parsed once (jsonb). Measured against one text
# array per column (unnest of 20 arrays), rows of a sale: PostgreSQL ~10-40% less CPU a
# statement (1, 5, 20 rows), and the host builds it in a third to a half of the time.
# But the stored answer (response: ~250 characters of JSON, quotes escaped again in the
# JSON around it: more than half of a row's text) goes beside it, as a text array in
# binary format (_text_array), zipped with the JSON's rows (ROWS FROM): PostgreSQL 15's
# JSON lexer copies a string character by character, array_in's text format scans it
# twice, binary takes each as it is. PostgreSQL's instructions a group of 6 requests
# (callgrind on the backend, deterministic replay): 2,626k -> 2,539k (-3.3%); the answer
# in a text-format array instead: 2,601k (-0.9%). The host's cost of the parameters of 4
# rows: 15.6 -> 13.6 us.
_RESPONSE = TXN_COLUMNS.index("response")
_JSON_COLUMNS = TXN_COLUMNS[:_RESPONSE] + TXN_COLUMNS[_RESPONSE + 1:]
_TXN_INSERT_MANY = (f"INSERT INTO transactions ({', '.join(TXN_COLUMNS)}) SELECT "  # noqa: S608
                    + ", ".join("e.response" if c == "response"
                                else f"r->>{_JSON_COLUMNS.index(c)}" if t == "text"
                                else f"(r->>{_JSON_COLUMNS.index(c)})::{t}"
                                for c, t in zip(TXN_COLUMNS, _TXN_TYPES, strict=True))
                    + " FROM ROWS FROM (jsonb_array_elements(?::jsonb), unnest(?::text[]))"
                    " AS e(r, response)")
_TXN_UPSERT_MANY = _TXN_INSERT_MANY + TXN_ON_CONFLICT
_REFUND_UPSERT_MANY = (
    "INSERT INTO refunds (refund_key, original_key, amount, status) "
    "SELECT * FROM unnest(?::text[], ?::text[], ?::bigint[], ?::text[]) "
    "ON CONFLICT (refund_key) DO UPDATE SET status = excluded.status")
# Up to _FEW rows (a paced group's: 1-3 requests) go out as plain VALUES, a parameter a
# column: the JSON's parse (jsonb_in), ROWS FROM's function scan and its 20 ->> and casts
# cost PostgreSQL more to set up than the rows' own work (callgrind, an INSERT of sales'
# rows in BEGIN/ROLLBACK: 1 row 242k -> 181k instructions, 2 rows 350k -> 298k, 3 rows
# 439k -> 393k), and the host builds one row's parameters in less time too (5.5 us, the
# JSON's 7.5-9.8 us). One statement a count of rows (prepared once each).
_FEW = 4


def _values(insert: str, rows: int, tail: str = "") -> str:
    """``insert`` (an INSERT ... VALUES of one row of ? parameters) for ``rows`` rows."""
    one = insert[insert.index(" VALUES (") + len(" VALUES "):]
    return insert + f", {one}" * (rows - 1) + tail


_REFUND_INSERT = ("INSERT INTO refunds (refund_key, original_key, amount, status) "
                  "VALUES (?, ?, ?, ?)")
# by count of rows (0 unused)
_TXN_INSERT_FEW = [_values(TXN_INSERT, n) for n in range(_FEW + 1)]
_TXN_UPSERT_FEW = [_values(TXN_INSERT, n, TXN_ON_CONFLICT) for n in range(_FEW + 1)]
_REFUND_UPSERT_FEW = [_values(_REFUND_INSERT, n, " ON CONFLICT (refund_key) DO UPDATE "
                              "SET status = excluded.status") for n in range(_FEW + 1)]
_txn_row = operator.attrgetter(*TXN_COLUMNS)


def _txn_writes(rows: Sequence[TransactionRow], many: str,
                few: Sequence[str]) -> tuple[str, Sequence[object]]:
    """The statement that writes ``rows``: ``few``'s for up to _FEW rows, else ``many``."""
    if len(rows) > _FEW:
        return many, _columns(rows)
    return few[len(rows)], [v for row in rows for v in _txn_row(row)]
_TERMINAL_BY_TID = "SELECT * FROM pos_terminal(?)"
_TXN_BY_KEY = TXN_SELECT + " WHERE tid = ? AND batch = ? AND stan = ? AND mti = ?"
_TXN_BY_RRN = TXN_SELECT + " WHERE rrn = ?"
_BALANCE_SELECT = "SELECT spent FROM balances WHERE pan_hash = ?"
_BALANCES_MOVE = "SELECT pos_move_balances(?::text[], ?::bigint[], ?::bigint[])"
_RRNS = "SELECT nextval('rrn_seq') FROM generate_series(1, ?::int)"
_PREPARE_MANY = ("SELECT * FROM pos_prepare_many_v2(?::text[], ?::text[], ?::text[], "
                 "?::text[], ?::text[])")
_PREPARE_ONE = "SELECT * FROM pos_prepare_one_v2(?, ?, ?, ?, ?)"
_OK = (pq.ExecStatus.TUPLES_OK, pq.ExecStatus.COMMAND_OK)


def _param(value: object) -> bytes | None:
    """A parameter in PostgreSQL's text format."""
    if type(value) is str:  # the usual, first
        return value.encode()
    if value is None:
        return None
    if type(value) is _Binary:
        return value
    if isinstance(value, bool):
        return b"t" if value else b"f"
    if isinstance(value, list | tuple):
        return _array(value)
    return str(value).encode()


_INTEGERS = frozenset({int, type(None)})
_STRINGS = frozenset({str, type(None)})


def _array(values: Sequence[object]) -> bytes:
    """A one-dimensional array literal of text or integers (None is NULL)."""
    if not values:
        return b"{}"
    nulls = 0
    try:  # the usual: strings (keys, PAN hashes), in one join
        text = '","'.join(values)  # type: ignore[arg-type]  # TypeError: not all str
    except TypeError:
        kinds = set(map(type, values))
        if kinds <= _INTEGERS:  # amounts, totals, rooms: no quotes needed
            return ("{" + ",".join(["NULL" if v is None else str(v) for v in values])
                    + "}").encode()
        text = '"'  # (not these: item by item, below)
        if kinds <= _STRINGS:  # NULLs among them (a group's sales name no RRN): NUL, then NULL
            nulls = values.count(None)
            text = '","'.join(["\0" if v is None else v for v in values])  # type: ignore[misc]
    if '"' not in text and "\\" not in text and text.count("\0") == nulls:  # no escapes
        literal = '{"' + text + '"}'
        return (literal.replace('"\0"', "NULL") if nulls else literal).encode()
    items = ["NULL" if v is None
             else '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"' for v in values]
    return ("{" + ",".join(items) + "}").encode()


_txn_values = operator.attrgetter(*_JSON_COLUMNS)


class _Binary(bytes):
    """A parameter in PostgreSQL's binary format (_param passes it on as it is; _formats)."""

    __slots__ = ()


_ARRAY_HEAD = struct.Struct("!iiiii")  # dimensions, has NULLs, element type, length, lower
_LENGTH = struct.Struct("!i")
_TEXT_OID = 25


def _text_array(values: Sequence[str]) -> _Binary:
    """A one-dimensional text array (no NULLs) in PostgreSQL's binary format: no quoting
    here, no parsing there."""
    parts = [_ARRAY_HEAD.pack(1, 0, _TEXT_OID, len(values), 1)]
    for value in values:
        data = value.encode()
        parts.append(_LENGTH.pack(len(data)))
        parts.append(data)
    return _Binary(b"".join(parts))


def _formats(values: Sequence[bytes | None]) -> list[int] | None:
    """libpq's parameter formats for ``values`` (from _param): None (every one text)
    unless one is _Binary."""
    if any(type(v) is _Binary for v in values):
        return [1 if type(v) is _Binary else 0 for v in values]
    return None


def _columns(rows: Sequence[TransactionRow]) -> list[object]:
    """Transaction rows as _TXN_INSERT_MANY's parameters: a JSON array of their values
    but the response (_JSON_COLUMNS: text, integers, null), then their responses (a text
    array, binary)."""
    return [json.dumps(list(map(_txn_values, rows))),
            _text_array([row.response for row in rows])]


def _prepare(locks: Sequence[RequestLock]) -> tuple[str, Sequence[object]]:
    """The statement that takes ``locks`` and reads their rows: pos_prepare_one for one,
    else pos_prepare_many (its arrays: tids, batches, STANs, PAN hashes, RRNs; the RRNs
    NULL, not an array of NULLs, when none is named: see _PREPARE_FNS)."""
    if len(locks) == 1:
        return _PREPARE_ONE, locks[0]
    columns: list[list[Any] | None] = [list(c) for c in zip(*locks, strict=True)]
    rrns = columns[4]
    if rrns is not None and rrns.count(None) == len(rrns):
        columns[4] = None
    return _PREPARE_MANY, columns


def _flushed(pgconn: Any) -> None:
    """Everything libpq holds for the server sent (psycopg's connections are non-blocking:
    a large pipeline may not all go out at once)."""
    while pgconn.flush():
        select.select([], [pgconn.socket], [])


def _collect(pgconn: Any, count: int, *, last: bool = True) -> Generator[None, None, list[Any]]:
    """A pipeline's ``count`` results then its sync, read as they arrive: yields whenever
    it needs more input (the caller waits for the socket and calls ``consume_input``),
    returns the results. Not psycopg's own get_result, which waits inside libpq holding
    the GIL and stopped every other thread -- the server's event loop -- for the whole
    round trip (a lock wait, a COMMIT's fsync); select (or the event loop) releases it.
    ``last`` False: another segment (results and sync) follows in the same pipeline."""
    results: list[Any] = []
    for _ in range(count):
        while pgconn.is_busy():
            yield
        res = pgconn.get_result()
        while pgconn.is_busy():
            yield
        if res is None or pgconn.get_result() is not None:  # then its end (NULL)
            raise psycopg.OperationalError("the pipeline's results ended early")
        results.append(res)
    while pgconn.is_busy():
        yield
    sync = pgconn.get_result()
    if sync is None or sync.status != pq.ExecStatus.PIPELINE_SYNC:
        raise psycopg.OperationalError("the pipeline did not end in its sync")
    if last:
        pgconn.exit_pipeline_mode()
    return results


def _waited(pgconn: Any, steps: Generator[None, None, list[Any]]) -> list[Any]:
    """Run ``steps`` (see _collect) to their end, waiting for the socket with select."""
    try:
        while True:
            next(steps)
            select.select([pgconn.socket], [], [])
            pgconn.consume_input()
    except StopIteration as done:
        results: list[Any] = done.value
        return results


class _Link:
    """One connection of the store, and what lives on it: the statements prepared there
    (query -> name; a new connection prepares them again)."""

    __slots__ = ("db", "prepared")

    def __init__(self) -> None:
        self.db: psycopg.Connection[Any] | None = None
        self.prepared: dict[str, bytes] = {}

    @property
    def alive(self) -> bool:
        db = self.db
        return db is not None and not db.closed and not db.broken

    def close(self) -> None:
        if self.db is not None:
            self.db.close()
            self.db = None
        self.prepared = {}


def commit_modes(commit_ahead: bool | None, one_trip: bool | None,
                 processes: int) -> tuple[bool, bool]:
    """How a store of a host of ``processes`` processes commits its groups: (commit_ahead,
    one_trip). What the caller says wins, then the environment (COMMIT_AHEAD_ENV,
    ONE_TRIP_ENV), then the process count.

    A host that is one process sends its COMMITs ahead: its one event loop must not wait
    out a round trip (it would read and answer nothing meanwhile). Each worker of several
    runs one round trip a group instead, and waits for it: while one worker waits, the
    kernel runs the others, and a group then costs one round trip and one wake-up, not two
    (see PostgresLedgerStore). The two exclude each other; commits ahead win when both are
    asked for."""
    if commit_ahead is None:
        ahead_env = os.environ.get(COMMIT_AHEAD_ENV)
        commit_ahead = processes <= 1 if ahead_env is None else ahead_env != "0"
    if one_trip is None:
        one_trip_env = os.environ.get(ONE_TRIP_ENV)
        one_trip = processes > 1 if one_trip_env is None else one_trip_env == "1"
    return commit_ahead, one_trip


class CommitInFlight:
    """A session's last round trip (its balances' move, held writes, COMMIT and the
    pipeline's sync), sent; its results not read yet (PostgresLedgerStore.session_ahead).

    ``poll`` reads what arrived without blocking (from the event loop, when ``fileno`` is
    readable); ``wait`` blocks until the outcome is known; ``result`` waits and raises what
    the commit raised: LedgerConflict (a balance moved, a unique violation: nothing of the
    session is kept), LedgerUnavailable (the connection failed: the COMMIT's outcome is
    unknown and the connection is closed, exactly as a session's synchronous commit). Once
    the outcome is known the connection goes back to the store (rolled back first after a
    failure). Safe from two threads (a store session may wait for it).
    """

    def __init__(self, store: PostgresLedgerStore, session: PgSession, link: _Link,
                 count: int) -> None:
        self._store = store
        # the session and its link until the outcome is known (then let go, _advance)
        self._session: PgSession | None = session
        self._link: _Link | None = link
        assert link.db is not None
        self._pgconn = link.db.pgconn
        self._fd: int = self._pgconn.socket
        self._steps: Generator[None, None, list[Any]] | None = _collect(self._pgconn, count)
        self._lock = threading.Lock()
        self._done = False
        self._error: Exception | None = None

    def fileno(self) -> int:
        """The connection's socket: readable when (part of) the answer arrived."""
        return self._fd

    @property
    def socket_open(self) -> bool:
        """Whether :meth:`fileno` is still this connection's socket: libpq closes it only
        with the connection failed or finished (its status then no longer OK), and a new
        connection is a new PGconn."""
        return bool(self._pgconn.status == pq.ConnStatus.OK)

    @property
    def done(self) -> bool:
        return self._done

    def poll(self) -> bool:
        """Read what arrived, without blocking; True once the outcome is known."""
        with self._lock:
            if not self._done:
                self._advance(consume=True)
            return self._done

    def wait(self) -> None:
        """Block (without the GIL) until the outcome is known."""
        with self._lock:
            if not self._done:
                self._advance(consume=False)
            while not self._done:
                select.select([self._fd], [], [])
                self._advance(consume=True)

    def result(self) -> None:
        """Wait for the outcome; raise the commit's error, if it failed."""
        self.wait()
        if self._error is not None:
            raise self._error

    def _advance(self, *, consume: bool) -> None:
        session, steps, link = self._session, self._steps, self._link
        # (called only while the outcome is not known: they are let go with it)
        assert session is not None
        assert steps is not None
        assert link is not None
        try:
            try:
                if consume:
                    self._pgconn.consume_input()
                next(steps)
                return  # more to read
            except StopIteration as end:
                session._checked(end.value, begin=False, commit=True)
            except psycopg.Error as exc:
                raise session._lost(exc) from exc
        except Exception as exc:  # a LedgerError; anything else is a bug: fatal for the caller
            self._error = exc
            try:
                session.rollback()
            except Exception:  # the connection is in an unknown state: a new one next time
                link.close()
        self._done = True
        self._store._landed(self)
        # The server keeps a landed commit for its socket (socket_open) until the next one
        # on the connection: it must hold nothing of its group then. Held, the session's
        # rows were alive at the server's periodic gc.freeze() and, once dropped, never
        # collected (host RSS over a soak: 1.12x from 100k to 1M rows, 1.07x without).
        self._session = self._steps = self._link = None


class OpenSession:
    """A session of :meth:`PostgresLedgerStore.session_open`: its body runs (:meth:`run`),
    then it waits, uncommitted, for :meth:`commit`, whose one round trip carries its COMMIT
    and the next session's start (PgSession.commit_then): in steady state a group costs
    one round trip, not two.

    The store's lock is held while it runs or commits, not in between (the caller -- the
    server's event loop -- reads requests meanwhile). A session of the store started in
    between (an admin read, a test) settles it first (:meth:`settle`): one that ran is
    committed then, and :meth:`commit` reports that outcome and starts no next session;
    one that has not run yet (a next session, its locks taken) is rolled back, and
    :meth:`run` raises LedgerConflict (the caller runs its work again, as after any
    conflict). Not thread-safe beyond that: one owner.
    """

    __slots__ = ("_error", "_link", "_prefetch", "_ran", "_session", "_store", "done")

    def __init__(self, store: PostgresLedgerStore,
                 prefetch: Callable[[PgSession], None] | None = None, *,
                 session: PgSession | None = None, error: LedgerError | None = None) -> None:
        self._store = store
        self._prefetch = prefetch  # run first, by run(), on a session not started yet
        self._session = session  # None: run() takes a connection and starts one
        self._link: _Link | None = None if session is None else session._link
        self._error = error  # the start's failure, raised by run()
        self._ran = False
        self.done = False  # committed, rolled back or settled: its connection given back

    def run(self, body: Callable[[PgSession], _R]) -> _R:
        """``body`` in the session (after its prefetch); a failure rolls the session back
        and raises as :meth:`PostgresLedgerStore.session` would; otherwise the session then
        waits for :meth:`commit`."""
        store = self._store
        with store._lock:
            if store._away is self:
                store._away = None
            if self._error is not None:
                raise self._error
            if self.done or self._ran:
                raise LedgerConflict(f"ledger {safe_ledger_name(store.dsn)}: a session set "
                                     "aside for another one was rolled back")
            session = self._session
            try:
                try:
                    if session is None:
                        self._link = store._take()
                        session = self._session = PgSession(store, self._link)
                        if self._prefetch is not None:
                            self._prefetch(session)
                    else:
                        session.started()
                    result = body(session)
                except BaseException:
                    self._end(rollback=True)
                    raise
            except psycopg.Error as exc:
                raise store.translate(exc, None if session is None else session._db) from exc
            self._ran = True
            store._away = self
            return result

    def commit(self, then: Callable[[PgSession], None] | None = None) -> OpenSession | None:
        """Commit the session (after :meth:`run`) and, in the same round trip, start the next
        one with ``then`` (its prefetch: lock_requests only) on this connection; returns the
        next session (None without ``then``, or when this one was settled meanwhile). This
        session's failure raises as a session's commit does (the next one is rolled back
        with it); the next session's start failing is raised by its run()."""
        store = self._store
        with store._lock:
            if store._away is self:
                store._away = None
            if self.done:  # settled meanwhile
                if self._error is not None:
                    raise self._error
                return None
            session = self._session
            assert self._ran
            assert session is not None
            try:
                try:
                    nxt = session.commit_then(then)
                except BaseException:
                    self._end(rollback=True)
                    raise
            except psycopg.Error as exc:
                raise store.translate(exc, session._db) from exc
            if nxt is None or nxt[1] is not None:
                self._end(rollback=False)
                return None if nxt is None else OpenSession(store, error=nxt[1])
            self.done = True  # its connection goes on with the next session
            opened = OpenSession(store, session=nxt[0])
            store._away = opened
            return opened

    def settle(self) -> None:
        """Under the store's lock, the owner away: commit (if it ran) or roll back now."""
        if self.done:
            return
        session = self._session
        if session is None:
            self.done = True
            return
        if not self._ran:
            self._end(rollback=True)
            return
        try:
            try:
                session.commit()
            except BaseException:
                session.rollback()
                raise
        except psycopg.Error as exc:
            self._error = self._store.translate(exc, session._db)
        except LedgerError as exc:
            self._error = exc
        finally:
            self._end(rollback=False)

    def _end(self, *, rollback: bool) -> None:
        """Done: rolled back first (``rollback``), its connection given back."""
        if self.done:
            return
        self.done = True
        if rollback and self._session is not None:
            with contextlib.suppress(LedgerError):
                self._session.started()  # (its results read before the rollback)
            self._session.rollback()
        if self._link is not None:
            self._store._give(self._link)


def _text(value: bytes | None) -> str | None:
    return None if value is None else value.decode()


def _int(value: bytes | None) -> int | None:
    return None if value is None else int(value)


def _terminal(res: Any, row: int) -> TerminalRow:
    """A terminal row from ``row`` of a pos_prepare_* / pos_terminal result (tag, then the
    TERMINAL_COLUMNS as text)."""
    v = [res.get_value(row, c) for c in range(1, 1 + len(TERMINAL_COLUMNS))]
    return TerminalRow(v[0].decode(), v[1].decode(), v[2].decode(), v[3].decode(),
                       v[4].decode(), v[5].decode(), v[6].decode(), v[7] == b"true",
                       int(v[8]), v[9] == b"true")


def _transaction(res: Any, row: int, at: int = 0) -> TransactionRow:
    """A transaction row from ``row`` of ``res``, its columns (TXN_COLUMNS) from ``at`` on."""
    v = [res.get_value(row, c) for c in range(at, at + len(TXN_COLUMNS))]
    return TransactionRow(
        v[0].decode(), v[1].decode(), v[2].decode(), v[3].decode(), v[4].decode(),
        v[5].decode(), v[6].decode(), v[7].decode(), v[8].decode(), v[9].decode(),
        _text(v[10]), _text(v[11]), _text(v[12]), _int(v[13]), _text(v[14]), _text(v[15]),
        _text(v[16]), _text(v[17]), int(v[18]), _text(v[19]))


Key3 = tuple[str, str, str]  # (tid, batch, stan): what a request's lock is on


class _Prepared:
    """What pos_prepare_many brought back for the requests it locked: the rows each
    booking reads next (absent: there is no such row)."""

    __slots__ = ("batches", "keys", "originals", "spent", "terminals", "tombstones", "txns")

    def __init__(self, locks: Sequence[RequestLock], res: Any) -> None:
        self.keys: set[Key3] = set()
        self.txns: dict[Key3, dict[str, TransactionRow]] = {}
        self.tombstones: dict[Key3, TombstoneRow] = {}
        self.batches: dict[tuple[str, str], BatchRow] = {}
        self.originals: dict[str, TransactionRow | None] = {}
        self.spent: dict[str, int] = {}
        self.terminals: dict[str, TerminalRow | None] = {}
        for tid, batch, stan, pan_hash, rrn in locks:
            self.keys.add((tid, batch, stan))
            self.terminals[tid] = None
            if pan_hash is not None:
                self.spent[pan_hash] = 0
            if rrn is not None:
                self.originals[rrn] = None
        get = res.get_value
        for r in range(res.ntuples):
            tag = get(r, 0)
            if tag == b"k":
                row = _transaction(res, r, 1)
                self.txns.setdefault((row.tid, row.batch, row.stan), {})[row.mti] = row
            elif tag == b"o":
                row = _transaction(res, r, 1)
                self.originals[row.rrn or ""] = row
            elif tag == b"x":  # a request's terminal, batch, tombstone, card (_SIDE_TEXT)
                v = [get(r, c) for c in range(1, 21)]
                tid, batch = v[0].decode(), v[1].decode()
                if v[2] is not None:
                    self.terminals[tid] = TerminalRow(
                        tid, v[2].decode(), v[3].decode(), v[4].decode(), v[5].decode(),
                        v[6].decode(), v[7].decode(), v[8] == b"true", int(v[9]),
                        v[10] == b"true")
                if v[11] is not None:
                    balanced = v[14]
                    self.batches[(tid, batch)] = BatchRow(
                        tid, batch, v[11] == b"true", v[12].decode(), v[13].decode(),
                        None if balanced is None else balanced == b"true")
                if v[15] is not None:
                    key = (tid, batch, v[15].decode())
                    self.tombstones[key] = TombstoneRow(*key, _text(v[16]), _int(v[17]))
                if v[18] is not None:
                    self.spent[v[18].decode()] = int(v[19])
            elif tag == b"p":  # a card's balance (pos_prepare_many_v2: once a card)
                self.spent[get(r, 1).decode()] = int(get(r, 2))

    def covers(self, tid: str, batch: str, stan: str, pan_hash: str | None,
               rrn: str | None) -> bool:
        """Whether these rows were read (and these locks taken) for this request."""
        return (tid, batch, stan) in self.keys and tid in self.terminals \
            and (pan_hash is None or pan_hash in self.spent) \
            and (rrn is None or rrn in self.originals)


class PgSession(SqlSession):
    """The shared SQL session with PostgreSQL's locks, sequence, booleans and batched writes.

    The statements every request runs go straight through libpq (prepared once per
    connection, text parameters and results): psycopg's cursor machinery costs
    several times PostgreSQL's own work on them. Writes are held back and sent as
    one statement per table (rows as arrays) when the session next reads something
    they could change, or at commit; a read they cannot change (another terminal,
    another request key, another RRN) does not wait for them.
    """

    lock_suffix = " FOR UPDATE"
    lock_first = True  # the terminal's row comes with the request's lock (pos_prepare)

    def __init__(self, store: PostgresLedgerStore, link: _Link) -> None:
        super().__init__(self._read)
        self._store = store
        self._link = link  # the store's connection this session runs on (and its statements)
        assert link.db is not None
        self._db: psycopg.Connection[Any] = link.db
        # writes not sent yet: bookings in order, then upserts (latest state per key)
        self._inserts: list[TransactionRow] = []
        self._upserts: dict[TxnKey, TransactionRow] = {}
        self._refunds: dict[str, tuple[str, str, int, str]] = {}
        self._others: list[tuple[str, Sequence[object]]] = []
        self._dirty: set[tuple[str, ...]] = set()  # what the held writes touch (see _clean)
        # what every write since lock_requests touched (held or sent: never cleared), and
        # the rows lock_requests read then: one is served only while nothing touched it
        self._touched: set[tuple[str, ...]] = set()
        self._prefetched: _Prepared | None = None
        # rows read with lock_request, each served once (a write replaces it)
        self._tombstones: dict[tuple[str, str, str], TombstoneRow | None] = {}
        self._batches: dict[tuple[str, str], BatchRow | None] = {}
        self._requests: dict[tuple[str, str, str], dict[str, TransactionRow]] = {}
        # terminal rows read with lock_request, each served once; a TID the host has read
        # in this session is read afresh (terminal) rather than with a later lock
        self._terminals: dict[str, TerminalRow | None] = {}
        self._terminals_read: set[str] = set()
        # originals read and locked with lock_request (by RRN), until this session writes them
        self._originals: dict[str, TransactionRow | None] = {}
        # card balances: read without a lock, moved at commit (see flush)
        self._seen: dict[str, int] = {}
        self._moves: dict[str, list[tuple[int, int | None]]] = {}
        self.replay = False  # store.commit(): a BalanceRow's spent is stored as it is
        # BEGIN goes out with the session's first statement (the same round trip), COMMIT
        # with its last held writes (commit); nothing sent at all: nothing to commit
        self._begun = False
        # the next session of commit_then while its start is built: lock_requests' locks go
        # here, to ride in the previous session's COMMIT round trip (None: not deferred)
        self._deferred: list[RequestLock] | None = None
        # its start, sent, its results not read yet (read by started())
        self._start: tuple[list[RequestLock], Generator[None, None, list[Any]]] | None = None

    # --- statements --------------------------------------------------------------
    def _read(self, query: str, params: Sequence[object]) -> Any:
        """Any other statement, through psycopg, after every held write."""
        self._send_writes()
        if not self._begun:
            self._exec_many([])  # BEGIN alone: psycopg's statements are not pipelined
        try:
            return self._db.execute(self._store.sql(query), params)
        except psycopg.Error as exc:
            raise self._store.translate(exc, self._db) from exc

    def _exec(self, query: str, params: Sequence[object]) -> Any:
        """``query`` through libpq: prepared on this connection once, then executed."""
        if not self._begun:
            return self._exec_many([(query, params)])[0]
        pgconn = self._db.pgconn
        values: list[Any] = [_param(p) for p in params]  # None is NULL (typeshed says bytes)
        try:
            res = pgconn.exec_prepared(self._store.prepared(query, self._link), values,
                                       _formats(values))
        except psycopg.Error as exc:  # libpq gave no result at all (a closed connection)
            raise self._store.translate(exc, self._db) from exc
        if res.status not in _OK:
            raise self._store.failed(res, self._link)
        return res

    def _clean(self, *marks: tuple[str, ...]) -> None:
        """Send the held writes first when one of them touches what a read is about to see.

        Marks: ("t", tid) terminal, ("k", tid, batch, stan) a request's rows and tombstone,
        ("b", tid, batch) batch, ("r", rrn) a transaction by RRN, ("p", pan_hash) balance.
        """
        dirty = self._dirty
        if dirty and any(m in dirty for m in marks):
            self._send_writes()

    def _exec_many(self, statements: Sequence[tuple[str, Sequence[object]]], *,
                   commit: bool = False) -> list[Any]:
        """``statements`` in one round trip (libpq's pipeline mode), their results in order;
        BEGIN goes ahead of the session's first, COMMIT after them when ``commit``.

        The first that fails raises (as :meth:`_exec`; the rest, COMMIT too, are aborted
        with it); a connection that fails halfway is closed (LedgerUnavailable: the next
        session reconnects). One found dead at the session's first round trip (a server
        restart, an idle timeout) is replaced once, as nothing of the session is lost yet
        (that round trip never carries COMMIT).
        """
        if self._begun:
            if len(statements) == 1 and not commit:
                return [self._exec(*statements[0])]
            return self._pipeline(statements, commit=commit)
        if self._deferred is not None:  # the previous session's transaction is still open
            raise LedgerError("only lock_requests may run before a session of commit_then "
                              "has started")
        self._begun = True
        try:
            results = self._pipeline(statements, begin=True)
        except LedgerError:
            if self._db.pgconn.status == pq.ConnStatus.OK:
                raise
            self._db = self._store.reconnect(self._link)
            results = self._pipeline(statements, begin=True)
        if commit:
            self._pipeline([], commit=True)
        return results

    def _pipeline(self, statements: Sequence[tuple[str, Sequence[object]]], *,
                  begin: bool = False, commit: bool = False) -> list[Any]:
        """One round trip: [BEGIN,] ``statements`` [, COMMIT] (see _exec_many)."""
        pgconn = self._db.pgconn
        try:
            count = self._send(statements, begin=begin, commit=commit)
            results = _waited(pgconn, _collect(pgconn, count))
        except psycopg.Error as exc:
            raise self._lost(exc) from exc
        return self._checked(results, begin=begin, commit=commit)

    def _send(self, statements: Sequence[tuple[str, Sequence[object]]], *,
              begin: bool = False, commit: bool = False) -> int:
        """[BEGIN,] ``statements`` [, COMMIT] and a sync, sent in one pipeline (libpq's
        pipeline mode); returns how many results it will bring back (see _collect)."""
        pgconn = self._db.pgconn
        names = [self._store.prepared(query, self._link) for query, _ in statements]
        pgconn.enter_pipeline_mode()
        self._segment(names, statements, begin=begin, commit=commit)
        _flushed(pgconn)
        return begin + len(statements) + commit

    def _segment(self, names: Sequence[bytes], statements: Sequence[tuple[str, Sequence[object]]],
                 *, begin: bool, commit: bool) -> None:
        """Queue [BEGIN,] ``statements`` (prepared as ``names``) [, COMMIT] and a sync in the
        pipeline (see _send)."""
        pgconn = self._db.pgconn
        if begin:
            pgconn.send_query_params(b"BEGIN", None)
        for name, (_, params) in zip(names, statements, strict=True):
            values = [_param(p) for p in params]
            pgconn.send_query_prepared(name, values, _formats(values))
        if commit:
            pgconn.send_query_params(b"COMMIT", None)
        pgconn.pipeline_sync()

    def _lost(self, exc: psycopg.Error) -> LedgerUnavailable:
        """The connection failed halfway through a pipeline: its state is unknown now (and
        so is a COMMIT's outcome, if it carried one); closed: the next session opens
        another."""
        self._db.close()
        return LedgerUnavailable(f"ledger {safe_ledger_name(self._store.dsn)}: {exc}")

    def _checked(self, results: list[Any], *, begin: bool, commit: bool) -> list[Any]:
        """A pipeline's results, its statements' own (not BEGIN's or COMMIT's); raises
        for the first that failed (the rest were aborted with it, COMMIT too)."""
        for res in results:
            if res.status not in _OK:  # the first failure (the rest: PIPELINE_ABORTED)
                raise self._store.failed(res, self._link)
        if commit and results[-1].command_status != b"COMMIT":  # an earlier failure's
            raise LedgerConflict(f"ledger {safe_ledger_name(self._store.dsn)}: "
                                 "the transaction had failed: rolled back")
        return results[begin:len(results) - commit]

    def rollback(self) -> None:
        """After a failure: end the session's transaction, if it is still open (a
        connection in an unknown state is closed: the next session opens another)."""
        db = self._db
        if db.closed:
            return
        status = db.pgconn.transaction_status
        if status == pq.TransactionStatus.IDLE:
            return
        if status in (pq.TransactionStatus.INTRANS, pq.TransactionStatus.INERROR):
            try:
                res = db.pgconn.exec_(b"ROLLBACK")
            except psycopg.Error:
                res = None
            if res is not None and res.status == pq.ExecStatus.COMMAND_OK:
                return
        db.close()

    def _send_writes(self, first: tuple[str, Sequence[object]] | None = None, *,
                     commit: bool = False) -> Any:
        """Send every held write, in one round trip; ``first``: a statement to send ahead
        of them in the same round trip (its result is returned); ``commit``: COMMIT after
        them, in the same round trip."""
        statements = self._held(first)
        if not statements and (not commit or not self._begun):
            return None  # (a session that sent nothing has nothing to commit)
        results = self._exec_many(statements, commit=commit)
        return results[0] if first is not None else None

    def _held(self, first: tuple[str, Sequence[object]] | None = None,
              ) -> list[tuple[str, Sequence[object]]]:
        """The held writes as statements (``first`` ahead of them), no longer held."""
        statements: list[tuple[str, Sequence[object]]] = [] if first is None else [first]
        if self._inserts:
            rows, self._inserts = self._inserts, []
            statements.append(_txn_writes(rows, _TXN_INSERT_MANY, _TXN_INSERT_FEW))
        if self._upserts:
            rows = list(self._upserts.values())
            self._upserts.clear()
            statements.append(_txn_writes(rows, _TXN_UPSERT_MANY, _TXN_UPSERT_FEW))
        if self._refunds:
            refunds = list(self._refunds.values())
            self._refunds.clear()
            statements.append((_REFUND_UPSERT_FEW[len(refunds)],
                               [v for refund in refunds for v in refund])
                              if len(refunds) <= _FEW else
                              (_REFUND_UPSERT_MANY, [list(c) for c in zip(*refunds, strict=True)]))
        if self._others:
            others, self._others = self._others, []
            statements.extend(others)
        self._touched |= self._dirty
        self._dirty.clear()
        return statements

    def flush(self) -> None:
        """Move the card balances, then send the writes still held (see commit)."""
        self._flush(commit=False)

    def commit(self) -> None:
        """The session's end: flush, with COMMIT in the last round trip."""
        self._flush(commit=True)

    def commit_ahead(self) -> CommitInFlight | None:
        """:meth:`commit`, its last round trip sent and not waited for: its results are
        read through the CommitInFlight returned (None: nothing to commit, the session
        sent nothing). A session whose only round trip would be this one sends its BEGIN
        and writes first and waits for them (a first round trip never carries COMMIT,
        see _exec_many)."""
        statements = self._held(self._balance_move())
        if not self._begun:
            if not statements:
                return None
            self._exec_many(statements)
            statements = []
        try:
            count = self._send(statements, commit=True)
        except psycopg.Error as exc:
            raise self._lost(exc) from exc
        return CommitInFlight(self._store, self, self._link, count)

    def commit_then(self, then: Callable[[PgSession], None] | None,
                    ) -> tuple[PgSession, LedgerError | None] | None:
        """:meth:`commit`, and the next session's start in the same round trip.

        ``then`` (the next group's prefetch) runs first on a new session of this connection
        whose lock_requests only notes its locks; one pipeline then carries [this session's
        balance move, held writes, COMMIT, sync][BEGIN, pos_prepare_* of those locks, sync].
        PostgreSQL runs them in order: the next session's locks are taken after this COMMIT
        released this session's, and it reads what this session wrote. Returns once this
        COMMIT's result is read, with the next session, its start's results left to
        :meth:`started` (the caller answers this session's requests meanwhile, while
        PostgreSQL runs the start), and a failure of a start already made (else None);
        None when ``then`` is None (committed alone).

        This session's failure raises, as :meth:`commit` (LedgerConflict: nothing kept;
        LedgerUnavailable: the connection failed before its COMMIT's answer, outcome
        unknown, connection closed); the next session's transaction, if it began, is on
        the same connection and ends with the caller's rollback (a failed transaction's
        BEGIN fails too: it took no lock then). Only lock_requests may run in ``then``.
        A session that sent nothing yet (its first round trip never carries COMMIT) or a
        next one with no locks: committed alone, the next session's start sent after it.
        """
        if then is None:
            self.commit()
            return None
        nxt = PgSession(self._store, self._link)
        locks: list[RequestLock] = []
        nxt._deferred = locks
        try:
            then(nxt)
        finally:
            nxt._deferred = None
        if not locks or not self._begun:
            self.commit()
            try:
                nxt.lock_requests(locks)
            except LedgerError as exc:
                nxt.rollback()
                return nxt, exc
            return nxt, None
        statements = self._held(self._balance_move())
        start = [_prepare(locks)]
        pgconn = self._db.pgconn
        try:
            prepared = self._store.prepared
            names = [prepared(query, self._link) for query, _ in statements]
            starts = [prepared(query, self._link) for query, _ in start]
            pgconn.enter_pipeline_mode()
            self._segment(names, statements, begin=False, commit=True)
            self._segment(starts, start, begin=True, commit=False)
            _flushed(pgconn)
            ours = _waited(pgconn, _collect(pgconn, len(statements) + 1, last=False))
        except psycopg.Error as exc:
            raise self._lost(exc) from exc
        nxt._begun = True
        nxt._start = (locks, _collect(pgconn, 1 + len(start)))
        try:
            self._checked(ours, begin=False, commit=True)
        except LedgerError:  # the start's results are read first (then the caller's rollback)
            with contextlib.suppress(LedgerError):
                nxt.started()
            raise
        return nxt, None

    def started(self) -> None:
        """A session of :meth:`commit_then`: read its start's results (they were sent behind
        the previous COMMIT), as lock_requests would have; raises its failure (the session
        is to be rolled back then). Nothing to read: nothing done."""
        pending = self._start
        if pending is None:
            return
        self._start = None
        locks, steps = pending
        try:
            results = _waited(self._db.pgconn, steps)
        except psycopg.Error as exc:
            raise self._lost(exc) from exc
        res = self._checked(results, begin=True, commit=False)[0]
        self._touched = set()
        self._prefetched = _Prepared(locks, res)

    def _flush(self, *, commit: bool) -> None:
        """Before COMMIT: move the card balances, then send the writes still held.

        Every balance this session moved is read again, locked, in PAN-hash order
        (two sessions lock hot cards in the same order, so they never deadlock on
        them, and hold them only from here to COMMIT); the moves are replayed on the
        locked value and a sale that no longer fits its card (another process spent
        it meanwhile) raises LedgerConflict: the session runs again and declines it.
        All of it in PostgreSQL (pos_move_balances), sent ahead of the writes held and,
        at the session's end, COMMIT: one round trip.
        """
        self._send_writes(self._balance_move(), commit=commit)

    def _balance_move(self) -> tuple[str, Sequence[object]] | None:
        """pos_move_balances for the card balances this session moved (see _flush), or
        None; the moves are no longer held."""
        if not self._moves:
            return None
        pans = sorted(self._moves)
        totals: list[int] = []
        rooms: list[int | None] = []
        for pan in pans:  # spent + each prefix of the moves <= its limit: spent <= room
            net, room = 0, None
            for delta, limit in self._moves[pan]:
                net += delta
                if limit is not None and (room is None or limit - net < room):
                    room = limit - net
            totals.append(net)
            rooms.append(room)
        self._moves.clear()
        return (_BALANCES_MOVE, (pans, totals, rooms))  # ahead of the writes held

    # --- writes: held until a read needs them, or the commit --------------------------
    def book(self, row: TransactionRow) -> None:
        mark = ("k", row.tid, row.batch, row.stan)
        if row.key in self._upserts:  # keep the order: a booking after a write of its key fails
            self._send_writes()
        self._requests.pop(row.key[:3], None)
        self._inserts.append(row)
        self._held_txn(row, mark)

    def _held_txn(self, row: TransactionRow, mark: tuple[str, ...]) -> None:
        self._dirty.add(mark)
        if row.rrn is not None:
            self._dirty.add(("r", row.rrn))
            self._originals.pop(row.rrn, None)
        if row.kind == "refund" and row.original is not None:
            refund_key = key_text(row.key)
            self._refunds[refund_key] = (refund_key, row.original, row.amount or 0, row.status)

    def write(self, records: Sequence[LedgerRecord]) -> None:
        for record in records:
            if isinstance(record, TransactionRow):
                self._requests.pop(record.key[:3], None)
                self._upserts.pop(record.key, None)  # the latest state, after the bookings
                self._upserts[record.key] = record
                self._held_txn(record, ("k", record.tid, record.batch, record.stan))
                continue
            if isinstance(record, BalanceRow) and not self.replay:
                self._moves.setdefault(record.pan_hash, []).append((record.delta, record.limit))
                continue
            self._others.extend(self.statements(record))
            if isinstance(record, TerminalRow):
                self._terminals.pop(record.tid, None)
                self._dirty.add(("t", record.tid))
            elif isinstance(record, TombstoneRow):
                self._tombstones[(record.tid, record.batch, record.stan)] = record
                self._dirty.add(("k", record.tid, record.batch, record.stan))
            elif isinstance(record, BatchRow):
                self._batches[(record.tid, record.batch)] = record
                self._dirty.add(("b", record.tid, record.batch))
            elif isinstance(record, BalanceRow):
                self._dirty.add(("p", record.pan_hash))
            else:  # uploads: read only through psycopg (which sends every held write)
                pass

    # --- reads ---------------------------------------------------------------------
    def terminal(self, tid: str) -> TerminalRow | None:
        self._terminals_read.add(tid)
        if tid in self._terminals:  # read with lock_request, just now
            return self._terminals.pop(tid)
        self._clean(("t", tid))
        res = self._exec(_TERMINAL_BY_TID, (tid,))
        return _terminal(res, 0) if res.ntuples else None

    def lock_request(self, tid: str, batch: str, stan: str,
                     pan_hash: str | None = None, rrn: str | None = None) -> None:
        # A request and its reversal may reach two processes at once; neither row
        # exists yet, so a row lock cannot order them: a transaction-scoped advisory
        # lock on the request's key does (READ COMMITTED: what follows sees the other).
        # The rows the booking reads next (the request's own key, its tombstone, its
        # batch, the card's balance, the terminal's row when the host has not read it in
        # this session: lock_first; the original ``rrn`` names, locked) come back in the
        # same statement, read after the lock (pos_prepare_one, in the schema above) --
        # or came back with the group's (lock_requests), if nothing this session wrote
        # since touched them.
        marks = (("k", tid, batch, stan), ("b", tid, batch), ("t", tid), ("r", rrn or ""))
        pre = self._prefetched
        if pre is not None and pre.covers(tid, batch, stan, pan_hash, rrn):
            touched, dirty = self._touched, self._dirty
            if any(m in touched or m in dirty for m in marks):
                self._store.prefetch_stale += 1
                pre = None
            else:
                self._store.prefetch_used += 1
        else:
            pre = None
        if pre is None:
            self._clean(*marks)
            pre = _Prepared([(tid, batch, stan, pan_hash, rrn)],
                            self._exec(*_prepare([(tid, batch, stan, pan_hash, rrn)])))
        key = (tid, batch, stan)
        if rrn is not None:
            self._originals[rrn] = pre.originals[rrn]
        self._requests[key] = pre.txns.get(key) or {}
        self._tombstones[key] = pre.tombstones.get(key)
        self._batches[(tid, batch)] = pre.batches.get((tid, batch))
        if pan_hash is not None and pan_hash not in self._seen:
            self._seen[pan_hash] = pre.spent[pan_hash]
        if tid not in self._terminals_read:
            self._terminals[tid] = pre.terminals[tid]

    def lock_requests(self, locks: Sequence[RequestLock]) -> None:
        """Every lock_request of a group at once, before its requests run: one round trip.

        The locks are taken in one fixed order (see pos_prepare_many) and held to the
        commit; each request's rows are served to its lock_request later unless a write of
        this session touched them meanwhile (then that request reads them again). A lock
        not granted in time raises LedgerConflict (the server runs the group again, one
        request per session).
        """
        if not locks:
            return
        if self._deferred is not None:  # sent after the previous session's COMMIT
            self._deferred.extend(locks)
            return
        self._send_writes()  # the reads below see every write of the session so far
        self._touched = set()
        self._prefetched = _Prepared(locks, self._exec(*_prepare(locks)))

    def lock_batch(self, tid: str, batch: str) -> None:
        # Every sale, void, refund and reversal of the batch holds this lock shared until
        # its commit (pos_prepare): the settlement's totals, read after it, count each
        # one booked before, and each one booked after sees the batch settled.
        self._exec("SELECT pg_advisory_xact_lock(8584, hashtext(?::text || '/' || ?::text))",
                   (tid, batch))

    def transaction(self, key: TxnKey, *, lock: bool = False) -> TransactionRow | None:
        same = self._requests.pop(key[:3], None)
        if same is not None and not lock:
            return same.get(key[3])
        self._clean(("k", *key[:3]))
        res = self._exec(_TXN_BY_KEY + (self.lock_suffix if lock else ""), key)
        return _transaction(res, 0) if res.ntuples else None

    def original_by_rrn(self, rrn: str) -> TransactionRow | None:
        if rrn in self._originals:  # read and locked with lock_request
            return self._originals.pop(rrn)
        self._clean(("r", rrn))
        res = self._exec(_TXN_BY_RRN + self.lock_suffix, (rrn,))
        return _transaction(res, 0) if res.ntuples else None

    def transaction_by_rrn(self, rrn: str) -> TransactionRow | None:
        self._clean(("r", rrn))
        res = self._exec(_TXN_BY_RRN, (rrn,))
        return _transaction(res, 0) if res.ntuples else None

    def tombstone(self, tid: str, batch: str, stan: str) -> TombstoneRow | None:
        key = (tid, batch, stan)
        if key in self._tombstones:  # read with the lock, once
            return self._tombstones.pop(key)
        return super().tombstone(tid, batch, stan)

    def batch(self, tid: str, batch: str) -> BatchRow | None:
        if (tid, batch) in self._batches:
            return self._batches.pop((tid, batch))
        return super().batch(tid, batch)

    def spent(self, pan_hash: str) -> int:
        """The balance as read (no lock), with this session's own moves (see flush)."""
        if pan_hash not in self._seen:
            self._clean(("p", pan_hash))
            res = self._exec(_BALANCE_SELECT, (pan_hash,))
            self._seen[pan_hash] = int(res.get_value(0, 0)) if res.ntuples else 0
        return self._seen[pan_hash] + sum(d for d, _ in self._moves.get(pan_hash, ()))

    def rrn_block(self) -> list[int]:
        """``RRN_BLOCK`` fresh numbers from the sequence (no held write matters to it)."""
        res = self._exec(_RRNS, (RRN_BLOCK,))
        return [int(res.get_value(i, 0)) for i in range(res.ntuples)]

    def next_rrn(self) -> str:
        return f"{self._store.next_rrn(self):012d}"

    @staticmethod
    def flag(value: bool) -> object:
        return value


class PostgresLedgerStore:
    """The ledger in a PostgreSQL database (one store per process).

    ``schema`` keeps the tables in a schema of their own (tests give each test one).

    One session runs at a time (``session``, ``session_ahead``), on one of the store's
    connections (each with its own prepared statements): one connection, or two when
    ``commit_ahead`` lets a session's COMMIT be in flight while the next session runs
    (``session_ahead``, for the server's GroupCommitter). A connection is opened when
    first needed, and one found dead is replaced.

    ``commit_ahead`` and ``one_trip`` None: see commit_modes (the environment, else by
    ``processes``, the processes of the host this store serves: commits ahead in a host of
    one process, one round trip a group in each worker of several).

    Why each worker of several runs one round trip a group. Measured on the 2-core KVM
    machine (bench.host_load --configs pg1,pg2 --rate 0, alternated, 1 worker with commits
    ahead in both), 2 workers with commits ahead vs with one round trip a group: host CPU
    a transaction 1.15-1.19x 1 worker's in 4 runs vs 1.09-1.11x in 5; TPS 0.95-1.02x vs
    0.98-1.03x. Two workers on two cores with PostgreSQL and the load generator
    oversubscribe them: a worker that waits for its group's first round trip sleeps and
    wakes on a CPU whose caches the others used (voluntary context switches a
    transaction: 0.12 with commits ahead, 0.07 with one round trip; 1 worker 0.02); a
    worker that waits on its one round trip leaves its CPU to the others meanwhile.
    Instructions a transaction (bench.host_instructions), 2 workers vs 1: 1.025x with
    commits ahead, 1.005x with one round trip a group.

    Commits ahead in a host of one process: on by
    default since the server starts a group early only when enough requests queued
    (server.AHEAD_AT, 12): paced at 1,000 TPS on the 2-core VM (paced2 pg W 10 1000,
    off/on alternating, load 0.6-2.1, nothing else running), p99 was lower with it on in
    every one of 11 pairs with 1 worker (off 36.2-101.9 ms, on 31.8-66.9; <= 50 ms in 2
    of 8 off runs and 5 of 8 on) and 3 of 3 with 2 workers (off 79.8-199.6, on
    25.9-51.0). The worker is then inside a group ~70 % of the time instead of ~90 %:
    the loop reads and answers while a COMMIT is in flight, and a queue that grew past
    the threshold (a hiccup) starts its group at once on the second connection instead
    of waiting a round trip. Starting every group early (threshold 1) had made groups
    small and cost CPU: measured before, p99 higher in 7 of 10 pairs, host CPU a
    request 7-20 % higher (paced2, load 1.0-2.3: p99 1 worker 39.5/61.5/112.2 off vs
    70.7/93.6/46.0 ms on; 2 workers 23.6/25.5/30.9 vs 53.4/107.5/49.1 ms).

    ``one_trip``: whether the server runs its groups with :meth:`session_open` (a group's
    COMMIT carries the next group's start: one round trip a group in steady state; see
    OpenSession); only with commits ahead off (they exclude each other). In a host of one
    process, measured before commits ahead were on by default: a group that takes one
    round trip less takes fewer requests, and its fixed cost (host and PostgreSQL) is
    then spread over fewer. Measured on the 2-core VM with the other helpers' work
    running (load 4-12, so every run at 1,000 TPS was saturated: 433-927 TPS served),
    paced2 pg W 10 1000, off/on alternating, 9 pairs each: p99 lower with it on in 4 of
    9 pairs (1 worker) and 3 of 9 (2 workers); the host's CPU a request higher on in 7
    of 9 and 6 of 9 (1 worker: off 0.408-0.500, on 0.413-0.519 ms; 2 workers:
    0.439-0.549 vs 0.465-0.587); PostgreSQL's CPU a request lower on in 7 of 9 and 5 of
    9 (1 worker: 0.108-0.130 vs 0.094-0.117 ms). At 500 TPS (1 worker, 3 pairs, load
    ~10): p99 74.4/96.6/163.6 off vs 105.2/66.9/41.1 ms on, host CPU 0.550/0.606/0.613
    vs 0.562/0.661/0.794 ms a request (the last pair's groups: 5.8 records on, 13.1
    off). In a calmer hour (load 1.2-4.9, 9 more pairs each, most runs served 986-999
    TPS): p99 lower on in 7 of 9 pairs (1 worker) and 4 of 9 (2 workers); the host's CPU
    a request higher on in 7 of 9 and 5 of 9 (by 0-4% in the pairs whose two runs kept
    up alike; e.g. 1 worker p99 54.9 off vs 39.2 ms on, host 0.545 vs 0.556 ms; 2
    workers 38.2 vs 52.2 ms, 0.772 vs 0.774 ms). A run either keeps up (groups of 5-15
    records, p99 30-60 ms, more CPU a request) or falls behind for good (groups of
    35-65, p99 150-1,650 ms), on or off: that decides p99 more than this does. Not
    measured with PostgreSQL a network hop away (where a round trip costs more and it
    should pay).
    """

    multi_process = True

    def __init__(self, dsn: str, *, schema: str | None = None,
                 commit_ahead: bool | None = None, one_trip: bool | None = None,
                 processes: int = 1) -> None:
        commit_ahead, one_trip = commit_modes(commit_ahead, one_trip, processes)
        #: whether the server should run groups with session_open (see OpenSession)
        self.one_trip = one_trip
        self._away: OpenSession | None = None  # a session_open session, its owner away
        self.dsn = dsn
        self.schema = schema
        self._lock = threading.Lock()  # held by the session running (one at a time)
        self._pool = threading.Lock()  # the connections' bookkeeping
        self._size = 2 if commit_ahead else 1
        self._links: list[_Link] = []  # every connection, at most _size
        self._idle: list[_Link] = []  # those no session and no COMMIT in flight holds
        self._flights: deque[CommitInFlight] = deque()  # COMMITs in flight, oldest first
        self._sql: dict[str, str] = {}
        self._rrns: list[int] = []  # taken from the sequence, not handed out yet
        # requests whose rows came with their group's lock_requests, and those read again
        # because a write of the session touched them first
        self.prefetch_used = 0
        self.prefetch_stale = 0
        try:
            link = self._take()
            self._give(link)
            assert link.db is not None
            db = link.db
            secret = self._schema_in_place(db)
            if secret is None:
                with db.transaction():
                    db.execute("SET LOCAL lock_timeout = 0")  # wait for another opener's DDL
                    db.execute("SELECT pg_advisory_xact_lock(8583)")  # one schema creator
                    db.execute(_SCHEMA)
                    self._migrate(db)
                    state = db.execute(_SCHEMA_STATE).fetchone()
                    db.execute("INSERT INTO meta (name, value) VALUES ('schema_mark', %s) "
                               "ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                               (_schema_mark(state[2] if state is not None else None),))
                db.execute("INSERT INTO meta (name, value) VALUES ('pan_key', %s) "
                           "ON CONFLICT DO NOTHING", (secrets.token_bytes(32),))
                row = db.execute("SELECT value FROM meta WHERE name = 'pan_key'").fetchone()
                assert row is not None
                secret = bytes(row[0])
            self._secret = secret
        except psycopg.Error as exc:
            self.close()
            raise LedgerError(f"cannot open ledger {safe_ledger_name(dsn)}: {exc}") from exc
        except LedgerError:
            self.close()
            raise

    def __repr__(self) -> str:
        return f"PostgresLedgerStore({safe_ledger_name(self.dsn)!r}, schema={self.schema!r})"

    @property
    def secret(self) -> bytes:
        return self._secret

    @property
    def commits_ahead(self) -> int:
        """How many sessions' COMMITs may be in flight while another session runs
        (``session_ahead``; 0 with ``commit_ahead`` off)."""
        return self._size - 1

    @property
    def _db(self) -> psycopg.Connection[Any] | None:
        """The connection the next session takes (the one used last), if open."""
        with self._pool:
            links = self._idle or self._links
            return links[-1].db if links else None

    def _take(self) -> _Link:
        """A connection for a session (under ``_lock``): an idle one, a new one while the
        store has fewer than its size, else the one whose COMMIT was sent first, once its
        outcome is known (waited for here). One found dead is replaced."""
        while True:
            with self._pool:
                if self._idle:
                    link = self._idle.pop()
                    break
                if len(self._links) < self._size:
                    link = _Link()
                    self._links.append(link)
                    break
                oldest = self._flights[0] if self._flights else None
            if oldest is None:  # every connection is in a session: a caller's bug
                raise LedgerError("no connection free for a session")
            oldest.wait()  # its connection comes back (_landed)
        if not link.alive:
            try:
                self._open(link)
            except BaseException:
                self._give(link)
                raise
        return link

    def _give(self, link: _Link) -> None:
        with self._pool:
            self._idle.append(link)

    def _landed(self, flight: CommitInFlight) -> None:
        """``flight``'s outcome is known: its connection is free again."""
        link = flight._link
        assert link is not None  # (let go by the flight only after this)
        with self._pool:
            self._flights.remove(flight)
            self._idle.append(link)

    def _open(self, link: _Link) -> None:
        """A new connection on ``link`` (the old one closed, its statements forgotten)."""
        link.close()
        try:
            # startup parameters, not SETs (two round trips fewer an opening: a restart's
            # first one waits on them): statements sent through libpq carry UTF-8 text
            # (see PgSession._exec); a lock not granted soon is a conflict (rerun), not a
            # wait: two processes' groups that lock the same originals in two orders would
            # otherwise wait for PostgreSQL's deadlock check (deadlock_timeout, 1 s) every
            # time. No JIT: with seq scans off (_PLAN_OPTIONS) a statement that has no index
            # path is costed past jit_above_cost and JIT-compiled at every execution (~200 ms
            # for a LIMIT 1 over terminals); the host's statements are short
            db = psycopg.connect(
                self.dsn, autocommit=True, client_encoding="UTF8",
                options=f"{_options(self.dsn)} -c lock_timeout={LOCK_TIMEOUT_MS}ms -c jit=off")
        except psycopg.OperationalError as exc:
            raise LedgerUnavailable(
                f"cannot reach ledger {safe_ledger_name(self.dsn)}: {exc}") from exc
        try:
            # our own prepared statements (prepared): psycopg's would make its ROLLBACK send
            # DEALLOCATE ALL, which drops ours too
            db.prepare_threshold = None
            if self.schema is not None:
                db.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(
                    sql.Identifier(self.schema)))
                db.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(self.schema)))
        except BaseException as exc:
            db.close()  # not left open behind a failed set-up
            if isinstance(exc, psycopg.OperationalError):
                raise LedgerUnavailable(
                    f"cannot reach ledger {safe_ledger_name(self.dsn)}: {exc}") from exc
            raise
        link.db = db

    @staticmethod
    def _schema_in_place(db: psycopg.Connection[Any]) -> bytes | None:
        """The PAN key when this code's schema is in place as its last run left it, else
        None (run the DDL). One round trip instead of the DDL's transaction, whose
        CREATE OR REPLACE FUNCTIONs cost PostgreSQL 12-30 ms and which every opener runs
        one after the other (the advisory lock): a restart, each of serve's workers."""
        try:
            row = db.execute(_SCHEMA_STATE).fetchone()
        except pg_errors.UndefinedTable:  # a new database (autocommit: nothing to undo)
            return None
        if row is None or row[0] is None or row[1] is None:
            return None
        return bytes(row[1]) if bytes(row[0]) == _schema_mark(row[2]) else None

    @staticmethod
    def _migrate(db: psycopg.Connection[Any]) -> None:
        row = db.execute("SELECT value FROM counters WHERE name = 'schema'").fetchone()
        if row is not None and int(row[0]) >= SCHEMA_VERSION:
            return
        db.execute(_DROP_SCHEMA_1)
        db.execute(BALANCES_FROM_TRANSACTIONS)
        for r in db.execute(TOMBSTONE_SOURCES).fetchall():
            stone = tombstone_of(transaction_of(r))
            if stone is not None:
                db.execute(TOMBSTONE_UPSERT.replace("?", "%s"),
                           (stone.tid, stone.batch, stone.stan, stone.proc, stone.amount))
        top = db.execute("SELECT max(rrn) FROM transactions").fetchone()
        last = int(top[0]) if top is not None and isinstance(top[0], str) \
            and top[0].isdigit() else 0
        if last:
            db.execute("SELECT setval('rrn_seq', greatest(%s, (SELECT last_value FROM rrn_seq)))",
                       (last,))
        db.execute("INSERT INTO counters (name, value) VALUES ('schema', %s) "
                   "ON CONFLICT (name) DO UPDATE SET value = excluded.value", (SCHEMA_VERSION,))

    def sql(self, query: str) -> str:
        """``query`` with ``?`` placeholders as psycopg's ``%s`` (memoized)."""
        text = self._sql.get(query)
        if text is None:
            text = self._sql[query] = query.replace("?", "%s")
        return text

    def prepared(self, query: str, link: _Link) -> bytes:
        """The name ``query`` is prepared under on ``link``'s connection (prepared once)."""
        name = link.prepared.get(query)
        if name is None:
            assert link.db is not None
            name = f"pos_{len(link.prepared)}".encode()
            parts = query.split("?")  # ? -> $1, $2, ... (no ? in the module's literals)
            text = parts[0] + "".join(f"${i}{part}" for i, part in enumerate(parts[1:], 1))
            res = link.db.pgconn.prepare(name, text.encode())
            if res.status != pq.ExecStatus.COMMAND_OK:
                raise self.failed(res, link)
            link.prepared[query] = name
        return name

    def failed(self, res: Any, link: _Link) -> LedgerError:
        """The LedgerError for a statement libpq says failed (as :meth:`translate`)."""
        state = res.error_field(pq.DiagnosticField.SQLSTATE)
        message = (res.error_message or b"").decode(errors="replace").strip()
        error: type[psycopg.Error] = psycopg.OperationalError
        if state:
            try:
                error = pg_errors.lookup(state.decode())
            except KeyError:
                error = psycopg.DatabaseError
        exc = error(message)
        if isinstance(exc, pg_errors.InvalidSqlStatementName):  # our statements are gone
            link.prepared = {}
            return LedgerConflict(f"ledger {safe_ledger_name(self.dsn)}: {message}")
        out = self.translate(exc, link.db)
        out.__cause__ = exc
        return out

    def next_rrn(self, session: PgSession) -> int:
        """The next RRN of this process (a block of them taken from the sequence at once)."""
        if not self._rrns:
            self._rrns = sorted(session.rrn_block(), reverse=True)
        return self._rrns.pop()

    def backend_pid(self) -> int | None:
        """The server process of the connection the next session takes (the one used
        last; for tests and diagnostics)."""
        db = self._db
        return db.info.backend_pid if db is not None and not db.closed else None

    def backend_pids(self) -> list[int]:
        """The server processes of every open connection of this store."""
        with self._pool:
            dbs = [link.db for link in self._links]
        return [db.info.backend_pid for db in dbs if db is not None and not db.closed]

    def translate(self, exc: psycopg.Error,
                  db: psycopg.Connection[Any] | None = None) -> LedgerError:
        """The LedgerError for ``exc``, raised on ``db`` (default: the connection the next
        session takes)."""
        name = safe_ledger_name(self.dsn)
        if isinstance(exc, pg_errors.SerializationFailure):
            # at READ COMMITTED only pos_move_balances raises it: a card's balance moved
            return BalanceMoved(f"ledger {name}: a card's balance moved under the session")
        if isinstance(exc, _CONFLICTS):
            return LedgerConflict(f"ledger {name}: {type(exc).__name__}")
        if db is None:
            db = self._db
        if db is None or db.closed or db.broken or isinstance(exc, psycopg.OperationalError):
            return LedgerUnavailable(f"ledger {name} unavailable: {exc}")
        return LedgerError(f"ledger {name}: {exc}")

    @contextmanager
    def session(self) -> Iterator[PgSession]:
        """One transaction: BEGIN rides with its first statement, COMMIT with its last
        writes (PgSession.commit); a failure rolls it back."""
        with self._lock:
            self._settle()
            link = self._take()
            session = PgSession(self, link)
            try:
                try:
                    yield session
                    session.commit()
                except BaseException:
                    session.rollback()
                    raise
            except psycopg.Error as exc:
                raise self.translate(exc, session._db) from exc
            finally:
                self._give(link)

    def session_ahead(self, body: Callable[[PgSession], _R]) -> tuple[_R, CommitInFlight | None]:
        """``body`` in one session whose COMMIT is sent and not waited for: returns what
        ``body`` returned and the commit in flight (None: the session sent nothing, so
        there is nothing to commit). The caller must wait for the commit's outcome
        (CommitInFlight.poll/wait/result) before it takes what ``body`` did as durable.

        The session runs on a connection no other COMMIT is in flight on (when every
        connection carries one, the oldest is waited for first). A failure before the
        COMMIT was sent rolls the session back and raises, as :meth:`session` does.
        """
        with self._lock:
            self._settle()
            link = self._take()
            session = PgSession(self, link)
            flight: CommitInFlight | None = None
            try:
                try:
                    result = body(session)
                    flight = session.commit_ahead()
                except BaseException:
                    session.rollback()
                    raise
            except psycopg.Error as exc:
                raise self.translate(exc, session._db) from exc
            finally:
                if flight is None:
                    self._give(link)
                else:
                    with self._pool:
                        self._flights.append(flight)
        return result, flight

    def session_open(self, prefetch: Callable[[PgSession], None] | None = None) -> OpenSession:
        """A session run in steps (see :class:`OpenSession`): ``prefetch`` and the body
        (OpenSession.run), then its COMMIT with the next session's start in one round trip
        (OpenSession.commit). Nothing is sent before run()."""
        return OpenSession(self, prefetch)

    def _settle(self) -> None:
        """Under ``_lock``: a session_open session whose owner is away is settled first."""
        opened = self._away
        if opened is not None:
            self._away = None
            opened.settle()

    def reconnect(self, link: _Link) -> psycopg.Connection[Any]:
        """A new connection on ``link`` in place of one found dead (see
        PgSession._exec_many)."""
        self._open(link)
        assert link.db is not None
        return link.db

    def commit(self, records: Sequence[LedgerRecord]) -> None:
        with self.session() as session:
            session.replay = True
            session.write(records)

    def terminal(self, tid: str) -> TerminalRow | None:
        with self.session() as session:
            return session.terminal(tid)

    def load(self) -> LedgerSnapshot:
        with self.session() as session:
            run = session.run
            terminals = tuple(terminal_of(r) for r in run(TERMINAL_SELECT + " ORDER BY tid", ()))
            txns = tuple(transaction_of(r) for r in run(TXN_SELECT + " ORDER BY seq", ()))
            batches = tuple(batch_of(r) for r in run(BATCH_SELECT, ()))
            uploads = tuple(upload_of(r) for r in run(UPLOAD_SELECT, ()))
        return LedgerSnapshot(self._secret, terminals, txns, batches, uploads)

    def close(self) -> None:
        """Close every connection (after the COMMITs in flight are answered)."""
        with self._lock:
            self._settle()
            while True:
                with self._pool:
                    oldest = self._flights[0] if self._flights else None
                if oldest is None:
                    break
                oldest.wait()
            with self._pool:
                for link in self._links:
                    link.close()
                self._links.clear()
                self._idle.clear()


def _safe(dsn: str) -> str:
    """A DSN without its password, for messages (see ledger.safe_ledger_name)."""
    return safe_ledger_name(dsn)


__all__ = ["INSTALL_HINT", "PgSession", "PostgresLedgerStore", "is_postgres_url"]
