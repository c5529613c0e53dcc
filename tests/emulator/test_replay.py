"""Replaying a recorded ISO 8583 trace against the host (the checked-in demo trace in CI),
and the host's own trace (``pos-emulator serve --trace``)."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from emulator.catalogue import CARDS
from emulator.host import AcquirerHost, SqliteLedgerStore
from emulator.host.terminals import DEMO_MID, DEMO_TID, DEMO_TMK
from emulator.replay import ReplayError, TcpExchange, TraceReplayer, in_process, main
from emulator.server import ServerConfig, acquirer_server
from emulator.trace import HostTraceFile
from iso8583.cli import main as pos_iso
from iso8583.dialects import get_dialect
from iso8583.trace import HOST_TO_TERMINAL, TERMINAL_TO_HOST, TraceEntry, parse_trace

CUP = get_dialect("cup")
DEMO_TRACE = Path(__file__).resolve().parents[1] / "traces" / "demo-cup.jsonl"


def demo_entries() -> list[TraceEntry]:
    return parse_trace(DEMO_TRACE.read_text(encoding="utf-8"), name=DEMO_TRACE.name)


def fresh_host() -> AcquirerHost:
    host = AcquirerHost("cup")
    host.provision(DEMO_TID, DEMO_MID, DEMO_TMK)
    return host


def test_the_checked_in_demo_trace_replays_with_every_answer_as_recorded() -> None:
    host = fresh_host()
    report = TraceReplayer(demo_entries(), in_process(host)).run()
    assert report.ok, report.text()
    requests = [e for e in demo_entries() if e.direction == TERMINAL_TO_HOST]
    assert len(report.steps) == len(requests)
    assert all(step.answered for step in report.steps)
    # the demo's lost answer: recorded without one, replayed and not compared
    lost = [s for s in report.steps if "no answer was recorded" in s.note]
    assert [s.about for s in lost] == ["terminal->host 0200 sale"]
    # and the host booked what the demo's host booked: two sales left, one reversed
    kinds = sorted((row.kind, row.status) for row in host.transactions()
                   if row.kind in ("sale", "refund", "void"))
    assert ("refund", "approved") in kinds


def test_replaying_into_a_host_that_saw_these_stans_shows_differences() -> None:
    host = fresh_host()
    TraceReplayer(demo_entries(), in_process(host)).run()
    again = TraceReplayer(demo_entries(), in_process(host)).run()
    assert not again.ok
    assert "difference" in again.text()


def _tamper(path: Path, mti: str, number: int, value: str) -> Path:
    """A copy of the demo trace whose first ``mti`` message carries ``value`` in ``number``."""
    lines = DEMO_TRACE.read_text(encoding="utf-8").splitlines()
    for i, raw in enumerate(lines):
        line = json.loads(raw)
        if line.get("mti") == mti:
            frame = CUP.unpack_payload(bytes.fromhex(line["frame"]))
            message = frame.message
            message[number] = value
            line["frame"] = CUP.payload(message, tpdu=frame.tpdu, header=frame.header).hex()
            lines[i] = json.dumps(line)
            break
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_an_answer_that_differs_from_the_recording_is_named(tmp_path: Path) -> None:
    trace = _tamper(tmp_path / "t.jsonl", "0210", 39, "51")
    host = fresh_host()
    report = TraceReplayer(parse_trace(trace.read_text()), in_process(host)).run()
    assert [(d.label, d.a, d.b) for d in report.differences] == [("39", "51", "00")]
    assert "host->terminal 0210 sale" in report.text()


def test_a_request_macd_before_any_sign_on_cannot_be_replayed() -> None:
    without_sign_on = demo_entries()[2:]
    host = fresh_host()
    with pytest.raises(ReplayError, match="before any sign-on"):
        TraceReplayer(without_sign_on, in_process(host)).run()


def test_a_card_outside_the_catalogue_replays_as_its_substitute_and_is_declined() -> None:
    host = fresh_host()
    replayer = TraceReplayer(demo_entries(), in_process(host),
                             cards=[c for c in CARDS if c.name != "cup-debit"])
    report = replayer.run()
    assert ("39", "00", "14") in [(d.label, d.a, d.b) for d in report.differences]


def test_the_command_line(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main([str(DEMO_TRACE)]) == 0
    assert capsys.readouterr().out.startswith("replayed 9 request(s): every answer as recorded")
    assert main([str(DEMO_TRACE), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["ok"] is True
    assert doc["requests"] == 9
    tampered = _tamper(tmp_path / "t.jsonl", "0230", 39, "61")
    assert main([str(tampered)]) == 1
    assert "message 6: host->terminal 0230 refund" in capsys.readouterr().out
    assert main([str(tampered), "--ignore", "39"]) == 0
    capsys.readouterr()
    for argv in ([str(tmp_path / "missing.jsonl")], [str(DEMO_TRACE), "--tmk", "zz"],
                 [str(DEMO_TRACE), "--connect", "nowhere"],
                 [str(DEMO_TRACE), "--connect", "127.0.0.1:1"]):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1, err
        assert "Traceback" not in err


async def test_replay_over_tcp_into_a_host_that_records_its_own_trace(tmp_path: Path) -> None:
    store = SqliteLedgerStore(tmp_path / "ledger.db")
    host = AcquirerHost.from_store(store, "cup")
    store.commit([host.provision(DEMO_TID, DEMO_MID, DEMO_TMK)])
    host_trace = HostTraceFile(tmp_path / "host.jsonl", host.dialect)
    server = acquirer_server(host, store, trace=host_trace,
                             config=ServerConfig(port=0, idle_timeout=10, read_timeout=2))
    _, port = await server.start()
    exchange = TcpExchange("127.0.0.1", port, CUP, timeout=5)
    try:
        report = await asyncio.to_thread(TraceReplayer(demo_entries(), exchange).run)
    finally:
        exchange.close()
        await server.stop()
        host_trace.close()
        store.close()
    assert report.ok, report.text()
    recorded = parse_trace((tmp_path / "host.jsonl").read_text(encoding="utf-8"))
    assert {e.by for e in recorded} == {"host"}
    assert [e.direction for e in recorded[:2]] == [TERMINAL_TO_HOST, HOST_TO_TERMINAL]
    assert len(recorded) == 2 * len(report.steps)  # the replay host answered everything
    text = (tmp_path / "host.jsonl").read_text(encoding="utf-8")
    assert all(card.pan not in text for card in CARDS)
    assert all(e.message() is not None for e in recorded)


def test_pos_emulator_serve_records_a_replay_sent_to_it(tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    """The README's commands: serve --trace, replay --connect, trace show of the host's trace."""
    log = tmp_path / "serve.log"
    host_trace = tmp_path / "host.jsonl"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "emulator", "serve", "--port", "0", "--ledger",
             str(tmp_path / "ledger.db"), "--admin", "none", "--trace", str(host_trace)],
            stdout=out, stderr=subprocess.STDOUT, cwd=tmp_path)
    try:
        deadline = time.monotonic() + 60
        port = None
        while port is None and time.monotonic() < deadline and proc.poll() is None:
            found = re.search(r"listening on 127\.0\.0\.1:(\d+)", log.read_text(errors="replace"))
            port = int(found.group(1)) if found else None
            time.sleep(0.05)
        assert port is not None, log.read_text(errors="replace")
        assert main([str(DEMO_TRACE), "--connect", f"127.0.0.1:{port}"]) == 0, \
            capsys.readouterr().out
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=20)
    assert proc.returncode == 0, log.read_text(errors="replace")
    recorded = parse_trace(host_trace.read_text(encoding="utf-8"))
    assert {e.by for e in recorded} == {"host"}
    assert len(recorded) == 18  # nine requests, each answered
    assert pos_iso(["trace", "show", str(host_trace)]) == 0
    assert "recorded by the host" in capsys.readouterr().out
