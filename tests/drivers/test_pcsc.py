"""Unit tests of the PC/SC driver against a scripted fake of ``smartcard.scard``.

The fake keeps pcsc-lite's observable behaviour that the driver relies on:
contexts die when the daemon restarts (old handles answer SCARD_E_NO_SERVICE),
SCardGetStatusChange returns at once when the state differs from the caller's
and otherwise waits for the next scripted event (or times out), card handles
answer SCARD_W_REMOVED_CARD once the card is gone.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from smartcard import scard as real

from drivers.errors import CardRemovedError, CardTimeoutError, NoReaderError, ReaderError
from drivers.pcsc import (
    PcscReader,
    is_contactless,
    is_contactless_atr,
    list_readers,
    transmit_with_chaining,
)

Responder = Callable[[bytes], bytes]

# pcsc-lite SCardStatus states (pyscard does not export them)
SCARD_ABSENT, SCARD_SPECIFIC = 0x0002, 0x0040
SUCCESS: int = real.SCARD_S_SUCCESS
STATE_UNKNOWN: int = real.SCARD_STATE_UNKNOWN
STATE_PRESENT: int = real.SCARD_STATE_PRESENT
STATE_EMPTY: int = real.SCARD_STATE_EMPTY

CONTACT_ATR = bytes.fromhex("3B6800005041594D454E5431")
CONTACTLESS_ATR = bytes.fromhex("3B8880014F53524644313233") + b"\x00"


@dataclass
class FakeCard:
    atr: bytes
    responder: Responder
    protocol: int = real.SCARD_PROTOCOL_T0


@dataclass
class FakeReader:
    card: FakeCard | None = None
    events: int = 0  # pcsc-lite keeps an event counter in the upper 16 bits


@dataclass
class FakeScard:
    """Just enough of ``smartcard.scard`` for the driver, scripted by the test."""

    readers: dict[str, FakeReader] = field(default_factory=dict)
    service_up: bool = True
    generation: int = 0
    script: deque[Callable[[], None]] = field(default_factory=deque)
    sent: list[bytes] = field(default_factory=list)
    transmit_error: int | None = None
    connect_error: int | None = None
    _handles: int = 0
    _cards: dict[int, tuple[int, str, FakeCard]] = field(default_factory=dict)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("SCARD_"):
            return getattr(real, name)
        raise AttributeError(name)

    # --- test controls -----------------------------------------------------------
    def insert(self, reader: str, card: FakeCard) -> None:
        self.readers[reader].card = card
        self.readers[reader].events += 1

    def remove(self, reader: str) -> None:
        self.readers[reader].card = None
        self.readers[reader].events += 1

    def unplug(self, reader: str) -> None:
        self.readers.pop(reader)

    def restart(self) -> None:
        self.generation += 1

    # --- the API --------------------------------------------------------------------
    def SCardEstablishContext(self, scope: int) -> tuple[int, Any]:
        if not self.service_up:
            return real.SCARD_E_NO_SERVICE, 0
        self._handles += 1
        return real.SCARD_S_SUCCESS, (self.generation, self._handles)

    def SCardReleaseContext(self, ctx: Any) -> int:
        return SUCCESS

    def _dead(self, ctx: Any) -> bool:
        return not self.service_up or ctx[0] != self.generation

    def SCardListReaders(self, ctx: Any, groups: list[str]) -> tuple[int, list[str]]:
        if self._dead(ctx):
            return real.SCARD_E_NO_SERVICE, []
        if not self.readers:
            return real.SCARD_E_NO_READERS_AVAILABLE, []
        return real.SCARD_S_SUCCESS, list(self.readers)

    def _state(self, name: str) -> int:
        reader = self.readers.get(name)
        if reader is None:
            return STATE_UNKNOWN
        base = STATE_PRESENT if reader.card else STATE_EMPTY
        return base | (reader.events << 16)

    def SCardGetStatusChange(self, ctx: Any, timeout: int,
                             states: list[tuple[str, int]]) -> tuple[int, list[Any]]:
        if self._dead(ctx):
            return real.SCARD_E_NO_SERVICE, []
        name, current = states[0]
        while True:
            now = self._state(name)
            if current == real.SCARD_STATE_UNAWARE or now != current:
                reader = self.readers.get(name)
                atr = list(reader.card.atr) if reader and reader.card else []
                return real.SCARD_S_SUCCESS, [(name, now | real.SCARD_STATE_CHANGED, atr)]
            if not self.script:
                return real.SCARD_E_TIMEOUT, []
            self.script.popleft()()
            if self._dead(ctx):
                return real.SCARD_E_NO_SERVICE, []

    def SCardConnect(self, ctx: Any, name: str, share: int,
                     protocols: int) -> tuple[int, int, int]:
        if self._dead(ctx):
            return real.SCARD_E_NO_SERVICE, 0, 0
        if self.connect_error is not None:
            return self.connect_error, 0, 0
        reader = self.readers.get(name)
        if reader is None:
            return real.SCARD_E_UNKNOWN_READER, 0, 0
        if reader.card is None:
            return real.SCARD_E_NO_SMARTCARD, 0, 0
        self._handles += 1
        self._cards[self._handles] = (self.generation, name, reader.card)
        return real.SCARD_S_SUCCESS, self._handles, reader.card.protocol

    def _card_of(self, hcard: int) -> tuple[int, FakeCard | None]:
        generation, name, card = self._cards[hcard]
        if not self.service_up or generation != self.generation:
            return real.SCARD_E_NO_SERVICE, None
        reader = self.readers.get(name)
        if reader is None:
            return real.SCARD_E_READER_UNAVAILABLE, None
        if reader.card is not card:
            return real.SCARD_W_REMOVED_CARD, None
        return real.SCARD_S_SUCCESS, card

    def SCardStatus(self, hcard: int) -> tuple[int, str, int, int, list[int]]:
        code, card = self._card_of(hcard)
        if card is None:
            return code, "", SCARD_ABSENT, 0, []
        name = self._cards[hcard][1]
        return real.SCARD_S_SUCCESS, name, SCARD_SPECIFIC, card.protocol, list(card.atr)

    def SCardTransmit(self, hcard: int, pci: Any, apdu: list[int]) -> tuple[int, list[int]]:
        if self.transmit_error is not None:
            return self.transmit_error, []
        code, card = self._card_of(hcard)
        if card is None:
            return code, []
        expected = real.SCARD_PCI_T1 if card.protocol == real.SCARD_PROTOCOL_T1 \
            else real.SCARD_PCI_T0
        assert pci == expected
        self.sent.append(bytes(apdu))
        return real.SCARD_S_SUCCESS, list(card.responder(bytes(apdu)))

    def SCardDisconnect(self, hcard: int, disposition: int) -> int:
        return SUCCESS

    def SCardCancel(self, ctx: Any) -> int:
        return SUCCESS

    def SCardGetErrorMessage(self, code: int) -> str:
        return str(real.SCardGetErrorMessage(code))


READER = "ACME Dual Reader 00 00"
READER_CL = "ACME Dual Reader PICC 00 01"


def api(fake: FakeScard) -> ModuleType:
    return fake  # type: ignore[return-value]


def ok(data: bytes) -> Responder:
    return lambda apdu: data + b"\x90\x00"


@pytest.fixture
def fake() -> FakeScard:
    return FakeScard(readers={READER: FakeReader(), READER_CL: FakeReader()})


def test_list_readers(fake: FakeScard) -> None:
    assert list_readers(scard_api=api(fake)) == [READER, READER_CL]
    fake.readers.clear()
    assert list_readers(scard_api=api(fake)) == []


def test_list_readers_without_service_is_a_reader_error(fake: FakeScard) -> None:
    fake.service_up = False
    with pytest.raises(ReaderError) as err:
        list_readers(scard_api=api(fake))
    assert err.value.cashier_en == "Card reader service not running"


def test_reader_chosen_by_substring_or_first(fake: FakeScard) -> None:
    assert PcscReader("picc", scard_api=api(fake)).name == READER_CL
    assert PcscReader(READER, scard_api=api(fake)).name == READER
    assert PcscReader(None, scard_api=api(fake)).name == READER
    with pytest.raises(NoReaderError, match="Gemalto"):
        _ = PcscReader("Gemalto", scard_api=api(fake)).name


def test_wait_for_card_present_now_returns_atr(fake: FakeScard) -> None:
    fake.insert(READER, FakeCard(CONTACT_ATR, ok(b"")))
    assert PcscReader(READER, scard_api=api(fake)).wait_for_card(1.0) == CONTACT_ATR


def test_wait_for_card_waits_for_the_insert_event(fake: FakeScard) -> None:
    reader = PcscReader(READER, scard_api=api(fake))
    fake.script.append(lambda: fake.insert(READER, FakeCard(CONTACT_ATR, ok(b""))))
    assert reader.wait_for_card(5.0) == CONTACT_ATR
    assert not fake.script


def test_wait_for_card_times_out(fake: FakeScard) -> None:
    reader = PcscReader(READER, scard_api=api(fake))
    with pytest.raises(CardTimeoutError) as err:
        reader.wait_for_card(0.01)
    assert err.value.cashier_en == "Timed out waiting for card"
    assert not reader.card_present()


def test_wait_for_removal(fake: FakeScard) -> None:
    fake.insert(READER, FakeCard(CONTACT_ATR, ok(b"")))
    reader = PcscReader(READER, scard_api=api(fake))
    with pytest.raises(CardTimeoutError, match="removal"):
        reader.wait_for_removal(0.01)
    fake.script.append(lambda: fake.remove(READER))
    reader.wait_for_removal(5.0)
    assert not reader.card_present()


def test_reader_unplugged_while_waiting(fake: FakeScard) -> None:
    reader = PcscReader(READER, scard_api=api(fake))
    fake.script.append(lambda: fake.unplug(READER))
    with pytest.raises(NoReaderError) as err:
        reader.wait_for_card(5.0)
    assert err.value.cashier_en == "Card reader disconnected"


def test_wait_survives_a_pcscd_restart(fake: FakeScard) -> None:
    reader = PcscReader(READER, scard_api=api(fake))
    assert not reader.card_present()  # a context of the first daemon is now in use

    def restart_and_insert() -> None:
        fake.restart()
        fake.insert(READER, FakeCard(CONTACT_ATR, ok(b"")))

    fake.script.append(restart_and_insert)
    assert reader.wait_for_card(5.0) == CONTACT_ATR
    assert reader.readers() == [READER, READER_CL]


def test_list_after_restart_reestablishes(fake: FakeScard) -> None:
    reader = PcscReader(READER, scard_api=api(fake))
    assert reader.readers() == [READER, READER_CL]
    fake.restart()
    assert reader.readers() == [READER, READER_CL]


def test_transmit_plain_t1_contactless(fake: FakeScard) -> None:
    fake.insert(READER_CL, FakeCard(CONTACTLESS_ATR, ok(b"\x6F\x00"), real.SCARD_PROTOCOL_T1))
    transport = PcscReader("PICC", scard_api=api(fake)).connect()
    assert transport.protocol == "T=1"
    assert transport.contactless
    assert transport.atr == CONTACTLESS_ATR
    assert transport.transmit(bytes.fromhex("00A404000E325041592E5359532E444446303100")) == (
        b"\x6F\x00", 0x9000)
    transport.close()
    transport.close()  # twice is fine
    with pytest.raises(ReaderError):
        transport.transmit(bytes.fromhex("00B2010C00"))


def t0_card() -> Responder:
    """A T=0 card: case 4 answers 61xx, case 2 with a wrong Le answers 6Cxx."""
    record = bytes(range(40))
    state = {"pending": b""}

    def respond(apdu: bytes) -> bytes:
        if apdu[1] == 0xC0:
            le = apdu[4]
            chunk, state["pending"] = state["pending"][:le], state["pending"][le:]
            rest = state["pending"]
            return chunk + (bytes([0x61, len(rest)]) if rest else b"\x90\x00")
        if apdu[1] == 0xB2:
            if apdu[4] != len(record):
                return bytes([0x6C, len(record)])
            return record + b"\x90\x00"
        state["pending"] = record
        return bytes([0x61, 16])  # announces less than there is: forces several rounds

    return respond


def test_t0_get_response_and_le_correction(fake: FakeScard) -> None:
    fake.insert(READER, FakeCard(CONTACT_ATR, t0_card()))
    transport = PcscReader(READER, scard_api=api(fake)).connect()
    assert transport.protocol == "T=0"
    assert not transport.contactless
    assert transport.transmit(bytes.fromhex("80A8000002830000")) == (bytes(range(40)), 0x9000)
    assert fake.sent[1:] == [bytes.fromhex("00C0000010"), bytes.fromhex("00C0000018")]
    fake.sent.clear()
    assert transport.transmit(bytes.fromhex("00B2010C00")) == (bytes(range(40)), 0x9000)
    assert fake.sent == [bytes.fromhex("00B2010C00"), bytes.fromhex("00B2010C28")]


def test_le_correction_adds_le_to_a_case_1_command() -> None:
    sent: list[bytes] = []

    def raw(apdu: bytes) -> tuple[bytes, int]:
        sent.append(apdu)
        return (b"", 0x6C02) if len(sent) == 1 else (b"\x01\x02", 0x9000)

    assert transmit_with_chaining(raw, bytes.fromhex("80CA9F36")) == (b"\x01\x02", 0x9000)
    assert sent[1] == bytes.fromhex("80CA9F3602")


def test_broken_chains_end_with_the_cards_status_word() -> None:
    answers = deque([(b"", 0x6C10), (b"", 0x6C11)])
    assert transmit_with_chaining(lambda _a: answers.popleft(), b"\x00\xB2\x01\x0C\x00") == (
        b"", 0x6C11)
    answers = deque([(b"", 0x6105), (b"", 0x6985)])
    assert transmit_with_chaining(lambda _a: answers.popleft(), b"\x80\xA8\x00\x00\x02\x83\x00") \
        == (b"", 0x6985)
    calls = []

    def endless(apdu: bytes) -> tuple[bytes, int]:
        calls.append(apdu)
        return b"\x00", 0x6101

    _data, sw = transmit_with_chaining(endless, b"\x80\xA8\x00\x00\x02\x83\x00")
    assert sw == 0x6101
    assert len(calls) == 33  # the command and at most 32 GET RESPONSEs


def test_card_removed_mid_dialogue(fake: FakeScard) -> None:
    fake.insert(READER, FakeCard(CONTACT_ATR, ok(b"\x70\x00")))
    transport = PcscReader(READER, scard_api=api(fake)).connect()
    assert transport.transmit(bytes.fromhex("00B2010C00"))[1] == 0x9000
    fake.remove(READER)
    with pytest.raises(CardRemovedError) as err:
        transport.transmit(bytes.fromhex("00B2020C00"))
    assert err.value.cashier_en == "Card removed too early"


def test_not_transacted_with_card_gone_is_a_removal(fake: FakeScard) -> None:
    fake.insert(READER, FakeCard(CONTACT_ATR, ok(b"")))
    transport = PcscReader(READER, scard_api=api(fake)).connect()
    fake.transmit_error = real.SCARD_E_NOT_TRANSACTED
    with pytest.raises(ReaderError) as err:
        transport.transmit(bytes.fromhex("00B2010C00"))
    assert type(err.value) is ReaderError  # card still there: a plain reader error
    fake.remove(READER)
    with pytest.raises(CardRemovedError):
        transport.transmit(bytes.fromhex("00B2010C00"))


def test_empty_response_then_card_gone_is_a_removal(fake: FakeScard) -> None:
    fake.insert(READER, FakeCard(CONTACT_ATR, lambda _apdu: b""))
    transport = PcscReader(READER, scard_api=api(fake)).connect()
    with pytest.raises(ReaderError, match="no status word") as err:
        transport.transmit(bytes.fromhex("00B2010C00"))  # still present: a reader error
    assert not isinstance(err.value, CardRemovedError)
    fake.script.append(lambda: fake.remove(READER))  # pcscd notices at its next poll
    with pytest.raises(CardRemovedError):
        transport.transmit(bytes.fromhex("00B2010C00"))


def test_restart_mid_dialogue_then_reconnect(fake: FakeScard) -> None:
    card = FakeCard(CONTACT_ATR, ok(b""))
    fake.insert(READER, card)
    reader = PcscReader(READER, scard_api=api(fake))
    transport = reader.connect()
    fake.restart()
    with pytest.raises(ReaderError) as err:
        transport.transmit(bytes.fromhex("00B2010C00"))
    assert "restarted" in err.value.message
    assert not isinstance(err.value, CardRemovedError)
    again = reader.connect()  # a new context is established behind the scenes
    assert again.transmit(bytes.fromhex("00B2010C00")) == (b"", 0x9000)


def test_reader_unplugged_mid_dialogue(fake: FakeScard) -> None:
    fake.insert(READER, FakeCard(CONTACT_ATR, ok(b"")))
    transport = PcscReader(READER, scard_api=api(fake)).connect()
    fake.readers.pop(READER)
    with pytest.raises(NoReaderError):
        transport.transmit(bytes.fromhex("00B2010C00"))


def test_connect_without_card(fake: FakeScard) -> None:
    with pytest.raises(CardRemovedError) as err:
        PcscReader(READER, scard_api=api(fake)).connect()
    assert err.value.cashier_en == "Please insert the card"


def test_connect_to_a_mute_card(fake: FakeScard) -> None:
    fake.insert(READER, FakeCard(CONTACT_ATR, ok(b"")))
    fake.connect_error = real.SCARD_W_UNRESPONSIVE_CARD
    with pytest.raises(CardRemovedError) as err:
        PcscReader(READER, scard_api=api(fake)).connect()
    assert err.value.cashier_en == "Card not responding, insert it again"


def test_contactless_detection() -> None:
    assert is_contactless_atr(CONTACTLESS_ATR)
    assert not is_contactless_atr(CONTACT_ATR)
    assert not is_contactless_atr(b"")
    assert is_contactless("ACS ACR1252 1S CL Reader PICC 00 00", CONTACT_ATR)
    assert is_contactless("Identiv uTrust 3700 F CL Reader 00 00", CONTACT_ATR)
    assert not is_contactless("Virtual PCD 00 00", CONTACT_ATR)
    assert is_contactless("Virtual PCD 00 00", CONTACTLESS_ATR)


def test_forced_interface(fake: FakeScard) -> None:
    fake.insert(READER, FakeCard(CONTACT_ATR, ok(b"")))
    assert PcscReader(READER, contactless=True, scard_api=api(fake)).connect().contactless


def test_logs_never_carry_apdu_payloads(fake: FakeScard, caplog: pytest.LogCaptureFixture) -> None:
    record = bytes.fromhex("70125A0862258800000000195F24033012315F340101")
    fake.insert(READER, FakeCard(CONTACT_ATR, ok(record)))
    caplog.set_level(logging.DEBUG, logger="drivers.pcsc")
    transport = PcscReader(READER, scard_api=api(fake)).connect()
    transport.transmit(bytes.fromhex("00B2010C00"))
    text = caplog.text.upper()
    assert "SW=9000" in text
    assert "6225880000000019" not in text
    assert record.hex().upper() not in text
    assert "5A08" not in text


@given(answers=st.lists(st.tuples(st.binary(max_size=8), st.integers(0, 0xFFFF)), min_size=40,
                        max_size=40),
       apdu=st.binary(min_size=4, max_size=20))
def test_chaining_always_ends(answers: list[tuple[bytes, int]], apdu: bytes) -> None:
    queue = deque(answers)
    sent: list[bytes] = []

    def raw(command: bytes) -> tuple[bytes, int]:
        sent.append(command)
        return queue.popleft()

    data, sw = transmit_with_chaining(raw, apdu)
    assert len(sent) <= 34  # command, one 6Cxx resend, at most 32 GET RESPONSEs
    assert sw == answers[len(sent) - 1][1]
    first = 1 if answers[0][1] >> 8 == 0x6C else 0  # a 6Cxx answer's data is dropped
    assert data == b"".join(d for d, _sw in answers[first:len(sent)])
    assert all(c[:4] == b"\x00\xC0\x00\x00" for c in sent[1:] if c[1] == 0xC0)
