"""bench.e2e runs end to end with a tiny N (in-process card only: no pcscd needed)."""

from __future__ import annotations

import pytest

from bench import e2e


def test_e2e_bench_runs_and_reports(capsys: pytest.CaptureFixture[str]) -> None:
    result = e2e.run(3, rounds=2, pcsc=False)
    [path] = result.paths
    assert path.name == "in-process card"
    assert len(path.totals) == 3
    assert path.not_approved == 0
    assert path.calls["get_pin_block"] == 3  # pin_on_refund: every refund asked the pad
    assert path.calls["exchange"] == 3  # one 0220 each, no echo, no resolving
    assert all(len(path.stages[s]) == 3 for s in e2e.STAGES)
    assert 0 < sum(path.share(s) for s in e2e.STAGES) <= 1
    e2e.report(result, 3)
    out = capsys.readouterr().out
    assert "pcscd + vpcd path SKIPPED: not asked for" in out
    assert "target median <= 20 ms, in-process card" in out
    assert "6225880000000019" not in out
