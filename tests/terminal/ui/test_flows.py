"""Whole cashier flows driven through keypresses against the real core and the in-memory rig."""

from __future__ import annotations

from pathlib import Path

from textual.pilot import Pilot
from textual.screen import Screen

from terminal.core.approvals import ApprovalPolicy
from terminal.core.records import TxnKind, TxnStatus
from terminal.ui.detail import DetailScreen, RefundStatusScreen, record_fields
from terminal.ui.lock import LockScreen
from terminal.ui.login import LoginScreen
from terminal.ui.menu import MenuScreen
from terminal.ui.receipt import ReceiptScreen
from terminal.ui.refund import RefundScreen
from terminal.ui.result import ResultScreen
from terminal.ui.sale import SaleScreen
from tests.terminal.ui.rig import (
    CASHIER_PW,
    SUPERVISOR_PW,
    Till,
    keys,
    login,
    make_till,
    screen_text,
    settle,
)


def showing(till: Till, screen: type[Screen[None]]) -> bool:
    """Whether the app shows ``screen`` (a function, so mypy does not narrow across keys)."""
    return isinstance(till.app.screen, screen)


def slot_card(till: Till) -> str | None:
    card = till.rig.slot.card
    return None if card is None else card.name


def refunds(till: Till) -> list[TxnStatus]:
    return [r.status for r in till.rig.till.journal.records("kind = 'refund'")]


async def refund_by_voucher(pilot: Pilot[None], till: Till, voucher: str, amount: str, *,
                            reason: str = "5") -> None:
    """Menu -> 2 refund -> 1 by voucher -> card (already presented) -> reason -> amount."""
    await keys(pilot, "2", enter=False)
    await keys(pilot, "1", enter=False)
    await keys(pilot, voucher)
    await keys(pilot, reason, enter=False)
    await keys(pilot, amount)


async def test_login_wrong_password_then_right(tmp_path: Path) -> None:
    till = make_till(tmp_path)
    async with till.app.run_test(size=(80, 24)) as pilot:
        await login(pilot, "01", "9876")
        assert showing(till, LoginScreen)
        assert "密码错误，还可尝试4次" in screen_text(till.app)
        await login(pilot)
        assert showing(till, MenuScreen)
        assert "操作员 01" in screen_text(till.app)


async def test_locked_operator_cannot_log_in(tmp_path: Path) -> None:
    till = make_till(tmp_path, lang="en")
    async with till.app.run_test(size=(80, 24)) as pilot:
        for _ in range(5):
            await login(pilot, "01", "0000")
        assert "Locked until" in screen_text(till.app)
        await login(pilot)
        assert showing(till, LoginScreen)
        assert "Locked until" in screen_text(till.app)


async def test_sale(tmp_path: Path) -> None:
    till = make_till(tmp_path)
    till.present("cup-debit")
    async with till.app.run_test(size=(80, 24)) as pilot:
        await login(pilot)
        await keys(pilot, "1", enter=False)
        assert showing(till, SaleScreen)
        await pilot.press("1", "2", "3")
        assert "1.23" in screen_text(till.app)  # right-shifting entry: 0.01 -> 0.12 -> 1.23
        await pilot.press("backspace")
        assert "0.12" in screen_text(till.app)
        await keys(pilot, "345")  # 123.45
        assert showing(till, ResultScreen)
        text = screen_text(till.app)
        assert "消费成功" in text
        assert "123.45" in text
        sale = till.rig.till.journal.last()
        assert sale is not None
        assert sale.kind is TxnKind.SALE
        assert sale.approved
        assert sale.operator == "01"
        await pilot.press("enter")  # receipt preview
        assert showing(till, ReceiptScreen)
        assert sale.voucher in screen_text(till.app)
        await pilot.press("enter")
        assert showing(till, MenuScreen)


async def test_a_sale_the_card_declines_after_approval_shows_declined_and_reversed(
        tmp_path: Path) -> None:
    till = make_till(tmp_path)
    till.present("cup-debit")
    till.rig.link.faults.extend(["none", "corrupt_arpc"])  # sign-on, then the sale's answer
    async with till.app.run_test(size=(80, 24)) as pilot:
        await login(pilot)
        await keys(pilot, "1", enter=False)
        await keys(pilot, "8800")
        assert showing(till, ResultScreen)
        text = screen_text(till.app)
        assert "消费失败" in text
        assert "主机已批准但卡片拒绝交易：已冲正，未扣款" in text
        sale = till.rig.till.journal.last()
        assert sale is not None
        assert (sale.status, sale.cryptogram_type) == (TxnStatus.REVERSED, "AAC")
        # the transaction's detail says why an approved (00) sale stands reversed
        assert ("芯片", "AAC：主机已批准，卡片拒绝，已冲正") in record_fields(sale, "zh")
        assert ("Chip", "AAC: host approved, card declined, reversed") in record_fields(
            sale, "en")


