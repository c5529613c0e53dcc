"""What each host response code means, in the cashier's two languages.

The cashier sees ``退款成功 / REFUND APPROVED`` or one of these reasons; the
code itself is shown too so the help desk can look it up.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ResponseText:
    code: str
    zh: str
    en: str
    action_zh: str = ""
    action_en: str = ""


_TABLE = (
    ResponseText("00", "交易成功", "Approved"),
    ResponseText("03", "无效商户", "Invalid merchant", "请联系收单机构", "Call the acquirer"),
    ResponseText("05", "不予承兑", "Do not honour", "请持卡人联系发卡行",
                 "Cardholder to call issuer"),
    ResponseText("12", "无效交易", "Invalid transaction"),
    ResponseText("13", "无效金额", "Invalid amount", "请核对金额", "Check the amount"),
    ResponseText("14", "无效卡号", "Invalid card"),
    ResponseText("25", "找不到原始交易", "Original not found", "请核对原交易参考号和日期",
                 "Check the original RRN and date"),
    ResponseText("30", "报文格式错误", "Format error"),
    ResponseText("41", "挂失卡", "Lost card", "请没收卡片", "Retain the card"),
    ResponseText("51", "余额不足", "Insufficient funds"),
    ResponseText("54", "过期卡", "Expired card"),
    ResponseText("55", "密码错误", "Wrong PIN", "请持卡人重新输入密码", "Ask for the PIN again"),
    ResponseText("61", "超出金额限制", "Over limit"),
    ResponseText("64", "原始金额不符", "Original amount mismatch",
                 "退款金额超出原交易可退金额", "Refund exceeds the refundable amount"),
    ResponseText("77", "请重新签到", "Sign on again", "请重新签到后再试", "Sign on, then retry"),
    ResponseText("94", "重复交易", "Duplicate transaction"),
    ResponseText("96", "系统故障", "System error", "请稍后再试", "Try again later"),
    ResponseText("98", "发卡行超时", "Issuer timeout", "请稍后再试", "Try again later"),
    ResponseText("A0", "MAC校验错", "MAC error", "请重新签到后再试", "Sign on again, then retry"),
)
_BY_CODE = {entry.code: entry for entry in _TABLE}


def explain(code: str | None) -> ResponseText:
    """The texts for ``code``; unknown codes get a generic decline that shows the code."""
    if code is None:
        return ResponseText("--", "无应答", "No answer")
    return _BY_CODE.get(code, ResponseText(code, f"交易失败({code})", f"Declined ({code})"))


def known_codes() -> list[str]:
    return sorted(_BY_CODE)
