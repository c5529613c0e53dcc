"""The acquirer host's rules as plain code: one payload in, one outcome out.

:class:`AcquirerHost` is sans-I/O: ``handle(payload, now, session)`` decodes a
frame payload, applies the terminal, security, issuer and original-route rules
reading and writing the ledger through ``session`` (one store transaction, see
:mod:`emulator.host.ledger`), and returns a :class:`HostOutcome` carrying the
reply payload and the records it wrote. The caller commits the session before
the reply leaves (the server: one session per group of requests). Without a
session, ``handle`` opens one on the host's own store and commits it.

The host keeps no transaction in memory: the ledger is the source of truth, so
several hosts (processes) on one ledger agree, and memory stays flat however
large the ledger grows. Randomness (working keys) comes from an injected
source; time is the ``now`` passed in.  Bad input of any kind gives an outcome,
never an exception; a ledger failure raises
:class:`~emulator.host.errors.LedgerError` (a
:class:`~emulator.host.errors.LedgerConflict` means: roll back, run again).

Order of checks for a financial request (each step answers and stops):

1. frame decodes, F41/F42 name a provisioned terminal (else: close; ``03``
   when the message decodes but the terminal is unknown);
2. the terminal is signed on (else ``77``, unMACed);
3. the request MAC verifies under the terminal's MAK (else ``A0``, unMACed,
   nothing stored or booked);
4. idempotency on (TID, batch, STAN, MTI): same content -> the stored answer
   again, re-MACed with the current MAK; different content -> ``94``;
5. the transaction's own rules (formats ``30``, amount ``13``, settled batch
   ``12``, original-route ``25``/``14``/``12``/``64``, PIN ``55``, ARQC ``05``,
   magic amount, card status ``14``/``41``/``54``, funds ``51``).

Magic amounts (sale and refund, after the MAC/PIN/ARQC checks): the fen part
of the amount (``amount % 100``) forces a code -- .05 -> 05, .12 -> 12,
.13 -> 13, .14 -> 14, .41 -> 41, .51 -> 51, .54 -> 54, .55 -> 55, .61 -> 61,
.96 -> 96, .98 -> 98; every other ending (.00 included) is processed normally.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import random
import secrets
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import NamedTuple, TypeVar

from emulator.catalogue import CARDS, CardStatus, TestCard
from emulator.host import codes, security, upload
from emulator.host.classify import NETWORK_KINDS, UNKNOWN, TransactionTable
from emulator.host.errors import LedgerConflict, LedgerError, LedgerUnavailable
from emulator.host.ledger import (
    BalanceRow,
    BatchRow,
    LedgerRecord,
    LedgerSession,
    LedgerStore,
    MemoryLedgerStore,
    RequestLock,
    TerminalRow,
    TransactionRow,
    TxnKey,
    key_text,
    parse_key,
    provisioned,
    removed_row,
    response_fields,
    response_json,
    tombstone_of,
)
from iso8583 import composite, tlv
from iso8583.dialect import Dialect, Frame
from iso8583.dialects import get_dialect
from iso8583.errors import Iso8583Error
from iso8583.masking import mask_pan
from iso8583.message import Message
from iso8583.quickinit import quick_init
from iso8583.settlement import SettlementTotals, SettleResult

log = logging.getLogger(__name__)

#: F22 prefixes of chip-read requests (contact 05x, contactless 07x).
CHIP_ENTRY = ("05", "07")
#: Sign-on forms by 60.3 (CUP) or F70 (iso87, which has one form: 003).
SIGN_ON_CODES = {"001": 1, "003": 3, "004": 4}
#: 61.1 / 61.2 of a refund whose terminal does not know the original's batch and STAN.
_UNKNOWN = "000000"
#: Request fields an answer repeats.
_ECHOED = (2, 3, 4, 11, 25, 41, 42, 49, 60, 70, 90)
#: Times handle() without a session runs again after a LedgerConflict.
_ATTEMPTS = 20
#: The rule (an AcquirerHost method) of each financial kind: looked up per request, not
#: bound in a fresh dict of nine methods.
_RULES = {
    "sale": "_sale", "balance": "_balance", "void": "_void", "refund": "_refund",
    "reversal": "_reversal", "settlement": "_settlement", "batch_upload": "_batch_upload",
    "batch_upload_icc": "_batch_upload", "batch_upload_end": "_batch_upload_end",
}
#: "00".."99": a date or time part by index (a format spec costs ~0.3 us a field).
_TWO = tuple(f"{i:02d}" for i in range(100))
#: Prefix of a fingerprint of the current form (AcquirerHost._fingerprint).
_FINGERPRINT = "v2:"
#: Bound of the derived working-key cache (entries; cleared when full).
_KEY_CACHE = 4096
#: Bound of the frames prefetch decoded for the handle() that follows (cleared when full).
_FRAME_CACHE = 4096
#: Bound of the PAN hash cache (entries; cleared when full).
_PAN_HASH_CACHE = 4096

T = TypeVar("T")


@quick_init  # one per request: see iso8583.quickinit
@dataclass(frozen=True)
class HostOutcome:
    """What the server does with one request payload."""

    reply: bytes | None = field(repr=False)  # payload to send back (TPDU swapped), no length
    close: bool = False  # close the connection after sending the reply (if any)
    records: tuple[LedgerRecord, ...] = ()  # what this request wrote in its session
    request: Message | None = field(default=None, repr=False)
    response: Message | None = field(default=None, repr=False)
    pan: str | None = field(default=None, repr=False)  # for fault matching; never log it
    amount: int | None = None

    @property
    def response_code(self) -> str | None:
        return self.response.response_code if self.response is not None else None


class _Terminal:
    """A request's terminal: its row (replaced as the rules change it) and working keys."""

    __slots__ = ("keys", "mac_of", "row", "tid")

    def __init__(self, row: TerminalRow, keys: security.WorkingKeys | None,
                 mac_of: Callable[[bytes], bytes] | None) -> None:
        self.row = row
        self.keys = keys
        self.mac_of = mac_of  # security.mac_function of the dialect and keys.mak
        # read several times a request; a row is only ever replaced by one of the same TID
        self.tid = row.tid


class _Answer(Exception):  # noqa: N818  -- control flow, not an error
    """Raised inside a rule to answer with ``code`` at once."""

    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


