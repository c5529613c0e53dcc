"""The virtual EMV card: a payment application personalised from a catalogue card.

:class:`VirtualCard` answers command APDUs with response APDUs (data + SW1SW2)
the way a UnionPay / Visa / Mastercard chip does for a terminal's refund or
sale dialogue. It is pure logic: no sockets, no threads; the in-process
transport, the vpcd client and the tests all drive :meth:`VirtualCard.process`.

What the card holds
-------------------
* Directory: the PSE ``1PAY.SYS.DDF01`` (contact, directory in SFI 1 record 1)
  and the PPSE ``2PAY.SYS.DDF01`` (contactless, directory inside the FCI).
* The application (catalogue AID): FCI with 50 label, 87 priority, 9F38 PDOL
  (:data:`PDOL`), GET PROCESSING OPTIONS answering format 2 (77: 82 AIP, 94
  AFL), records in SFI 2 and 3 (:data:`AFL`), GENERATE AC with a real
  cryptogram from the catalogue issuer key, EXTERNAL AUTHENTICATE, GET DATA
  for ATC (9F36), PIN try counter (9F17) and last online ATC (9F13).
* Cryptogram: the one of the CVN the catalogue card claims
  (:data:`iso8583.crypto.emv.CVNS`): its key derivation, its 9F10 layout (the
  CVR records the cryptogram types of both GENERATE ACs) and its MAC input over
  the CDOL1 tags the terminal sent (:data:`CDOL1` asks for exactly 9F02 9F03
  9F1A 95 5F2A 9A 9C 9F37) plus 82 AIP, 9F36 ATC and 9F10, so the host can
  verify a cryptogram from the F55 tags alone.
* Issuer authentication: the ARPC (tag 91) arrives by EXTERNAL AUTHENTICATE
  (UnionPay CVN 01, Visa CVN 10: the AIP says "issuer authentication
  supported") or inside the second GENERATE AC (Visa CVN 18, Mastercard CVN 20:
  their CDOL2 starts with tag 91, all zeros when the host sent none). The
  second GENERATE AC answers a TC only when the terminal asks for one, 8A is
  ``00`` and the ARPC is the issuer's and approves; otherwise an AAC.
* The ATC increments once per transaction (at the first GENERATE AC; the
  second one reuses it, as the ARPC is keyed on it) and lives as long as the object.

Status words: 9000 ok; 6A82 file not found (unknown AID, PSE on the
contactless interface, PPSE on the contact one, unknown SFI); 6A83 record not
found (end of the PSE directory); 6A86 bad P1/P2; 6A88 GET DATA of an unknown
tag; 6D00 unknown INS; 6E00 wrong class (e.g. GET DATA with CLA 00); 6700 wrong
length (short APDU, Lc mismatch, PDOL/CDOL data of the wrong size); 6985
conditions not satisfied (GPO without a selected application, GENERATE AC
before GPO or after the transaction ended, GET RESPONSE with nothing pending);
6283 selected file invalidated (SELECT of a blocked application); 6A81 function
not supported (GENERATE AC asking for CDA: the card has no certificates).

Transmission behaviour: with ``t0=True`` the card behaves like a T=0 card seen
through an APDU-level reader: a command that returns data answers ``61xx``
and the data is fetched with GET RESPONSE; a command with an expected length
(Le) that differs from what the card has answers ``6Cxx`` and the terminal must
resend with Le = xx.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from emulator.card.faults import CardFaults, FaultDecision
from emulator.catalogue import CardStatus, TestCard
from iso8583 import tlv
from iso8583.crypto import emv

__all__ = [
    "AFL",
    "CDOL1",
    "CDOL2",
    "PDOL",
    "PPSE_NAME",
    "PSE_NAME",
    "CardPoweredOff",
    "VirtualCard",
    "contact_atr",
    "contactless_atr",
]

PSE_NAME = b"1PAY.SYS.DDF01"
PPSE_NAME = b"2PAY.SYS.DDF01"

# Data object lists as they go on the chip (tag, length pairs).
PDOL = bytes.fromhex("9F0206" "9F1A02" "5F2A02" "9A03" "9C01" "9F3704")
CDOL1 = bytes.fromhex("9F0206" "9F0306" "9F1A02" "9505" "5F2A02" "9A03" "9C01" "9F3704")
CDOL2 = bytes.fromhex("8A02" "9F3704" "9505")

# SFI 2 records 1-2 (track 2, name; PAN, dates, codes) and SFI 3 record 1 (risk data).
AFL = bytes.fromhex("10010200" "18010100")

SW_OK = 0x9000
SW_WRONG_LENGTH = 0x6700
SW_CONDITIONS = 0x6985
SW_FILE_INVALIDATED = 0x6283
SW_FUNCTION_NOT_SUPPORTED = 0x6A81
SW_FILE_NOT_FOUND = 0x6A82
SW_RECORD_NOT_FOUND = 0x6A83
SW_BAD_P1P2 = 0x6A86
SW_DATA_NOT_FOUND = 0x6A88
SW_BAD_INS = 0x6D00
SW_BAD_CLA = 0x6E00

INS_SELECT = 0xA4
INS_READ_RECORD = 0xB2
INS_GET_RESPONSE = 0xC0
INS_GPO = 0xA8
INS_GENERATE_AC = 0xAE
INS_GET_DATA = 0xCA
INS_EXTERNAL_AUTHENTICATE = 0x82
SW_AUTHENTICATION_FAILED = 0x6300

CID_AAC, CID_TC, CID_ARQC = 0x00, 0x40, 0x80
_CRYPTOGRAM_MASK = 0xC0
_CDA_REQUESTED = 0x10

# Which class byte each instruction is defined under (EMV Book 3, 6.3).
_INS_CLA = {
    INS_SELECT: 0x00,
    INS_READ_RECORD: 0x00,
    INS_GET_RESPONSE: 0x00,
    INS_GPO: 0x80,
    INS_GENERATE_AC: 0x80,
    INS_GET_DATA: 0x80,
    INS_EXTERNAL_AUTHENTICATE: 0x00,
}
_KNOWN_CLA = {0x00, 0x80, 0x84, 0x8C, 0x0C}

_PIN_TRY_LIMIT = 3


class CardPoweredOff(Exception):  # noqa: N818 - a state, not a programming error
    """The card is not powered (removed, or a ``remove`` fault fired)."""


def _with_tck(atr_without_tck: bytes) -> bytes:
    tck = 0
    for b in atr_without_tck[1:]:
        tck ^= b
    return atr_without_tck + bytes([tck])


def contact_atr(historical: bytes = b"POSRFD01") -> bytes:
    """ATR of the contact interface: T=0, direct convention (3B 6x 00 00 ...)."""
    return bytes([0x3B, 0x60 | len(historical), 0x00, 0x00]) + historical


def contactless_atr(historical: bytes = b"\x80POSRFD") -> bytes:
    """ATR a PC/SC reader builds for an ISO 14443-4 card (3B 8x 80 01 ... TCK)."""
    return _with_tck(bytes([0x3B, 0x80 | len(historical), 0x80, 0x01]) + historical)


@dataclass(frozen=True)
class _Command:
    cla: int
    ins: int
    p1: int
    p2: int
    data: bytes
    le: int | None  # None: no Le field; 0 stands for 256 in short APDUs


def _parse(apdu: bytes) -> _Command | int:
    """Split a short C-APDU into its fields, or return the SW that refuses it."""
    if len(apdu) < 4:
        return SW_WRONG_LENGTH
    cla, ins, p1, p2 = apdu[0], apdu[1], apdu[2], apdu[3]
    body = apdu[4:]
    if not body:
        return _Command(cla, ins, p1, p2, b"", None)
    if len(body) == 1:
        return _Command(cla, ins, p1, p2, b"", body[0])
    lc = body[0]
    if lc == 0:  # extended length: no EMV card command needs it
        return SW_WRONG_LENGTH
    if len(body) == 1 + lc:
        return _Command(cla, ins, p1, p2, body[1:], None)
    if len(body) == 2 + lc:
        return _Command(cla, ins, p1, p2, body[1:-1], body[-1])
    return SW_WRONG_LENGTH


def _sw(sw: int) -> bytes:
    return sw.to_bytes(2, "big")


def _bcd(digits: str) -> bytes:
    if len(digits) % 2:
        digits += "F"
    return bytes.fromhex(digits)


def _dol_length(dol: bytes) -> int:
    return sum(length for _tag, length in tlv.decode_dol(dol))


def _split_dol_data(dol: bytes, data: bytes) -> dict[int, bytes]:
    values: dict[int, bytes] = {}
    offset = 0
    for tag, length in tlv.decode_dol(dol):
        values[tag] = data[offset:offset + length]
        offset += length
    return values


class VirtualCard:
    """A dual-interface EMV payment card personalised from a catalogue :class:`TestCard`.

    Call :meth:`power_on` (returns the ATR) before :meth:`process`. The ATC, the
    PIN try counter and the fault plan's counters survive power cycles, as
    they would on a chip; the selected application and any half-finished
    transaction do not.
    """

    def __init__(self, card: TestCard, *, t0: bool = False, faults: CardFaults | None = None,
                 atc: int = 0, sleep: Callable[[float], None] = time.sleep) -> None:
        if card.aid is None:
            raise ValueError(f"{card.name} is a magnetic-stripe card: it has no chip")
        self.card = card
        self.aid: bytes = card.aid
        self.profile = emv.cvn_profile(card.cvn)
        self.t0 = t0
        self.faults = faults if faults is not None else CardFaults()
        self.atc = atc
        self.last_online_atc = 0
        self.pin_tries = _PIN_TRY_LIMIT
        self._sleep = sleep
        self.powered = False
        self.contactless = False
        self._reset_session()

    # --- power ---------------------------------------------------------------
    @property
    def blocked(self) -> bool:
        return self.card.status is CardStatus.BLOCKED or self.faults.blocked

    @property
    def aac_only(self) -> bool:
        return self.faults.aac_only

    @property
    def atr(self) -> bytes:
        """ATR on the interface chosen at the last :meth:`power_on`."""
        return contactless_atr() if self.contactless else contact_atr()

    def supports(self, *, contactless: bool) -> bool:
        return self.card.contactless if contactless else self.card.contact

    def power_on(self, *, contactless: bool | None = None) -> bytes:
        """Power (or reset) the card on one interface and return its ATR.

        ``contactless`` None keeps the interface of the previous power-on.
        Raises ``ValueError`` if the card does not have that interface.
        """
        if contactless is not None:
            if not self.supports(contactless=contactless):
                kind = "contactless" if contactless else "contact"
                raise ValueError(f"{self.card.name} has no {kind} interface")
            self.contactless = contactless
        self.powered = True
        self._reset_session()
        return self.atr

    def power_off(self) -> None:
        self.powered = False
        self._reset_session()

    def _reset_session(self) -> None:
        self._selected: bytes | None = None  # DF name of the selected PSE/PPSE/ADF
        self._gpo_done = False
        self._gac_count = 0
        self._cdol1_values: dict[int, bytes] = {}
        self._arqc: bytes | None = None  # the first GENERATE AC's ARQC, for the ARPC check
        self._issuer_auth: emv.IssuerAuthentication | None = None
        self._pending: bytes = b""  # response data waiting for GET RESPONSE (T=0)
        self._has_pending = False

    # --- the APDU entry point -------------------------------------------------
    def process(self, apdu: bytes) -> bytes:
        """Answer one C-APDU with an R-APDU (data followed by SW1 SW2).

        Raises :class:`CardPoweredOff` when the card is not powered or a
        ``remove`` fault fires; never raises for any content of ``apdu``.
        """
        if not self.powered:
            raise CardPoweredOff("the card is not powered")
        ins = apdu[1] if len(apdu) >= 2 else -1
        decision = self.faults.decide(ins)
        if decision.delay_ms:
            self._sleep(decision.delay_ms / 1000)
        if decision.remove:
            self.power_off()
            raise CardPoweredOff("the card was removed during the dialogue")
        parsed = _parse(apdu)
        if isinstance(parsed, int):
            return self._finish(b"", parsed, decision)
        if parsed.ins == INS_GET_RESPONSE:
            return self._get_response(parsed, decision)
        data, sw = self._dispatch(parsed)
        data, sw = self._spoil(data, sw, decision)
        return self._transmission(parsed, data, sw, decision)

    def _finish(self, data: bytes, sw: int, decision: FaultDecision) -> bytes:
        data, sw = self._spoil(data, sw, decision)
        return data + _sw(sw)

    @staticmethod
    def _spoil(data: bytes, sw: int, decision: FaultDecision) -> tuple[bytes, int]:
        if decision.corrupt and len(data) >= 2:
            # The first TLV now claims one byte more than the response holds.
            spoilt = bytearray(data)
            length_at = 2 if data[0] & 0x1F == 0x1F else 1
            if length_at < len(spoilt):
                spoilt[length_at] = (spoilt[length_at] + 1) & 0xFF
            data = bytes(spoilt)
        if decision.truncate and data:
            data = data[: max(1, len(data) // 2)]
        if decision.sw is not None:
            sw = decision.sw
            if sw >> 8 not in (0x90, 0x62, 0x63):
                data = b""
        return data, sw

    def _transmission(self, cmd: _Command, data: bytes, sw: int, decision: FaultDecision) -> bytes:
        """Apply the T=0 behaviour (61xx / 6Cxx) to a finished answer."""
        if not self.t0 or not data or sw != SW_OK:
            return data + _sw(sw)
        if cmd.data:  # case 4: data goes back through GET RESPONSE
            self._pending = data
            self._has_pending = not decision.break_chain
            return _sw(0x6100 | (len(data) & 0xFF))
        expected = cmd.le if cmd.le is not None else 0
        if expected != len(data) & 0xFF or len(data) > 256:
            # Case 2 with the wrong Le: tell the terminal the right one.
            announced = len(data) & 0xFF
            if decision.break_chain:
                announced = (announced + 1) & 0xFF
            return _sw(0x6C00 | announced)
        return data + _sw(sw)

    def _get_response(self, cmd: _Command, decision: FaultDecision) -> bytes:
        if cmd.cla != 0x00:
            return self._finish(b"", SW_BAD_CLA, decision)
        if cmd.p1 or cmd.p2:
            return self._finish(b"", SW_BAD_P1P2, decision)
        if not self._has_pending or decision.break_chain:
            self._has_pending = False
            return self._finish(b"", SW_CONDITIONS, decision)
        if cmd.data or cmd.le is None:
            return self._finish(b"", SW_WRONG_LENGTH, decision)
        le = cmd.le or 256
        pending = self._pending
        if le > len(pending):
            return self._finish(b"", 0x6C00 | (len(pending) & 0xFF), decision)
        chunk, rest = pending[:le], pending[le:]
        self._pending = rest
        self._has_pending = bool(rest)
        sw = 0x6100 | (len(rest) & 0xFF) if rest else SW_OK
        return self._finish(chunk, sw, decision)

    def _dispatch(self, cmd: _Command) -> tuple[bytes, int]:
        # Any command other than GET RESPONSE drops data the terminal did not fetch.
        self._pending, self._has_pending = b"", False
        if cmd.cla not in _KNOWN_CLA:
            return b"", SW_BAD_CLA
        if cmd.ins not in _INS_CLA:
            return b"", SW_BAD_INS
        if cmd.cla != _INS_CLA[cmd.ins]:
            return b"", SW_BAD_CLA
        match cmd.ins:
            case 0xA4:
                return self._select(cmd)
            case 0xB2:
                return self._read_record(cmd)
            case 0xA8:
                return self._gpo(cmd)
            case 0xAE:
                return self._generate_ac(cmd)
            case 0x82:
                return self._external_authenticate(cmd)
            case _:
                return self._get_data(cmd)

    # --- SELECT -----------------------------------------------------------------
    def _select(self, cmd: _Command) -> tuple[bytes, int]:
        if cmd.p1 != 0x04 or cmd.p2 not in (0x00, 0x02):
            return b"", SW_BAD_P1P2
        name = cmd.data
        if not name:
            return b"", SW_WRONG_LENGTH
        self._reset_session()
        if name == PSE_NAME and not self.contactless:
            self._selected = PSE_NAME
            return self._pse_fci(), SW_OK
        if name == PPSE_NAME and self.contactless:
            self._selected = PPSE_NAME
            return self._ppse_fci(), SW_OK
        # Partial AID selection (EMV Book 1, 12.3.3): the name may be a prefix of the AID.
        if len(name) >= 5 and self.aid.startswith(name) and cmd.p2 == 0x00:
            if self.blocked:
                return b"", SW_FILE_INVALIDATED
            self._selected = self.aid
            return self._adf_fci(), SW_OK
        return b"", SW_FILE_NOT_FOUND

    def _directory_entry(self) -> bytes:
        return tlv.encode_tlv(0x61, (
            tlv.encode_tlv(0x4F, self.aid)
            + tlv.encode_tlv(0x50, self.card.label.encode("ascii"))
            + tlv.encode_tlv(0x87, b"\x01")
        ))

    def _pse_fci(self) -> bytes:
        proprietary = tlv.encode_tlv(0x88, b"\x01") + tlv.encode_tlv(0x5F2D, b"zhen")
        return tlv.encode_tlv(0x6F, tlv.encode_tlv(0x84, PSE_NAME)
                              + tlv.encode_tlv(0xA5, proprietary))

    def _ppse_fci(self) -> bytes:
        proprietary = tlv.encode_tlv(0xBF0C, self._directory_entry())
        return tlv.encode_tlv(0x6F, tlv.encode_tlv(0x84, PPSE_NAME)
                              + tlv.encode_tlv(0xA5, proprietary))

    def _adf_fci(self) -> bytes:
        proprietary = (
            tlv.encode_tlv(0x50, self.card.label.encode("ascii"))
            + tlv.encode_tlv(0x87, b"\x01")
            + tlv.encode_tlv(0x9F38, PDOL)
            + tlv.encode_tlv(0x5F2D, b"zhen")
        )
        return tlv.encode_tlv(0x6F, tlv.encode_tlv(0x84, self.aid)
                              + tlv.encode_tlv(0xA5, proprietary))

    # --- READ RECORD --------------------------------------------------------------
    def _read_record(self, cmd: _Command) -> tuple[bytes, int]:
        if cmd.p2 & 0x07 != 0x04 or cmd.p1 == 0:
            return b"", SW_BAD_P1P2
        if cmd.data:
            return b"", SW_WRONG_LENGTH
        sfi, number = cmd.p2 >> 3, cmd.p1
        if self._selected == PSE_NAME:
            files = {1: {1: tlv.encode_tlv(0x70, self._directory_entry())}}
        elif self._selected == self.aid:
            files = self._application_records()
        else:
            return b"", SW_CONDITIONS
        if sfi not in files:
            return b"", SW_FILE_NOT_FOUND
        record = files[sfi].get(number)
        if record is None:
            return b"", SW_RECORD_NOT_FOUND
        return record, SW_OK

    def _expiry_yymmdd(self) -> bytes:
        yy, mm = int(self.card.expiry[:2]), int(self.card.expiry[2:])
        if mm == 2:
            dd = 29 if yy % 4 == 0 else 28
        elif mm in (4, 6, 9, 11):
            dd = 30
        else:
            dd = 31
        return bytes.fromhex(f"{self.card.expiry}{dd:02d}")

    def _application_records(self) -> dict[int, dict[int, bytes]]:
        c = self.card
        track2 = _bcd(c.track2)
        rec_2_1 = tlv.encode_tlv(0x70, (
            tlv.encode_tlv(0x57, track2)
            + tlv.encode_tlv(0x5F20, b"TEST/CARD")
            + tlv.encode_tlv(0x9F1F, b"0000")
        ))
        rec_2_2 = tlv.encode_tlv(0x70, (
            tlv.encode_tlv(0x5A, _bcd(c.pan))
            + tlv.encode_tlv(0x5F24, self._expiry_yymmdd())
            + tlv.encode_tlv(0x5F25, bytes.fromhex("200101"))
            + tlv.encode_tlv(0x5F34, bytes.fromhex(c.psn))
            + tlv.encode_tlv(0x5F28, bytes.fromhex("0156"))
            + tlv.encode_tlv(0x9F07, bytes.fromhex("FF00"))
            + tlv.encode_tlv(0x9F08, bytes.fromhex("0030"))
        ))
        # CVM list: amounts X, Y = 0; online PIN if the card has one, else no CVM.
        cvm_rule = "4203" if c.pin_required else "1F03"
        cvm_list = bytes.fromhex("00000000" "00000000" + cvm_rule + "1F00")
        rec_3_1 = tlv.encode_tlv(0x70, (
            tlv.encode_tlv(0x8C, CDOL1)
            + tlv.encode_tlv(0x8D, self.cdol2)
            + tlv.encode_tlv(0x8E, cvm_list)
            + tlv.encode_tlv(0x9F0D, bytes.fromhex("F040008800"))
            + tlv.encode_tlv(0x9F0E, bytes.fromhex("0010000000"))
            + tlv.encode_tlv(0x9F0F, bytes.fromhex("F040009800"))
        ))
        return {2: {1: rec_2_1, 2: rec_2_2}, 3: {1: rec_3_1}}

    # --- GET PROCESSING OPTIONS -----------------------------------------------------
    @property
    def aip(self) -> bytes:
        """Application interchange profile: cardholder verification and terminal
        risk management; no offline data authentication (the card carries no
        certificates); issuer authentication (byte 1 bit 3) where the CVN takes
        the ARPC by EXTERNAL AUTHENTICATE. Contactless adds "EMV mode supported"."""
        byte1 = 0x18 | (0x04 if self.profile.issuer_auth == "external_authenticate" else 0)
        return bytes([byte1, 0x80 if self.contactless else 0x00])

    @property
    def cdol2(self) -> bytes:
        """CDOL2: :data:`CDOL2`, preceded by tag 91 where the ARPC rides in the command."""
        if self.profile.issuer_auth == "cdol2":
            return bytes([0x91, self.profile.tag91_length]) + CDOL2
        return CDOL2

    def _gpo(self, cmd: _Command) -> tuple[bytes, int]:
        if cmd.p1 or cmd.p2:
            return b"", SW_BAD_P1P2
        if self._selected != self.aid:
            return b"", SW_CONDITIONS
        data = cmd.data
        expected = _dol_length(PDOL)
        if len(data) != 2 + expected or data[0] != 0x83 or data[1] != expected:
            return b"", SW_WRONG_LENGTH
        self._gpo_done = True
        self._gac_count = 0
        body = tlv.encode_tlv(0x82, self.aip) + tlv.encode_tlv(0x94, AFL)
        return tlv.encode_tlv(0x77, body), SW_OK

    # --- GENERATE AC ------------------------------------------------------------------
    def _generate_ac(self, cmd: _Command) -> tuple[bytes, int]:
        if cmd.p2 or cmd.p1 & ~(_CRYPTOGRAM_MASK | _CDA_REQUESTED) & 0xFF:
            return b"", SW_BAD_P1P2
        requested = cmd.p1 & _CRYPTOGRAM_MASK
        if requested == 0xC0:
            return b"", SW_BAD_P1P2
        if cmd.p1 & _CDA_REQUESTED:
            # The card has no certificates, so it cannot sign the cryptogram (CDA).
            return b"", SW_FUNCTION_NOT_SUPPORTED
        if not self._gpo_done or self._gac_count >= 2:
            return b"", SW_CONDITIONS
        first = self._gac_count == 0
        dol = CDOL1 if first else self.cdol2
        if len(cmd.data) != _dol_length(dol):
            return b"", SW_WRONG_LENGTH
        values = _split_dol_data(dol, cmd.data)
        if first:
            self._cdol1_values = values
            # The card never approves offline: a TC request becomes an ARQC.
            cid = CID_ARQC if requested in (CID_TC, CID_ARQC) else CID_AAC
            self.atc = (self.atc + 1) & 0xFFFF
        else:
            if requested == CID_ARQC:
                return b"", SW_BAD_P1P2
            tag91 = values.get(0x91)
            if tag91 is not None and any(tag91):
                self._issuer_auth = self._check_arpc(tag91)
            self._cdol1_values.update(
                {t: v for t, v in values.items() if t not in (0x8A, 0x91)})
            approved = values.get(0x8A) == b"00"
            verdict = self._issuer_auth
            issuer_ok = verdict is not None and verdict.approved
            cid = CID_TC if requested == CID_TC and approved and issuer_ok else CID_AAC
        if self.aac_only:
            cid = CID_AAC
        self._gac_count += 1
        atc = self.atc.to_bytes(2, "big")
        if cid == CID_ARQC:
            self.last_online_atc = self.atc
        tags = dict(self._cdol1_values)
        tags[0x82] = self.aip
        tags[0x9F36] = atc
        iad = (emv.build_iad(self.profile, cid) if first
               else emv.build_iad(self.profile, CID_ARQC, cid))
        tags[0x9F10] = iad
        ac = emv.compute_cryptogram(self.profile, self.card.imk_ac, self.card.pan,
                                    self.card.psn, tags)
        if first and cid == CID_ARQC:
            self._arqc = ac
        body = (
            tlv.encode_tlv(0x9F27, bytes([cid]))
            + tlv.encode_tlv(0x9F36, atc)
            + tlv.encode_tlv(0x9F26, ac)
            + tlv.encode_tlv(0x9F10, iad)
        )
        if not first or cid != CID_ARQC:
            self._gac_count = 2  # the transaction is over
        return tlv.encode_tlv(0x77, body), SW_OK

    def _check_arpc(self, data: bytes) -> emv.IssuerAuthentication:
        if self._arqc is None:
            return emv.IssuerAuthentication(False, False)
        return emv.check_issuer_authentication(
            self.profile, self.card.imk_ac, self.card.pan, self.card.psn,
            self.atc.to_bytes(2, "big"), self._arqc, data)

    # --- EXTERNAL AUTHENTICATE -----------------------------------------------------
    def _external_authenticate(self, cmd: _Command) -> tuple[bytes, int]:
        """Issuer authentication data (tag 91's value) between the two GENERATE ACs.

        Once per transaction, only after an ARQC; 6300 when the ARPC is not the
        issuer's (the second GENERATE AC then gives an AAC).
        """
        if cmd.p1 or cmd.p2:
            return b"", SW_BAD_P1P2
        if not 8 <= len(cmd.data) <= 16:
            return b"", SW_WRONG_LENGTH
        if self._gac_count != 1 or self._arqc is None or self._issuer_auth is not None:
            return b"", SW_CONDITIONS
        self._issuer_auth = self._check_arpc(cmd.data)
        return b"", SW_OK if self._issuer_auth.authentic else SW_AUTHENTICATION_FAILED

    # --- GET DATA -------------------------------------------------------------------
    def _get_data(self, cmd: _Command) -> tuple[bytes, int]:
        if cmd.data:
            return b"", SW_WRONG_LENGTH
        tag = cmd.p1 << 8 | cmd.p2
        if tag == 0x9F36:
            return tlv.encode_tlv(0x9F36, self.atc.to_bytes(2, "big")), SW_OK
        if tag == 0x9F17:
            return tlv.encode_tlv(0x9F17, bytes([self.pin_tries])), SW_OK
        if tag == 0x9F13:
            return tlv.encode_tlv(0x9F13, self.last_online_atc.to_bytes(2, "big")), SW_OK
        return b"", SW_DATA_NOT_FOUND
