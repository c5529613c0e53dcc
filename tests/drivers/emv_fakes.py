"""A small scripted EMV card for the kernel's unit tests.

Not the product's virtual card (that is ``emulator.card``): this one is only as
smart as the dialogue tests need, and every status-word path can be forced on
it with a knob. It answers SELECT (PSE, PPSE, AID, next occurrence), READ RECORD,
GET PROCESSING OPTIONS, GENERATE AC and GET RESPONSE.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from drivers.errors import CardRemovedError
from iso8583.tlv import encode_tlv as t

PSE = b"1PAY.SYS.DDF01"
PPSE = b"2PAY.SYS.DDF01"
CDOL1 = bytes.fromhex("9F02069F03069F1A0295055F2A029A039C019F3704")
PDOL_CONTACTLESS = bytes.fromhex("9F66049F02069F03069F1A0295055F2A029A039C019F3704")
ATR_CONTACT = bytes.fromhex("3B6800000073C84013009000")
ATR_CONTACTLESS = bytes.fromhex("3B8F8001804F0CA000000306030001000000006A")


@dataclass
class FakeApp:
    """One payment application on the fake card."""

    aid: bytes
    pan: str = "6225880000000019"
    expiry: str = "301231"  # YYMMDD
    psn: str | None = "01"
    service_code: str = "220"
    label: str = "UnionPay Debit"
    priority: int | None = 1
    pdol: bytes | None = None
    cdol1: bytes | None = CDOL1
    blocked: bool = False
    gpo_format: int = 1
    gpo_sw: int = 0x9000
    gpo_cryptogram: bool = False  # qPBOC: the cryptogram comes in the GPO answer
    ac_format: int = 1
    ac_answer: str | None = None  # None: the type asked for; else "AAC", "TC", "ARQC"
    extra_record_tags: bytes = b""
    omit: tuple[int, ...] = ()  # tags left out of the records

    @property
    def track2(self) -> bytes:
        digits = f"{self.pan}D{self.expiry[:4]}{self.service_code}0000000000"
        if len(digits) % 2:
            digits += "F"
        return bytes.fromhex(digits)

    def records(self) -> dict[tuple[int, int], bytes]:
        pan = self.pan + ("F" if len(self.pan) % 2 else "")
        r1 = b""
        if 0x57 not in self.omit:
            r1 += t(0x57, self.track2)
        if 0x5F20 not in self.omit:
            r1 += t(0x5F20, b"TEST/CARDHOLDER")
        r2 = b""
        if 0x5A not in self.omit:
            r2 += t(0x5A, bytes.fromhex(pan))
        if 0x5F24 not in self.omit:
            r2 += t(0x5F24, bytes.fromhex(self.expiry))
        if self.psn is not None and 0x5F34 not in self.omit:
            r2 += t(0x5F34, bytes.fromhex(self.psn))
        if self.cdol1 is not None and 0x8C not in self.omit:
            r2 += t(0x8C, self.cdol1)
        r2 += self.extra_record_tags
        return {(1, 1): t(0x70, r1), (2, 1): t(0x70, r2)}

    afl: bytes = bytes.fromhex("08010100" "10010101")
    aip: bytes = b"\x19\x80"


@dataclass
class Exchange:
    apdu: bytes
    data: bytes
    sw: int


@dataclass
class FakeCard:
    """A CardTransport over a scripted card.

    Knobs: ``pse``/``ppse`` present or not; ``chain61`` answers every
    response-bearing command with 61xx first; ``wrong_le`` answers 6Cxx to the
    first try of each such command; ``remove_after`` raises CardRemovedError
    from the n-th command on; ``hook(apdu, data, sw) -> (data, sw)`` rewrites any
    answer last.
    """

    apps: list[FakeApp]
    contactless: bool = False
    pse: bool = True
    ppse: bool = True
    chain61: bool = False
    wrong_le: bool = False
    remove_after: int | None = None
    hook: Callable[[bytes, bytes, int], tuple[bytes, int]] | None = None
    log: list[Exchange] = field(default_factory=list)
    selected: FakeApp | None = None
    _pending: bytes = b""
    _next_index: int = 0

    @property
    def atr(self) -> bytes:
        return ATR_CONTACTLESS if self.contactless else ATR_CONTACT

    def close(self) -> None:
        self.selected = None

    def transmit(self, apdu: bytes) -> tuple[bytes, int]:
        if self.remove_after is not None and len(self.log) >= self.remove_after:
            raise CardRemovedError("card removed")
        data, sw = self._answer(apdu)
        if self.hook is not None:
            data, sw = self.hook(apdu, data, sw)
        self.log.append(Exchange(apdu, data, sw))
        return data, sw

    def commands(self) -> list[str]:
        """INS bytes of the commands received, as hex, in order."""
        return [e.apdu[1:2].hex().upper() for e in self.log]

    # -- card logic -----------------------------------------------------------

    def _answer(self, apdu: bytes) -> tuple[bytes, int]:
        ins = apdu[1]
        if ins == 0xC0:
            data, self._pending = self._pending, b""
            le = apdu[4] or 256
            return data[:le], 0x9000 if len(data) <= le else 0x6100
        data, sw = self._dispatch(apdu)
        if sw != 0x9000 or not data:
            return data, sw
        if self.chain61:
            self._pending = data
            return b"", 0x6100 | (len(data) & 0xFF)
        if self.wrong_le:
            le = apdu[-1]
            if le != (len(data) & 0xFF):
                return b"", 0x6C00 | (len(data) & 0xFF)
        return data, sw

    def _dispatch(self, apdu: bytes) -> tuple[bytes, int]:
        cla, ins, p1, p2 = apdu[:4]
        body = apdu[5:5 + apdu[4]] if len(apdu) > 5 else b""
        if (cla, ins, p1) == (0x00, 0xA4, 0x04):
            return self._select(body, next_occurrence=p2 == 0x02)
        if (cla, ins) == (0x00, 0xB2):
            return self._read_record(p1, p2 >> 3)
        if (cla, ins) == (0x80, 0xA8):
            return self._gpo()
        if (cla, ins) == (0x80, 0xAE):
            return self._generate_ac(p1)
        return b"", 0x6D00

    def _select(self, name: bytes, *, next_occurrence: bool) -> tuple[bytes, int]:
        self.selected = None
        if name == PSE and self.pse and not self.contactless:
            return t(0x6F, t(0x84, PSE) + t(0xA5, t(0x88, b"\x01"))), 0x9000
        if name == PPSE and self.ppse and self.contactless:
            entries = b"".join(
                t(0x61, t(0x4F, a.aid) + t(0x50, a.label.encode())
                  + (t(0x87, bytes((a.priority,))) if a.priority is not None else b""))
                for a in self.apps)
            return t(0x6F, t(0x84, PPSE) + t(0xA5, t(0xBF0C, entries))), 0x9000
        matches = [a for a in self.apps if a.aid.startswith(name)] if len(name) >= 5 else []
        if not next_occurrence:
            self._next_index = 0
        if self._next_index >= len(matches):
            return b"", 0x6A82
        app = matches[self._next_index]
        self._next_index += 1
        fci_a5 = t(0x50, app.label.encode())
        if app.priority is not None:
            fci_a5 += t(0x87, bytes((app.priority,)))
        pdol = app.pdol if app.pdol is not None else (
            PDOL_CONTACTLESS if self.contactless else None)
        if pdol is not None:
            fci_a5 += t(0x9F38, pdol)
        fci = t(0x6F, t(0x84, app.aid) + t(0xA5, fci_a5))
        if app.blocked:
            return fci, 0x6283
        self.selected = app
        return fci, 0x9000

    def _read_record(self, rec: int, sfi: int) -> tuple[bytes, int]:
        if self.selected is None:
            if sfi == 1 and self.pse and not self.contactless:
                return self._pse_record(rec)
            return b"", 0x6985
        data = self.selected.records().get((sfi, rec))
        return (data, 0x9000) if data is not None else (b"", 0x6A83)

    def _pse_record(self, rec: int) -> tuple[bytes, int]:
        if rec > len(self.apps):
            return b"", 0x6A83
        a = self.apps[rec - 1]
        entry = t(0x4F, a.aid) + t(0x50, a.label.encode())
        if a.priority is not None:
            entry += t(0x87, bytes((a.priority,)))
        return t(0x70, t(0x61, entry)), 0x9000

    def _gpo(self) -> tuple[bytes, int]:
        app = self.selected
        if app is None:
            return b"", 0x6985
        if app.gpo_sw != 0x9000:
            return b"", app.gpo_sw
        if app.gpo_format == 1 and not app.gpo_cryptogram:
            return t(0x80, app.aip + app.afl), 0x9000
        body = t(0x82, app.aip) + t(0x94, app.afl)
        if app.gpo_cryptogram:
            kind = app.ac_answer or "ARQC"
            body += self._ac_tags(kind)
        return t(0x77, body), 0x9000

    def _ac_tags(self, kind: str) -> bytes:
        cid = {"AAC": 0x00, "TC": 0x40, "ARQC": 0x80}[kind]
        return (t(0x9F27, bytes((cid,))) + t(0x9F36, b"\x00\x07")
                + t(0x9F26, bytes.fromhex("1122334455667788"))
                + t(0x9F10, bytes.fromhex("07010103A00000010A01000000000000000000")))

    def _generate_ac(self, p1: int) -> tuple[bytes, int]:
        app = self.selected
        if app is None:
            return b"", 0x6985
        asked = {0x00: "AAC", 0x40: "TC", 0x80: "ARQC"}.get(p1 & 0xC0, "AAC")
        kind = app.ac_answer or asked
        cid = {"AAC": 0x00, "TC": 0x40, "ARQC": 0x80}[kind]
        if app.ac_format == 1:
            iad = bytes.fromhex("07010103A00000")
            return (t(0x80, bytes((cid,)) + b"\x00\x07"
                      + bytes.fromhex("1122334455667788") + iad), 0x9000)
        return t(0x77, self._ac_tags(kind)), 0x9000
