"""Tests of APDU trace recording (with masking) and replay."""

from __future__ import annotations

import datetime as dt
import io
import json
import threading
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drivers.emv import (
    AID_CUP_DEBIT,
    CryptogramType,
    TerminalConfig,
    TransactionData,
    TransactionType,
    read_card,
)
from drivers.errors import CardRemovedError, DriverError, ReaderError
from drivers.masking import mask_pan, substitute_pan
from drivers.trace import (
    CardDataMasker,
    RecordingTransport,
    ReplayMismatch,
    ReplayTransport,
    TraceFormatError,
    TraceWriter,
    read_trace,
)
from emulator.card.app import VirtualCard
from emulator.card.transport import InProcessCardTransport
from emulator.catalogue import CARDS, CardStatus
from iso8583 import tlv
from tests.drivers.emv_fakes import FakeApp, FakeCard

PAN = "6225880000000019"
TXN = TransactionData(TransactionType.REFUND, 5000, dt.date(2026, 11, 23), dt.time(10, 0, 0),
                      unpredictable_number=bytes.fromhex("01020304"), sequence_counter=7)
AAC = TerminalConfig(refund_ends_with="aac")


def record(path: Path, card: FakeCard, txn: TransactionData = TXN,
           config: TerminalConfig = AAC) -> None:
    with TraceWriter(path) as writer:
        writer.meta(transaction=txn.to_json(), refund_ends_with=config.refund_ends_with)
        rec = RecordingTransport(card, writer, reader="fake")
        read_card(rec, txn, config)


