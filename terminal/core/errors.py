"""Typed errors of the terminal core, each with a cashier-facing text in zh and en.

One root (:class:`TerminalError`); each subclass names one thing that went
wrong. Rule refusals (:class:`RuleError` and below) mean nothing was sent.
"""

from __future__ import annotations

from drivers.errors import CashierFacingError


class TerminalError(CashierFacingError):
    """Root of every error raised by :mod:`terminal`."""

    cashier_zh = "终端错误"
    cashier_en = "Terminal error"


class JournalError(TerminalError):
    """The journal could not be opened, read or written."""

    cashier_zh, cashier_en = "交易日志错误", "Journal error"


class ConfigError(TerminalError):
    """The terminal is not set up (no TID/MID/TMK) or a setting is invalid."""

    cashier_zh, cashier_en = "终端未初始化或参数错误", "Terminal not set up"


class HostLinkError(TerminalError):
    """The acquirer host could not be reached or broke the connection."""

    cashier_zh, cashier_en = "主机通讯失败", "Host communication failed"


class HostTimeoutError(HostLinkError):
    """No answer from the host in time: the outcome of the request is unknown."""

    cashier_zh, cashier_en = "主机应答超时", "No answer from host"


class SignOnError(TerminalError):
    """Sign-on failed: refused, or the working keys' check values do not match."""

    cashier_zh, cashier_en = "签到失败", "Sign-on failed"


class UncertainError(TerminalError):
    """A request's outcome is not known yet; the terminal will resolve it with the host."""

    cashier_zh = "交易结果未知，终端将自动冲正或重发"
    cashier_en = "Outcome unknown; the terminal will resolve it"


class PendingError(UncertainError):
    """Earlier requests are still unresolved, so no new transaction may start."""

    cashier_zh = "有未完成的冲正/通知，请先联机处理"
    cashier_en = "Unresolved reversals/advices pending"


class RuleError(TerminalError):
    """A rule refused the request before anything was sent."""

    cashier_zh, cashier_en = "交易不允许", "Not allowed"


class AmountError(RuleError):
    """The amount is not a valid amount of money."""

    cashier_zh, cashier_en = "金额无效", "Invalid amount"


class RefundAmountError(RuleError):
    """The refund amount is zero or more than what is still refundable."""

    cashier_zh, cashier_en = "退款金额超出可退金额", "Amount over the refundable amount"


class CardMismatchError(RuleError):
    """The card presented for a refund or void is not the card of the original sale."""

    cashier_zh, cashier_en = "非原交易卡，不能原路退款", "Not the card of the original sale"


class OriginalNotFoundError(RuleError):
    """No original sale matches the voucher, RRN or card given."""

    cashier_zh, cashier_en = "找不到原交易", "Original sale not found"


class OriginalStateError(RuleError):
    """The original cannot be refunded or voided in its state (voided, refunded, settled, old)."""

    cashier_zh, cashier_en = "原交易状态不允许此操作", "Original cannot take this"


class RefundTooOldError(OriginalStateError):
    """The original is older than the refund age limit."""

    cashier_zh, cashier_en = "原交易超过可退货期限", "Original is too old to refund"


class InputError(RuleError):
    """A cashier's or script's input is malformed."""

    cashier_zh, cashier_en = "输入有误", "Invalid input"


class DeviceError(TerminalError):
    """A card reader, PIN pad or printer failed (the driver's message says which)."""

    cashier_zh, cashier_en = "设备故障", "Device failure"


class CardLeftReaderError(DeviceError):
    """The card was removed before the terminal finished with it (second GENERATE AC)."""

    cashier_zh, cashier_en = "卡片已拔出", "Card removed too early"
