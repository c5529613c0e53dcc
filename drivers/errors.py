"""Typed errors of the hardware edge.

Each error carries a short English ``message`` for logs and developers and a
``cashier_message`` pair (zh, en) that the UI can show as is. No error text ever
contains a full PAN, track data, PIN, PIN block or key.
"""

from __future__ import annotations


class CashierFacingError(Exception):
    """An error that carries the text a cashier sees, in Chinese and English.

    ``message`` is for logs and developers; ``cashier_zh`` / ``cashier_en``
    default to the class's texts and may be overridden per instance. The
    terminal's own error root shares this base, so the UI handles both alike.
    """

    cashier_zh = "设备错误"
    cashier_en = "Device error"

    def __init__(self, message: str, *, cashier_zh: str | None = None,
                 cashier_en: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if cashier_zh is not None:
            self.cashier_zh = cashier_zh
        if cashier_en is not None:
            self.cashier_en = cashier_en


class DriverError(CashierFacingError):
    """Root of every error raised by :mod:`drivers`."""

    title = "Device error"


# --- card readers (PC/SC and serial) ---------------------------------------
class ReaderError(DriverError):
    """The card reader or the PC/SC service failed or is missing."""

    cashier_zh, cashier_en = "读卡器故障", "Card reader error"


class NoReaderError(ReaderError):
    """No reader with the configured name is present."""

    cashier_zh, cashier_en = "未找到读卡器", "No card reader found"


class CardTimeoutError(ReaderError):
    """No card was presented (or removed) within the time allowed."""

    cashier_zh, cashier_en = "等待刷卡超时", "Timed out waiting for card"


class CardRemovedError(ReaderError):
    """The card left the reader in the middle of a dialogue."""

    cashier_zh, cashier_en = "卡片已拔出", "Card removed too early"


class CardError(DriverError):
    """The card answered, but not in a way the dialogue can use."""

    cashier_zh, cashier_en = "卡片错误", "Card error"


class CardBlockedError(CardError):
    """The card or the application is blocked (6283 / 6A81)."""

    cashier_zh, cashier_en = "卡片已锁定", "Card blocked"


class NoApplicationError(CardError):
    """No supported payment application on the card."""

    cashier_zh, cashier_en = "不支持的卡片", "No supported application"


class CardDataError(CardError):
    """A card response is malformed (bad TLV, missing mandatory data)."""

    cashier_zh, cashier_en = "卡片数据错误", "Card data error"


# --- serial devices -----------------------------------------------------------
class SerialLinkError(DriverError):
    """The serial link failed: no ACK after retries, EOT, port gone."""

    cashier_zh, cashier_en = "串口通讯失败", "Serial link failed"


class PinPadError(DriverError):
    """The PIN pad reported or caused an error."""

    cashier_zh, cashier_en = "密码键盘故障", "PIN pad error"


class PinPadTimeoutError(PinPadError):
    """The cardholder did not finish entering the PIN in time."""

    cashier_zh, cashier_en = "输入密码超时", "PIN entry timed out"


class PinEntryCancelledError(PinPadError):
    """The cardholder pressed Cancel on the PIN pad."""

    cashier_zh, cashier_en = "持卡人取消输入", "PIN entry cancelled"


class PrinterError(DriverError):
    """The receipt printer failed."""

    cashier_zh, cashier_en = "打印机故障", "Printer error"


class PaperOutError(PrinterError):
    """The printer is out of paper."""

    cashier_zh, cashier_en = "打印机缺纸", "Printer out of paper"
