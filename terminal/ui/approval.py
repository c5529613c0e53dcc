"""The supervisor step of a refund or void: why approval is needed, number and password."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

from terminal.core.approvals import APPROVAL_TEXT, Approval, ApprovalReason
from terminal.ui.base import PosScreen
from terminal.ui.text import pick


async def send_with_approval(screen: PosScreen,
                             needed: Callable[[], Sequence[ApprovalReason]],
                             send: Callable[[Approval | None], Awaitable[None]]) -> None:
    """After the cashier confirms: ask the core what must be approved, then send.

    The core decides (``needed``); a refusal to even ask is said on screen.
    """
    try:
        reasons = needed()
    except Exception as exc:  # said on screen
        screen.say_error(exc)
        return
    if reasons:
        await ask_approval(screen, reasons, send)
    else:
        await send(None)


async def ask_approval(screen: PosScreen, reasons: Sequence[ApprovalReason],
                       then: Callable[[Approval | None], Awaitable[None]]) -> None:
    """Ask for a supervisor's password until it is right or the cashier presses Esc.

    A wrong password is said on screen and counts towards the supervisor's
    lockout (the core counts it); the step is asked again.
    """
    why = [pick(APPROVAL_TEXT[r], screen.lang) for r in reasons]

    async def submit(number: str, password: str) -> None:
        try:
            approval = screen.backend.approve(reasons, number.strip(), password)
        except Exception as exc:  # wrong password, locked, not a supervisor: said on screen
            screen.say_error(exc)
            await ask_again()
            return
        screen.say("")
        await then(approval)

    async def ask_again() -> None:
        await screen.show_fields(screen.t("sup_title"),
                                 [(screen.t("sup_number"), False, 2),
                                  (screen.t("sup_password"), True, 64)], submit, info=why)

    await ask_again()
