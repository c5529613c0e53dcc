"""The result of a sale, refund or void: large, coloured, impossible to misread.

退款成功 / REFUND APPROVED or 退款失败 / REFUND DECLINED with the response code
and its meaning in the cashier's language; an uncertain outcome says so and
says what the terminal will do (the core's own words, :attr:`Outcome.next_step`).
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from textual.app import ComposeResult
from textual.widgets import Static

from terminal.core.money import format_amount
from terminal.core.records import TxnKind, TxnStatus
from terminal.core.till import Outcome
from terminal.ui.base import PosScreen
from terminal.ui.text import code_text, pick

_TITLES = {TxnKind.SALE: ("res_sale_ok", "res_sale_no"),
           TxnKind.REFUND: ("res_refund_ok", "res_refund_no"),
           TxnKind.VOID: ("res_void_ok", "res_void_no")}


def result_key(outcome: Outcome) -> tuple[str, str]:
    """(catalogue key of the big title, CSS class) for an outcome."""
    ok, no = _TITLES.get(outcome.kind, ("res_sale_ok", "res_sale_no"))
    if outcome.status is TxnStatus.APPROVED:
        return ok, "approved"
    if outcome.status is TxnStatus.DECLINED or outcome.card_refused is not None:
        return no, "declined"  # a sale the card refused after the host approved: reversed
    if outcome.status is TxnStatus.REVERSED:
        return "res_reversed", "reversed"
    return "res_uncertain", "uncertain"


class ResultScreen(PosScreen):
    CSS_PATH = Path(__file__).with_suffix(".tcss")
    TITLE_KEY: ClassVar[str] = "app_title"
    HINT_KEY: ClassVar[str] = "res_hint"

    def __init__(self, outcome: Outcome) -> None:
        super().__init__()
        self.outcome = outcome

    def compose_body(self) -> ComposeResult:
        outcome = self.outcome
        key, css = result_key(outcome)
        yield Static(self.t(key), id="verdict", classes=css)
        record = outcome.record
        yield Static(self.t("res_amount", amount=format_amount(record.amount)), classes="info")
        if outcome.status in (TxnStatus.APPROVED, TxnStatus.DECLINED) and outcome.code:
            reason, action = code_text(outcome.code, self.lang)
            yield Static(self.t("res_code", code=outcome.code, text=reason), id="code",
                         classes="info")
            if action and outcome.status is TxnStatus.DECLINED:
                yield Static(action, classes="info")
        step = outcome.next_step
        if step != ("", ""):
            yield Static(pick(step, self.lang), id="next", classes="info")
        yield Static(self.t("res_voucher", voucher=record.voucher, rrn=record.rrn or "-"),
                     classes="info")
        yield Static(self.t("card") + " " + record.pan_masked, classes="info")

    async def build(self) -> None:
        self.set_focus(None)

    async def action_enter(self) -> None:
        from terminal.ui.receipt import ReceiptScreen
        if self.outcome.approved:
            self.app.push_screen(ReceiptScreen(self.outcome.record, then_menu=True))
        else:
            self.pos.go_menu()
