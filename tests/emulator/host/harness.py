"""Drive an AcquirerHost with SimTerminal messages in memory: no sockets, fixed clock."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import datetime

from emulator.host import AcquirerHost, HostOutcome
from emulator.host.ledger import LedgerStore, MemoryLedgerStore
from emulator.simterminal import Result, SimTerminal
from iso8583.message import Message

NOW = datetime(2026, 11, 23, 10, 30, 0)
TID = "10000001"
MID = "123456789012345"
TMK = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")
TPDU = bytes.fromhex("6000010000")


@dataclass
class Lane:
    """One terminal talking to one host, every outcome committed to ``store``."""

    host: AcquirerHost
    store: LedgerStore
    term: SimTerminal
    now: datetime = NOW
    outcomes: list[HostOutcome] = field(default_factory=list)

    def send(self, request: Message) -> HostOutcome:
        """Hand ``request`` to the host as a frame payload; commit its records."""
        payload = self.term.dialect.payload(request, tpdu=TPDU if self.term.dialect.spec.tpdu
                                            else None)
        return self.send_payload(payload)

    def send_payload(self, payload: bytes) -> HostOutcome:
        outcome = self.host.handle(payload, self.now)
        self.store.commit(outcome.records)
        self.outcomes.append(outcome)
        return outcome

    def answer(self, request: Message) -> Message:
        """The decoded answer to ``request`` (asserting there is one)."""
        outcome = self.send(request)
        assert outcome.reply is not None, "host gave no answer"
        return self.term.dialect.unpack_payload(outcome.reply).message

    def exchange(self, request: Message) -> Result:
        """Send, decode the answer and let the terminal check it."""
        outcome = self.send(request)
        assert outcome.reply is not None, "host gave no answer"
        frame = self.term.dialect.unpack_payload(outcome.reply)
        return self.term.check_response(request, frame.message, body=frame.body)

    def restart(self) -> None:
        """A new host rebuilt from the store, as after a process restart."""
        self.host = AcquirerHost.from_store(self.store, self.term.dialect,
                                            random_bytes=random.Random(7).randbytes)


def make_lane(dialect: str = "cup", *, store: LedgerStore | None = None, seed: int = 1,
              sign_on: bool = True, form: int = 3) -> Lane:
    store = store if store is not None else MemoryLedgerStore(secret=b"k" * 32)
    host = AcquirerHost.from_store(store, dialect, random_bytes=random.Random(seed).randbytes)
    store.commit([host.provision(TID, MID, TMK)])
    term = SimTerminal(dialect, TID, MID, TMK, lambda: NOW, rng=random.Random(seed))
    lane = Lane(host, store, term)
    if sign_on:
        lane.term.accept_sign_on(lane.answer(lane.term.sign_on_request(form)))
    return lane
