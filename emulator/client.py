"""Asyncio socket client for the acquirer host, and a terminal's recovery on faults.

:class:`HostClient` is one TCP connection to the host: it frames requests with
the dialect's length prefix (and TPDU), reassembles answers with the dialect's
:class:`FrameDecoder`, matches each answer to its request by MTI, STAN and TID
(stray copies, such as a second answer, are dropped) and gives up after a
per-request timeout. It is used by the server tests, the fault soak test, the
load benchmark and QA scripts.

:func:`run_terminal` does what a terminal does when the host misbehaves
(DESIGN.md section 4):

* sale / void with no valid answer (timeout, connection lost, garbled frame,
  foreign answer): send a reversal 0400 with reason 98 and resend it until the
  host answers; with a bad response MAC the reason is A0 and the terminal signs
  on again afterwards;
* refund advice (0220) with no valid answer: resend the *same* advice until
  answered, never reverse (the host answers a resent advice from its store);
* reversal, sign-on, settlement, batch upload: resend until answered.

After any failed exchange the connection is dropped and a new one opened, as a
dial-up terminal would, so a late answer can never be taken for the next one.

A QA script against a running ``pos-emulator serve``::

    term = SimTerminal("cup", DEMO_TID, DEMO_MID, DEMO_TMK, datetime.now)
    client = HostClient("127.0.0.1", 5858, "cup", timeout=5)
    await sign_on(term, client)
    sale = await run_terminal(term, client, term.sale(card_by_name("cup-debit"), 12_300,
                                                      pin="123456"))
    if sale.approved:
        refund = await run_terminal(term, client, term.refund(sale.result, 5_000))
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from emulator.host.errors import HostError
from emulator.simterminal import Declined, Result, SimTerminal
from iso8583.dialect import Dialect, Frame
from iso8583.dialects import get_dialect
from iso8583.errors import Iso8583Error, ResponseError, ResponseMacError
from iso8583.framing import FrameDecoder
from iso8583.message import Message
from iso8583.responses import ISSUER_TIMEOUT, MAC_ERROR, TerminalAction, explain

log = logging.getLogger(__name__)

DEFAULT_TPDU = bytes.fromhex("6000010000")


class NoAnswerError(HostError):
    """No valid answer arrived: the terminal must treat the request as unanswered."""


class AnswerTimeoutError(NoAnswerError):
    """The host did not answer within the per-request timeout."""


class ConnectionLostError(NoAnswerError):
    """The connection could not be opened or was closed before the answer."""


class GarbledAnswerError(NoAnswerError):
    """An answer arrived but does not decode."""


class GaveUpError(HostError):
    """The terminal retried as often as it is allowed to and still has no answer."""


class HostClient:
    """One connection to the acquirer host with request/answer matching and timeouts."""

    def __init__(self, host: str, port: int, dialect: Dialect | str = "cup", *,
                 timeout: float = 5.0, connect_timeout: float = 5.0,
                 tpdu: bytes = DEFAULT_TPDU) -> None:
        self.host = host
        self.port = port
        self.dialect = get_dialect(dialect) if isinstance(dialect, str) else dialect
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.tpdu = tpdu if self.dialect.spec.tpdu else None
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._decoder: FrameDecoder = self.dialect.frame_decoder()
        self._ready: list[bytes] = []
        self.connects = 0
        self.stray_answers = 0

    @property
    def connected(self) -> bool:
        return self._writer is not None

    async def connect(self) -> None:
        if self._writer is not None:
            return
        try:
            self._reader, self._writer = await asyncio.wait_for(
                asyncio.open_connection(self.host, self.port), self.connect_timeout)
        except (OSError, TimeoutError) as exc:
            raise ConnectionLostError(f"cannot connect to {self.host}:{self.port}: "
                                      f"{type(exc).__name__}") from None
        self._decoder = self.dialect.frame_decoder()
        self._ready = []
        self.connects += 1

    async def close(self) -> None:
        writer, self._writer, self._reader = self._writer, None, None
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    async def __aenter__(self) -> HostClient:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def send_bytes(self, data: bytes) -> None:
        """Write raw bytes (tests use it to send garbage)."""
        await self.connect()
        assert self._writer is not None
        try:
            self._writer.write(data)
            await self._writer.drain()
        except OSError as exc:
            await self.close()
            raise ConnectionLostError(f"send failed: {type(exc).__name__}") from None

    async def send(self, request: Message) -> None:
        await self.send_bytes(self.dialect.pack(request, tpdu=self.tpdu))

    async def receive(self, timeout: float | None = None) -> Frame:
        """The next answer frame; raises a :class:`NoAnswerError`."""
        payload = await self._next_payload(self.timeout if timeout is None else timeout)
        try:
            return self.dialect.unpack_payload(payload)
        except Iso8583Error as exc:
            raise GarbledAnswerError(f"answer does not decode: {exc}") from None

    async def _next_payload(self, timeout: float) -> bytes:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not self._ready:
            if self._reader is None:
                raise ConnectionLostError("not connected")
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise AnswerTimeoutError(f"no answer within {timeout:.3f} s")
            try:
                async with asyncio.timeout(remaining):  # no extra task, unlike wait_for
                    chunk = await self._reader.read(65536)
            except TimeoutError:
                raise AnswerTimeoutError(f"no answer within {timeout:.3f} s") from None
            except OSError as exc:
                await self.close()
                raise ConnectionLostError(f"connection lost: {type(exc).__name__}") from None
            if not chunk:
                await self.close()
                raise ConnectionLostError("the host closed the connection")
            try:
                self._ready.extend(self._decoder.feed(chunk))
            except Iso8583Error as exc:
                await self.close()
                raise GarbledAnswerError(f"answer framing broken: {exc}") from None
        return self._ready.pop(0)

    async def exchange(self, request: Message, *, timeout: float | None = None) -> Frame:
        """Send ``request`` and return its answer, dropping answers to other requests."""
        await self.send(request)
        loop = asyncio.get_running_loop()
        limit = self.timeout if timeout is None else timeout
        deadline = loop.time() + limit
        while True:
            frame = await self.receive(max(0.0, deadline - loop.time()))
            if answers(request, frame.message):
                return frame
            self.stray_answers += 1


def answers(request: Message, answer: Message) -> bool:
    """Whether ``answer`` is the answer to ``request``: its MTI, STAN and TID match.

    Anything else on the connection (a second copy of an earlier answer, say) is a
    stray, dropped by the terminal; ``check_response`` then checks the MAC and the rest.
    """
    return (answer.mti == request.response_mti and answer.get(11) == request.get(11)
            and answer.tid == request.tid)


# --- a terminal's behaviour on faults -------------------------------------------------
@dataclass
class Exchange:
    """What became of one request after the terminal's recovery.

    ``result`` is the checked answer (None when the request was never answered
    and so reversed); ``reversal`` the checked answer to the reversal sent for it.
    """

    request: Message
    result: Result | None
    reversal: Result | None = None
    reversal_reason: str | None = None
    attempts: int = 1
    signed_on_again: bool = False

    @property
    def approved(self) -> bool:
        return self.result is not None and not isinstance(self.result, Declined)


def recovery_policy(dialect: Dialect, request: Message) -> str:
    """``reverse``, ``resend`` or ``none``: what to do when ``request`` gets no answer."""
    if request.mti in ("0400", "0420"):
        return "resend"
    proc = request.get(3)
    for profile in dialect.transactions.values():
        if profile.mti != request.mti:
            continue
        if profile.processing_code is not None and profile.processing_code != proc:
            continue
        if profile.on_timeout == "retry":
            return "resend"
        return profile.on_timeout
    if request.mti == dialect.settings.refund_mti and not dialect.settings.refund_reversible:
        return "resend"
    return "none"


async def _attempt(term: SimTerminal, client: HostClient, request: Message) -> Result:
    """One send and the checked answer; NoAnswerError/ResponseError on failure."""
    try:
        frame = await client.exchange(request)
    except NoAnswerError:
        await client.close()
        raise
    try:
        return term.check_response(request, frame.message, body=frame.body)
    except ResponseError:
        await client.close()
        raise


async def resend_until_answered(term: SimTerminal, client: HostClient, request: Message, *,
                                max_attempts: int = 100,
                                pause: Callable[[int], Awaitable[None]] | None = None,
                                ) -> tuple[Result, int]:
    """Send ``request`` (unchanged) until a valid answer arrives; (answer, attempts)."""
    for attempt in range(1, max_attempts + 1):
        try:
            return await _attempt(term, client, request), attempt
        except (NoAnswerError, ResponseError) as exc:
            log.debug("no valid answer to %s STAN %s (%s); resending", request.mti,
                      request.get(11), type(exc).__name__)
            if pause is not None:
                await pause(attempt)
    raise GaveUpError(f"no answer to {request.mti} STAN {request.stan} "
                      f"after {max_attempts} attempts")


async def sign_on(term: SimTerminal, client: HostClient, *, form: int = 3,
                  max_attempts: int = 100) -> None:
    """Sign on (a new 0800 each try) until working keys are loaded."""
    for _ in range(max_attempts):
        request = term.sign_on_request(form)
        try:
            frame = await client.exchange(request)
            term.accept_sign_on(frame.message)
            return
        except (NoAnswerError, HostError, Iso8583Error) as exc:
            log.debug("sign-on failed (%s); again", type(exc).__name__)
            await client.close()
    raise GaveUpError(f"terminal {term.tid} could not sign on")


async def run_terminal(term: SimTerminal, client: HostClient, request: Message, *,
                       max_attempts: int = 100) -> Exchange:
    """Send ``request`` and recover from a missing or bad answer as a terminal does."""
    policy = recovery_policy(term.dialect, request)
    if policy == "resend":
        result, attempts = await resend_until_answered(term, client, request,
                                                       max_attempts=max_attempts)
        exchange = Exchange(request, result, attempts=attempts)
    else:
        try:
            exchange = Exchange(request, await _attempt(term, client, request))
        except (NoAnswerError, ResponseError) as exc:
            if policy != "reverse":
                return Exchange(request, None)
            reason = MAC_ERROR if isinstance(exc, ResponseMacError) else ISSUER_TIMEOUT
            reversal = term.reversal(request, reason)
            answer, attempts = await resend_until_answered(term, client, reversal,
                                                           max_attempts=max_attempts)
            exchange = Exchange(request, None, answer, reason, attempts + 1)
            if reason == MAC_ERROR:
                await sign_on(term, client, max_attempts=max_attempts)
                exchange.signed_on_again = True
    if isinstance(exchange.result, Declined) and explain(
            exchange.result.response_code).terminal_action is TerminalAction.SIGN_ON_AGAIN:
        # the host no longer trusts our keys: sign on again before the next request
        await sign_on(term, client, max_attempts=max_attempts)
        exchange.signed_on_again = True
    return exchange