async def test_two_partial_refunds_then_over_refund_refused(tmp_path: Path) -> None:
    till = make_till(tmp_path)
    sale = till.seed_sale(100_00).record
    till.present("cup-debit")
    async with till.app.run_test(size=(80, 24)) as pilot:
        await login(pilot)
        await refund_by_voucher(pilot, till, sale.voucher, "3000")
        text = screen_text(till.app)
        assert "请确认退货" in text
        assert "原交易金额: 100.00" in text
        assert "可退金额: 100.00" in text
        assert ("本次退货: 30.00" in text and "6225********0019" in text.replace(" ", "")) \
            or "0019" in text
        await keys(pilot, "", enter=True)
        assert showing(till, ResultScreen)
        assert "退款成功" in screen_text(till.app)
        await pilot.press("escape")
        assert showing(till, MenuScreen)

        await refund_by_voucher(pilot, till, sale.voucher, "5000")
        assert "已退金额: 30.00" in screen_text(till.app)
        await keys(pilot, "", enter=True)
        assert "退款成功" in screen_text(till.app)
        await pilot.press("escape")

        await refund_by_voucher(pilot, till, sale.voucher, "2001")  # 20.00 left
        assert showing(till, RefundScreen)
        assert "退款金额超出可退金额" in screen_text(till.app)
        assert refunds(till) == [TxnStatus.APPROVED, TxnStatus.APPROVED]
        await pilot.press("backspace")
        await keys(pilot, "0")  # 20.00 exactly
        await keys(pilot, "", enter=True)
        assert "退款成功" in screen_text(till.app)
        assert refunds(till) == [TxnStatus.APPROVED] * 3


async def test_refund_by_card(tmp_path: Path) -> None:
    till = make_till(tmp_path, lang="en")
    till.seed_sale(50_00)
    till.seed_sale(80_00)
    till.present("cup-debit")
    async with till.app.run_test(size=(80, 24)) as pilot:
        await login(pilot)
        await keys(pilot, "2", enter=False)
        await keys(pilot, "2", enter=False)  # by card: the card is read first
        text = screen_text(till.app)
        assert "This card's refundable sales" in text
        assert "80.00" in text
        assert "50.00" in text
        await keys(pilot, "1", enter=False)  # newest first: the 80.00 sale
        await keys(pilot, "1", enter=False)  # reason: damaged goods
        await keys(pilot, "8000")
        assert "This refund: 80.00" in screen_text(till.app)
        await keys(pilot, "", enter=True)
        assert "REFUND APPROVED" in screen_text(till.app)


async def test_refund_by_rrn_and_date(tmp_path: Path) -> None:
    till = make_till(tmp_path)
    sale = till.seed_sale(60_00).record
    assert sale.rrn
    assert sale.host_date
    till.present("cup-debit")
    async with till.app.run_test(size=(80, 24)) as pilot:
        await login(pilot)
        await keys(pilot, "2", enter=False)
        await keys(pilot, "3", enter=False)
        await keys(pilot, sale.rrn)
        await keys(pilot, sale.host_date)
        await keys(pilot, "3", enter=False)
        await keys(pilot, "1000")
        assert "可退金额: 60.00" in screen_text(till.app)
        await keys(pilot, "", enter=True)
        assert "退款成功" in screen_text(till.app)


async def test_void_and_void_after_refund_refused(tmp_path: Path) -> None:
    till = make_till(tmp_path)
    first = till.seed_sale(10_00).record
    second = till.seed_sale(20_00).record
    read = till.rig.card("cup-debit")
    from terminal.core.records import RefundReason
    quote = till.rig.till.quote_refund(second, read, 5_00, RefundReason.DAMAGED)
    assert till.rig.till.refund(quote).approved
    async with till.app.run_test(size=(80, 24)) as pilot:
        await login(pilot)
        await keys(pilot, "3", enter=False)
        await keys(pilot, first.voucher)
        assert "请确认撤销" in screen_text(till.app)
        await keys(pilot, "", enter=True)
        assert "撤销成功" in screen_text(till.app)
        await pilot.press("escape")
        await keys(pilot, "3", enter=False)
        await keys(pilot, second.voucher)
        assert "原交易已退货，不能撤销" in screen_text(till.app)
        voids = till.rig.till.journal.records("kind = 'void'")
        assert len(voids) == 1
        assert voids[0].original_id == first.id


