"""Fault injection for the acquirer emulator: make the host misbehave on purpose.

QA switches faults on per run (``pos-emulator serve --faults SPEC``) or at run time
(``pos-emulator faults add SPEC``). This module is sans-I/O and holds both halves of a
fault: the decision (which fault, if any, applies to a request) and its effects on
the host's answer (:func:`request_facts`, :func:`forced_answer` for ``code=XX``,
:func:`corrupt_reply` for ``bad-mac``, ``garble`` and ``corrupt-arpc``). The server
(:mod:`emulator.server`) only carries the decision out on the socket (delay, drop,
close, twice) and holds no payment logic.

Spec syntax
-----------
A spec is one or more rules separated by ``;``. A rule is an action, optionally
followed by ``@`` and comma-separated selectors; every selector must match (AND)::

    spec     := rule (";" rule)*
    rule     := action ["@" selector ("," selector)*]
    action   := "delay=" MS | "drop" | "close-before" | "close-after"
              | "bad-mac" | "twice" | "garble" | "corrupt-arpc" | "code=" XX
    selector := "p=" PROBABILITY | "card=" (CATALOGUE-NAME | PAN)
              | "amount=" FEN | "mti=" NNNN | "once"

Actions (what the terminal sees, and whether the host books):

============== ============================================================ =======
action         effect                                                       booked
============== ============================================================ =======
delay=N        the answer leaves N milliseconds late                        yes
drop           no answer at all; the connection stays open (a timeout)      yes
close-before   the connection closes before the request is processed        no
close-after    the request is booked, then the connection closes unanswered yes
bad-mac        the answer's F64 is corrupted (the MAC does not verify)      yes
twice          the answer is sent twice                                     yes
garble         every byte of the answer is inverted (the frame length is     yes
               kept, so the stream stays in step, but nothing decodes)
corrupt-arpc   one bit of the ARPC (tag 91 in F55) of a chip sale's answer  yes
               is flipped and the answer MACed again: the MAC verifies,
               the card's issuer authentication fails (an approving
               terminal gets an AAC and reverses); answers without tag 91
               are sent as they are; the rule fires only on requests
               carrying chip data (F55)
code=XX        the answer carries response code XX (F39 set before MACing)  no
============== ============================================================ =======

``code=XX`` never books: the host refuses the request with the chosen code, as an
issuer decline would, so the ledger stays what the terminal believes it is.

Selectors: ``p=0.1`` fires with that probability (drawn only when every other
selector matched); ``card=cup-debit`` or ``card=6225880000000019`` matches the
request's PAN (F2, or F35 before the separator); ``amount=1234`` matches F4 in fen;
``mti=0200`` matches the request MTI; ``once`` disarms the rule after it fires.
Rules are tried in the order they were added; the first that fires wins.

Examples: ``delay=200@p=0.1``, ``drop@card=cup-debit``,
``close-after@amount=1234,once``, ``code=96@mti=0200``, ``corrupt-arpc@card=visa-credit``,
``bad-mac@p=0.05;twice@p=0.05``.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Protocol

from emulator.catalogue import card_by_name
from emulator.host import security
from emulator.host.errors import HostError
from iso8583 import tlv
from iso8583.errors import Iso8583Error

if TYPE_CHECKING:
    from emulator.host.core import AcquirerHost, HostOutcome
    from emulator.host.ledger import LedgerSession


class FaultSpecError(HostError, ValueError):
    """A fault spec does not follow the syntax documented in :mod:`emulator.faults`."""


class FaultKind(StrEnum):
    """What the host does wrong."""

    NONE = "none"
    DELAY = "delay"
    DROP = "drop"
    CLOSE_BEFORE = "close-before"
    CLOSE_AFTER = "close-after"
    BAD_MAC = "bad-mac"
    TWICE = "twice"
    GARBLE = "garble"
    CORRUPT_ARPC = "corrupt-arpc"
    CODE = "code"


# Kinds that take a value after "=", and the aliases accepted on input.
_VALUED = {FaultKind.DELAY, FaultKind.CODE}
_ALIASES = {"badmac": FaultKind.BAD_MAC, "never": FaultKind.DROP,
            "bad-arpc": FaultKind.CORRUPT_ARPC}
_MAX_DELAY_MS = 600_000


class FaultSubject(Protocol):
    """What a fault rule can select on: the request's MTI, PAN and amount, and whether it
    carries chip data (F55; ``corrupt-arpc`` fires on no other request)."""

    @property
    def mti(self) -> str: ...

    @property
    def pan(self) -> str | None: ...

    @property
    def amount(self) -> int | None: ...

    @property
    def chip(self) -> bool: ...


@dataclass(frozen=True)
class RequestFacts:
    """A plain :class:`FaultSubject` (the server builds one per request)."""

    mti: str
    pan: str | None = None
    amount: int | None = None
    chip: bool = False


@dataclass(frozen=True)
class FaultAction:
    """The decision for one request. ``rule`` is the spec of the rule that fired."""

    kind: FaultKind = FaultKind.NONE
    delay_ms: int = 0
    code: str | None = None
    rule: str = ""

    @property
    def books(self) -> bool:
        """Whether the host processes (and so may book) the request under this fault."""
        return self.kind not in (FaultKind.CLOSE_BEFORE, FaultKind.CODE)


NO_FAULT = FaultAction()


@dataclass
class FaultRule:
    """One parsed rule: an action and the selectors that must all match."""

    action: FaultAction
    probability: float | None = None
    pan: str | None = None
    amount: int | None = None
    mti: str | None = None
    once: bool = False
    fired: int = 0
    #: a ``once`` rule another process of the same host fired (``serve --workers``)
    spent_elsewhere: bool = False

    @property
    def spec(self) -> str:
        return self.action.rule

    @property
    def armed(self) -> bool:
        return not (self.once and (self.fired or self.spent_elsewhere))

    def selects(self, subject: FaultSubject) -> bool:
        """Whether the non-random selectors match ``subject``."""
        if self.mti is not None and subject.mti != self.mti:
            return False
        if self.action.kind is FaultKind.CORRUPT_ARPC and not subject.chip:
            return False  # no ARQC asked, no ARPC to spoil: ``once`` is kept for one that is
        if self.pan is not None and subject.pan != self.pan:
            return False
        return self.amount is None or subject.amount == self.amount


def _parse_action(text: str, rule: str) -> FaultAction:
    name, eq, value = text.partition("=")
    name = name.strip().lower()
    kind = _ALIASES.get(name)
    if kind is None:
        try:
            kind = FaultKind(name)
        except ValueError:
            known = ", ".join(k.value for k in FaultKind if k is not FaultKind.NONE)
            raise FaultSpecError(f"unknown fault {name!r} in {rule!r}; known: {known}") from None
    if kind is FaultKind.NONE:
        raise FaultSpecError(f"'none' is not a fault: {rule!r}")
    if kind in _VALUED and not eq:
        raise FaultSpecError(f"fault {kind.value!r} needs a value ({kind.value}=...): {rule!r}")
    if kind not in _VALUED and eq:
        raise FaultSpecError(f"fault {kind.value!r} takes no value: {rule!r}")
    value = value.strip()
    if kind is FaultKind.DELAY:
        if not value.isdigit() or int(value) > _MAX_DELAY_MS:
            raise FaultSpecError(f"delay must be 0..{_MAX_DELAY_MS} milliseconds: {rule!r}")
        return FaultAction(kind, delay_ms=int(value), rule=rule)
    if kind is FaultKind.CODE:
        if len(value) != 2 or not value.isalnum() or not value.isascii():
            raise FaultSpecError(f"response code must be 2 letters/digits: {rule!r}")
        return FaultAction(kind, code=value.upper(), rule=rule)
    return FaultAction(kind, rule=rule)


def _parse_card(value: str, rule: str) -> str:
    if value.isdigit() and 12 <= len(value) <= 19:
        return value
    try:
        return card_by_name(value).pan
    except KeyError as exc:
        raise FaultSpecError(f"{exc.args[0]} (in {rule!r})") from None


def parse_rule(text: str) -> FaultRule:
    """Parse one rule such as ``close-after@amount=1234,once``."""
    rule = text.strip()
    if not rule:
        raise FaultSpecError("empty fault rule")
    action_text, at, selectors_text = rule.partition("@")
    parsed = FaultRule(_parse_action(action_text, rule))
    if at and not selectors_text.strip():
        raise FaultSpecError(f"'@' must be followed by selectors: {rule!r}")
    seen: set[str] = set()
    for raw in selectors_text.split(",") if at else []:
        key, eq, value = raw.strip().partition("=")
        key, value = key.strip().lower(), value.strip()
        if key in seen:
            raise FaultSpecError(f"selector {key!r} given twice: {rule!r}")
        seen.add(key)
        if key == "once" and not eq:
            parsed.once = True
        elif key == "p" and eq:
            try:
                p = float(value)
            except ValueError:
                p = -1.0
            if not 0.0 <= p <= 1.0:
                raise FaultSpecError(f"p must be a probability 0..1: {rule!r}")
            parsed.probability = p
        elif key == "card" and eq and value:
            parsed.pan = _parse_card(value, rule)
        elif key == "amount" and eq and value.isdigit():
            parsed.amount = int(value)
        elif key == "mti" and eq and len(value) == 4 and value.isdigit():
            parsed.mti = value
        else:
            raise FaultSpecError(
                f"bad selector {raw.strip()!r} in {rule!r}; "
                "use p=0.1, card=NAME|PAN, amount=FEN, mti=NNNN or once")
    return parsed


def parse_spec(spec: str) -> list[FaultRule]:
    """Parse a spec of one or more ``;``-separated rules."""
    rules = [parse_rule(part) for part in spec.split(";") if part.strip()]
    if not rules:
        raise FaultSpecError("empty fault spec")
    return rules


@dataclass
class FaultPlan:
    """The faults in force. Mutable at run time; the server asks it once per request."""

    rules: list[FaultRule] = field(default_factory=list)
    #: told (index, rule) when a ``once`` rule fires, so the other workers can disarm it
    on_once: Callable[[int, FaultRule], None] | None = field(default=None, compare=False)
    #: asked (index, rule) before a ``once`` rule fires: False when another process of the
    #: same host already fired it (``serve --workers``: an atomic claim, see emulator.workers)
    claim_once: Callable[[int, FaultRule], bool] | None = field(default=None, compare=False)

    @classmethod
    def from_specs(cls, specs: list[str] | tuple[str, ...]) -> FaultPlan:
        plan = cls()
        for spec in specs:
            plan.add(spec)
        return plan

    def add(self, spec: str) -> list[FaultRule]:
        """Parse ``spec`` and append its rules (all or none: a bad spec adds nothing)."""
        rules = parse_spec(spec)
        self.rules.extend(rules)
        return rules

    def clear(self) -> int:
        """Remove every rule; returns how many there were."""
        count = len(self.rules)
        self.rules.clear()
        return count

    def disarm(self, index: int, spec: str) -> bool:
        """Mark the ``once`` rule at ``index`` (whose text is ``spec``) as fired elsewhere.

        False when there is no such rule there (the plan changed meanwhile): nothing
        is disarmed by position alone.
        """
        if not 0 <= index < len(self.rules):
            return False
        rule = self.rules[index]
        if not rule.once or rule.spec != spec:
            return False
        rule.spent_elsewhere = True
        return True

    def describe(self) -> list[dict[str, object]]:
        """The rules as plain data (for the admin channel)."""
        return [{"spec": r.spec, "fired": r.fired, "armed": r.armed} for r in self.rules]

    def __bool__(self) -> bool:
        return bool(self.rules)

    def decide(self, subject: FaultSubject, rng: random.Random) -> FaultAction:
        """The fault to apply to ``subject``: the first armed rule that fires, or none.

        ``rng`` is drawn from only for rules with ``p=`` whose other selectors
        matched, so a seeded run is reproducible.
        """
        for index, rule in enumerate(self.rules):
            if not rule.armed or not rule.selects(subject):
                continue
            if rule.probability is not None and rng.random() >= rule.probability:
                continue
            if rule.once and self.claim_once is not None and not self.claim_once(index, rule):
                rule.spent_elsewhere = True  # another worker won it, maybe this millisecond
                continue
            rule.fired += 1
            if rule.once and self.on_once is not None:
                self.on_once(index, rule)
            return rule.action
        return NO_FAULT


# --- effects on the host's answer ---------------------------------------------------
class _FactsMessage(Protocol):
    @property
    def mti(self) -> str: ...

    @property
    def amount(self) -> int | None: ...

    def get(self, number: int) -> str | bytes | None: ...

    def __contains__(self, key: object) -> bool: ...


class _Unpacked(Protocol):
    @property
    def message(self) -> _FactsMessage: ...


class PayloadDialect(Protocol):
    """What the fault effects need from a dialect (``iso8583.dialects.Dialect`` has it)."""

    def unpack_payload(self, payload: bytes) -> _Unpacked: ...


def request_facts(dialect: PayloadDialect, payload: bytes) -> RequestFacts | None:
    """MTI, PAN and amount of a request, for fault selection (None if undecodable)."""
    try:
        message = dialect.unpack_payload(payload).message
    except Iso8583Error:
        return None
    pan = message.get(2)
    if not isinstance(pan, str):
        track2 = message.get(35)
        pan = track2.split("D")[0].split("=")[0] if isinstance(track2, str) else None
    return RequestFacts(message.mti, pan, message.amount, chip=55 in message)


def bad_mac(dialect: PayloadDialect, reply: bytes) -> bytes:
    """``reply`` with the last character of its MAC changed (unchanged if it has none)."""
    try:
        has_mac = 64 in dialect.unpack_payload(reply).message
    except Iso8583Error:
        has_mac = False
    if not has_mac or not reply:
        return reply
    # keep it a hex character so only the MAC check, not the decoder, fails
    last = b"1" if reply[-1:] == b"0" else b"0"
    return reply[:-1] + last


def garble(reply: bytes) -> bytes:
    """Every byte inverted: same length (the stream stays framed), nothing decodes."""
    return bytes(b ^ 0xFF for b in reply)


def corrupt_arpc(host: AcquirerHost, reply: bytes, session: LedgerSession | None = None) -> bytes:
    """``reply`` with one bit of its ARPC (the first byte of tag 91 in F55) flipped and the
    MAC computed again under the terminal's MAK, so only the card's check fails.

    Left alone: a reply without tag 91, one that does not decode, and one from a
    terminal the host has no MAK for (it could not be MACed again).
    """
    dialect = host.dialect
    try:
        frame = dialect.unpack_payload(reply)
        answer = frame.message
        f55 = answer.get(55)
        if not isinstance(f55, bytes):
            return reply
        items = tlv.decode(f55)
        if not any(item.tag == 0x91 and item.value for item in items):
            return reply
        answer[55] = b"".join(
            tlv.encode_tlv(0x91, bytes([item.value[0] ^ 0x01]) + item.value[1:])
            if item.tag == 0x91 and item.value else item.encode() for item in items)
        mac_field = dialect.spec.mac_field
        if mac_field in answer:
            row = host.terminal(answer.tid or "", session)
            if row is None or not row.mak:
                return reply
            security.apply_mac(dialect, bytes.fromhex(row.mak), answer)
        return dialect.payload(answer, tpdu=frame.tpdu, header=frame.header)
    except Iso8583Error:
        return reply


def corrupt_reply(dialect: PayloadDialect, action: FaultAction, reply: bytes, *,
                  host: AcquirerHost | None = None,
                  session: LedgerSession | None = None) -> bytes:
    """The answer as ``action`` spoils it (``bad-mac``, ``garble``, ``corrupt-arpc``, the
    last only given the ``host`` that holds the MAK); others leave it alone."""
    if action.kind is FaultKind.BAD_MAC:
        return bad_mac(dialect, reply)
    if action.kind is FaultKind.GARBLE:
        return garble(reply)
    if action.kind is FaultKind.CORRUPT_ARPC and host is not None:
        return corrupt_arpc(host, reply, session)
    return reply


def forced_answer(host: AcquirerHost, payload: bytes, code: str, now: datetime, *,
                  session: LedgerSession | None = None) -> HostOutcome:
    """The ``code=XX`` fault: answer ``payload`` with F39 = ``code``, booking nothing.

    The answer echoes the request's identifying fields, as the host's own refusals
    do, and is MACed with the terminal's current MAK when it has one (F39 is set
    before MACing, so the terminal sees a genuine-looking decline).
    """
    from emulator.host.core import HostOutcome

    dialect = host.dialect
    try:
        frame = dialect.unpack_payload(payload)
        request = frame.message
        if not request.is_request:
            return HostOutcome(None, close=True)
        answer = dialect.message(request.response_mti)
        for number in (2, 3, 4, 11, 12, 13, 25, 37, 41, 42, 49, 60, 70):
            value = request.get(number)
            if value is not None and number in dialect.fields:
                answer[number] = value
        answer[39] = code
        row = host.terminal(request.tid or "", session)
        if row is not None and row.signed_on and row.mak and request.mti not in ("0800", "0820"):
            security.apply_mac(dialect, bytes.fromhex(row.mak), answer)
        tpdu = dialect.reply_tpdu(frame.tpdu) if frame.tpdu is not None else None
        reply = dialect.payload(answer, tpdu=tpdu, header=frame.header)
    except Iso8583Error:
        return HostOutcome(None, close=True)
    return HostOutcome(reply, False, (), request, answer, request.pan, None)
