"""How a terminal builds and checks each message: pure protocol knowledge, no state, no I/O.

:class:`TerminalProtocol` turns typed inputs (the card as read, the request
context, the original a refund names) into requests of the dialect, reading
the dialect's :class:`~iso8583.dialect.TransactionProfile` table and its
:class:`~iso8583.dialect.DialectSettings`; it never branches on a dialect's
name. It holds no counters and no keys: STAN, batch and the clock come in a
:class:`RequestContext`, the MAK comes with :meth:`TerminalProtocol.mac` and
:meth:`TerminalProtocol.check_response`.

Requests come back without a MAC; the caller MACs them with
:meth:`TerminalProtocol.mac` (a no-op for sign-on, echo and sign-off, which are
never MACed). Typical use::

    proto = TerminalProtocol(get_dialect("cup"), "10000001", "123456789012345")
    ctx = RequestContext(stan="000001", batch="000001", now=now)
    request = proto.mac(proto.sale(ctx, 12_300, card, pin_block=block), mak)
    answer = proto.check_response(request, frame.message, body=frame.body, mak=mak)
    if answer.approved: ...   # answer.date is the host's F13: a later refund's 61.3
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from iso8583 import composite, tlv
from iso8583.crypto import signon
from iso8583.crypto.message_mac import apply_mac, received_mac_ok
from iso8583.dialect import BatchUploadProfile, Dialect, TransactionProfile
from iso8583.errors import Iso8583Error, ResponseError, ResponseMacError
from iso8583.masking import mask_pan
from iso8583.message import Message
from iso8583.quickinit import quick_init
from iso8583.responses import UNMACED_CODES, TerminalAction, explain
from iso8583.settlement import SettlementTotals, SettleResult

EntryKind = Literal["chip", "contactless", "stripe", "manual", "fallback"]

WorkingKeys = signon.WorkingKeys

#: 60.3 network code of a sign-on by F62 key form.
SIGN_ON_FORMS: Mapping[int, str] = {1: "001", 3: "003", 4: "004"}
#: Fields a reversal copies from the request it reverses (never PIN block, track data, F55).
REVERSAL_COPIES: tuple[int, ...] = (2, 3, 4, 11, 14, 22, 23, 25, 37, 38, 41, 42, 49, 60, 61, 63)
_NETWORK_CLASS = "08"  # 08xx network management: never MACed
_CHIP_ENTRIES = frozenset({"chip", "contactless"})


@quick_init  # one or more per request: see iso8583.quickinit
@dataclass(frozen=True)
class CardInput:
    """The card as the terminal read it (or the PAN as keyed)."""

    pan: str = field(repr=False)
    expiry: str | None = None  # YYMM (F14)
    entry: EntryKind = "manual"
    card_seq: str | None = None  # PAN sequence number (5F34), F23 when read from the chip
    track2: str | None = field(default=None, repr=False)  # F35, '=' or 'D' separator
    icc_data: bytes | None = field(default=None, repr=False)  # F55 as the kernel built it
    scheme: str | None = None  # card organisation: CUP, VIS, MCC

    def __repr__(self) -> str:
        return (f"CardInput(pan={mask_pan(self.pan)!r}, entry={self.entry!r}, "
                f"scheme={self.scheme!r}, icc={self.icc_data is not None})")


@quick_init  # one or more per request: see iso8583.quickinit
@dataclass(frozen=True)
class RequestContext:
    """What a request takes from the terminal's state: its STAN, the open batch, the time."""

    stan: str  # n6
    batch: str  # n6, 60.2
    now: datetime


@quick_init  # one or more per request: see iso8583.quickinit
@dataclass(frozen=True)
class OriginalRef:
    """The approved sale a void or refund names (F37, F38, F61, F63)."""

    batch: str
    stan: str
    date: str | None  # MMDD the host ANSWERED the original with (its F13)
    rrn: str | None
    auth_code: str | None
    amount: int
    scheme: str | None