async def test_wrong_supervisor_password(tmp_path: Path) -> None:
    till = make_till(tmp_path, policy=ApprovalPolicy(refund_needs_supervisor=True))
    sale = till.seed_sale(30_00).record
    till.present("cup-debit")
    async with till.app.run_test(size=(80, 24)) as pilot:
        await login(pilot)
        await refund_by_voucher(pilot, till, sale.voucher, "1000")
        await keys(pilot, "", enter=True)
        assert "主管授权" in screen_text(till.app)
        assert "退货需主管授权" in screen_text(till.app)
        await keys(pilot, "00")
        await keys(pilot, "1234")
        assert "密码错误，还可尝试4次" in screen_text(till.app)
        assert refunds(till) == []
        await keys(pilot, "00")
        await keys(pilot, SUPERVISOR_PW)
        assert "退款成功" in screen_text(till.app)


async def test_card_removed_during_refund(tmp_path: Path) -> None:
    till = make_till(tmp_path, lang="en")
    sale = till.seed_sale(30_00).record
    till.rig.slot.remove()
    async with till.app.run_test(size=(80, 24)) as pilot:
        await login(pilot)
        await keys(pilot, "2", enter=False)
        await keys(pilot, "1", enter=False)
        await keys(pilot, sale.voucher)
        text = screen_text(till.app)
        assert "Present the card, then Enter to retry" in text
        assert "Traceback" not in text
        till.present("cup-debit")
        await keys(pilot, "", enter=True)
        assert "Refund reason" in screen_text(till.app)


async def test_host_timeout_on_sale_is_reversed(tmp_path: Path) -> None:
    till = make_till(tmp_path, lang="en")
    till.present("cup-debit")
    till.rig.till.sign_on()
    till.rig.link.faults.append("drop_after")
    async with till.app.run_test(size=(80, 24)) as pilot:
        await login(pilot)
        await keys(pilot, "1", enter=False)
        await keys(pilot, "2500")
        text = screen_text(till.app)
        assert "REVERSED" in text
        assert "Reversed: nothing was charged" in text
        sale = till.rig.till.journal.last()
        assert sale is not None
        assert sale.status is TxnStatus.REVERSED


async def test_uncertain_refund_says_what_the_terminal_will_do(tmp_path: Path) -> None:
    till = make_till(tmp_path, lang="en")
    sale = till.seed_sale(40_00).record
    till.present("cup-debit")
    async with till.app.run_test(size=(80, 24)) as pilot:
        await login(pilot)
        await refund_by_voucher(pilot, till, sale.voucher, "1000")
        till.rig.link.faults.extend(["drop_before"] * 10)
        await keys(pilot, "", enter=True)
        text = screen_text(till.app)
        assert "OUTCOME UNKNOWN" in text
        assert "resends the refund advice" in text
        assert till.app.screen.query_one("#verdict").has_class("uncertain")
        # the transaction list shows the refund's status with what happens next
        till.rig.link.faults.clear()
        await pilot.press("escape")
        await keys(pilot, "4", enter=False)
        await keys(pilot, "uncertain")
        await keys(pilot, "", enter=True)
        assert showing(till, DetailScreen)
        assert "Outcome not known yet" in screen_text(till.app)


async def test_settlement(tmp_path: Path) -> None:
    till = make_till(tmp_path)
    till.seed_sale(10_00)
    till.seed_sale(15_00)
    async with till.app.run_test(size=(80, 24)) as pilot:
        await login(pilot)
        await keys(pilot, "5", enter=False)
        assert "借记 2 笔 25.00" in screen_text(till.app)
        await keys(pilot, "", enter=True)
        text = screen_text(till.app)
        assert "结算成功，对账平" in text
        assert "新批次 000002" in text
        await pilot.press("enter")
        await keys(pilot, "6", enter=False)  # reports: today, open batch, a batch, a range
        await keys(pilot, "1", enter=False)  # the day's report, as the core lays it out
        report = screen_text(till.app)
        assert "25.00" in report


