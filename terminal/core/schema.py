"""The journal's schema, as an ordered list of migrations (``PRAGMA user_version``).

Never edit a released step; add a new one. Version 1 is the transaction
journal; version 2 the operators and the audit log.
"""

from __future__ import annotations

V1_JOURNAL = """
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE txn (
    id             INTEGER PRIMARY KEY,
    kind           TEXT NOT NULL,            -- sale, void, refund, balance
    mti            TEXT NOT NULL,
    stan           TEXT NOT NULL,            -- F11; the voucher number (凭证号) on CUP receipts
    batch          TEXT NOT NULL,            -- 60.2
    amount         INTEGER NOT NULL,         -- F4 in fen
    currency       TEXT NOT NULL,
    pan_masked     TEXT NOT NULL,
    pan_hash       TEXT NOT NULL,            -- keyed hash: same-card check without the PAN
    scheme         TEXT,                     -- card organisation (CUP, VIS, MCC)
    entry_mode     TEXT,                     -- F22
    card_label     TEXT,
    aid            TEXT,
    cryptogram_type TEXT,                    -- ARQC / AAC / TC the card gave (chip receipts)
    cryptogram     TEXT,                     -- 9F26 hex
    status         TEXT NOT NULL,            -- pending, approved, declined, uncertain, reversed
    response_code  TEXT,                     -- F39
    rrn            TEXT,                     -- F37 of the answer
    auth_code      TEXT,                     -- F38 of the answer
    host_date      TEXT,                     -- F13 of the answer (MMDD): a refund's 61.3
    host_time      TEXT,                     -- F12 of the answer
    created_at     TEXT NOT NULL,            -- ISO local time the request was written
    answered_at    TEXT,
    original_id    INTEGER REFERENCES txn(id),
    original_rrn   TEXT,                     -- void/refund: F37 sent
    original_batch TEXT,                     -- 61.1
    original_stan  TEXT,                     -- 61.2
    original_date  TEXT,                     -- 61.3
    original_amount INTEGER,                 -- refunds of originals from elsewhere
    reason         TEXT,
    note           TEXT,
    operator       TEXT,
    training       INTEGER NOT NULL DEFAULT 0,
    request        BLOB NOT NULL,            -- AES-GCM sealed request body (resend, batch upload)
    UNIQUE (batch, stan, mti)
);
CREATE INDEX txn_rrn ON txn(rrn);
CREATE INDEX txn_original ON txn(original_id);
CREATE INDEX txn_pan_hash ON txn(pan_hash);
CREATE INDEX txn_original_rrn ON txn(original_rrn, original_date);
CREATE TABLE pending (
    id         INTEGER PRIMARY KEY,
    txn_id     INTEGER NOT NULL REFERENCES txn(id),
    action     TEXT NOT NULL,               -- reversal | advice
    state      TEXT NOT NULL,               -- armed, due, done, cancelled
    reason     TEXT,                        -- reversal F39: 98, 96, A0, 06
    stan       TEXT,                        -- the reversal's own STAN when the dialect gives it one
    message    BLOB NOT NULL,               -- sealed request body (without MAC)
    attempts   INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    created_at TEXT NOT NULL,
    done_at    TEXT,
    answer_code TEXT
);
CREATE INDEX pending_open ON pending(state);
CREATE TABLE settlement (
    id           INTEGER PRIMARY KEY,
    batch        TEXT NOT NULL,
    created_at   TEXT NOT NULL,
    totals       TEXT NOT NULL,             -- JSON: counts and amounts by type
    balanced     INTEGER,                   -- host agreed (1), did not (0), unknown (NULL)
    uploaded     INTEGER NOT NULL DEFAULT 0,
    status       TEXT NOT NULL              -- open, settled
);
"""

#: Operators (CUP numbering: 99 administrator, 00 supervisor, 01-98 cashiers) and the
#: append-only audit log; the cashier's rules fill them.
V2_OPERATORS_AUDIT = """
CREATE TABLE operator (
    number        TEXT PRIMARY KEY,
    name          TEXT NOT NULL DEFAULT '',
    role          TEXT NOT NULL,            -- admin, supervisor, cashier
    pw_hash       TEXT NOT NULL,            -- scrypt$N$r$p$salt$hash
    pw_changed_at TEXT NOT NULL,
    failed_tries  INTEGER NOT NULL DEFAULT 0,
    locked_until  TEXT,
    active        INTEGER NOT NULL DEFAULT 1
);
CREATE TABLE audit (
    id        INTEGER PRIMARY KEY,
    at        TEXT NOT NULL,
    operator  TEXT,
    action    TEXT NOT NULL,
    txn_id    INTEGER REFERENCES txn(id),
    approver  TEXT,
    detail    TEXT NOT NULL DEFAULT '{}'    -- JSON, never a PAN or a key
);
CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TABLE flag (
    id         INTEGER PRIMARY KEY,
    txn_id     INTEGER NOT NULL REFERENCES txn(id),
    at         TEXT NOT NULL,
    operator   TEXT,
    explanation TEXT NOT NULL,
    follow_up_txn_id INTEGER REFERENCES txn(id)
)
"""

MIGRATIONS: list[tuple[int, str]] = [
    (1, V1_JOURNAL),
    (2, V2_OPERATORS_AUDIT),
]