@dataclass(frozen=True)
class UploadItem:
    """One approved financial transaction of the open batch, for a 0320 batch upload."""

    kind: str  # sale, void, refund
    pan: str = field(repr=False)
    amount: int
    batch: str
    stan: str
    date: str | None  # MMDD of the host's answer
    rrn: str | None
    auth_code: str | None
    icc_data: bytes | None = field(default=None, repr=False)  # F55: the item is a chip item
    scheme: str | None = None  # card organisation (CUP, VIS, MCC): 48.2.1 and F63
    entry_mode: str | None = None  # F22 as the item was sent
    card_seq: str | None = None  # F23 of a chip item


#: How an item travels in a batch upload: in an F48 list, alone with its F55, alone as an advice.
UploadWay = Literal["list", "chip", "advice"]


@dataclass(frozen=True)
class UploadChunk:
    """What one batch-upload 0320 carries: up to 8 list items, or one chip or advice item."""

    way: UploadWay
    items: tuple[UploadItem, ...]


def upload_way(profile: BatchUploadProfile | None, item: UploadItem) -> UploadWay:
    """Advice kinds alone with their fields; chip items (F55) alone; the rest in F48 lists.

    Without a profile (a dialect with no documented list form) every item goes alone.
    """
    if profile is not None and item.kind in profile.advice_kinds:
        return "advice"
    if item.icc_data is not None:
        return "chip"
    return "list" if profile is not None else "advice"


def plan_upload(profile: BatchUploadProfile | None,
                items: Sequence[UploadItem]) -> tuple[UploadChunk, ...]:
    """The 0320s that carry ``items``: list items packed 8 a message, then advices, then chip."""
    ways: dict[UploadWay, list[UploadItem]] = {"list": [], "advice": [], "chip": []}
    for item in items:
        ways[upload_way(profile, item)].append(item)
    size = composite.UPLOAD_ITEMS_MAX
    listed = ways["list"]
    chunks = [UploadChunk("list", tuple(listed[i:i + size])) for i in range(0, len(listed), size)]
    chunks += [UploadChunk(way, (item,)) for way in ("advice", "chip") for item in ways[way]]
    return tuple(chunks)


def upload_icc_data(f55: bytes, cryptogram_type: str | None, cryptogram: str | None) -> bytes:
    """F55 of a chip item for its upload: the card's TC (9F26, 9F27 = 40) when there is one.

    The sale's request carried the ARQC; a terminal that holds the TC of the
    second GENERATE AC uploads that instead. Anything else leaves F55 as sent.
    """
    if cryptogram_type != "TC" or not cryptogram:
        return f55
    try:
        tags = tlv.decode_flat(f55)
        tags[0x9F26] = bytes.fromhex(cryptogram)
    except (Iso8583Error, ValueError):
        return f55
    tags[0x9F27] = b"\x40"
    return tlv.encode(tags)


@quick_init  # one or more per request: see iso8583.quickinit
@dataclass(frozen=True)
class Answer:
    """A checked answer: its code, what the terminal does next, and what it keeps."""

    code: str
    action: TerminalAction
    rrn: str | None
    auth_code: str | None
    date: str | None  # F13 of the answer (MMDD): a refund's 61.3 later
    time: str | None  # F12 of the answer (hhmmss)
    balance: int | None  # balance inquiry: F54 available balance in fen (signed)
    settle_balanced: bool | None  # settlement: both halves of F48 agree
    issuer_auth_data: bytes | None = None  # tag 91 of the answer's F55 (ARPC + ARC/CSU)
    upload_counts: composite.UploadCounts | None = None  # end of a batch upload: F48

    @property
    def approved(self) -> bool:
        return self.action is TerminalAction.APPROVED


@dataclass(frozen=True)
class SignOnResult:
    """What a sign-on answer gives: the working keys and the host's batch (60.2) if sent."""

    keys: WorkingKeys
    batch: str | None


def issuer_auth_data(f55: object) -> bytes | None:
    """Tag 91 (issuer authentication data) of an answer's F55, or None (absent, malformed)."""
    if not isinstance(f55, bytes):
        return None
    try:
        return tlv.decode_flat(f55).get(0x91)
    except Iso8583Error:
        return None


