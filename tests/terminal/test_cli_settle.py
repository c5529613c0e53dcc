"""pos-terminal settle: what the cashier reads after an unbalanced settlement and its upload."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import pytest

from iso8583.responses import explain
from iso8583.settlement import SettlementTotals
from terminal.cli import Ctx, cmd_settle
from terminal.core.till import SettleOutcome


class _Session:
    def __init__(self, outcome: SettleOutcome) -> None:
        self.outcome = outcome

    def settle(self, progress: Any) -> SettleOutcome:
        return self.outcome


def _outcome(**kw: Any) -> SettleOutcome:
    totals = SettlementTotals().add("cup", 3000, credit=False)
    base: dict[str, Any] = dict(batch="000001", totals=totals, balanced=False, uploaded=12,
                                new_batch="000002", response=explain("00"))
    return SettleOutcome(**{**base, **kw})


def _ctx(lang: str, as_json: bool = False) -> Ctx:
    return Ctx(argparse.Namespace(verbose=False), Path("."), lang, as_json)


@pytest.mark.parametrize(("lang", "needle"), [
    ("en", "batch uploaded (12 items), host received 12, 11 matched; next batch 000002"),
    ("zh", "已批上送 12 笔，主机收到 12 笔，相符 11 笔"),
])
def test_an_unbalanced_settlement_says_what_the_host_received_and_matched(
        capsys: pytest.CaptureFixture[str], lang: str, needle: str) -> None:
    ctx = _ctx(lang)
    assert cmd_settle(ctx, _Session(_outcome(host_received=12, host_matched=11))) == 0  # type: ignore[arg-type]
    assert needle in capsys.readouterr().out
    assert (ctx.result["host_received"], ctx.result["host_matched"]) == (12, 11)


def test_without_an_end_answer_no_host_counts_are_claimed(
        capsys: pytest.CaptureFixture[str]) -> None:
    ctx = _ctx("en")
    assert cmd_settle(ctx, _Session(_outcome())) == 0  # type: ignore[arg-type]
    out = capsys.readouterr().out
    assert "batch uploaded (12 items); next batch 000002" in out
    assert "host received" not in out
    assert ctx.result["host_received"] is None
