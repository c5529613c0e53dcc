"""The one catalogue of every word the cashier's screen shows, in Chinese and English.

Screens never hold text of their own: they call :func:`tr` with a key (and
format arguments), or one of the helpers that turn a core value (a progress
:class:`~terminal.core.ports.Step`, an error, a response code, a refund reason)
into the cashier's language. Texts the core already carries in both languages
(errors' ``cashier_zh``/``cashier_en``, :func:`iso8583.responses.explain`,
``REASON_TEXT``, approval reasons) are taken from there, never repeated here.
"""

from __future__ import annotations

from typing import Literal

from drivers.errors import CashierFacingError
from iso8583.responses import explain
from terminal.core.ports import Step
from terminal.core.records import REASON_TEXT, RefundReason, TxnKind, TxnStatus

Lang = Literal["zh", "en"]
LANGS: tuple[Lang, ...] = ("zh", "en")

TEXT: dict[str, tuple[str, str]] = {
    # -- frame -------------------------------------------------------------------
    "app_title": ("POS 收银", "POS Till"),
    "training": ("培训", "TRAINING"),
    "training_banner": ("培训模式：不发生真实资金往来", "TRAINING: no real money moves"),
    "status_op": ("操作员 {op}", "Op {op}"),
    "status_no_op": ("未登录", "Not logged in"),
    "signed_on": ("已签到", "Signed on"),
    "not_signed_on": ("未签到", "Not signed on"),
    "host_up": ("主机正常", "Host OK"),
    "host_down": ("主机不通", "Host down"),
    "host_unknown": ("主机未知", "Host ?"),
    "pending": ("待冲正/通知 {n}", "Pending {n}"),
    "batch": ("批次 {batch}", "Batch {batch}"),
    "reader": ("读卡器 {state}", "Reader {state}"),
    "pinpad": ("密码键盘 {state}", "PIN pad {state}"),
    "device_ok": ("正常", "ok"),
    "device_none": ("无", "none"),
    "keys_hint": ("数字 选择  确认 Enter  清除 Backspace  取消 Esc",
                  "Digits pick  Enter OK  Backspace clear  Esc cancel"),
    "fkeys_menu": ("F1 演示  F2 语言  F3 重打  F4 锁屏", "F1 Demo  F2 Lang  F3 Reprint  F4 Lock"),
    "fkeys_menu_nodemo": ("F2 语言  F3 重打  F4 锁屏", "F2 Lang  F3 Reprint  F4 Lock"),
    "unexpected": ("系统错误，请重试或联系维护人员", "System fault: try again or call support"),
    "busy": ("处理中，请稍候…", "Working, please wait..."),
    "yuan": ("元", "CNY"),
    # -- login / lock ---------------------------------------------------------------
    "login_title": ("操作员登录", "Operator login"),
    "login_number": ("操作员号", "Operator number"),
    "login_password": ("密码", "Password"),
    "login_hint": ("输入操作员号与密码后按确认", "Enter number and password, then Enter"),
    "training_login_hint": ("培训操作员（编号/密码）：{ops}",
                            "Training operators (number/password): {ops}"),
    "status_starting": ("终端启动中…", "Starting the till..."),
    "login_ok": ("欢迎 {op}", "Welcome {op}"),
    "lock_title": ("已锁屏", "Locked"),
    "lock_hint": ("操作员 {op} 请输入密码解锁；F4 注销",
                  "Operator {op}: password to unlock; F4 log out"),
    # -- menu ------------------------------------------------------------------------
    "menu_title": ("主菜单", "Main menu"),
    "menu_sale": ("消费", "Sale"),
    "menu_refund": ("退货", "Refund"),
    "menu_void": ("撤销", "Void"),
    "menu_txns": ("交易查询", "Transactions"),
    "menu_settle": ("结算", "Settlement"),
    "menu_reports": ("报表", "Reports"),
    "menu_settings": ("设置", "Settings"),
    "menu_signon": ("签到", "Sign on"),
    "signon_ok": ("签到成功，批次 {batch}", "Signed on, batch {batch}"),
    "no_last": ("没有可重打的交易", "Nothing to reprint"),
    # -- progress words (terminal.core.ports.Step) --------------------------------------
    "step_resolving": ("正在处理未完成的冲正/通知…", "Sending owed reversals/advices..."),
    "step_signing_on": ("正在签到…", "Signing on..."),
    "step_echo": ("正在检测主机连接…", "Checking the host link..."),
    "step_reading_card": ("正在读卡…（Esc 取消）", "Reading the card... (Esc cancels)"),
    "step_waiting_pin": ("请持卡人输入密码…", "Waiting for the cardholder's PIN..."),
    "step_connecting": ("正在连接主机…", "Connecting to the host..."),
    "step_sending": ("正在发送…", "Sending..."),
    "step_waiting_host": ("正在等待主机应答…", "Waiting for the host..."),
    "step_reversing": ("正在冲正…", "Reversing..."),
    "step_resending": ("正在重发通知…", "Resending the advice..."),
    "step_uploading": ("正在批上送…", "Uploading the batch..."),
    "step_printing": ("正在打印…", "Printing..."),
    # -- amounts and cards -------------------------------------------------------------------
    "amount_prompt": ("请输入金额", "Enter the amount"),
    "present_card": ("请插卡/挥卡/刷卡", "Insert, tap or swipe the card"),
    "present_card_retry": ("请插卡后按确认重试", "Present the card, then Enter to retry"),
    "card": ("卡号", "Card"),
    # -- sale ----------------------------------------------------------------------------
    "sale_title": ("消费", "Sale"),
    # -- refund wizard ------------------------------------------------------------------------
    "refund_title": ("退货", "Refund"),
    "find_title": ("查找原交易", "Find the original sale"),
    "find_voucher": ("按凭证号", "By voucher number"),
    "find_card": ("按卡查询", "By card"),
    "find_rrn": ("按参考号+日期", "By RRN + date"),
    "voucher_prompt": ("原凭证号", "Original voucher no."),
    "rrn_prompt": ("原参考号(12位)", "Original RRN (12)"),
    "date_prompt": ("原交易日期(MMDD)", "Original date (MMDD)"),
    "card_sales_title": ("此卡可退交易", "This card's refundable sales"),
    "card_sale_row": ("凭证{voucher} {when} 原{amount} 可退{left}",
                      "No.{voucher} {when} {amount} left {left}"),
    "no_card_sales": ("此卡没有可退货的交易", "No refundable sale on this card"),
    "reason_title": ("退货原因", "Refund reason"),
    "note_prompt": ("原因说明", "Reason note"),
    "refund_amount_prompt": ("退货金额（可退 {left}）", "Refund amount (refundable {left})"),
    "refund_amount_prompt_ext": ("退货金额（主机核对）", "Refund amount (host checks it)"),
    "quote_title": ("请确认退货", "Confirm the refund"),
    "q_original": ("原交易", "Original"),
    "q_original_amount": ("原交易金额", "Original amount"),
    "q_already": ("已退金额", "Already refunded"),
    "q_in_doubt": ("待确认退货", "Refunds not confirmed"),
    "q_refundable": ("可退金额", "Refundable"),
    "q_this": ("本次退货", "This refund"),
    "q_after": ("退后余额", "Left after"),
    "q_card": ("卡号", "Card"),
    "q_reason": ("原因", "Reason"),
    "q_unknown": ("不在本机（主机核对）", "not in this terminal (host checks)"),
    "confirm_hint": ("确认 Enter 发送   Esc 取消", "Enter to send   Esc to cancel"),
    # -- void ---------------------------------------------------------------------------
    "void_title": ("撤销", "Void"),
    "void_confirm": ("请确认撤销", "Confirm the void"),
    "v_amount": ("撤销金额", "Amount"),
    "v_voucher": ("原凭证号", "Voucher"),
    # -- supervisor ---------------------------------------------------------------------
    "sup_title": ("主管授权", "Supervisor approval"),
    "sup_number": ("主管号", "Supervisor no."),
    "sup_password": ("主管密码", "Supervisor password"),
    # -- results --------------------------------------------------------------------------
    "res_sale_ok": ("消费成功", "SALE APPROVED"),
    "res_sale_no": ("消费失败", "SALE DECLINED"),
    "res_refund_ok": ("退款成功", "REFUND APPROVED"),
    "res_refund_no": ("退款失败", "REFUND DECLINED"),
    "res_void_ok": ("撤销成功", "VOID APPROVED"),
    "res_void_no": ("撤销失败", "VOID DECLINED"),
    "res_uncertain": ("结果未知", "OUTCOME UNKNOWN"),
    "res_reversed": ("已冲正", "REVERSED"),
    "res_code": ("应答码 {code}：{text}", "Code {code}: {text}"),
    "res_amount": ("金额 {amount}", "Amount {amount}"),
    "res_voucher": ("凭证号 {voucher}  参考号 {rrn}", "Voucher {voucher}  RRN {rrn}"),
    "res_hint": ("确认 看凭证   Esc 返回菜单", "Enter receipt   Esc menu"),
    # -- receipts ------------------------------------------------------------------------
    "receipt_title": ("凭证预览", "Receipt preview"),
    "receipt_none": ("此交易无凭证（未成功）", "No receipt: not approved"),
    "receipt_hint": ("F3 打印   Enter/Esc 返回", "F3 print   Enter/Esc back"),
    "printed": ("已打印", "Printed"),
    "no_printer": ("未连接打印机，仅预览", "No printer: preview only"),
    # -- transactions ------------------------------------------------------------------------
    "txns_title": ("交易查询", "Transactions"),
    "search_prompt": ("查找：凭证号/参考号/日期/卡号后4位/状态",
                      "Search: voucher/RRN/date/card last 4/status"),
    "col_voucher": ("凭证", "No."),
    "col_time": ("时间", "Time"),
    "col_kind": ("类型", "Type"),
    "col_amount": ("金额", "Amount"),
    "col_card": ("卡号", "Card"),
    "col_status": ("状态", "Status"),
    "detail_title": ("交易详情", "Transaction"),
    "d_kind": ("类型", "Type"),
    "d_status": ("状态", "Status"),
    "d_amount": ("金额", "Amount"),
    "d_card": ("卡号", "Card"),
    "d_voucher": ("凭证号", "Voucher"),
    "d_batch": ("批次号", "Batch"),
    "d_rrn": ("参考号", "RRN"),
    "d_auth": ("授权码", "Auth code"),
    "d_time": ("时间", "Time"),
    "d_code": ("应答码", "Code"),
    "d_chip": ("芯片", "Chip"),
    "d_chip_declined": ("AAC：主机已批准，卡片拒绝，已冲正",
                        "AAC: host approved, card declined, reversed"),
    "d_operator": ("操作员", "Operator"),
    "d_left": ("可退余额", "Still refundable"),
    "history": ("退货/撤销记录", "Refunds and voids"),
    "history_none": ("无", "none"),
    "history_row": ("{n}. {kind} {amount} {status} 凭证{voucher}",
                    "{n}. {kind} {amount} {status} no.{voucher}"),
    "detail_hint": ("数字 查看退货状态  F3 重打凭证  Esc 返回",
                    "Digit: refund status  F3 reprint  Esc back"),
    "status_title": ("退款状态（未到账？）", "Refund status (not arrived?)"),
    "status_hint": ("F3 重打退款凭证  Esc 返回", "F3 reprint refund proof  Esc back"),
    # -- settlement -------------------------------------------------------------------------
    "settle_title": ("结算", "Settlement"),
    "settle_domestic": ("内卡", "Domestic"),
    "settle_foreign": ("外卡", "Foreign"),
    "settle_debit": ("借记 {count} 笔 {amount}", "Debits {count}  {amount}"),
    "settle_credit": ("贷记 {count} 笔 {amount}", "Credits {count}  {amount}"),
    "settle_hint": ("确认 开始结算   Esc 返回", "Enter to settle   Esc back"),
    "settle_balanced": ("结算成功，对账平", "Settled: totals agree"),
    "settle_unbalanced": ("结算完成，对账不平，已批上送 {n} 笔",
                          "Settled: totals differed, {n} uploaded"),
    "settle_host_counts": ("主机收到 {received} 笔，相符 {matched} 笔",
                           "Host received {received}, {matched} matched"),
    "settle_new_batch": ("新批次 {batch}", "New batch {batch}"),
    # -- reports ------------------------------------------------------------------------------
    "reports_title": ("报表", "Reports"),
    "rep_today": ("今日报表", "Today"),
    "rep_open_batch": ("当前批次", "Open batch"),
    "rep_batch": ("按批次号", "A batch by number"),
    "rep_batch_no": ("批次号", "Batch number"),
    "rep_range": ("按日期范围", "A date range"),
    "rep_from": ("开始日期 YYYYMMDD", "From YYYYMMDD"),
    "rep_to": ("结束日期 YYYYMMDD", "To YYYYMMDD (inclusive)"),
    "rep_bad_input": ("输入有误", "Check the input"),
    "pw_expired": ("密码已过期，请设置新密码", "Password expired: choose a new one"),
    "pw_new": ("新密码", "New password"),
    "pw_repeat": ("再输入一次", "New password again"),
    "pw_mismatch": ("两次输入不一致", "The two entries differ"),
    "report_today": ("今日交易", "Today"),
    "report_row": ("{kind} {status}: {count} 笔 {amount}", "{kind} {status}: {count}  {amount}"),
    "report_batch": ("当前批次 {batch}", "Open batch {batch}"),
    "report_empty": ("今日无交易", "No transactions today"),
    # -- settings -------------------------------------------------------------------------------
    "settings_title": ("设置", "Settings"),
    "set_lang": ("语言：中文 / English", "Language: 中文 / English"),
    "set_operators": ("操作员管理", "Operators"),
    "set_limits": ("授权限额", "Approval limits"),
    "set_logout": ("注销", "Log out"),
    "set_exit": ("退出程序", "Exit the app"),
    "set_timeouts": ("空闲 {menu} 秒返回菜单，{lock} 秒锁屏",
                     "Idle: menu after {menu}s, lock after {lock}s"),
    "not_permitted": ("无权限（需主管）", "Not permitted (supervisor only)"),
    # -- operators -------------------------------------------------------------------------------
    "ops_title": ("操作员管理", "Operators"),
    "ops_row": ("{number} {role} {name} {state}", "{number} {role} {name} {state}"),
    "ops_locked": ("已锁定", "locked"),
    "ops_active": ("正常", "active"),
    "ops_add": ("新增柜员", "Add cashier"),
    "ops_unlock": ("解锁", "Unlock"),
    "ops_reset": ("重置密码", "Reset password"),
    "ops_deactivate": ("停用", "Deactivate"),
    "ops_number": ("操作员号", "Operator no."),
    "ops_password": ("新密码", "New password"),
    "ops_done": ("已完成：{number}", "Done: {number}"),
    # -- demo panel --------------------------------------------------------------------------------
    "demo_title": ("演示面板", "Demo panel"),
    "demo_hint": ("数字 插卡  F2 挥卡/插卡  0 拔卡  F3 正确密码  F4 错误密码  Esc 关闭",
                  "Digit insert  F2 tap/insert  0 remove  F3 right PIN  F4 wrong PIN  Esc close"),
    "demo_mode_contact": ("方式：接触（插卡）", "Mode: contact (insert)"),
    "demo_mode_contactless": ("方式：非接（挥卡）", "Mode: contactless (tap)"),
    "demo_presented": ("已放入 {card}", "Presented {card}"),
    "demo_removed": ("已拔卡", "Card removed"),
    "demo_pin_right": ("持卡人将输入正确密码", "Cardholder will type the right PIN"),
    "demo_pin_wrong": ("持卡人将输入错误密码", "Cardholder will type a wrong PIN"),
    "demo_reader": ("读卡器：{mode}", "Reader: {mode}"),
}