@dataclass
class _Ctx:
    """One request in flight: what the rules found out so far."""

    s: LedgerSession
    term: _Terminal
    msg: Message
    body: bytes
    now: datetime
    kind: str
    batch: str
    stan: str
    key: TxnKey
    fingerprint: str
    pan: str | None = None
    pan_hash: str | None = None  # of pan, computed once a request (an HMAC)
    card: TestCard | None = None
    extra: dict[int, str | bytes] = field(default_factory=dict)
    records: list[LedgerRecord] = field(default_factory=list)
    rrn: str | None = None
    auth: str | None = None
    original: TransactionRow | None = None
    status: str = "declined"
    arqc: security.ArqcCheck | None = None  # F55's ARQC as the rules checked it


class AcquirerHost:
    """The acquirer host and its issuer simulation (see the module docstring).

    ``store`` is where the ledger lives (a fresh :class:`MemoryLedgerStore` when
    None). The host itself holds only the dialect, the card catalogue and a small
    bounded cache of working keys derived from terminal rows; everything else is
    read from the ledger inside the request's session. One ``handle`` at a time
    per session; several hosts may share one store.
    """

    def __init__(self, dialect: Dialect | str = "cup", *,
                 store: LedgerStore | None = None,
                 random_bytes: Callable[[int], bytes] = secrets.token_bytes,
                 cards: Iterable[TestCard] = CARDS) -> None:
        self.dialect = get_dialect(dialect) if isinstance(dialect, str) else dialect
        self.store: LedgerStore = store if store is not None else MemoryLedgerStore()
        self._table = TransactionTable(self.dialect)
        self._random = random_bytes
        self._cards = {c.pan: c for c in cards}
        self._currency = self.dialect.settings.currency
        self._mac_field = self.dialect.spec.mac_field
        self._answer_time_fields = frozenset({12, 13} & set(self.dialect.fields))
        self._secret = self.store.secret
        self._keyed = security.KeyedHash(self._secret)  # pan_hash, _fingerprint
        # PAN -> its keyed hash: a function of the PAN and the ledger's secret, which a
        # host keeps for life (a lab's few cards come back all day; an HMAC costs ~1.5 us)
        self._pan_hashes: dict[str, str] = {}
        self._pan_masks: dict[str, str] = {}  # PAN -> mask_pan(PAN), the same way
        # (tid, generation, pik, mak, tdk) -> keys and their MAC function: derived data,
        # safe across rollbacks
        self._keys: dict[tuple[str, int, str, str, str],
                         tuple[security.WorkingKeys, Callable[[bytes], bytes]]] = {}
        # payload -> its frame, kind and lock arguments, worked out by prefetch for the
        # handle() that follows (once)
        self._frames: dict[bytes, tuple[Frame, _Known]] = {}
        # request MTI -> its answer's (Message.response_mti, a pure function of the MTI)
        self._response_mtis: dict[str, str] = {}

    @classmethod
    def from_store(cls, store: LedgerStore, dialect: Dialect | str = "cup", *,
                   random_bytes: Callable[[int], bytes] = secrets.token_bytes,
                   cards: Iterable[TestCard] = CARDS) -> AcquirerHost:
        """A host on ``store`` (nothing is loaded: the ledger is read per request)."""
        return cls(dialect, store=store, random_bytes=random_bytes, cards=cards)

    # --- sessions ----------------------------------------------------------------
    def _in_session(self, work: Callable[[LedgerSession], T],
                    session: LedgerSession | None = None) -> T:
        """``work`` in ``session``, or in a session of the host's own store (retried on
        LedgerConflict: another process clashed, nothing was committed)."""
        if session is not None:
            return work(session)
        for attempt in range(1, _ATTEMPTS + 1):
            try:
                with self.store.session() as own:
                    return work(own)
            except LedgerConflict:
                if attempt == _ATTEMPTS:
                    raise
                log.info("ledger conflict, running the request again (attempt %d)", attempt)
                time.sleep(random.uniform(0, 0.002 * attempt))
            except LedgerUnavailable:  # the next session reconnects
                if attempt >= 3:
                    raise
                time.sleep(0.1 * attempt)
        raise AssertionError("unreachable")

    def _terminal(self, s: LedgerSession, tid: str) -> _Terminal | None:
        row = s.terminal(tid)
        if row is None or row.removed:
            return None
        if not row.signed_on or not row.mak:
            return _Terminal(row, None, None)
        return _Terminal(row, *self._keys_of(row))

    def _keys_of(self, row: TerminalRow) -> tuple[security.WorkingKeys, Callable[[bytes], bytes]]:
        """The signed-on ``row``'s working keys and the dialect's MAC under its MAK."""
        cache_key = (row.tid, row.generation, row.pik, row.mak, row.tdk)
        known = self._keys.get(cache_key)
        if known is None:
            if len(self._keys) >= _KEY_CACHE:
                self._keys.clear()
            keys = _keys_of(row)
            known = self._keys[cache_key] = keys, security.mac_function(self.dialect, keys.mak)
        return known

    # --- reads (each in a session of its own unless one is given) -------------------
    def pan_hash(self, pan: str) -> str:
        """Keyed hash of a PAN for matching (HMAC-SHA256 under the ledger secret)."""
        known = self._pan_hashes.get(pan)
        if known is None:
            if len(self._pan_hashes) >= _PAN_HASH_CACHE:
                self._pan_hashes.clear()
            known = self._pan_hashes[pan] = self._keyed.hexdigest(pan.encode())[:32]
        return known

    def _masked(self, pan: str) -> str:
        """mask_pan(pan), kept beside the PAN's hash (a lab's few cards come back all day)."""
        masked = self._pan_masks.get(pan)
        if masked is None:
            if len(self._pan_masks) >= _PAN_HASH_CACHE:
                self._pan_masks.clear()
            masked = self._pan_masks[pan] = mask_pan(pan)
        return masked

    def provision(self, tid: str, mid: str, tmk: bytes) -> TerminalRow:
        """Add or replace (re-key) a terminal, signed off; written to the store at once.

        Returns the row written (committing it again is harmless: an idempotent upsert).
        """
        def work(s: LedgerSession) -> TerminalRow:
            row = provisioned(s.terminal(tid), tid, mid, tmk)
            s.write([row])
            return row
        return self._in_session(work)

    def remove(self, tid: str) -> TerminalRow | None:
        """Remove a terminal (it is answered 03 from now on); returns the tombstone written."""
        def work(s: LedgerSession) -> TerminalRow | None:
            old = s.terminal(tid)
            if old is None or old.removed:
                return None
            row = removed_row(old)
            s.write([row])
            return row
        return self._in_session(work)

    def terminals(self, session: LedgerSession | None = None) -> list[TerminalRow]:
        """The terminals provisioned now (removed ones left out)."""
        rows = self._in_session(lambda s: s.terminals(), session)
        return [r for r in rows if not r.removed]

    def any_terminal(self, session: LedgerSession | None = None) -> bool:
        """Whether a terminal is provisioned now (one row read at most: serve's start-up asks
        it, and reading every terminal cost ~5 us a terminal, 100 ms at 20,000)."""
        return self._in_session(lambda s: s.any_terminal(), session)

    def terminal(self, tid: str, session: LedgerSession | None = None) -> TerminalRow | None:
        """The provisioned terminal ``tid`` as the ledger has it now, or None."""
        row = self._in_session(lambda s: s.terminal(tid), session)
        return row if row is not None and not row.removed else None

    def transactions(self) -> list[TransactionRow]:
        """Every stored transaction row, in booking order (reads the whole ledger: tests)."""
        return self._in_session(lambda s: s.transactions())

    def transaction(self, key: TxnKey) -> TransactionRow | None:
        return self._in_session(lambda s: s.transaction(key))

    def by_rrn(self, rrn: str) -> TransactionRow | None:
        return self._in_session(lambda s: s.transaction_by_rrn(rrn))

    def batch_totals(self, tid: str, batch: str) -> SettlementTotals:
        """Host totals of a batch: standing approved sales (debit) and refunds (credit)."""
        return self._in_session(lambda s: s.batch_totals(tid, batch))

    def settled(self, tid: str, batch: str) -> bool:
        """Whether the host has settled ``tid``'s ``batch`` (it takes no new money there)."""
        row = self._in_session(lambda s: s.batch(tid, batch))
        return row is not None and row.settled

    def available(self, card: TestCard, session: LedgerSession | None = None) -> int:
        """What the issuer would still approve on ``card`` (balance or open credit), fen."""
        pan_hash = self.pan_hash(card.pan)
        return card.opening_balance - self._in_session(lambda s: s.spent(pan_hash), session)

    # --- entry point -----------------------------------------------------------
    def handle(self, payload: bytes, now: datetime,
               session: LedgerSession | None = None) -> HostOutcome:
        """Process one frame payload (no length prefix); never raises for bad input.

        With ``session`` the rules read and write through it and the caller commits;
        without, the host runs the request in a session of its own store.
        Raises LedgerError when the ledger fails (LedgerConflict: roll back, rerun).
        """
        return self._in_session(lambda s: self._handle(payload, now, s), session)

    def prefetch(self, session: LedgerSession, payloads: Sequence[bytes | None]) -> None:
        """Before a group's requests run in ``session`` (the server's group commit): take
        every lock their handle() takes first at once (``lock_requests``: PostgreSQL reads
        the whole group's rows in one round trip). Each payload is decoded here once and
        kept for its handle(); None (a request the host core will not see) is skipped.
        """
        if not session.lock_first:
            return  # lock_request costs nothing in this store: nothing to gain
        frames = self._frames
        if len(frames) + len(payloads) > _FRAME_CACHE:
            frames.clear()  # left by requests that never ran (a closed connection)
        locks: list[RequestLock] = []
        for payload in payloads:
            if payload is None:
                continue
            try:
                frame = self.dialect.unpack_payload(payload)
                known = self._known(frame.message)
            except Iso8583Error:
                continue  # handle() answers it
            except Exception:  # a host bug: handle() meets it again and answers 96
                log.exception("prefetch failed on a request; it takes its lock itself")
                continue
            frames[payload] = frame, known
            if known.lock is not None:
                locks.append(known.lock)
        session.lock_requests(locks)

    def _handle(self, payload: bytes, now: datetime, s: LedgerSession) -> HostOutcome:
        prefetched = self._frames.pop(payload, None) if self._frames else None
        if prefetched is None:
            try:
                frame = self.dialect.unpack_payload(payload)
            except Iso8583Error as exc:
                log.info("undecodable payload closed: %s", exc)
                return HostOutcome(None, close=True)
            known: _Known | None = None  # not worked out yet
        else:
            frame, known = prefetched
        msg = frame.message
        try:
            outcome = self._dispatch(s, msg, frame.body, now, known)
        except LedgerError:
            raise  # the session must roll back: never answer from a half-read ledger
        except Iso8583Error as exc:  # a field the rules could not use at all
            log.info("request refused: %s", exc)
            outcome = _Plain(None, True)
        except Exception:  # last line of defence: a host bug must not kill the server
            log.exception("host rule failed; answering 96")
            outcome = _Plain(self._system_error(s, msg, now), False)
        reply_msg = outcome.response
        reply: bytes | None = None
        if reply_msg is not None:
            tpdu = self.dialect.reply_tpdu(frame.tpdu) if frame.tpdu is not None else None
            try:
                reply = self.dialect.payload(reply_msg, tpdu=tpdu, header=frame.header,
                                             body=outcome.body)
            except Iso8583Error:
                log.exception("answer does not encode; closing")
                return HostOutcome(None, close=True, records=outcome.records, request=msg)
        return HostOutcome(reply, outcome.close, outcome.records, msg, reply_msg,
                           _pan_of(msg), msg.amount if _digits(msg.get(4)) else None)

    # --- routing ---------------------------------------------------------------
    def _dispatch(self, s: LedgerSession, msg: Message, body: bytes, now: datetime,
                  known: _Known | None = None) -> _Plain:
        """``known``: the request's kind and lock arguments, when prefetch worked them out."""
        tid, mid = msg.tid, msg.mid
        if known is None:
            known = self._known(msg)
        lock = known.lock
        # A store that reads the terminal's row with the lock (``lock_first``) takes a sale's,
        # void's or refund's lock before the terminal read when the message names the key
        # (batch in 60.2). A request refused later (MAC, merchant) holds the lock of the key
        # it named until the commit: that only orders it with that key's reversal.
        if lock is not None and s.lock_first:
            s.lock_request(*lock)
        # read per request: a terminal provisioned by another process is served at once
        term = self._terminal(s, tid or "")
        if term is None or term.row.mid != mid:
            if not msg.is_request:
                return _Plain(None, True)
            return _Plain(self._unmaced(msg, codes.INVALID_MERCHANT, now), True)
        mti = msg.mti
        kind = known.kind
        if kind is None:
            return _Plain(None, True)
        if kind in ("sign_on", "key_change"):
            return self._sign_on(s, term, msg, now)
        if kind in ("sign_off", "echo"):
            return self._net_820(s, term, msg, now, sign_off=kind == "sign_off")
        if kind == UNKNOWN and all(r.name in NETWORK_KINDS for r in self._table.rows(mti)):
            return _Plain(self._unmaced(msg, codes.FORMAT_ERROR, now), False)
        if term.keys is None:
            return _Plain(self._unmaced(msg, codes.SIGN_ON_AGAIN, now), False)
        if not security.received_mac_ok(self.dialect, term.keys.mak, body, msg,
                                        mac_of=term.mac_of):
            return _Plain(self._unmaced(msg, codes.MAC_ERROR, now), False)
        stan = msg.get(11)
        if not _digits(stan, 6):
            return self._answer(term, msg, codes.FORMAT_ERROR, now)
        # the lock's arguments name the batch (60.2) and the PAN's hash already
        batch = lock[1] if lock is not None else self._batch_of(term, msg)
        if batch is None:
            return self._answer(term, msg, codes.FORMAT_ERROR, now)
        key: TxnKey = (term.tid, batch, str(stan), mti)
        fingerprint = self._fingerprint(msg, body)
        pan = _pan_of(msg)
        pan_hash = lock[3] if lock is not None else self.pan_hash(pan) if pan else None
        if kind in ("sale", "void", "refund") and (
                lock is None or not s.lock_first or lock[:3] != key[:3]):
            # Held until commit. A reversal of this request in another process waits for
            # this booking, or this booking sees that reversal's tombstone (never both
            # missed); the same request sent to two processes at once is answered by the
            # second from what the first stored.
            s.lock_request(term.tid, batch, str(stan), pan_hash)
        stored = s.transaction(key)
        if stored is not None:
            theirs = stored.fingerprint  # of the form it was stored in
            mine = fingerprint if theirs.startswith(_FINGERPRINT) else self._fingerprint_v1(msg)
            if hmac.compare_digest(theirs, mine):
                return self._replay(term, msg, stored)
            return self._answer(term, msg, codes.DUPLICATE, now)
        ctx = _Ctx(s, term, msg, body, now, kind, batch, str(stan), key, fingerprint, pan,
                   pan_hash)
        return self._financial(ctx)

    def _known(self, msg: Message) -> _Known:
        """What the dialect's transaction table says ``msg`` is (emulator.host.classify;
        None: not a request, or an MTI without a row) and its lock arguments."""
        kind = self._table.classify(msg) if msg.is_request else None
        return _Known(kind, self._lock_args(msg, kind))

    def _lock_args(self, msg: Message, kind: str | None) -> RequestLock | None:
        """The lock_request arguments of a sale, void or refund ``msg`` that names its key
        (batch in 60.2): (tid, batch, stan, PAN hash, the original's RRN); else None."""
        if kind not in ("sale", "void", "refund"):
            return None
        tid, stan = msg.tid, msg.get(11)
        if 60 not in msg or not tid or not _digits(stan, 6):
            return None
        try:
            batch = self._f60(msg).batch
        except Iso8583Error:
            return None
        pan = _pan_of(msg)
        pan_hash = self.pan_hash(pan) if pan else None
        rrn = msg.get(37) if kind != "sale" else None  # the original _original reads next
        return tid, batch, str(stan), pan_hash, rrn if isinstance(rrn, str) else None

    def _f60(self, msg: Message) -> composite.F60:
        value = msg.get(60)
        return composite.F60.decode(value if isinstance(value, str) else "")

    def _net_code(self, msg: Message) -> str | None:
        value = msg.get(70)
        if isinstance(value, str):
            return value
        try:
            return self._f60(msg).net_code
        except Iso8583Error:
            return None

    def _batch_of(self, term: _Terminal, msg: Message) -> str | None:
        """The batch a request belongs to: 60.2 (CUP); dialects without F60 use the host's."""
        if 60 not in msg:
            sale = self.dialect.transactions.get("sale")
            return term.row.batch if sale is not None and sale.f60_type is None else None
        try:
            return self._f60(msg).batch
        except Iso8583Error:
            return None

    def _fingerprint(self, msg: Message, body: bytes) -> str:
        """What tells a retransmission (the same request again) from another request under
        the same key: an HMAC of the request's MAC block (every field but the MAC).

        The block is cut from the bytes as received where they are the dialect's own
        encoding of the message (Dialect.mac_block_received), so equal requests give
        equal fingerprints whatever their bytes; the ``v2:`` form of a request stored
        earlier with :meth:`_fingerprint_v1` is told by its prefix.
        """
        block = self.dialect.mac_block_received(msg, body)
        return _FINGERPRINT + self._keyed.hexdigest(block)

    def _fingerprint_v1(self, msg: Message) -> str:
        """The fingerprint of rows stored before ``v2:`` (the re-encoded message, MAC left out,
        its bit unset): a retransmission of such a request still gets its stored answer."""
        clone = msg.copy()
        clone.pop(self._mac_field)
        data = self.dialect.encode(clone)
        return hmac.new(self._secret, data, hashlib.sha256).hexdigest()

    # --- answers ---------------------------------------------------------------
    def _base_answer(self, msg: Message, code: str, now: datetime) -> Message:
        """The request's key fields, F39, and the host's own F12/F13 (never the request's).

        The answer's F13 is the date the host books the transaction on: a terminal
        names this original by it in a later refund's 61.3.
        """
        mti = self._response_mtis.get(msg.mti)
        if mti is None:
            mti = msg.response_mti  # raises for an MTI that is not 4 digits: never kept
            if len(self._response_mtis) < _FRAME_CACHE:
                self._response_mtis[msg.mti] = mti
        resp = self.dialect.message(mti)
        # copied as stored: a message holds only normalised values (what resp[n] = value
        # would store again), and the answer is of the request's dialect
        ours, theirs = resp.raw_items(), msg.raw_items()
        for number in _ECHOED:
            value = theirs.get(number)
            if value is not None:
                ours[number] = value
        # the host's time and date: digit strings of fields the dialect has (told once,
        # _answer_time_fields), stored as resp[n] = value would store them
        if 12 in self._answer_time_fields:
            ours[12] = _TWO[now.hour] + _TWO[now.minute] + _TWO[now.second]  # not strftime
        if 13 in self._answer_time_fields:
            ours[13] = answered_date(now)
        resp[39] = code
        return resp

    def _unmaced(self, msg: Message, code: str, now: datetime) -> Message | None:
        if not msg.is_request:
            return None
        try:
            return self._base_answer(msg, code, now)
        except Iso8583Error:
            return None

    def _system_error(self, s: LedgerSession, msg: Message, now: datetime) -> Message | None:
        """96 for a request the host failed on, MACed when the terminal has a key."""
        term = self._terminal(s, msg.tid or "")
        if term is None or term.keys is None or msg.mti in ("0800", "0820"):
            return self._unmaced(msg, codes.SYSTEM_ERROR, now)
        try:
            return self._maced(term, msg, codes.SYSTEM_ERROR, now)
        except Iso8583Error:
            return self._unmaced(msg, codes.SYSTEM_ERROR, now)

    def _maced(self, term: _Terminal, msg: Message, code: str, now: datetime,
               extra: dict[int, str | bytes] | None = None) -> Message:
        return self._sealed(term, msg, code, now, extra)[0]

    def _sealed(self, term: _Terminal, msg: Message, code: str, now: datetime,
                extra: dict[int, str | bytes] | None = None) -> tuple[Message, bytes | None]:
        """The answer, MACed when the terminal has a key, and its encoded body when MACed
        (the MAC block and the MAC: the answer is not encoded again to be sent)."""
        resp = self._base_answer(msg, code, now)
        for number, value in (extra or {}).items():
            resp[number] = value
        body = None
        if term.keys is not None:
            body = security.apply_mac_encoded(self.dialect, term.keys.mak, resp,
                                              mac_of=term.mac_of)
        return resp, body

    def _answer(self, term: _Terminal, msg: Message, code: str, now: datetime) -> _Plain:
        resp, body = self._sealed(term, msg, code, now)
        return _Plain(resp, False, body=body)

    def _replay(self, term: _Terminal, msg: Message, stored: TransactionRow) -> _Plain:
        mti, fields = response_fields(stored.response)
        resp = self.dialect.message(mti)
        pan = msg.get(2)
        if pan is not None:
            resp[2] = pan
        for number, value in fields.items():
            resp[number] = value
        body = None
        if term.keys is not None and stored.response_code not in (
                codes.MAC_ERROR, codes.SIGN_ON_AGAIN):
            body = security.apply_mac_encoded(self.dialect, term.keys.mak, resp,
                                              mac_of=term.mac_of)
        return _Plain(resp, False, body=body)

    # --- network management ----------------------------------------------------
    def _sign_on(self, s: LedgerSession, term: _Terminal, msg: Message, now: datetime) -> _Plain:
        net = self._net_code(msg) or "003"
        if isinstance(msg.get(70), str):
            # iso87: F70 001 (sign-on) / 161 (key change); the key form rides in 60.3 if sent
            try:
                net = self._f60(msg).net_code if 60 in msg else "003"
            except Iso8583Error:
                net = "003"
            if msg.get(70) not in ("001", "161"):
                return _Plain(self._unmaced(msg, codes.FORMAT_ERROR, now), False)
        form = SIGN_ON_CODES.get(net)
        if form is None:
            return _Plain(self._unmaced(msg, codes.FORMAT_ERROR, now), False)
        keys = security.new_working_keys(self._random, form,
                                         double_mak=security.uses_x919(self.dialect))
        f62 = security.wrap_keys(bytes.fromhex(term.row.tmk), keys, form)
        row = replace(term.row, pik=keys.pik.hex().upper(), mak=keys.mak.hex().upper(),
                      tdk=(keys.tdk or b"").hex().upper(), signed_on=True)
        term.row = row
        term.keys = keys
        term.mac_of = security.mac_function(self.dialect, keys.mak)
        s.write([row])
        resp = self._base_answer(msg, codes.APPROVED, now)
        if 60 in msg:
            resp[60] = composite.F60(msg_type="00", batch=row.batch, net_code=net).encode()
        resp[62] = f62 if self.dialect.fields[62].kind == "b" else f62.hex().upper()
        return _Plain(resp, False, (row,))

    def _net_820(self, s: LedgerSession, term: _Terminal, msg: Message, now: datetime, *,
                 sign_off: bool) -> _Plain:
        resp = self._base_answer(msg, codes.APPROVED, now)
        if sign_off:  # the working keys die here
            term.keys = None
            term.mac_of = None
            term.row = replace(term.row, pik="", mak="", tdk="", signed_on=False)
            s.write([term.row])
            return _Plain(resp, False, (term.row,))
        return _Plain(resp, False)

    # --- financial -------------------------------------------------------------
    def _financial(self, ctx: _Ctx) -> _Plain:
        name = _RULES.get(ctx.kind)
        rule: Callable[[_Ctx], None] | None = getattr(self, name) if name else None
        code = codes.APPROVED
        try:
            if rule is None:
                raise _Answer(codes.INVALID_TRANSACTION)
            if ctx.kind in ("sale", "void", "refund") and self._reversed_in_advance(ctx):
                # the terminal already reversed this request: it must not book now
                raise _Answer(codes.INVALID_TRANSACTION)
            rule(ctx)
        except _Answer as answer:
            code = answer.code
            ctx.records.clear()  # a refusal books nothing but its own row
            ctx.status = "declined"
        if ctx.kind in ("sale", "void", "refund", "balance") and ctx.rrn is None:
            ctx.rrn = ctx.s.next_rrn()
        extra: dict[int, str | bytes] = {}
        if ctx.rrn is not None:
            extra[37] = ctx.rrn
            if code == codes.APPROVED:
                ctx.auth = self._auth_code(ctx.rrn)
                extra[38] = ctx.auth
        extra.update(ctx.extra)
        if ctx.kind == "sale" and ctx.card is not None:  # ARPC (tag 91) for a chip sale
            f55 = security.issuer_answer_f55(ctx.card, ctx.msg.get(55), code, checked=ctx.arqc)
            if f55 is not None:
                extra[55] = f55
        resp, body = self._sealed(ctx.term, ctx.msg, code, ctx.now, extra)
        answered = resp.raw_items()
        # by number, F2 and the MAC left out (sorting the numbers alone: (number, value)
        # pairs compare their numbers with == and < both)
        left_out = (2, self._mac_field)
        stored_fields = {k: answered[k] for k in sorted(answered) if k not in left_out}
        card = ctx.card
        status = ctx.status if code == codes.APPROVED else "declined"
        if ctx.kind in ("reversal", "settlement", "batch_upload", "batch_upload_icc",
                        "batch_upload_end") \
                and code == codes.APPROVED:
            status = "acknowledged"
        # positional, in TransactionRow's field order (one a request: keywords cost
        # about as much as building the row itself)
        row = TransactionRow(
            ctx.term.tid, ctx.batch, ctx.stan, ctx.msg.mti,  # tid, batch, stan, mti
            ctx.kind, ctx.fingerprint, status, code,  # kind, fingerprint, status, response_code
            ctx.now.isoformat(),  # received_at
            response_json(resp.mti, stored_fields),  # response
            self._masked(ctx.pan) if ctx.pan else None,  # pan_masked
            ctx.pan_hash,  # pan_hash
            card.scheme if card is not None else (  # scheme
                ctx.original.scheme if ctx.original is not None else None),
            ctx.msg.amount if _digits(ctx.msg.get(4)) else None,  # amount
            ctx.rrn, ctx.auth if code == codes.APPROVED else None,  # rrn, auth_code
            answered_date(ctx.now),  # date: what the answer's F13 says, not the request's
            key_text(ctx.original.key) if ctx.original is not None else None)  # original
        stone = tombstone_of(row)
        if stone is not None:  # a reversal of a request not seen (yet): it must not book
            ctx.records.append(stone)
        # the rule's side effects (originals, balances, batches, terminals), then the
        # request's own row: inserted, so a concurrent duplicate in another process
        # (same key) raises LedgerConflict instead of booking twice
        ctx.s.write(ctx.records)
        ctx.s.book(row)
        return _Plain(resp, False, (*ctx.records, row), body)

    @staticmethod
    def _auth_code(rrn: str) -> str:
        return rrn[-6:]

    @staticmethod
    def _spend(ctx: _Ctx, pan_hash: str, amount: int) -> None:
        """Take ``amount`` from the card (negative: give back); the balance row is locked."""
        ctx.records.append(BalanceRow(pan_hash, ctx.s.spent(pan_hash) + amount, amount))

    @staticmethod
    def _settled(ctx: _Ctx, batch: str) -> bool:
        row = ctx.s.batch(ctx.term.tid, batch)
        return row is not None and row.settled

    def _reversed_in_advance(self, ctx: _Ctx) -> bool:
        """True when a reversal for exactly this request was acknowledged before it arrived."""
        seen = ctx.s.tombstone(ctx.term.tid, ctx.batch, ctx.stan)
        if seen is None:
            return False
        if seen.proc is not None and ctx.msg.get(3) != seen.proc:
            return False
        return seen.amount is None or not _digits(ctx.msg.get(4)) \
            or seen.amount == ctx.msg.amount

    # --- shared checks -----------------------------------------------------------
    def _amount(self, ctx: _Ctx) -> int:
        value = ctx.msg.get(4)
        if not _digits(value) or int(str(value)) <= 0:
            raise _Answer(codes.INVALID_AMOUNT)
        currency = ctx.msg.get(49)
        if currency is not None and currency != self._currency:
            raise _Answer(codes.INVALID_AMOUNT)
        return int(str(value))

    def _open_batch(self, ctx: _Ctx) -> None:
        """New money movements go into an unsettled batch; moves the host's batch forward."""
        if self._settled(ctx, ctx.batch):
            raise _Answer(codes.INVALID_TRANSACTION)
        if ctx.batch.isdigit() and int(ctx.batch) > int(ctx.term.row.batch):
            ctx.records.append(replace(ctx.term.row, batch=ctx.batch))

    def _card(self, ctx: _Ctx) -> TestCard:
        if ctx.pan is None:
            raise _Answer(codes.FORMAT_ERROR)
        card = self._cards.get(ctx.pan)
        if card is None:
            raise _Answer(codes.INVALID_CARD)
        ctx.card = card
        return card

    def _check_pin(self, ctx: _Ctx, card: TestCard, *, required: bool) -> None:
        block = ctx.msg.get(52)
        if block is None:
            if required and card.pin_required:
                raise _Answer(codes.WRONG_PIN)
            return
        if card.pin is None:
            return  # the issuer has no PIN for this card: nothing to check
        keys = ctx.term.keys
        if not isinstance(block, bytes) or keys is None or not security.pin_matches(
                keys.pik, block, card.pan, card.pin):
            raise _Answer(codes.WRONG_PIN)

    def _check_arqc(self, ctx: _Ctx, card: TestCard, *, required: bool) -> None:
        entry = str(ctx.msg.get(22) or "")
        f55 = ctx.msg.get(55)
        if f55 is None:
            if required and entry.startswith(CHIP_ENTRY):
                raise _Answer(codes.FORMAT_ERROR)
            return
        if not isinstance(f55, bytes):
            raise _Answer(codes.FORMAT_ERROR)
        try:
            tags = tlv.decode_flat(f55)
        except Iso8583Error:
            raise _Answer(codes.FORMAT_ERROR) from None
        if 0x9F26 not in tags:
            if required and entry.startswith(CHIP_ENTRY):
                raise _Answer(codes.FORMAT_ERROR)
            return
        ctx.arqc = security.check_arqc(card, tags)
        if not ctx.arqc.valid:
            raise _Answer(codes.DO_NOT_HONOUR)
        # the cryptogram must cover the amount asked for, not some other amount
        signed = tags.get(0x9F02)
        amount = ctx.msg.get(4)
        if signed is not None and _digits(amount) and (
                signed.hex() != str(int(str(amount))).zfill(12)):
            raise _Answer(codes.DO_NOT_HONOUR)

    def _check_status(self, ctx: _Ctx, card: TestCard) -> None:
        if card.status is CardStatus.BLOCKED:
            raise _Answer(codes.INVALID_CARD)
        if card.status is CardStatus.LOST:
            raise _Answer(codes.LOST_CARD)
        expiry = str(ctx.msg.get(14) or card.expiry)
        if card.status is CardStatus.EXPIRED or not _digits(expiry, 4) \
                or expiry < _TWO[ctx.now.year % 100] + _TWO[ctx.now.month]:
            raise _Answer(codes.EXPIRED_CARD)

    def _magic(self, amount: int) -> None:
        forced = codes.forced_code(amount)
        if forced is not None:
            raise _Answer(forced)

    def _original(self, ctx: _Ctx) -> TransactionRow:
        """The approved sale F37 names, checked against F61 (batch, STAN, date) and the TID."""
        rrn = ctx.msg.get(37)
        # read and locked: two refunds (or a void and a refund) of one sale in two
        # processes serialize here, so together they can never exceed it
        original = ctx.s.original_by_rrn(str(rrn)) if isinstance(rrn, str) else None
        if original is None or original.kind != "sale" or not self._may_name(ctx, original):
            raise _Answer(codes.ORIGINAL_NOT_FOUND)
        if original.status not in ("approved", "voided"):
            raise _Answer(codes.ORIGINAL_NOT_FOUND)
        f61 = ctx.msg.get(61)
        if f61 is not None:
            try:
                named = composite.F61.decode(f61)
            except Iso8583Error:
                raise _Answer(codes.ORIGINAL_NOT_FOUND) from None
            unknown = named.batch == _UNKNOWN and named.stan == _UNKNOWN
            if unknown and (ctx.kind != "refund" or named.date is None):
                # a terminal that does not hold the original (another terminal of the
                # merchant, an older journal) names it by RRN + date only
                raise _Answer(codes.ORIGINAL_NOT_FOUND)
            if not unknown and (named.batch, named.stan) != (original.batch, original.stan):
                raise _Answer(codes.ORIGINAL_NOT_FOUND)
            # original.date is the F13 the host ANSWERED the sale with (a CUP 0200
            # often carries no F13 of its own)
            if named.date is not None and named.date != original.date:
                raise _Answer(codes.ORIGINAL_NOT_FOUND)
        elif ctx.kind == "refund":  # a refund must name its original by F61 as well
            raise _Answer(codes.ORIGINAL_NOT_FOUND)
        ctx.original = original
        if ctx.pan is None or ctx.pan_hash != original.pan_hash:
            raise _Answer(codes.INVALID_CARD)
        ctx.card = self._cards.get(ctx.pan)
        return original

    def _may_name(self, ctx: _Ctx, original: TransactionRow) -> bool:
        """A void names a sale of its own terminal; a refund one of the same merchant."""
        if original.tid == ctx.term.tid:
            return True
        owner = ctx.s.terminal(original.tid)
        return ctx.kind == "refund" and owner is not None and not owner.removed \
            and owner.mid == ctx.term.row.mid

    # --- rules -------------------------------------------------------------------
    def _sale(self, ctx: _Ctx) -> None:
        amount = self._amount(ctx)
        self._open_batch(ctx)
        card = self._card(ctx)
        self._check_pin(ctx, card, required=True)
        self._check_arqc(ctx, card, required=True)
        self._magic(amount)
        self._check_status(ctx, card)
        pan_hash = ctx.pan_hash or self.pan_hash(card.pan)  # card.pan is ctx.pan
        spent = ctx.s.spent(pan_hash)  # the balance row, read and locked once
        if amount > card.opening_balance - spent:
            raise _Answer(codes.INSUFFICIENT_FUNDS)
        ctx.records.append(BalanceRow(pan_hash, spent + amount, amount, card.opening_balance))
        ctx.status = "approved"

    def _balance(self, ctx: _Ctx) -> None:
        card = self._card(ctx)
        self._check_pin(ctx, card, required=True)
        self._check_arqc(ctx, card, required=False)
        self._check_status(ctx, card)
        available = self.available(card, ctx.s)
        sign = "C" if available >= 0 else "D"
        ctx.extra[54] = f"1002{self._currency}{sign}{abs(available):012d}"
        ctx.status = "approved"

    def _void(self, ctx: _Ctx) -> None:
        amount = self._amount(ctx)
        original = self._original(ctx)
        if original.status == "voided" or original.refunded > 0:
            raise _Answer(codes.INVALID_TRANSACTION)
        auth = ctx.msg.get(38)
        if auth is not None and auth != original.auth_code:
            raise _Answer(codes.ORIGINAL_NOT_FOUND)
        if original.batch != ctx.batch or self._settled(ctx, original.batch):
            raise _Answer(codes.INVALID_TRANSACTION)
        if amount != original.amount:
            raise _Answer(codes.ORIGINAL_AMOUNT_MISMATCH)
        if ctx.card is not None:
            self._check_pin(ctx, ctx.card, required=False)
        self._open_batch(ctx)
        ctx.records.append(replace(original, status="voided", voided_by=key_text(ctx.key)))
        self._spend(ctx, original.pan_hash or "", -amount)
        ctx.status = "approved"

    def _refund(self, ctx: _Ctx) -> None:
        amount = self._amount(ctx)
        self._open_batch(ctx)
        original = self._original(ctx)
        if original.status == "voided":
            raise _Answer(codes.INVALID_TRANSACTION)
        if amount > (original.amount or 0) - original.refunded:
            raise _Answer(codes.ORIGINAL_AMOUNT_MISMATCH)
        if ctx.card is not None:
            self._check_pin(ctx, ctx.card, required=False)
        self._magic(amount)
        ctx.records.append(replace(original, refunded=original.refunded + amount))
        self._spend(ctx, original.pan_hash or "", -amount)
        ctx.status = "approved"

    def _reversal(self, ctx: _Ctx) -> None:
        """Undo exactly the request named; unknown or mismatched ones are acknowledged only."""
        target = self._reversal_target(ctx)
        ctx.status = "acknowledged"
        if target is None:
            return
        ctx.original = target
        ctx.card = self._cards.get(ctx.pan or "")
        if target.status in ("declined", "reversed", "acknowledged") or target.kind == "balance":
            return
        if self._settled(ctx, target.batch):
            raise _Answer(codes.INVALID_TRANSACTION)
        amount = target.amount or 0
        if target.kind == "sale":
            if target.refunded > 0:
                raise _Answer(codes.INVALID_TRANSACTION)
            ctx.records.append(replace(target, status="reversed"))
            if target.status != "voided":  # a void already gave the money back
                self._spend(ctx, target.pan_hash or "", -amount)
        elif target.kind == "void":
            sale = ctx.s.transaction(parse_key(target.original), lock=True) \
                if target.original else None
            ctx.records.append(replace(target, status="reversed"))
            if sale is not None and sale.status == "voided":
                ctx.records.append(replace(sale, status="approved", voided_by=None))
                self._spend(ctx, sale.pan_hash or "", sale.amount or 0)
        elif target.kind == "refund":
            sale = ctx.s.transaction(parse_key(target.original), lock=True) \
                if target.original else None
            ctx.records.append(replace(target, status="reversed"))
            if sale is not None:
                ctx.records.append(replace(sale, refunded=sale.refunded - amount))
            self._spend(ctx, target.pan_hash or "", amount)

    def _reversal_target(self, ctx: _Ctx) -> TransactionRow | None:
        msg = ctx.msg
        tid, batch = ctx.term.tid, ctx.batch
        f90 = msg.get(90)
        if isinstance(f90, str):
            try:
                data = composite.F90.decode(f90)
            except Iso8583Error:
                return None
            ctx.s.lock_request(tid, batch, data.stan)  # see _dispatch
            candidates = [ctx.s.transaction((tid, batch, data.stan, data.mti), lock=True)]
        else:
            ctx.s.lock_request(tid, batch, ctx.stan)
            candidates = [ctx.s.transaction((tid, batch, ctx.stan, mti), lock=True)
                          for mti in self._table.money_mtis()]
        for target in candidates:
            if target is None or target.kind in ("reversal", "settlement"):
                continue
            if _digits(msg.get(4)) and target.amount is not None \
                    and int(str(msg.get(4))) != target.amount:
                continue
            proc = msg.get(3)
            if proc is not None and target.kind != "balance" and not self._same_proc(
                    target, str(proc)):
                continue
            return target
        return None

    def _same_proc(self, target: TransactionRow, proc: str) -> bool:
        _, fields = response_fields(target.response)
        return fields.get(3, proc) == proc

    def _settlement(self, ctx: _Ctx) -> None:
        f48 = ctx.msg.get(48)
        try:
            theirs, _, _ = SettlementTotals.decode(str(f48 or ""))
        except ValueError:
            raise _Answer(codes.FORMAT_ERROR) from None
        # totals read after the lock: no booking of this batch is in flight elsewhere
        ctx.s.lock_batch(ctx.term.tid, ctx.batch)
        ours = ctx.s.batch_totals(ctx.term.tid, ctx.batch)
        dom_ok, for_ok = ours.agrees_with(theirs)
        ctx.extra[48] = ours.encode(
            SettleResult.BALANCED if dom_ok else SettleResult.NOT_BALANCED,
            SettleResult.BALANCED if for_ok else SettleResult.NOT_BALANCED)
        ctx.records.append(BatchRow(ctx.term.tid, ctx.batch, True, ours.encode(),
                                    theirs.encode(), dom_ok and for_ok))
        if int(ctx.batch) >= int(ctx.term.row.batch):
            ctx.records.append(replace(ctx.term.row, batch=f"{int(ctx.batch) % 999_999 + 1:06d}"))
        ctx.status = "acknowledged"

    def _batch_upload(self, ctx: _Ctx) -> None:
        """Each item of a 0320 compared with the ledger (emulator.host.upload), one row each."""
        tid = ctx.term.tid

        def by_stan(batch: str, stan: str) -> TransactionRow | None:
            return next((t for mti in self._table.money_mtis()
                         if (t := ctx.s.transaction((tid, batch, stan, mti))) is not None), None)

        def by_rrn(rrn: str) -> TransactionRow | None:
            found = ctx.s.transaction_by_rrn(rrn)
            return found if found is not None and found.tid == tid else None

        try:
            rows = upload.upload_rows(ctx.msg, tid, ctx.batch,
                                      upload.Lookup(by_stan, by_rrn, self.pan_hash))
        except upload.UploadFormatError:
            raise _Answer(codes.FORMAT_ERROR) from None
        ctx.records.extend(rows)
        ctx.status = "acknowledged"

    def _batch_upload_end(self, ctx: _Ctx) -> None:
        """F48: the items the host holds for the batch (n4) and how many matched (n4)."""
        ctx.extra[48] = upload.end_counts(ctx.s.uploads(ctx.term.tid, ctx.batch), ctx.term.tid,
                                          ctx.batch).encode()
        ctx.status = "acknowledged"


