"""Tests of the ESC/POS printer client: bytes sent, status handling, against the virtual printer."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drivers.errors import PaperOutError, PrinterError
from drivers.printer import (
    CodePage,
    PaperStatus,
    PrinterOfflineError,
    ReceiptPrinter,
    sanitize,
)
from emulator.printer import VirtualPrinter, render, render_file


def test_file_target_writes_escpos_and_renders(tmp_path: Path) -> None:
    out = tmp_path / "receipt.bin"
    with ReceiptPrinter.open(str(out)) as p:
        assert p.paper_status() is PaperStatus.UNKNOWN
        p.print_receipt(["商户 测试商户", "金额 RMB 12.34"], title="签购单")
    data = out.read_bytes()
    assert data.startswith(b"\x1b\x40\x1c\x26")
    assert b"\x1dV" in data
    assert render_file(str(out)).splitlines()[1:] == ["商户 测试商户", "金额 RMB 12.34"]


def test_cp437_code_page(tmp_path: Path) -> None:
    out = tmp_path / "r.bin"
    with ReceiptPrinter.open(str(out), code_page="cp437") as p:
        p.initialize()
        p.line("Café 中")  # no Chinese in CP437: replaced, never an exception
        p.cut()
    assert render(out.read_bytes()) == "Café ?"


def test_control_characters_in_text_cannot_inject_commands(tmp_path: Path) -> None:
    out = tmp_path / "r.bin"
    with ReceiptPrinter.open(str(out), code_page=CodePage.ASCII) as p:
        p.text("A\x1dV\x00B")
    assert out.read_bytes() == b"A V B"


@given(st.text(max_size=50))
def test_sanitize_leaves_no_control_bytes(text: str) -> None:
    clean = sanitize(text).replace("\n", "")
    assert all(c.isprintable() or c == " " for c in clean)


def test_open_bad_target() -> None:
    with pytest.raises(PrinterError):
        ReceiptPrinter.open("/no/such/dir/receipt.bin")


@pytest.fixture
def virtual() -> Iterator[VirtualPrinter]:
    with VirtualPrinter() as vp:
        yield vp


def test_receipt_through_a_pty(virtual: VirtualPrinter) -> None:
    with ReceiptPrinter.open(virtual.path) as p:
        assert p.paper_status() is PaperStatus.OK
        p.print_receipt(["退货 REFUND", "金额 AMOUNT 12.34"], title="签购单")
    receipt = virtual.wait_for_receipts(1)[0]
    assert receipt.splitlines()[1:] == ["退货 REFUND", "金额 AMOUNT 12.34"]
    assert receipt.splitlines()[0].strip() == "签购单"


def test_paper_out_raises_and_prints_nothing(virtual: VirtualPrinter) -> None:
    virtual.paper_out = True
    with ReceiptPrinter.open(virtual.path) as p:
        assert p.paper_status() is PaperStatus.OUT
        with pytest.raises(PaperOutError) as info:
            p.print_receipt(["x"])
        assert info.value.cashier_zh == "打印机缺纸"
        virtual.paper_out = False
        p.print_receipt(["after reload"])
    assert virtual.wait_for_receipts(1) == ["after reload"]


def test_offline_printer_is_reported() -> None:
    class OfflinePort:
        def __init__(self) -> None:
            self.answers = [0x12, 0x1A]  # paper fine, then "offline"

        def write(self, data: bytes, /) -> int:
            return len(data)

        def read(self, size: int = 1) -> bytes:
            return bytes([self.answers.pop(0)])

        def flush(self) -> None: ...

        def close(self) -> None: ...

        def reset_input_buffer(self) -> None: ...

    with pytest.raises(PrinterOfflineError):
        ReceiptPrinter(port=OfflinePort()).check_ready()


def test_silent_port_is_a_printer_error() -> None:
    class SilentPort:
        def write(self, data: bytes, /) -> int:
            return len(data)

        def read(self, size: int = 1) -> bytes:
            return b""

        def flush(self) -> None: ...

        def close(self) -> None: ...

        def reset_input_buffer(self) -> None: ...

    with pytest.raises(PrinterError, match="does not answer"):
        ReceiptPrinter(port=SilentPort()).paper_status()