def test_trace_lines_follow_the_documented_format(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    card = FakeCard([FakeApp(AID_CUP_DEBIT)])
    record(path, card)
    lines = read_trace(path)
    assert lines[0]["kind"] == "meta"
    assert lines[0]["v"] == 1
    assert lines[1]["kind"] == "card"
    assert lines[1]["atr"] == card.atr.hex().upper()
    assert lines[1]["contactless"] is False
    apdus = [x for x in lines if x["kind"] == "apdu"]
    assert len(apdus) == 2 * len(card.log)
    for i, exchange in enumerate(card.log):
        out, inn = apdus[2 * i], apdus[2 * i + 1]
        assert (out["step"], out["dir"], inn["step"], inn["dir"]) == (i + 1, "out", i + 1, "in")
        assert inn["sw"] == f"{exchange.sw:04X}"
    ts = [x["t"] for x in lines]
    assert ts == sorted(ts)
    assert all(list(x)[:2] == ["kind", "t"] for x in lines)


def test_trace_never_holds_the_pan_or_track2(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    record(path, FakeCard([FakeApp(AID_CUP_DEBIT)]))
    text = path.read_text()
    assert PAN not in text
    assert PAN + "D" not in text  # the track 2 data
    assert substitute_pan(PAN) in text  # BCD hex of the substitute is the same digits


@pytest.mark.parametrize("contactless", [False, True])
@pytest.mark.parametrize("chain61", [False, True])
def test_replay_of_a_masked_trace_is_a_valid_dialogue(tmp_path: Path, contactless: bool,
                                                      chain61: bool) -> None:
    path = tmp_path / "t.jsonl"
    card = FakeCard([FakeApp(AID_CUP_DEBIT)], contactless=contactless, chain61=chain61)
    with TraceWriter(path) as writer:
        live = read_card(RecordingTransport(card, writer), TXN, AAC)
    replay = ReplayTransport(path)
    assert replay.contactless is contactless
    again = read_card(replay, TXN, AAC)
    replay.assert_finished()
    assert again.pan == substitute_pan(PAN)
    assert again.pan != live.pan
    assert mask_pan(again.pan) == mask_pan(live.pan)
    assert again.expiry == live.expiry
    assert again.aid == live.aid
    assert again.cryptogram is not None
    assert again.cryptogram.type is CryptogramType.AAC
    assert again.f55() == live.f55()  # F55 carries no card number


def test_replay_rebuilds_the_transaction_from_meta(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    record(path, FakeCard([FakeApp(AID_CUP_DEBIT)]))
    replay = ReplayTransport(path)
    txn = TransactionData.from_json(replay.meta["transaction"])
    assert txn == TXN
    read_card(replay, txn, TerminalConfig(refund_ends_with=replay.meta["refund_ends_with"]))
    assert replay.finished


def test_replay_mismatch_names_the_step(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    record(path, FakeCard([FakeApp(AID_CUP_DEBIT)]))
    other = TransactionData(TransactionType.REFUND, 5001, TXN.date, TXN.time,
                            unpredictable_number=TXN.unpredictable_number, sequence_counter=7)
    replay = ReplayTransport(path)
    with pytest.raises(ReplayMismatch, match=r"step \d+: expected C-APDU 80AE") as info:
        read_card(replay, other, AAC)
    assert isinstance(info.value, DriverError)


def test_replay_past_the_end_and_unfinished(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    record(path, FakeCard([FakeApp(AID_CUP_DEBIT)]), config=TerminalConfig(
        refund_ends_with="records"))
    replay = ReplayTransport(path)
    with pytest.raises(ReplayMismatch, match="trace ended"):
        read_card(replay, TXN, AAC)  # asks GENERATE AC that was never recorded
    short = ReplayTransport(path)
    short.transmit(short.steps[0].command)
    with pytest.raises(ReplayMismatch, match="stopped before step 2"):
        short.assert_finished()


def test_card_removal_is_recorded_and_replayed(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    card = FakeCard([FakeApp(AID_CUP_DEBIT)], remove_after=4)
    with TraceWriter(path) as writer, pytest.raises(CardRemovedError):
        read_card(RecordingTransport(card, writer), TXN, AAC)
    lines = read_trace(path)
    assert lines[-1]["error"] == "CardRemovedError"
    with pytest.raises(CardRemovedError):
        read_card(ReplayTransport(path), TXN, AAC)


def test_several_sessions_in_one_trace(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    with TraceWriter(path) as writer:
        read_card(RecordingTransport(FakeCard([FakeApp(AID_CUP_DEBIT)]), writer), TXN, AAC)
        read_card(RecordingTransport(FakeCard([FakeApp(AID_CUP_DEBIT)], contactless=True),
                                     writer), TXN, AAC)
    assert not ReplayTransport(path, session=0).contactless
    second = ReplayTransport(path, session=1)
    assert second.contactless
    read_card(second, TXN, AAC)
    assert second.finished
    with pytest.raises(TraceFormatError, match="no session 2"):
        ReplayTransport(path, session=2)


def test_serial_frames_share_the_format() -> None:
    sink = io.StringIO()
    writer = TraceWriter(sink)
    writer.serial("out", b"\x02PIN6225880000000019\x03\x10")
    writer.serial("in", b"\x06", device="pinpad")
    with pytest.raises(ValueError, match="direction"):
        writer.serial("sideways", b"")  # type: ignore[arg-type]
    lines = [json.loads(x) for x in sink.getvalue().splitlines()]
    assert [(x["kind"], x["dir"]) for x in lines] == [("serial", "out"), ("serial", "in")]
    assert PAN.encode().hex().upper() not in lines[0]["hex"]
    assert substitute_pan(PAN).encode().hex().upper() in lines[0]["hex"]
    assert lines[1]["hex"] == "06"


def test_writer_is_thread_safe_and_lines_stay_whole() -> None:
    sink = io.StringIO()
    writer = TraceWriter(sink)

    def spam(kind: str) -> None:
        for i in range(200):
            if kind == "serial":
                writer.serial("out", bytes([i % 256]) * 40)
            else:
                writer.apdu(b"\x00\xb2\x01\x0c\x00", bytes(40), 0x9000, masked=True)

    threads = [threading.Thread(target=spam, args=(k,)) for k in ("serial", "apdu")]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    lines = [json.loads(x) for x in sink.getvalue().splitlines()]
    assert len(lines) == 600
    steps = [x["step"] for x in lines if x["kind"] == "apdu" and x["dir"] == "out"]
    assert steps == list(range(1, 201))


def test_closed_writer_writes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    writer = TraceWriter(path)
    writer.meta(a=1)
    writer.close()
    writer.close()
    writer.meta(b=2)
    assert len(read_trace(path)) == 1


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ("{not json\n", "line 1"),
        ("[1, 2]\n", "not a trace record"),
        ('{"kind":"card","t":0,"atr":"3B","contactless":false}\n'
         '{"kind":"apdu","t":0,"step":1,"dir":"in","hex":"","sw":"9000"}\n', "answer without"),
        ('{"kind":"card","t":0,"atr":"3B","contactless":false}\n'
         '{"kind":"apdu","t":0,"step":1,"dir":"out","hex":"00"}\n', "without its answer"),
        ('{"kind":"card","t":0,"atr":"3B","contactless":false}\n'
         '{"kind":"apdu","t":0,"step":1,"dir":"out","hex":"zz"}\n', "not hex"),
        ('{"kind":"card","t":0,"atr":"3B","contactless":false}\n'
         '{"kind":"apdu","t":0,"step":1,"dir":"out","hex":"00"}\n'
         '{"kind":"apdu","t":0,"step":1,"dir":"in","hex":"","sw":"XYZ"}\n', "bad sw"),
        ('{"kind":"meta","t":0}\n', "no session 0"),
    ],
)
def test_bad_trace_files(tmp_path: Path, content: str, match: str) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(content)
    with pytest.raises(TraceFormatError, match=match):
        ReplayTransport(path)


def test_missing_trace_file(tmp_path: Path) -> None:
    with pytest.raises(TraceFormatError, match="cannot read"):
        ReplayTransport(tmp_path / "absent.jsonl")


def test_unknown_recorded_error_replays_as_reader_error(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    path.write_text('{"kind":"card","t":0,"atr":"3B00","contactless":false}\n'
                    '{"kind":"apdu","t":0,"step":1,"dir":"out","hex":"00"}\n'
                    '{"kind":"apdu","t":0,"step":1,"dir":"in","error":"OSError","message":"x"}\n')
    with pytest.raises(ReaderError, match="x"):
        ReplayTransport(path).transmit(b"\x00")


# --- masker --------------------------------------------------------------------


def test_masker_handles_odd_length_pan_and_track2() -> None:
    pan = "6225880000000000019"  # 19 digits
    track2 = bytes.fromhex(pan + "D30122201234567890" + "F")
    masker = CardDataMasker()
    record = tlv.encode_tlv(0x70, tlv.encode_tlv(0x57, track2)
                            + tlv.encode_tlv(0x5A, bytes.fromhex(pan + "F")))
    out = masker.response(record)
    assert len(out) == len(record)
    flat = tlv.decode_flat(out)
    sub = substitute_pan(pan)
    assert flat[0x5A].hex().upper() == sub + "F"
    assert flat[0x57].hex().upper() == sub + "D3012220" + "0" * 10 + "F"
    assert masker.command(b"\x80\xca" + bytes.fromhex(pan + "F")) == (
        b"\x80\xca" + bytes.fromhex(sub + "F"))


def test_masker_scans_corrupt_tlv() -> None:
    masker = CardDataMasker()
    data = b"\x70\x40" + tlv.encode_tlv(0x5A, bytes.fromhex(PAN))  # outer length is wrong
    out = masker.response(data)
    assert bytes.fromhex(PAN) not in out
    assert bytes.fromhex(substitute_pan(PAN)) in out


def test_masker_masks_track1_ascii() -> None:
    masker = CardDataMasker()
    t1 = f"B{PAN}^TEST/CARD^30122201234567".encode()
    out = masker.response(tlv.encode_tlv(0x70, tlv.encode_tlv(0x56, t1)))
    assert PAN.encode() not in out
    assert b"1234567" not in out
    assert b"^3012220" in out


@given(st.binary(max_size=300))
def test_masker_never_changes_lengths_or_raises(data: bytes) -> None:
    masker = CardDataMasker()
    masker.response(tlv.encode_tlv(0x5A, bytes.fromhex(PAN)))
    assert len(masker.response(data)) == len(data)
    assert len(masker.command(data)) == len(data)
    assert len(masker.text(data)) == len(data)


# --- every catalogue card through the product's virtual card --------------------------

VIRTUAL_READS = [pytest.param(c.name, cl, id=f"{c.name}-{'cl' if cl else 'ct'}")
                 for c in CARDS if c.chip and c.status is not CardStatus.BLOCKED
                 for cl in (False, True) if (c.contactless if cl else c.contact)]


@pytest.mark.parametrize(("name", "contactless"), VIRTUAL_READS)
def test_virtual_card_traces_are_masked_and_replay(tmp_path: Path, name: str,
                                                   contactless: bool) -> None:
    card = next(c for c in CARDS if c.name == name)
    path = tmp_path / "t.jsonl"
    inner = InProcessCardTransport(VirtualCard(card, t0=True), contactless)
    with TraceWriter(path) as writer:
        live = read_card(RecordingTransport(inner, writer), TXN, AAC)
    text = path.read_text()
    assert card.pan not in text
    assert card.pan + "D" not in text
    replay = ReplayTransport(path)
    again = read_card(replay, TXN, AAC)
    replay.assert_finished()
    assert again.masked_pan == live.masked_pan
    assert again.pan == substitute_pan(card.pan)
    assert again.f55() == live.f55()


# --- trace files are input too: only TraceFormatError for garbage --------------------

_json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 70000) | st.text(max_size=12)
    | st.sampled_from(["out", "in", "9000", "00A4", "apdu", "card", "meta", "zz"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
        st.sampled_from(["kind", "step", "dir", "hex", "sw", "atr", "error", "contactless"]),
        inner, max_size=6),
    max_leaves=12)
_lines = st.dictionaries(
    st.sampled_from(["kind", "step", "dir", "hex", "sw", "atr", "error", "message",
                     "contactless"]),
    _json_values, max_size=7)


@given(st.lists(_lines, max_size=8), st.binary(max_size=8))
def test_random_trace_files_raise_only_trace_format_errors(
        tmp_path_factory: pytest.TempPathFactory, lines: list[dict[str, object]],
        apdu: bytes) -> None:
    path = tmp_path_factory.mktemp("fuzz") / "t.jsonl"
    head = {"kind": "card", "t": 0, "atr": "3B00", "contactless": False}
    path.write_text("\n".join(json.dumps(x) for x in [head, *lines]) + "\n")
    try:
        replay = ReplayTransport(path)
        replay.transmit(apdu)
    except DriverError:
        return


@given(st.sampled_from(list(TransactionType)), st.integers(0, 10**12 - 1),
       st.dates(), st.times().map(lambda t: t.replace(microsecond=0)),
       st.binary(min_size=4, max_size=4) | st.none(), st.integers(0, 99_999_999))
def test_transaction_json_round_trip(kind: TransactionType, amount: int, date: dt.date,
                                     time: dt.time, un: bytes | None, seq: int) -> None:
    t = TransactionData(kind, amount, date, time, unpredictable_number=un, sequence_counter=seq)
    assert TransactionData.from_json(json.loads(json.dumps(t.to_json()))) == t
