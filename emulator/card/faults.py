"""Fault knobs for the virtual EMV card: make the chip misbehave on purpose for QA.

A :class:`CardFaults` plan is handed to :class:`emulator.card.app.VirtualCard`.
For every command APDU the card asks the plan once what to do
(:meth:`CardFaults.decide`) and carries the :class:`FaultDecision` out: wait,
power off, or spoil the response it was about to send. The plan itself does no
I/O; it only counts commands and draws from a seeded random generator, so a run
with the same spec and the same commands misbehaves the same way.

Spec syntax
-----------
A spec is one or more rules separated by ``;`` or ``,``. A rule is an action,
optionally followed by ``@`` and a trigger::

    spec    := rule ((";" | ",") rule)*
    rule    := action ["@" trigger]
    action  := "sw=" XXXX | "corrupt" | "truncate" | "break_chain" | "delay=" MS
             | "remove" | "random=" PROBABILITY
             | "blocked" | "aac_only" | "seed=" N
    trigger := command [":" when]
    command := "select" | "gpo" | "read_record" | "generate_ac" | "get_data"
             | "get_response" | "any" | INS (two hex digits, e.g. "B2")
    when    := N | "once" | "every=" N | "p=" PROBABILITY

Actions:

============ ===================================================================
sw=XXXX      the response carries status word XXXX instead (data is dropped
             unless the new SW is 9000 or 62xx/63xx)
corrupt      the first TLV of the response claims one byte more than it holds
truncate     the response data is cut in the middle of its TLV (SW kept)
break_chain  a 61xx answer is announced but GET RESPONSE then finds nothing
             (6985); a 6Cxx answer names a wrong length, so the resend gets
             6Cxx again
delay=MS     the answer leaves MS milliseconds late
remove       the card is powered off before it answers: the transport raises
             ``CardRemovedError`` from then on, until the card is inserted again
random=P     with probability P one of corrupt / truncate / sw=6F00, drawn
             from the seeded generator
blocked      the application is blocked: SELECT of the AID answers 6283
aac_only     GENERATE AC always answers an AAC, whatever was asked
seed=N       seed of the random generator (default 0)
============ ===================================================================

Triggers: without one an action applies to every command. ``@gpo`` applies to
every GET PROCESSING OPTIONS; ``@read_record:2`` to the second READ RECORD only;
``@generate_ac:once`` to the first GENERATE AC only; ``@any:every=3`` to every
third command; ``@select:p=0.5`` to each SELECT with probability one half.
Commands are counted per rule from the start of the plan (they survive card
removal and reinsertion, so a ``once`` rule stays spent).

Examples: ``sw=6A82@gpo``, ``remove@read_record:2``, ``truncate@generate_ac``,
``delay=50``, ``seed=7,random=0.1``, ``blocked``, ``break_chain@gpo;delay=5@any``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from enum import StrEnum

__all__ = [
    "COMMAND_INS",
    "CardFaultRule",
    "CardFaults",
    "FaultAction",
    "FaultDecision",
    "FaultSpecError",
    "Trigger",
    "parse_card_faults",
]


class FaultSpecError(ValueError):
    """A card fault spec could not be parsed; the message names the bad rule."""


class FaultAction(StrEnum):
    SW = "sw"
    CORRUPT = "corrupt"
    TRUNCATE = "truncate"
    BREAK_CHAIN = "break_chain"
    DELAY = "delay"
    REMOVE = "remove"
    RANDOM = "random"


COMMAND_INS: dict[str, int] = {
    "select": 0xA4,
    "gpo": 0xA8,
    "read_record": 0xB2,
    "generate_ac": 0xAE,
    "get_data": 0xCA,
    "get_response": 0xC0,
}
"""Command names usable in triggers and the INS byte each stands for."""


@dataclass(frozen=True)
class Trigger:
    """Which commands a rule fires on.

    ``ins`` None means any command. At most one of ``nth`` (fire on the nth
    matching command only), ``every`` (fire on every nth) and ``probability``
    is set; none set means every matching command.
    """

    ins: int | None = None
    nth: int | None = None
    every: int | None = None
    probability: float | None = None


@dataclass
class CardFaultRule:
    """One parsed rule and how many matching commands it has seen."""

    action: FaultAction
    trigger: Trigger = field(default_factory=Trigger)
    sw: int = 0  # for sw=
    delay_ms: int = 0  # for delay=
    probability: float = 0.0  # for random=
    seen: int = 0
    fired: int = 0

    def matches(self, ins: int, rng: random.Random) -> bool:
        """Count this command if it is ours and say whether the rule fires now."""
        if self.trigger.ins is not None and self.trigger.ins != ins:
            return False
        self.seen += 1
        t = self.trigger
        if t.nth is not None:
            hit = self.seen == t.nth
        elif t.every is not None:
            hit = self.seen % t.every == 0
        elif t.probability is not None:
            hit = rng.random() < t.probability
        else:
            hit = True
        if hit:
            self.fired += 1
        return hit


@dataclass
class FaultDecision:
    """What the card must do to the current command; the defaults mean "behave"."""

    delay_ms: int = 0
    remove: bool = False
    sw: int | None = None
    corrupt: bool = False
    truncate: bool = False
    break_chain: bool = False

    @property
    def spoils_response(self) -> bool:
        return self.sw is not None or self.corrupt or self.truncate


@dataclass
class CardFaults:
    """A plan of card faults: rules, the card-wide flags and the seeded generator."""

    rules: list[CardFaultRule] = field(default_factory=list)
    blocked: bool = False
    aac_only: bool = False
    seed: int = 0
    rng: random.Random = field(init=False)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)

    def decide(self, ins: int) -> FaultDecision:
        """Decide the faults for one command APDU with this INS (call once per command)."""
        d = FaultDecision()
        for rule in self.rules:
            if not rule.matches(ins, self.rng):
                continue
            match rule.action:
                case FaultAction.SW:
                    d.sw = rule.sw
                case FaultAction.CORRUPT:
                    d.corrupt = True
                case FaultAction.TRUNCATE:
                    d.truncate = True
                case FaultAction.BREAK_CHAIN:
                    d.break_chain = True
                case FaultAction.DELAY:
                    d.delay_ms += rule.delay_ms
                case FaultAction.REMOVE:
                    d.remove = True
                case FaultAction.RANDOM:
                    if self.rng.random() < rule.probability:
                        pick = self.rng.choice(("corrupt", "truncate", "sw"))
                        if pick == "corrupt":
                            d.corrupt = True
                        elif pick == "truncate":
                            d.truncate = True
                        else:
                            d.sw = 0x6F00
        return d


def _parse_int(text: str, rule: str, what: str, *, minimum: int = 0) -> int:
    try:
        value = int(text, 10)
    except ValueError:
        raise FaultSpecError(f"{what} must be a whole number in rule {rule!r}") from None
    if value < minimum:
        raise FaultSpecError(f"{what} must be at least {minimum} in rule {rule!r}")
    return value


def _parse_probability(text: str, rule: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise FaultSpecError(f"probability must be a number in rule {rule!r}") from None
    if not 0.0 <= value <= 1.0:
        raise FaultSpecError(f"probability must be between 0 and 1 in rule {rule!r}")
    return value


def _parse_trigger(text: str, rule: str) -> Trigger:
    command, _, when = text.partition(":")
    command = command.strip().lower()
    ins: int | None
    if command == "any":
        ins = None
    elif command in COMMAND_INS:
        ins = COMMAND_INS[command]
    elif len(command) == 2 and all(c in "0123456789abcdef" for c in command):
        ins = int(command, 16)
    else:
        known = ", ".join([*COMMAND_INS, "any"])
        raise FaultSpecError(f"unknown command {command!r} in rule {rule!r} (known: {known})")
    when = when.strip().lower()
    if not when:
        return Trigger(ins)
    if when == "once":
        return Trigger(ins, nth=1)
    if when.startswith("every="):
        return Trigger(ins, every=_parse_int(when[6:], rule, "every", minimum=1))
    if when.startswith("p="):
        return Trigger(ins, probability=_parse_probability(when[2:], rule))
    return Trigger(ins, nth=_parse_int(when, rule, "command number", minimum=1))


def parse_card_faults(spec: str) -> CardFaults:
    """Parse a card fault spec (syntax in the module docstring) into a fresh plan.

    Raises :class:`FaultSpecError` with a one-line reason on any bad rule.
    """
    rules: list[CardFaultRule] = []
    blocked = aac_only = False
    seed = 0
    for raw in spec.replace(",", ";").split(";"):
        rule_text = raw.strip()
        if not rule_text:
            continue
        action_text, at, trigger_text = rule_text.partition("@")
        name, eq, value = action_text.strip().partition("=")
        name = name.strip().lower()
        value = value.strip()
        trigger = _parse_trigger(trigger_text, rule_text) if at else Trigger()
        if name in {"blocked", "aac_only", "seed"} and at:
            raise FaultSpecError(f"{name} takes no trigger in rule {rule_text!r}")
        if name == "blocked":
            blocked = True
        elif name == "aac_only":
            aac_only = True
        elif name == "seed":
            seed = _parse_int(value, rule_text, "seed")
        elif name == "sw":
            if len(value) != 4:
                raise FaultSpecError(f"sw needs four hex digits in rule {rule_text!r}")
            try:
                sw = int(value, 16)
            except ValueError:
                raise FaultSpecError(f"sw needs four hex digits in rule {rule_text!r}") from None
            rules.append(CardFaultRule(FaultAction.SW, trigger, sw=sw))
        elif name == "delay":
            ms = _parse_int(value, rule_text, "delay")
            rules.append(CardFaultRule(FaultAction.DELAY, trigger, delay_ms=ms))
        elif name == "random":
            p = _parse_probability(value, rule_text)
            rules.append(CardFaultRule(FaultAction.RANDOM, trigger, probability=p))
        elif name in {"corrupt", "truncate", "break_chain", "remove"}:
            if eq:
                raise FaultSpecError(f"{name} takes no value in rule {rule_text!r}")
            rules.append(CardFaultRule(FaultAction(name), trigger))
        else:
            raise FaultSpecError(f"unknown card fault {name!r} in rule {rule_text!r}")
    return CardFaults(rules, blocked=blocked, aac_only=aac_only, seed=seed)
