"""The terminal records its ISO 8583 conversation: the link's trace, --trace / POS_ISO_TRACE,
and the acceptance: two runs of the demo record traces ``pos-iso trace diff`` finds equal,
and equal to the trace checked in under tests/traces."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from iso8583.cli import main as pos_iso
from iso8583.dialects import get_dialect
from iso8583.message import Message
from iso8583.trace import HOST_TO_TERMINAL, TERMINAL_TO_HOST, diff, parse_trace
from terminal import cli, demo
from terminal.core.errors import ConfigError, HostTimeoutError
from terminal.hostlink import TRACE_ENV, IsoTraceFile, TcpHostLink

CUP = get_dialect("cup")
TPDU = bytes.fromhex("6000030000")
DEMO_TRACE = Path(__file__).resolve().parents[1] / "traces" / "demo-cup.jsonl"
RERECORD = ("if the demo's conversation changed on purpose, record it again: "
            "pos-terminal demo --script --in-process --trace tests/traces/demo-cup.jsonl")


def _serve(answer: Callable[[bytes], bytes]) -> Iterator[int]:
    """A host on 127.0.0.1 that answers each request payload with ``answer(payload)``."""
    server = socket.create_server(("127.0.0.1", 0))

    def run() -> None:
        conn, _ = server.accept()
        with conn:
            decoder = CUP.frame_decoder()
            while data := conn.recv(4096):
                for payload in decoder.feed(data):
                    reply = answer(payload)
                    conn.sendall(len(reply).to_bytes(2, "big") + reply)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    server.close()
    thread.join(timeout=2)


def _echo(payload: bytes) -> bytes:
    frame = CUP.unpack_payload(payload)
    reply = frame.message.copy()
    reply.mti = "0830"
    reply[39] = "00"
    assert frame.tpdu is not None
    return CUP.payload(reply, tpdu=CUP.reply_tpdu(frame.tpdu))


@pytest.fixture
def echo_port() -> Iterator[int]:
    yield from _serve(_echo)


@pytest.fixture
def garbage_port() -> Iterator[int]:
    yield from _serve(lambda payload: TPDU + bytes.fromhex("602200000000") + b"\x08\x30\xff")


def _request() -> Message:
    return CUP.message("0820", {11: 1, 41: "10000001", 42: "123456789012345",
                                60: "00000001301"})


def test_the_link_records_what_it_sends_and_receives(echo_port: int, tmp_path: Path) -> None:
    path = tmp_path / "link.jsonl"
    trace = IsoTraceFile(path, CUP)
    with TcpHostLink(CUP, "127.0.0.1", echo_port, timeout=2, tpdu=TPDU, trace=trace) as link:
        link.exchange(_request())
    trace.close()
    lines = [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines()]
    assert [x["kind"] for x in lines] == ["meta", "iso", "iso"]
    assert lines[0]["by"] == "terminal"
    assert [x["dir"] for x in lines[1:]] == [TERMINAL_TO_HOST, HOST_TO_TERMINAL]
    assert [x["mti"] for x in lines[1:]] == ["0820", "0830"]
    request, answer = parse_trace(path.read_text(encoding="utf-8"))
    assert request.message() == _request()
    assert answer.view["39"] == "00"


def test_the_environment_variable_turns_recording_on_and_appends(
        echo_port: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "env.jsonl"
    path.write_text('{"kind":"meta","v":1,"note":"an earlier run"}\n', encoding="utf-8")
    monkeypatch.setenv(TRACE_ENV, str(path))
    with TcpHostLink(CUP, "127.0.0.1", echo_port, timeout=2, tpdu=TPDU) as link:
        assert link.trace is not None
        link.exchange(_request())
        link.trace.close()
    text = path.read_text(encoding="utf-8")
    assert text.startswith('{"kind":"meta","v":1,"note":"an earlier run"}')
    assert len(parse_trace(text)) == 2
    monkeypatch.delenv(TRACE_ENV)
    assert TcpHostLink(CUP, "127.0.0.1", echo_port).trace is None


def test_an_undecodable_answer_is_recorded_and_still_treated_as_no_answer(
        garbage_port: int, tmp_path: Path) -> None:
    path = tmp_path / "garbage.jsonl"
    trace = IsoTraceFile(path, CUP)
    with TcpHostLink(CUP, "127.0.0.1", garbage_port, timeout=2, tpdu=TPDU,
                     trace=trace) as link, pytest.raises(HostTimeoutError, match="unreadable"):
        link.exchange(_request())
    trace.close()
    _, answer = parse_trace(path.read_text(encoding="utf-8"))
    assert answer.direction == HOST_TO_TERMINAL
    assert answer.error is not None
    assert answer.frame is None
    assert answer.length == 14


def test_a_trace_that_cannot_be_written_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="cannot write the ISO trace"):
        IsoTraceFile(tmp_path / "file" / "trace.jsonl", CUP)


# --- the acceptance: the demo's conversation ------------------------------------------------


def test_two_demo_runs_record_the_same_conversation_as_the_checked_in_trace(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    first, second = tmp_path / "first.jsonl", tmp_path / "second.jsonl"
    # once through pos-terminal (the README's command), once through the demo module
    assert cli.main(["demo", "--script", "--in-process", "--trace", str(first)]) == 0
    assert demo.main(["--in-process", "--trace", str(second)]) == 0
    capsys.readouterr()
    assert pos_iso(["trace", "diff", str(first), str(second)]) == 0, capsys.readouterr().out
    assert capsys.readouterr().out.startswith("no differences")
    a = parse_trace(first.read_text(encoding="utf-8"))
    kinds = [e.view.get("39") for e in a if e.direction == HOST_TO_TERMINAL]
    assert len(a) >= 15
    assert kinds.count("00") == len(kinds)  # every answer the demo got approved
    recorded = parse_trace(DEMO_TRACE.read_text(encoding="utf-8"))
    assert diff(recorded, a) == [], RERECORD


def test_an_iso87_conversation_records_and_replays(tmp_path: Path) -> None:
    """The second dialect end to end: the real till against the emulator, recorded, then
    replayed into a fresh host (F90 reversals, F62 keys as text, X9.19 MACs)."""
    from emulator.host.terminals import DEMO_MID, DEMO_TID, DEMO_TMK
    from emulator.replay import TraceReplayer, fresh_host
    from terminal.core.config import TerminalSettings, init_terminal
    from terminal.core.journal import Journal
    from terminal.demo_world import EmulatedWorld, open_world_till

    journal = Journal.open(tmp_path / "terminal")
    init_terminal(journal, TerminalSettings(tid=DEMO_TID, mid=DEMO_MID, training=True,
                                            dialect="iso87"), DEMO_TMK)
    journal.close()
    world = EmulatedWorld(tmp_path / "world", in_process=True, dialect="iso87")
    path = tmp_path / "iso87.jsonl"
    trace = IsoTraceFile(path, world.host.dialect, append=False)
    try:
        till = open_world_till(world, tmp_path / "terminal", trace=trace)
        try:
            walk = demo.Walkthrough(till, world, verbose=False, out=lambda _: None)
            walk.sign_on()
            sale = walk.sale("cup-debit", 100_00)
            assert sale is not None
            walk.refund(sale, "cup-debit", 30_00, expect="approved")
            second = walk.sale("cup-debit", 15_00)
            assert second is not None
            walk.void(second, expect="approved")
            walk.settle()
            assert all(r.ok for r in walk.results), walk.results
            keys = till.journal.load_keys()
        finally:
            till.close()
    finally:
        world.stop()
        trace.close()
    text = path.read_text(encoding="utf-8")
    assert keys is not None
    assert keys.mak.hex().upper() not in text
    assert keys.pik.hex().upper() not in text
    entries = parse_trace(text)
    assert {e.dialect for e in entries} == {"iso87"}
    sign_on_answer = entries[1].message()
    assert sign_on_answer is not None
    assert set(str(sign_on_answer[62])) == {"*"}  # the working keys, starred
    report = TraceReplayer(entries, fresh_host("iso87", DEMO_TMK)).run()
    assert report.ok, report.text()
    assert len(report.steps) == 6


def test_a_trace_that_stops_working_stops_recording_not_the_link(
        echo_port: int, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    folder = tmp_path / "gone"
    trace = IsoTraceFile(folder / "t.jsonl", CUP)
    (folder / "t.jsonl").unlink()
    folder.rmdir()  # the next line cannot be appended
    with TcpHostLink(CUP, "127.0.0.1", echo_port, timeout=2, tpdu=TPDU, trace=trace) as link:
        assert link.exchange(_request()).message.mti == "0830"
        assert link.exchange(_request()).message.mti == "0830"
    assert [r.getMessage() for r in caplog.records if "ISO trace" in r.getMessage()] == [
        f"ISO trace {folder / 't.jsonl'} stopped: "
        f"[Errno 2] No such file or directory: '{folder / 't.jsonl'}'"]
