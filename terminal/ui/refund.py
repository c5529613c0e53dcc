"""退货 Refund wizard: find the original -> card -> reason -> amount -> quote -> approval -> send.

The screen only asks and shows. Which sale may be refunded, by how much, to
which card, and whether a supervisor must approve are the core's answers
(:meth:`Backend.quote_refund`, :meth:`Backend.refund_approvals`); a refusal
comes back as an error with the cashier's text and nothing is sent.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from terminal.core.approvals import Approval
from terminal.core.money import format_amount
from terminal.core.ports import CardRead, Purpose
from terminal.core.records import RefundReason, TxnRecord
from terminal.core.rules import Refundable
from terminal.core.till import Original, RefundQuote
from terminal.ui import messages as msg
from terminal.ui.approval import send_with_approval
from terminal.ui.base import PosScreen
from terminal.ui.result import ResultScreen
from terminal.ui.text import reason_text

REASONS = tuple(RefundReason)


class RefundScreen(PosScreen):
    CSS_PATH = Path(__file__).with_suffix(".tcss")
    TITLE_KEY: ClassVar[str] = "refund_title"

    def __init__(self) -> None:
        super().__init__()
        self.original: Original | None = None
        self.card: CardRead | None = None
        self.candidates: list[tuple[TxnRecord, Refundable]] = []
        self.reason = RefundReason.CUSTOMER_CANCELLED
        self.note: str | None = None
        self.quote: RefundQuote | None = None
        self.sending = False

    async def build(self) -> None:
        await self.ask_find()

    # --- 1. find the original ------------------------------------------------------------
    async def ask_find(self) -> None:
        await self.show_menu(self.t("find_title"),
                             [self.t("find_voucher"), self.t("find_card"), self.t("find_rrn")],
                             self.find_chosen)

    async def find_chosen(self, index: int) -> None:
        if index == 0:
            await self.show_fields(self.t("find_title"),
                                   [(self.t("voucher_prompt"), False, 6)], self.by_voucher)
        elif index == 1:
            await self.ask_card()
        else:
            await self.show_fields(self.t("find_title"),
                                   [(self.t("rrn_prompt"), False, 12),
                                    (self.t("date_prompt"), False, 4)], self.by_rrn)

    async def by_voucher(self, voucher: str) -> None:
        try:
            self.original = self.backend.find_by_voucher(voucher)
        except Exception as exc:  # not found / malformed: said on screen
            self.say_error(exc)
            return
        self.say("")
        await self.ask_card()

    async def by_rrn(self, rrn: str, mmdd: str) -> None:
        try:
            self.original = self.backend.find_by_rrn(rrn, mmdd)
        except Exception as exc:  # malformed RRN or date: said on screen
            self.say_error(exc)
            await self.find_chosen(2)
            return
        self.say("")
        await self.ask_card()

    # --- 2. the card -------------------------------------------------------------------------
    def summary(self) -> list[str]:
        original = self.original
        if original is None:
            return []
        if isinstance(original, TxnRecord):
            return [f"{self.t('q_original')}: {self.t('v_voucher')} {original.voucher}  "
                    f"{format_amount(original.amount)}  {original.pan_masked}"]
        return [f"{self.t('q_original')}: {original.label}"]

    async def ask_card(self) -> None:
        await self.show_progress(self.t("refund_title"), self.t("present_card"),
                                 info=self.summary())
        self.start(lambda progress: msg.CardRead(
            self.backend.read_card(Purpose.REFUND, 0, progress)))

    async def on_card_read(self, message: msg.CardRead) -> None:
        self.finished()
        self.card = message.card
        self.say("")
        if self.original is not None:
            await self.ask_reason()
            return
        try:
            self.candidates = self.backend.refundable_sales(message.card)
        except Exception as exc:  # said on screen
            self.say_error(exc)
            return
        if not self.candidates:
            await self.show_lines(self.t("card_sales_title"), [self.t("no_card_sales")])
            return
        rows = [self.t("card_sale_row", voucher=sale.voucher,
                       when=sale.created_at.strftime("%m-%d %H:%M"),
                       amount=format_amount(sale.amount), left=format_amount(left.refundable))
                for sale, left in self.candidates[:9]]
        await self.show_menu(self.t("card_sales_title") + " " + message.card.masked_pan, rows,
                             self.sale_picked)

    async def sale_picked(self, index: int) -> None:
        self.original = self.candidates[index][0]
        await self.ask_reason()

    # --- 3. reason ------------------------------------------------------------------------------
    async def ask_reason(self) -> None:
        await self.show_menu(self.t("reason_title"),
                             [reason_text(r, self.lang) for r in REASONS], self.reason_picked)

    async def reason_picked(self, index: int) -> None:
        self.reason = REASONS[index]
        if self.reason is RefundReason.OTHER:
            await self.show_fields(self.t("reason_title"), [(self.t("note_prompt"), False, 40)],
                                   self.noted)
            return
        self.note = None
        await self.ask_amount()

    async def noted(self, note: str) -> None:
        self.note = note
        await self.ask_amount()

    # --- 4. amount and quote ------------------------------------------------------------------
    async def ask_amount(self) -> None:
        original = self.original
        if isinstance(original, TxnRecord):
            left = self.backend.refundable(original).refundable
            heading = self.t("refund_amount_prompt", left=format_amount(left))
        else:
            heading = self.t("refund_amount_prompt_ext")
        await self.show_amount(heading, self.amount_entered, info=self.summary())

    async def amount_entered(self, amount: int) -> None:
        assert self.original is not None
        assert self.card is not None
        try:
            self.quote = self.backend.quote_refund(self.original, self.card, amount,
                                                   self.reason, self.note)
        except Exception as exc:  # over the refundable amount, wrong card, too old...
            self.say_error(exc)
            return
        self.say("")
        await self.show_quote()

    async def show_quote(self) -> None:
        q = self.quote
        assert q is not None

        def money(value: int | None) -> str:
            return self.t("q_unknown") if value is None else format_amount(value)

        lines = [f"{self.t('q_original_amount')}: {money(q.original_amount)}",
                 f"{self.t('q_already')}: {money(q.already_refunded)}"]
        if q.in_doubt:
            lines.append(f"{self.t('q_in_doubt')}: {format_amount(q.in_doubt)}")
        lines += [f"{self.t('q_refundable')}: {money(q.refundable)}",
                  f"{self.t('q_this')}: {format_amount(q.amount)}",
                  f"{self.t('q_card')}: {q.masked_pan}",
                  f"{self.t('q_reason')}: {reason_text(q.reason, self.lang)}"]
        await self.show_lines(self.t("quote_title"), self.summary() + lines, self.confirmed)
        self.set_hint("confirm_hint")

    async def confirmed(self) -> None:
        quote = self.quote
        assert quote is not None
        await send_with_approval(self, lambda: self.backend.refund_approvals(quote), self.send)

    # --- 5. send -------------------------------------------------------------------------
    async def send(self, approval: Approval | None) -> None:
        quote = self.quote
        assert quote is not None
        self.set_hint("keys_hint")
        await self.show_progress(self.t("refund_title") + " " + format_amount(quote.amount),
                                 self.t("step_sending"))
        self.sending = True
        self.start(lambda progress: msg.RefundSent(
            self.backend.refund(quote, approval, progress)))

    def on_refund_sent(self, message: msg.RefundSent) -> None:
        self.finished()
        self.app.switch_screen(ResultScreen(message.outcome))

    async def on_core_failed(self, message: msg.CoreFailed) -> None:
        self.finished()
        self.say_error(message.error)
        if self.sending:  # refused before anything moved (pending follow-ups, no host...)
            self.sending = False
            await self.show_lines(self.t("quote_title"), [self.t("confirm_hint")],
                                  self.confirmed)
        elif self.card is None:
            await self.show_lines(self.t("refund_title"),
                                  [*self.summary(), self.t("present_card_retry")],
                                  self.ask_card)