class _Known(NamedTuple):
    """What the host works out of a request before its terminal is read (AcquirerHost._known)."""

    kind: str | None  # the transaction table's name for it; None: not a request it handles
    lock: RequestLock | None  # its lock_request arguments (_lock_args); None: it takes none


class _Plain(NamedTuple):  # a tuple: built once a request, no frozen-dataclass __init__
    response: Message | None
    close: bool
    records: tuple[LedgerRecord, ...] = ()
    body: bytes | None = None  # the response encoded (MTI onwards), when already known


def _digits(value: object, width: int | None = None) -> bool:
    if not isinstance(value, str) or not value.isdigit():
        return False
    return width is None or len(value) == width


def _pan_of(msg: Message) -> str | None:
    fields = msg.raw_items()
    pan = fields.get(2)
    if isinstance(pan, str) and pan:
        return pan
    track = fields.get(35)
    if isinstance(track, str):
        head = track.replace("=", "D").split("D", 1)[0]
        return head or None
    return None


def _keys_of(row: TerminalRow) -> security.WorkingKeys:
    return security.WorkingKeys(bytes.fromhex(row.pik), bytes.fromhex(row.mak),
                                bytes.fromhex(row.tdk) if row.tdk else None)


def answered_date(now: datetime) -> str:
    """F13 (MMDD) of the host's answers at ``now``: the date originals are booked and matched on."""
    return _TWO[now.month] + _TWO[now.day]
