"""Tests of the virtual printer's ESC/POS decoder, status answers and CLI."""

from __future__ import annotations

import signal
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from drivers.printer import PaperStatus, ReceiptPrinter
from emulator.printer import EscPosDecoder, render, status_byte
from emulator.printer.cli import main

ESC, GS, FS, DLE = b"\x1b", b"\x1d", b"\x1c", b"\x10"


def test_chinese_mode_decodes_gb18030() -> None:
    job = ESC + b"@" + FS + b"&" + "退货成功 REFUND".encode("gb18030") + b"\n" + GS + b"V\x42\x03"
    dec = EscPosDecoder()
    dec.feed(job)
    assert dec.receipts == ["退货成功 REFUND"]


def test_four_byte_gb18030_character() -> None:
    text = "\U00020000".encode("gb18030")  # a CJK extension B character: 4 bytes
    assert len(text) == 4
    assert render(FS + b"&" + text + b"\n") == "\U00020000"


def test_code_page_437_without_chinese_mode() -> None:
    assert render(ESC + b"t\x00" + "é½".encode("cp437") + b"\n") == "é½"


def test_styles_and_alignment() -> None:
    job = (ESC + b"a\x01" + ESC + b"E\x01" + GS + b"!\x11" + b"TITLE" + GS + b"!\x00"
           + ESC + b"E\x00" + b"\n" + ESC + b"a\x00" + b"left\n")
    assert render(job, width=15) == "     TITLE\nleft"


def test_variable_length_commands_are_skipped_whole() -> None:
    raster = GS + b"v0\x00\x02\x00\x02\x00" + b"\xff" * 4
    barcode = GS + b"k\x04*123*\x00" + GS + b"k\x49\x03ABC"
    fn = GS + b"(k\x03\x001A2"
    assert render(raster + barcode + fn + b"ok\n") == "[barcode][barcode]ok"


def test_split_anywhere_gives_the_same_text() -> None:
    job = FS + b"&" + "商户名称 测试".encode("gb18030") + b"\n" + ESC + b"d\x02" + GS + b"V\x00"
    whole = EscPosDecoder()
    whole.feed(job)
    for cut in range(len(job)):
        dec = EscPosDecoder()
        dec.feed(job[:cut])
        dec.feed(job[cut:])
        assert dec.receipts == whole.receipts


def test_status_queries_are_reported() -> None:
    dec = EscPosDecoder()
    assert dec.feed(DLE + b"\x04\x04" + DLE + b"\x04\x01") == [4, 1]
    assert status_byte(4, paper_out=True) & 0x60 == 0x60
    assert status_byte(4, paper_out=False) == 0x12
    assert status_byte(1, paper_out=True) & 0x08


@given(st.binary(max_size=500))
@example(GS + b"v0\x00\xff\xff\xff\xff")
@example(GS + b"8L\xff\xff\xff\xff")
@example(FS + b"&\x81")
def test_random_bytes_never_crash(blob: bytes) -> None:
    dec = EscPosDecoder()
    dec.feed(blob)
    dec.feed(b"\n" + GS + b"V\x00")
    assert isinstance(dec.current(), str)


def test_cli_renders_a_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    job = tmp_path / "job.bin"
    job.write_bytes(FS + b"&" + "签购单".encode("gb18030") + b"\n" + GS + b"V\x00")
    assert main(["--file", str(job)]) == 0
    assert capsys.readouterr().out.strip() == "签购单"


def test_cli_bad_input_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--file", str(tmp_path / "missing.bin")]) == 2
    assert main(["--width", "x"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 2


def test_cli_serves_a_pty_and_takes_paper_commands(monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    class Stdin:
        def __iter__(self) -> Iterator[str]:
            path = capsys.readouterr().out.splitlines()[0]
            yield "paper out\n"
            with ReceiptPrinter.open(path) as p:
                assert p.paper_status() is PaperStatus.OUT
            yield "paper in\n"
            with ReceiptPrinter.open(path) as p:
                assert p.paper_status() is PaperStatus.OK
            yield "jump\n"
            yield "quit\n"

    before = signal.getsignal(signal.SIGTERM)
    monkeypatch.setattr(sys, "stdin", Stdin())
    assert main([]) == 0
    assert signal.getsignal(signal.SIGTERM) == before
    out = capsys.readouterr().out
    assert out.count("ok") == 2
    assert "error: unknown command 'jump'" in out
