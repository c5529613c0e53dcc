"""Typed errors of the terminal core, each with a cashier-facing text in zh and en."""

from __future__ import annotations

from drivers.errors import CashierFacingError


class TerminalError(CashierFacingError):
    """Root of every error raised by :mod:`terminal`."""

    cashier_zh = "终端错误"
    cashier_en = "Terminal error"


class HostLinkError(TerminalError):
    """The acquirer host could not be reached or broke the connection."""

    cashier_zh, cashier_en = "主机通讯失败", "Host communication failed"


class HostTimeoutError(HostLinkError):
    """No answer from the host in time: the outcome of the request is unknown."""

    cashier_zh, cashier_en = "主机应答超时", "No answer from host"


class CardMismatchError(TerminalError):
    """The card presented for a refund is not the card of the original sale."""

    cashier_zh, cashier_en = "非原交易卡，不能原路退款", "Not the card of the original sale"


class RefundAmountError(TerminalError):
    """The refund amount is zero or more than what is still refundable."""

    cashier_zh, cashier_en = "退款金额超出可退金额", "Amount over the refundable amount"