async def test_reprint_and_refund_status(tmp_path: Path) -> None:
    till = make_till(tmp_path)
    sale = till.seed_sale(70_00).record
    till.present("cup-debit")
    async with till.app.run_test(size=(80, 24)) as pilot:
        await login(pilot)
        await refund_by_voucher(pilot, till, sale.voucher, "2000")
        await keys(pilot, "", enter=True)
        await pilot.press("escape")
        await pilot.press("f3")  # reprint the last slip
        assert showing(till, ReceiptScreen)
        text = screen_text(till.app)
        assert "重打印" in text or "REPRINT" in text.upper()
        assert "20.00" in text
        await pilot.press("escape")
        await keys(pilot, "4", enter=False)  # transactions: find the sale by voucher
        await keys(pilot, f"{sale.voucher} sale")
        await keys(pilot, "", enter=True)
        assert showing(till, DetailScreen)
        text = screen_text(till.app)
        assert "可退余额: 50.00" in text
        assert "1. 退货 20.00 成功" in text
        await pilot.press("1")
        assert showing(till, RefundStatusScreen)
        text = screen_text(till.app)
        assert "预计到账" in text
        assert "1-3个工作日" in text
        await pilot.press("f3")
        assert showing(till, ReceiptScreen)
        assert "退款凭证" in screen_text(till.app)


async def test_language_switch(tmp_path: Path) -> None:
    till = make_till(tmp_path)
    async with till.app.run_test(size=(80, 24)) as pilot:
        await login(pilot)
        assert "主菜单" in screen_text(till.app)
        await pilot.press("f2")
        await settle(pilot)
        assert "Main menu" in screen_text(till.app)
        assert "Refund" in screen_text(till.app)
        await keys(pilot, "7", enter=False)  # settings -> 1 language
        await keys(pilot, "1", enter=False)
        assert "设置" in screen_text(till.app)
        await pilot.press("escape")
        assert "主菜单" in screen_text(till.app)


async def test_idle_returns_to_menu_then_locks(tmp_path: Path) -> None:
    till = make_till(tmp_path)
    async with till.app.run_test(size=(80, 24)) as pilot:
        await login(pilot)
        await keys(pilot, "1", enter=False)
        assert showing(till, SaleScreen)
        till.clock.now += 61
        till.app.idle_tick()
        await pilot.pause()
        assert showing(till, MenuScreen)
        till.clock.now += 300
        till.app.idle_tick()
        await settle(pilot)
        assert showing(till, LockScreen)
        await pilot.press("escape")
        assert showing(till, LockScreen)
        await keys(pilot, "0000")
        assert "密码错误" in screen_text(till.app)
        await keys(pilot, CASHIER_PW)
        assert showing(till, MenuScreen)


async def test_no_quit_keys_and_no_palette(tmp_path: Path) -> None:
    till = make_till(tmp_path)
    async with till.app.run_test(size=(80, 24)) as pilot:
        await login(pilot)
        await pilot.press("ctrl+q", "ctrl+c", "ctrl+p")
        await pilot.pause()
        assert till.app.is_running
        assert showing(till, MenuScreen)


async def test_demo_panel_presents_and_removes_cards(tmp_path: Path) -> None:
    till = make_till(tmp_path, lang="en", world=True)
    async with till.app.run_test(size=(80, 24)) as pilot:
        await login(pilot)
        await pilot.press("f1")
        await pilot.pause()
        assert "Demo panel" in screen_text(till.app)
        await pilot.press("f2", "2")  # contactless, cup-credit
        assert slot_card(till) == "cup-credit"
        assert till.rig.slot.contactless
        await pilot.press("f4")
        assert till.rig.pad.pin == "000000"
        await pilot.press("f3")
        assert till.rig.pad.pin == "111111"
        await pilot.press("0")
        assert slot_card(till) is None
        await pilot.press("escape")
        await pilot.pause()
        assert showing(till, MenuScreen)


async def test_operator_management(tmp_path: Path) -> None:
    till = make_till(tmp_path, lang="en")
    async with till.app.run_test(size=(80, 24)) as pilot:
        await login(pilot)
        await keys(pilot, "7", enter=False)
        await keys(pilot, "2", enter=False)
        assert "Not permitted" in screen_text(till.app)
        await pilot.press("escape")
        await keys(pilot, "7", enter=False)
        await keys(pilot, "4", enter=False)  # log out
        assert showing(till, LoginScreen)
        await login(pilot, "00", SUPERVISOR_PW)
        await keys(pilot, "7", enter=False)
        await keys(pilot, "2", enter=False)
        assert "01 Cashier Li active" in screen_text(till.app)
        await keys(pilot, "1", enter=False)  # add cashier
        await keys(pilot, "02")
        await keys(pilot, "2222")
        assert "Done: 02" in screen_text(till.app)
        numbers = [op.number for op in till.backend.session.operators.list()]
        assert numbers == ["00", "01", "02", "99"]
