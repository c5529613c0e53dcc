"""ISO 8583 traces: masked lines, reading them back, the diff and its ignore rules, the CLI."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from iso8583 import tlv
from iso8583.cli import main
from iso8583.crypto.mac import cup_pos_mac
from iso8583.dialects import get_dialect
from iso8583.errors import Iso8583Error
from iso8583.masking import mask_pan, substitute_pan
from iso8583.message import Message
from iso8583.pretty import message_dict
from iso8583.trace import (
    HOST_TO_TERMINAL,
    TERMINAL_TO_HOST,
    Difference,
    TraceEntry,
    TraceFormatError,
    TraceRecorder,
    build_line,
    comparable,
    diff,
    dumps_line,
    entries_from,
    format_conversation,
    format_differences,
    kind_of,
    mask_message,
    parse_trace,
)
from tests.iso8583.strategies import messages

CUP = get_dialect("cup")
ISO87 = get_dialect("iso87")
MAK = bytes.fromhex("5BB5C72CD00B7338")
PAN = "6225880000000019"
TRACK2 = "6225880000000019D30122207654321098"
TPDU = bytes.fromhex("6000030000")
AT = datetime(2026, 12, 1, 12, 0, 0)
DEMO_TRACE = Path(__file__).resolve().parents[1] / "traces" / "demo-cup.jsonl"


def _icc(**extra: bytes) -> bytes:
    tags = {0x9F26: bytes.fromhex("1850BE61653BE244"), 0x9F27: b"\x80",
            0x9F37: bytes.fromhex("0813C08E"), 0x9F36: b"\x00\x01",
            0x9F02: bytes.fromhex("000000010000"), 0x9A: bytes.fromhex("261201"),
            0x5A: bytes.fromhex(PAN), 0x57: bytes.fromhex("6225880000000019D3012220765432109F")}
    tags.update({int(k[1:], 16): v for k, v in extra.items()})
    return tlv.encode(tags)


def sale(*, stan: str = "000002", amount: int = 10000, icc: bytes | None = None,
         time: str = "120000", mac: bool = True) -> Message:
    m = CUP.message("0200", {2: PAN, 3: "000000", 4: amount, 11: stan, 12: time, 13: "1201",
                             22: "051", 35: TRACK2, 41: "10000001", 42: "123456789012345",
                             49: "156", 52: bytes(range(1, 9)), 53: "2600000000000000",
                             55: icc if icc is not None else _icc(), 60: "22000001000"})
    if mac:
        m[64] = cup_pos_mac(MAK, CUP.mac_block(m))
    return m


def answer(request: Message, *, code: str = "00", rrn: str = "000000000001") -> Message:
    m = CUP.message(request.response_mti)
    for n in (2, 3, 4, 11, 25, 41, 42, 49, 60):
        if n in request:
            m[n] = request[n]
    m[12], m[13], m[37], m[38], m[39] = "120001", "1201", rrn, rrn[-6:], code
    m[64] = cup_pos_mac(MAK, CUP.mac_block(m))
    return m


def line_of(message: Message, direction: str = TERMINAL_TO_HOST, *, t: float = 0.0,
            dialect: object = CUP) -> dict[str, object]:
    d = CUP if dialect is CUP else ISO87
    payload = d.payload(message, tpdu=TPDU if d.spec.tpdu else None)
    line: dict[str, object] = json.loads(
        dumps_line(build_line(d, payload, direction, by="terminal", t=t, at=AT)))
    return line


def entry_of(message: Message, direction: str = TERMINAL_TO_HOST) -> TraceEntry:
    return entries_from([line_of(message, direction)])[0]


# --- masking -----------------------------------------------------------------------------


def test_a_line_holds_no_card_secret_and_decodes_to_the_masked_message() -> None:
    request = sale()
    line = line_of(request)
    text = json.dumps(line)
    assert PAN not in text
    assert PAN.encode().hex() not in text.lower()
    assert "7654321" not in text  # track 2 discretionary data (F35 and tag 57)
    assert bytes(range(1, 9)).hex().upper() not in text  # the PIN block
    assert line["dir"] == TERMINAL_TO_HOST
    assert line["mti"] == "0200"
    shown = message_dict(request, CUP)["fields"]  # as pos-iso decode shows it (F55 aside)
    assert {k: v for k, v in line["message"].items() if k != "55"} == {  # type: ignore[attr-defined]
        k: v for k, v in shown.items() if k != "55"}
    assert line["message"]["2"] == "622588******0019"  # type: ignore[index]
    entry = entries_from([line])[0]
    masked = entry.message()
    assert masked is not None
    assert masked == mask_message(CUP, request)
    assert masked[2] == substitute_pan(PAN)
    assert mask_pan(str(masked[2])) == mask_pan(PAN)
    assert str(masked[35]).startswith(substitute_pan(PAN) + "D3012220")
    assert str(masked[35]).endswith("0000000000")  # discretionary data zeroed
    assert masked[52] == b"*" * 8
    assert masked[64] == b"*" * 8
    icc = tlv.decode_flat(masked[55])  # type: ignore[arg-type]
    assert icc[0x5A] == bytes.fromhex(substitute_pan(PAN))
    assert icc[0x57].hex().upper().startswith(substitute_pan(PAN) + "D3012220")
    assert icc[0x9F26] == bytes.fromhex("1850BE61653BE244")  # cryptograms stay (not secret)
    assert entry.length == len(CUP.payload(request, tpdu=TPDU))


def test_keys_in_a_sign_on_answer_are_starred() -> None:
    m = CUP.message("0810", {11: 1, 39: "00", 41: "10000001", 42: "123456789012345",
                             60: "00000001003", 62: bytes(range(40))})
    line = line_of(m, HOST_TO_TERMINAL)
    assert line["message"]["62"] == "<hidden, 40 bytes>"  # type: ignore[index]
    assert bytes(range(40)).hex().upper() not in str(line["frame"])
    assert "2A" * 40 in str(line["frame"])


def test_an_undecodable_frame_keeps_only_its_routing_head_and_length() -> None:
    payload = CUP.payload(sale(), tpdu=TPDU)[:40]
    line = build_line(CUP, payload, HOST_TO_TERMINAL, by="host", t=1.5)
    assert "error" in line
    assert "mti" not in line
    assert line["frame"] == "6000030000" + "602200000000" + "**" * (40 - 11)
    assert line["length"] == 40
    entry = entries_from([line])[0]
    assert entry.frame is None
    assert entry.message() is None
    assert comparable(entry) == {"dir": HOST_TO_TERMINAL, "frame": "undecodable, 40 bytes"}


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_recording_never_raises(data: bytes) -> None:
    line = build_line(CUP, data, TERMINAL_TO_HOST, by="terminal", t=0.0)
    entries_from([json.loads(dumps_line(line))])


def test_the_recorder_writes_a_meta_line_then_one_line_per_frame() -> None:
    written: list[str] = []
    clock = iter([10.0, 10.25, 10.5])
    rec = TraceRecorder(written.append, CUP, by="host", monotonic=lambda: next(clock),
                        wall=lambda: AT)
    rec.record(TERMINAL_TO_HOST, CUP.payload(sale(), tpdu=TPDU))
    rec.record(HOST_TO_TERMINAL, b"\x60\x00")
    meta, first, second = (json.loads(x) for x in written)
    assert meta["kind"] == "meta"
    assert meta["by"] == "host"
    assert meta["dialect"] == "cup"
    assert first["t"] == 0.25
    assert first["at"] == "2026-12-01T12:00:00.000000"
    assert second["dir"] == HOST_TO_TERMINAL
    assert "error" in second
    assert rec.lines == 3


def test_a_failing_write_stops_the_recording_not_the_caller() -> None:
    def broken(line: str) -> None:
        raise OSError(28, "No space left on device")

    rec = TraceRecorder(broken, CUP, by="terminal", monotonic=lambda: 0.0, wall=lambda: AT)
    rec.record(TERMINAL_TO_HOST, CUP.payload(sale(), tpdu=TPDU))
    assert isinstance(rec.failed, OSError)
    assert rec.lines == 0


def test_a_direction_is_one_of_two() -> None:
    with pytest.raises(ValueError, match="direction"):
        build_line(CUP, b"", "out", by="terminal", t=0.0)


# --- round trip (hypothesis) -----------------------------------------------------------


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_a_line_round_trips_to_the_masked_message(data: st.DataObject) -> None:
    dialect = data.draw(st.sampled_from([CUP, ISO87]))
    message = data.draw(messages(dialect))
    try:
        payload = dialect.payload(message, tpdu=TPDU if dialect.spec.tpdu else None)
        original = dialect.unpack_payload(payload).message
    except Iso8583Error:
        return  # values the codec refuses are the codec tests' business
    direction = data.draw(st.sampled_from([TERMINAL_TO_HOST, HOST_TO_TERMINAL]))
    t = data.draw(st.floats(0, 1e6))
    text = dumps_line(build_line(dialect, payload, direction, by="terminal", t=t, at=AT))
    (entry,) = parse_trace(text)
    assert entry.direction == direction
    assert entry.dialect == dialect.name
    assert entry.length == len(payload)
    assert entry.at == AT
    assert entry.error is None
    assert entry.message() == mask_message(dialect, original)
    # the view is the pretty printer's, except where the trace masks more than it does
    masked = mask_message(dialect, original)
    shown = message_dict(original, dialect)["fields"]
    more = {str(n) for n, v in masked.fields.items()
            if v != original[n] and dialect.fields[n].sensitive is None
            and n != dialect.spec.mac_field}
    assert {k: v for k, v in entry.view.items() if k not in more} == {
        k: v for k, v in shown.items() if k not in more}
    # the frame is the masked message and re-recording it describes the same message
    again = build_line(dialect, entry.frame or b"", direction, by="terminal", t=t)
    assert again["mti"] == original.mti
    assert comparable(entry)["mti"] == original.mti


# --- reading ---------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "match"), [
    ("{not json", "line 1"),
    ('["a list"]', "not a trace record"),
    ('{"kind": "iso", "dir": "sideways"}', "'dir'"),
    ('{"kind": "iso", "dir": "terminal->host", "dialect": "x25", "length": 1}', "x25"),
    ('{"kind": "iso", "dir": "terminal->host", "dialect": "cup", "length": 1, "frame": "ZZ"}',
     "not hex"),
    ('{"kind": "iso", "dir": "terminal->host", "dialect": "cup", "length": -1, "frame": ""}',
     "length"),
    ('{"kind": "iso", "dir": "terminal->host", "dialect": "cup", "length": 1, "frame": "",'
     ' "at": "yesterday"}', "yesterday"),
])
def test_bad_lines_are_named(text: str, match: str) -> None:
    with pytest.raises(TraceFormatError, match=match):
        parse_trace(text, name="t.jsonl")


def test_other_kinds_of_line_are_skipped() -> None:
    text = "\n".join([
        json.dumps({"kind": "meta", "v": 1}),
        json.dumps({"kind": "apdu", "t": 0.1, "step": 1, "dir": "out", "hex": "00A4"}),
        dumps_line(build_line(CUP, CUP.payload(sale(), tpdu=TPDU), TERMINAL_TO_HOST,
                              by="terminal", t=0.0)),
    ])
    (entry,) = parse_trace(text)
    assert entry.line == 3


# --- comparing ---------------------------------------------------------------------------


def test_what_changes_every_run_is_not_compared() -> None:
    a = sale(stan="000002", time="120000",
             icc=_icc(x9F26=bytes(8), x9F37=b"\x01\x02\x03\x04", x9F36=b"\x00\x01"))
    b = sale(stan="000107", time="235959",
             icc=_icc(x9F26=bytes(range(8)), x9F37=b"\x09\x08\x07\x06", x9F36=b"\x00\x09"))
    b[13] = "0315"
    b[64] = cup_pos_mac(bytes(8), CUP.mac_block(b))
    assert diff([entry_of(a), entry_of(answer(a))],
                [entry_of(b), entry_of(answer(b, rrn="000000000777"))]) == []


def test_a_different_amount_and_icc_amount_are_named() -> None:
    a = sale()
    b = sale(amount=10001, icc=_icc(x9F02=bytes.fromhex("000000010001")))
    found = diff([entry_of(a)], [entry_of(b)])
    assert [(d.index, d.label, d.a, d.b) for d in found] == [
        (1, "4", "000000010000", "000000010001"),
        (1, "55.9F02", "000000010000", "000000010001"),
    ]
    assert found[0].about == "terminal->host 0200 sale"
    text = format_differences(found, a_name="a.jsonl", b_name="b.jsonl")
    assert "message 1: terminal->host 0200 sale" in text
    assert "000000010001" in text


def test_more_fields_can_be_ignored(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a = sale()
    b = sale(amount=10001, icc=_icc(x9F02=bytes.fromhex("000000010001")))
    assert [d.label for d in diff([entry_of(a)], [entry_of(b)], ignore=["55"])] == ["4"]
    assert diff([entry_of(a)], [entry_of(b)], ignore=["4", "55.9F02"]) == []
    pa = _write(tmp_path / "a.jsonl", [a], [TERMINAL_TO_HOST])
    pb = _write(tmp_path / "b.jsonl", [b], [TERMINAL_TO_HOST])
    code, out, _ = run(capsys, "trace", "diff", str(pa), str(pb), "--ignore", "4",
                       "--ignore", "55", "--json")
    assert code == 0
    assert json.loads(out)["ignored"] == ["4", "55"]


def test_a_response_code_difference_is_named() -> None:
    a, b = answer(sale()), answer(sale(), code="51")
    (d,) = diff([entry_of(a, HOST_TO_TERMINAL)], [entry_of(b, HOST_TO_TERMINAL)])
    assert (d.label, d.a, d.b) == ("39", "00", "51")


def test_f61_is_compared_by_batch_only() -> None:
    def void(f61: str) -> TraceEntry:
        m = CUP.message("0200", {2: PAN, 3: "200000", 4: 1500, 11: 7, 41: "10000001",
                                 42: "123456789012345", 60: "23000001000", 61: f61})
        return entry_of(m)

    assert diff([void("0000010000061201")], [void("0000010001230315")]) == []
    (d,) = diff([void("000001000006")], [void("000002000006")])
    assert (d.label, d.a, d.b) == ("61.1", "000001", "000002")


def test_a_missing_message_is_one_difference() -> None:
    a = [entry_of(sale()), entry_of(answer(sale()), HOST_TO_TERMINAL)]
    (d,) = diff(a, a[:1])
    assert (d.a_index, d.b_index, d.label, d.b) == (2, None, "message", None)
    assert d.a == "host->terminal 0210 sale"
    assert "message 2 of A only: host->terminal 0210 sale" in format_differences([d])


def echo() -> Message:
    return CUP.message("0820", {11: 9, 41: "10000001", 42: "123456789012345",
                                60: "00000001301"})


def test_an_extra_message_in_the_middle_does_not_shift_the_rest() -> None:
    first, second = sale(), sale(amount=1500, stan="000003")
    a = [entry_of(first), entry_of(answer(first), HOST_TO_TERMINAL),
         entry_of(second), entry_of(answer(second, code="51"), HOST_TO_TERMINAL)]
    b = [a[0], a[1], entry_of(echo()), a[2], entry_of(answer(second), HOST_TO_TERMINAL)]
    found = diff(a, b)
    assert [(d.a_index, d.b_index, d.label, d.a, d.b) for d in found] == [
        (None, 3, "message", None, "terminal->host 0820 echo"),
        (4, 5, "39", "51", "00"),
    ]
    text = format_differences(found, a_name="a", b_name="b")
    assert "message 3 of b only: terminal->host 0820 echo" in text
    assert "message 4 (b: 5): host->terminal 0210 sale" in text


Variant = tuple[int, str, str, bool, bool]
_VARIANTS = st.tuples(
    st.sampled_from([100, 10000, 99999]), st.sampled_from(["00", "05", "51"]),
    st.sampled_from(["000001", "000002"]), st.booleans(), st.booleans())


def _run(variants: list[Variant]) -> list[TraceEntry]:
    """A run: per variant, maybe an echo (answered), then a sale and maybe its answer."""
    out = []
    for amount, code, stan, drop, with_echo in variants:
        if with_echo:
            out.append(entry_of(echo()))
            reply = echo()
            reply.mti = "0830"
            reply[39] = "00"
            out.append(entry_of(reply, HOST_TO_TERMINAL))
        request = sale(amount=amount, stan=stan)
        out.append(entry_of(request))
        if not drop:
            out.append(entry_of(answer(request, code=code), HOST_TO_TERMINAL))
    return out


@settings(max_examples=100, deadline=None)
@given(st.lists(_VARIANTS, max_size=4), st.lists(_VARIANTS, max_size=4))
def test_diff_is_symmetric(a_run: list[Variant], b_run: list[Variant]) -> None:
    a, b = _run(a_run), _run(b_run)

    def facts(found: list[Difference]) -> list[tuple[object, ...]]:
        return [(d.a_index, d.b_index, d.label, d.a, d.b, d.about) for d in found]

    assert facts(diff(a, b)) == facts([d.mirrored() for d in diff(b, a)])
    assert diff(a, a) == []
    assert diff(b, b) == []
    # as few unpaired messages as possible: the pairing is a longest common subsequence
    sig_a = [(e.direction, e.mti, e.view.get("3")) for e in a]
    sig_b = [(e.direction, e.mti, e.view.get("3")) for e in b]
    unpaired = [d for d in diff(a, b) if d.label == "message"]
    assert len(unpaired) == len(a) + len(b) - 2 * _lcs(sig_a, sig_b)


def _lcs(x: Sequence[object], y: Sequence[object]) -> int:
    """Length of a longest common subsequence (the textbook table, as a reference)."""
    row = [0] * (len(y) + 1)
    for item in x:
        prev = row[:]
        for j, other in enumerate(y):
            row[j + 1] = prev[j] + 1 if item == other else max(prev[j + 1], row[j])
    return row[-1]


# --- naming and showing ----------------------------------------------------------------


def test_messages_are_named_by_the_dialects_transaction_table() -> None:
    assert kind_of(CUP, sale()) == "sale"
    assert kind_of(CUP, answer(sale())) == "sale"
    refund = CUP.message("0220", {3: "200000", 60: "25000001000"})
    assert kind_of(CUP, refund) == "refund"
    assert kind_of(CUP, CUP.message("0230", {3: "200000", 60: "25000001000"})) == "refund"


def test_a_conversation_shows_arrows_kinds_key_fields_and_meanings() -> None:
    request = sale()
    entries = [entry_of(request), entry_of(answer(request, code="51"), HOST_TO_TERMINAL)]
    text = format_conversation(entries, name="x.jsonl")
    assert text.splitlines()[0].startswith("x.jsonl: 2 message(s), dialect cup")
    assert "terminal --> host  0200 sale" in text
    assert "terminal <-- host  0210 sale  51 " in text
    assert "PAN 622588******0019" in text
    assert "amount 100.00" in text
    assert PAN not in text
    assert substitute_pan(PAN) not in text


# --- the command line --------------------------------------------------------------------


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _write(path: Path, entries: list[Message], directions: list[str]) -> Path:
    path.write_text("".join(
        dumps_line(build_line(CUP, CUP.payload(m, tpdu=TPDU), d, by="terminal", t=0.0))
        for m, d in zip(entries, directions, strict=True)), encoding="utf-8")
    return path


def test_show_prints_the_checked_in_demo_trace(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "trace", "show", str(DEMO_TRACE))
    assert code == 0
    assert err == ""
    assert "0800 sign_on" in out
    assert "0220 refund" in out
    assert "0400 reversal" in out
    assert "0510 settlement  00 Approved" in out
    assert PAN not in out
    code, out, _ = run(capsys, "trace", "show", str(DEMO_TRACE), "--json")
    doc = json.loads(out)
    assert code == 0
    assert doc["messages"][0]["kind"] == "sign_on"
    assert doc["messages"][1]["response"]["code"] == "00"


def test_diff_exit_codes_and_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a = _write(tmp_path / "a.jsonl", [sale()], [TERMINAL_TO_HOST])
    same = _write(tmp_path / "same.jsonl", [sale(stan="000099")], [TERMINAL_TO_HOST])
    other = _write(tmp_path / "b.jsonl", [sale(amount=5)], [TERMINAL_TO_HOST])
    code, out, _ = run(capsys, "trace", "diff", str(a), str(same))
    assert code == 0
    assert out.startswith("no differences")
    code, out, _ = run(capsys, "trace", "diff", str(a), str(other))
    assert code == 1
    assert "message 1: terminal->host 0200 sale" in out
    code, out, _ = run(capsys, "trace", "diff", str(a), str(other), "--json")
    doc = json.loads(out)
    assert code == 1
    assert doc["equal"] is False
    assert doc["differences"][0] == {"message_a": 1, "message_b": 1, "field": "4",
                                     "about": "terminal->host 0200 sale",
                                     "a": "000000010000", "b": "000000000005"}


def test_bad_trace_files_exit_2_with_one_line(tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"kind": "iso"}\n', encoding="utf-8")
    for argv in (("trace", "show", str(tmp_path / "missing.jsonl")),
                 ("trace", "show", str(bad)), ("trace", "diff", str(bad), str(bad))):
        code, out, err = run(capsys, *argv)
        assert code == 2, err
        assert out == ""
        assert len(err.strip().splitlines()) == 1, err
        assert "Traceback" not in err


def test_show_lists_an_undecodable_frame_and_skips_apdu_lines(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "mixed.jsonl"
    request = sale()
    path.write_text("".join([
        json.dumps({"kind": "apdu", "t": 0.0, "step": 1, "dir": "out", "hex": "00A4"}) + "\n",
        dumps_line(build_line(CUP, CUP.payload(request, tpdu=TPDU), TERMINAL_TO_HOST,
                              by="terminal", t=0.0)),
        dumps_line(build_line(CUP, TPDU + b"\x60\x22\x00\x00\x00\x00\x02\x10\xff",
                              HOST_TO_TERMINAL, by="terminal", t=0.25)),
    ]), encoding="utf-8")
    code, out, _ = run(capsys, "trace", "show", str(path))
    assert code == 0
    assert "2 message(s)" in out
    assert "+    0.250s  terminal <-- host  undecodable frame, 14 bytes:" in out
    code, out, _ = run(capsys, "trace", "show", str(path), "--json")
    assert json.loads(out)["messages"][1]["error"]