def parse_balance(f54: object) -> int | None:
    """Available balance in fen from F54 (amount type, currency, C/D sign, n12), or None."""
    if not isinstance(f54, str) or len(f54) < 20 or not f54[8:20].isdigit():
        return None
    sign = -1 if f54[7] == "D" else 1
    return sign * int(f54[8:20])


def parse_upload_counts(f48: object) -> composite.UploadCounts | None:
    """What the host says it received (and matched) in its answer to an upload's end."""
    if not isinstance(f48, str):
        return None
    try:
        return composite.UploadCounts.decode(f48)
    except Iso8583Error:
        return None


def parse_settle_result(f48: object) -> bool | None:
    """True when both halves of a settlement answer's F48 say balanced; None without F48."""
    if not isinstance(f48, str):
        return None
    try:
        _, dom, fore = SettlementTotals.decode(f48)
    except ValueError:
        return False
    return dom is SettleResult.BALANCED and fore is SettleResult.BALANCED


class TerminalProtocol:
    """Builds a terminal's requests in one dialect and checks the host's answers (pure)."""

    def __init__(self, dialect: Dialect, tid: str, mid: str) -> None:
        self.dialect = dialect
        self.settings = dialect.settings
        self.tid = tid
        self.mid = mid

    def __repr__(self) -> str:
        return f"TerminalProtocol({self.dialect.name!r}, tid={self.tid!r})"

    # --- building blocks -----------------------------------------------------------
    def profile(self, kind: str) -> TransactionProfile:
        """The dialect's profile of ``kind``; :class:`KeyError` naming it when missing."""
        try:
            return self.dialect.transactions[kind]
        except KeyError:
            raise KeyError(f"dialect {self.dialect.name} has no {kind!r} transaction") from None

    def _new(self, kind: str, ctx: RequestContext, *, mti: str | None = None) -> Message:
        profile = self.profile(kind)
        msg = self.dialect.message(mti or profile.mti)
        if profile.processing_code is not None:
            msg[3] = profile.processing_code
        msg[11] = ctx.stan
        now = ctx.now  # strftime("%H%M%S") / ("%m%d"), as fields: a third of the time
        msg[12] = f"{now.hour:02d}{now.minute:02d}{now.second:02d}"
        msg[13] = f"{now.month:02d}{now.day:02d}"
        if profile.condition_code is not None:
            msg[25] = profile.condition_code
        msg[41] = self.tid
        msg[42] = self.mid
        return msg

    def _f60(self, kind: str, ctx: RequestContext, *, card: CardInput | None = None,
             net_code: str | None = None) -> str:
        profile = self.profile(kind)
        read_capability = ic_condition = ""
        if card is not None:  # 60.4 chip-capable read, 60.5 fallback after a chip failure
            read_capability = "2" if card.entry in ("stripe", "manual") else "5"
            ic_condition = "2" if card.entry == "fallback" else "0"
        return composite.F60(msg_type=profile.f60_type or "00", batch=ctx.batch,
                             net_code=net_code or profile.net_code or "000",
                             read_capability=read_capability,
                             ic_condition=ic_condition).encode()

    def _network(self, kind: str, ctx: RequestContext, net_code: str | None = None) -> Message:
        """Network management: 60.3 (CUP) or F70 (iso87; batch and key form still in F60)."""
        profile = self.profile(kind)
        msg = self._new(kind, ctx)
        code = net_code or profile.net_code or "000"
        if profile.f60_type is None and 70 in self.dialect.fields:
            msg[70] = profile.net_code or code
        msg[60] = composite.F60(msg_type="00", batch=ctx.batch, net_code=code).encode()
        return msg

    def entry_mode(self, card: CardInput, pin_block: bytes | None) -> str:
        """F22: the dialect's prefix for how the card was read, then 1 (PIN) or 2 (no PIN)."""
        return self.settings.entry_mode_prefix[card.entry] + ("2" if pin_block is None else "1")

    def _card_fields(self, msg: Message, card: CardInput, pin_block: bytes | None, *,
                     icc: bool) -> None:
        msg[2] = card.pan
        if card.expiry is not None:
            msg[14] = card.expiry
        msg[22] = self.entry_mode(card, pin_block)
        if card.card_seq is not None and card.entry in _CHIP_ENTRIES:
            msg[23] = card.card_seq.zfill(3)
        if pin_block is not None:
            msg[26] = "06"
            msg[52] = pin_block
            if self.settings.security_control is not None:
                msg[53] = self.settings.security_control
        if card.track2 is not None:
            msg[35] = card.track2
        if icc and card.icc_data is not None:
            msg[55] = card.icc_data

    # --- network management --------------------------------------------------------
    def sign_on(self, ctx: RequestContext, form: int = 3) -> Message:
        """0800 sign-on asking for working keys in F62 form 1, 3 or 4 (60.3 001/003/004)."""
        try:
            net_code = SIGN_ON_FORMS[form]
        except KeyError:
            raise ValueError(f"sign-on key form must be 1, 3 or 4, not {form}") from None
        return self._network("sign_on", ctx, net_code)

    def accept_sign_on(self, tmk: bytes, response: Message) -> SignOnResult:
        """The working keys of an 0810 under ``tmk``; :class:`ResponseError` on a refusal.

        A bad check value raises :class:`~iso8583.errors.KeyCheckError`.
        """
        want = Message(self.profile("sign_on").mti).response_mti
        if response.mti != want:
            raise ResponseError(f"expected {want}, got {response.mti}")
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
        keys = signon.unwrap_signon_keys(tmk, f62)
        batch: str | None = None
        f60 = response.get(60)
        if isinstance(f60, str):
            try:
                batch = composite.F60.decode(f60).batch
            except Iso8583Error:
                batch = None
        return SignOnResult(keys, batch)

    def sign_off(self, ctx: RequestContext) -> Message:
        """Sign-off (60.3 = 002): the host drops the working keys."""
        return self._network("sign_off", ctx, "002")

    def echo(self, ctx: RequestContext) -> Message:
        """Echo test (60.3 = 301)."""
        return self._network("echo", ctx, "301")

    # --- financial -----------------------------------------------------------------
    def sale(self, ctx: RequestContext, amount: int, card: CardInput,
             pin_block: bytes | None = None) -> Message:
        """Sale (消费) of ``amount`` fen; F55 when the card gave ICC data."""
        msg = self._new("sale", ctx)
        msg[4] = amount
        msg[49] = self.settings.currency
        self._card_fields(msg, card, pin_block, icc=True)
        msg[60] = self._f60("sale", ctx, card=card)
        return msg

    def balance(self, ctx: RequestContext, card: CardInput,
                pin_block: bytes | None = None) -> Message:
        """Balance inquiry (余额查询); the answer's F54 carries the balance."""
        msg = self._new("balance", ctx)
        msg[49] = self.settings.currency
        self._card_fields(msg, card, pin_block, icc=True)
        msg[60] = self._f60("balance", ctx, card=card)
        return msg

    def void(self, ctx: RequestContext, original: OriginalRef, card: CardInput,
             pin_block: bytes | None = None) -> Message:
        """Void (消费撤销) of an approved sale of the open batch, full amount.

        F37 original RRN, F38 original auth code, F61 = original batch + STAN.
        """
        msg = self._new("void", ctx)
        msg[4] = original.amount
        msg[49] = self.settings.currency
        self._card_fields(msg, card, pin_block, icc=False)
        if original.rrn is not None:
            msg[37] = original.rrn
        if original.auth_code is not None:
            msg[38] = original.auth_code
        msg[60] = self._f60("void", ctx)
        msg[61] = composite.F61(original.batch, original.stan).encode()
        return msg

    def refund(self, ctx: RequestContext, original: OriginalRef, amount: int, card: CardInput,
               pin_block: bytes | None = None) -> Message:
        """Refund (退货) of ``amount`` fen against an approved sale.

        MTI from ``settings.refund_mti``; F37 original RRN; F61 = original batch +
        STAN + the date the host answered the original with; the card organisation
        in ``settings.card_organisation_field``; F55 only if ``refund_carries_f55``.
        """
        msg = self._new("refund", ctx, mti=self.settings.refund_mti)
        msg[4] = amount
        msg[49] = self.settings.currency
        self._card_fields(msg, card, pin_block, icc=self.settings.refund_carries_f55)
        if original.rrn is not None:
            msg[37] = original.rrn
        msg[60] = self._f60("refund", ctx)
        msg[61] = composite.F61(original.batch, original.stan, original.date).encode()
        org_field = self.settings.card_organisation_field
        scheme = original.scheme or card.scheme
        if org_field is not None and scheme is not None:
            msg[org_field] = composite.F63(scheme).encode()
        return msg

    def reversal(self, request: Message, reason: str,
                 ctx: RequestContext | None = None) -> Message:
        """Reversal (冲正) of ``request`` with F39 = reason (98, 96, A0, 06).

        Copies the request's identifying fields (never PIN block, track data or
        F55). Where the dialect's reversal is a new message (``f90``), ``ctx``
        gives its own STAN and F90 names the original.
        """
        msg = self.dialect.message(self.profile("reversal").mti)
        for number in REVERSAL_COPIES:
            value = request.get(number)
            if value is not None:
                msg[number] = value
        msg[39] = reason
        if self.settings.reversal_original_data == "f90":
            if ctx is None:
                raise ValueError(f"a {self.dialect.name} reversal is a new message: pass ctx")
            msg[11] = ctx.stan
            date, time = request.get(13), request.get(12)
            when = (date if isinstance(date, str) else "0000") + (
                time if isinstance(time, str) else "000000")
            msg[90] = composite.F90(request.mti, str(request.get(11)), when).encode()
        return msg

    # --- end of day ----------------------------------------------------------------
    def settlement(self, ctx: RequestContext, totals: SettlementTotals) -> Message:
        """Settlement (结算) of the open batch with the terminal's totals in F48."""
        msg = self._new("settlement", ctx)
        msg[48] = totals.encode()
        msg[49] = self.settings.currency
        msg[60] = self._f60("settlement", ctx)
        return msg

    def batch_upload(self, ctx: RequestContext, item: UploadItem) -> Message:
        """Batch upload (批上送) of one item, the way the dialect sends it (see :meth:`upload`)."""
        way = upload_way(self.settings.batch_upload, item)
        return self.upload(ctx, UploadChunk(way, (item,)))

    def upload(self, ctx: RequestContext, chunk: UploadChunk) -> Message:
        """One 0320 of a batch upload (chunks from :func:`plan_upload`).

        ``list``: 60.3 = 201, F48 = count n2 + per item organisation n2, STAN n6,
        PAN n20, amount n12 (:class:`~iso8583.composite.F48UploadList`).
        ``chip``: 60.3 = 203, F2/F4/F22/F23, F55, F37/F38, F61 = the item's
        batch + STAN + date. ``advice``: 60.3 = 201 with the same fields (no F55)
        and the card organisation. F11 is always the message's own STAN.
        """
        profile = self.settings.batch_upload or BatchUploadProfile()
        if chunk.way == "list":
            msg = self._new(profile.list_kind, ctx)
            msg[48] = composite.F48UploadList(tuple(
                composite.UploadEntry(
                    composite.UPLOAD_DOMESTIC if i.scheme is None
                    or i.scheme in profile.domestic_schemes else composite.UPLOAD_FOREIGN,
                    i.stan, i.pan, i.amount)
                for i in chunk.items)).encode()
            msg[60] = self._f60(profile.list_kind, ctx)
            return msg
        if len(chunk.items) != 1:
            raise ValueError(f"a {chunk.way} upload carries one item, not {len(chunk.items)}")
        item = chunk.items[0]
        kind = profile.chip_kind if chunk.way == "chip" else profile.list_kind
        if kind not in self.dialect.transactions:
            kind = profile.list_kind
        msg = self._new(kind, ctx)
        msg[2] = item.pan
        processing = self.dialect.transactions.get(item.kind)
        msg[3] = (processing.processing_code if processing is not None else None) or "000000"
        msg[4] = item.amount
        msg[49] = self.settings.currency
        if item.entry_mode is not None:
            msg[22] = item.entry_mode
        if item.rrn is not None:
            msg[37] = item.rrn
        if item.auth_code is not None:
            msg[38] = item.auth_code
        if chunk.way == "chip" and item.icc_data is not None:
            if item.card_seq is not None:
                msg[23] = item.card_seq.zfill(3)
            msg[55] = item.icc_data
        org_field = self.settings.card_organisation_field
        if chunk.way == "advice" and org_field is not None and item.scheme is not None:
            msg[org_field] = composite.F63(item.scheme).encode()
        msg[60] = self._f60(kind, ctx)
        msg[61] = composite.F61(item.batch, item.stan, item.date).encode()
        return msg

    def _is_upload_end(self, request: Message) -> bool:
        profile = self.settings.batch_upload or BatchUploadProfile()
        row = self.dialect.transactions.get(profile.end_kind)
        if row is None or request.mti != row.mti:
            return False
        f60 = request.get(60)
        try:
            return isinstance(f60, str) and composite.F60.decode(f60).net_code == row.net_code
        except Iso8583Error:
            return False

    def batch_upload_end(self, ctx: RequestContext, count: int) -> Message:
        """End of batch upload (60.3 = 202) with the number of items sent in F48 (n4)."""
        msg = self._new("batch_upload_end", ctx)
        msg[48] = f"{count:04d}"
        msg[60] = self._f60("batch_upload_end", ctx)
        return msg

    # --- MAC and answers -----------------------------------------------------------
    def macs(self, message: Message) -> bool:
        """True when ``message`` (request or answer) carries a MAC: all but network management."""
        return not message.mti.startswith(_NETWORK_CLASS)

    def mac(self, message: Message, mak: bytes) -> Message:
        """Set the MAC field of ``message`` in place (no-op for network management)."""
        if self.macs(message):
            apply_mac(self.dialect, mak, message)
        return message

    def check_response(self, request: Message, response: Message, *,
                       body: bytes | None = None, mak: bytes | None = None) -> Answer:
        """Check ``response`` answers ``request`` and its MAC verifies; what it says.

        Raises :class:`ResponseError` when MTI, STAN or TID do not match the request
        and :class:`ResponseMacError` when the MAC of a MACed answer does not verify
        (or there is no MAK to verify it with). The host answers A0, 77, 03 and 30
        without a MAC; those pass when the MAC field is absent. ``body`` is the
        answer as received (MTI onwards); without it the answer is re-encoded.
        """
        if response.mti != request.response_mti:
            raise ResponseError(f"answer {response.mti} does not match request {request.mti}")
        if response.get(11) != request.get(11) or response.tid != request.tid:
            raise ResponseError("answer STAN/TID does not match the request")
        code = response.response_code or ""
        unmaced = code in UNMACED_CODES and self.dialect.spec.mac_field not in response
        if self.macs(request) and not unmaced:
            if body is None:
                body = self.dialect.encode(response)
            if mak is None or not received_mac_ok(self.dialect, mak, body, response):
                raise ResponseMacError(f"answer to STAN {request.stan} fails its MAC")
        date, time = response.get(13), response.get(12)
        settlement = self.dialect.transactions.get("settlement")
        is_settlement = settlement is not None and request.mti == settlement.mti
        return Answer(
            code=code, action=explain(code).terminal_action, rrn=response.rrn,
            auth_code=response.auth_code,
            date=date if isinstance(date, str) else None,
            time=time if isinstance(time, str) else None,
            balance=parse_balance(response.get(54)),
            settle_balanced=parse_settle_result(response.get(48)) if is_settlement else None,
            upload_counts=parse_upload_counts(response.get(48))
            if self._is_upload_end(request) else None,
            issuer_auth_data=issuer_auth_data(response.get(55)))


__all__ = [
    "REVERSAL_COPIES", "SIGN_ON_FORMS", "Answer", "CardInput", "EntryKind", "OriginalRef",
    "RequestContext", "SignOnResult", "TerminalProtocol", "UploadItem", "WorkingKeys",
    "issuer_auth_data", "parse_balance", "parse_settle_result",
]
__all__ += ["UploadChunk", "UploadWay", "parse_upload_counts", "plan_upload", "upload_icc_data",
            "upload_way"]