_KIND: dict[TxnKind, str] = {TxnKind.SALE: "menu_sale", TxnKind.REFUND: "menu_refund",
                             TxnKind.VOID: "menu_void"}
_STATUS: dict[TxnStatus, tuple[str, str]] = {
    TxnStatus.PENDING: ("处理中", "pending"),
    TxnStatus.APPROVED: ("成功", "approved"),
    TxnStatus.DECLINED: ("失败", "declined"),
    TxnStatus.UNCERTAIN: ("未知", "uncertain"),
    TxnStatus.REVERSED: ("已冲正", "reversed"),
}
_BALANCE = ("余额查询", "Balance")


def pick(pair: tuple[str, str], lang: Lang) -> str:
    """One (zh, en) pair in ``lang``."""
    return pair[0] if lang == "zh" else pair[1]


def tr(key: str, lang: Lang, **values: object) -> str:
    """The catalogue text ``key`` in ``lang``, formatted with ``values``."""
    text = pick(TEXT[key], lang)
    return text.format(**values) if values else text


def step_text(step: Step, lang: Lang) -> str:
    """The words for one progress step."""
    return tr(f"step_{step.value}", lang)


def error_text(exc: BaseException, lang: Lang) -> str:
    """What the cashier reads for an error: the core's own text, or a generic fault."""
    if isinstance(exc, CashierFacingError):
        return exc.cashier_zh if lang == "zh" else exc.cashier_en
    return tr("unexpected", lang)


def code_text(code: str | None, lang: Lang) -> tuple[str, str]:
    """A response code's meaning and next step in ``lang``."""
    entry = explain(code)
    if lang == "zh":
        return entry.zh, entry.action_zh
    return entry.en, entry.action_en


def reason_text(reason: RefundReason, lang: Lang) -> str:
    return pick(REASON_TEXT[reason], lang)


def kind_text(kind: TxnKind, lang: Lang) -> str:
    key = _KIND.get(kind)
    return tr(key, lang) if key else pick(_BALANCE, lang)


def status_text(status: TxnStatus, lang: Lang) -> str:
    return pick(_STATUS[status], lang)


def missing_keys() -> list[str]:
    """Catalogue keys with an empty zh or en text (a test keeps this empty)."""
    return [key for key, (zh, en) in TEXT.items() if not zh or not en]
