"""Response codes (F39): the one table of what each means and what a terminal does next.

Texts are for the cashier (zh + en) with a short next step; ``terminal_action``
is what a terminal does with the answer. The host emulator answers with the
same constants (:mod:`emulator.host.codes` adds only its magic amounts).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType
from typing import Final


class TerminalAction(StrEnum):
    """What a terminal does after an answer (or after none)."""

    APPROVED = "approved"  # book it, print, done
    DECLINED = "declined"  # show the reason; nothing was booked
    SIGN_ON_AGAIN = "sign_on_again"  # the host no longer trusts our keys: sign on, then retry
    RESEND = "resend"  # send the same message again (refund advice, reversal)
    REVERSE = "reverse"  # reverse the request (no valid answer to a money-moving request)


APPROVED: Final = "00"
INVALID_MERCHANT: Final = "03"  # unknown TID / TID-MID pair (answer not MACed)
DO_NOT_HONOUR: Final = "05"  # also: ARQC does not verify
INVALID_TRANSACTION: Final = "12"  # void/refund of something that cannot be voided/refunded
INVALID_AMOUNT: Final = "13"  # zero, negative or malformed amount, wrong currency
INVALID_CARD: Final = "14"  # unknown or blocked card; refund/void with another card
ORIGINAL_NOT_FOUND: Final = "25"  # no approved original for F37/F61
FORMAT_ERROR: Final = "30"  # mandatory field missing or unparsable
LOST_CARD: Final = "41"
INSUFFICIENT_FUNDS: Final = "51"
EXPIRED_CARD: Final = "54"
WRONG_PIN: Final = "55"
EXCEEDS_LIMIT: Final = "61"
ORIGINAL_AMOUNT_MISMATCH: Final = "64"  # refund over the refundable rest, void for another amount
SIGN_ON_AGAIN: Final = "77"  # CUP: financial request before sign-on (no working keys)
DUPLICATE: Final = "94"  # a different message reuses (TID, batch, STAN, MTI)
SYSTEM_ERROR: Final = "96"
ISSUER_TIMEOUT: Final = "98"
MAC_ERROR: Final = "A0"  # request MAC does not verify: nothing booked, answer not MACed

#: Codes a host answers without a MAC (it has no key it trusts for this terminal).
UNMACED_CODES: Final = frozenset({MAC_ERROR, SIGN_ON_AGAIN, INVALID_MERCHANT, FORMAT_ERROR})


@dataclass(frozen=True)
class ResponseCode:
    """One response code: texts for the cashier and the terminal's next step."""

    code: str
    zh: str
    en: str
    action_zh: str = ""
    action_en: str = ""
    terminal_action: TerminalAction = TerminalAction.DECLINED

    @property
    def approved(self) -> bool:
        return self.terminal_action is TerminalAction.APPROVED


_R = ResponseCode
_TABLE: tuple[ResponseCode, ...] = (
    _R(APPROVED, "交易成功", "Approved", terminal_action=TerminalAction.APPROVED),
    _R(INVALID_MERCHANT, "无效商户", "Invalid merchant", "请联系收单机构", "Call the acquirer"),
    _R(DO_NOT_HONOUR, "不予承兑", "Do not honour", "请持卡人联系发卡行",
       "Cardholder to call issuer"),
    _R(INVALID_TRANSACTION, "无效交易", "Invalid transaction"),
    _R(INVALID_AMOUNT, "无效金额", "Invalid amount", "请核对金额", "Check the amount"),
    _R(INVALID_CARD, "无效卡号", "Invalid card"),
    _R(ORIGINAL_NOT_FOUND, "找不到原始交易", "Original not found", "请核对原交易参考号和日期",
       "Check the original RRN and date"),
    _R(FORMAT_ERROR, "报文格式错误", "Format error"),
    _R(LOST_CARD, "挂失卡", "Lost card", "请没收卡片", "Retain the card"),
    _R(INSUFFICIENT_FUNDS, "余额不足", "Insufficient funds"),
    _R(EXPIRED_CARD, "过期卡", "Expired card"),
    _R(WRONG_PIN, "密码错误", "Wrong PIN", "请持卡人重新输入密码", "Ask for the PIN again"),
    _R(EXCEEDS_LIMIT, "超出金额限制", "Over limit"),
    _R(ORIGINAL_AMOUNT_MISMATCH, "原始金额不符", "Original amount mismatch",
       "退款金额超出原交易可退金额", "Refund exceeds the refundable amount"),
    _R(SIGN_ON_AGAIN, "请重新签到", "Sign on again", "请重新签到后再试", "Sign on, then retry",
       TerminalAction.SIGN_ON_AGAIN),
    _R(DUPLICATE, "重复交易", "Duplicate transaction"),
    _R(SYSTEM_ERROR, "系统故障", "System error", "请稍后再试", "Try again later"),
    _R(ISSUER_TIMEOUT, "发卡行超时", "Issuer timeout", "请稍后再试", "Try again later"),
    _R(MAC_ERROR, "MAC校验错", "MAC error", "请重新签到后再试", "Sign on again, then retry",
       TerminalAction.SIGN_ON_AGAIN),
)
BY_CODE: Final = MappingProxyType({entry.code: entry for entry in _TABLE})

#: What :func:`explain` says when no answer arrived. Whether the terminal then
#: reverses or resends is the transaction profile's ``on_timeout``, not this entry.
NO_ANSWER: Final = ResponseCode("--", "无应答", "No answer")


def explain(code: str | None) -> ResponseCode:
    """The entry for ``code``; unknown codes get a generic decline that shows the code."""
    if code is None:
        return NO_ANSWER
    entry = BY_CODE.get(code)
    if entry is not None:
        return entry
    return ResponseCode(code, f"交易失败({code})", f"Declined ({code})")


def known_codes() -> list[str]:
    """Every code the table explains, sorted."""
    return sorted(BY_CODE)


__all__ = [
    "APPROVED", "BY_CODE", "DO_NOT_HONOUR", "DUPLICATE", "EXCEEDS_LIMIT", "EXPIRED_CARD",
    "FORMAT_ERROR", "INSUFFICIENT_FUNDS", "INVALID_AMOUNT", "INVALID_CARD", "INVALID_MERCHANT",
    "INVALID_TRANSACTION", "ISSUER_TIMEOUT", "LOST_CARD", "MAC_ERROR", "NO_ANSWER",
    "ORIGINAL_AMOUNT_MISMATCH", "ORIGINAL_NOT_FOUND", "SIGN_ON_AGAIN", "SYSTEM_ERROR",
    "UNMACED_CODES", "WRONG_PIN", "ResponseCode", "TerminalAction", "explain", "known_codes",
]
