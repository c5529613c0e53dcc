"""bench.host_instructions: its reading of callgrind's dumps, the fit and the verdict.

The bench itself runs the host under valgrind for minutes; these are its cheap parts,
and one short real run (slow) where valgrind and PostgreSQL are installed.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import host_instructions, host_load
from bench.host_instructions import Window, dump_total, fit, report

_DUMP = """# callgrind format
version: 1
creator: callgrind-3.19.0
pid: 4242
cmd:  /usr/bin/python3 -m emulator serve --ledger postgresql:///x --port 0
part: 1
events: Ir
summary: 3821675465
fl= (1) ???
fn= (1) 0x0
0 12
totals: 3821675465
"""


def test_a_dump_s_total_is_its_summary_line_or_its_totals_line() -> None:
    assert dump_total(_DUMP) == 3_821_675_465
    assert dump_total("events: Ir\ntotals: 17\n") == 17
    with pytest.raises(ValueError, match="not a callgrind dump"):
        dump_total("events: Ir\n")


def _window(workers: int, connections: int, transactions: int, groups: int,
            instructions: int) -> Window:
    return Window(f"pg{workers}", workers, connections, transactions, groups,
                  {"serve": instructions})


def test_the_fit_recovers_a_request_s_and_a_group_s_instructions() -> None:
    per_request, per_group = 780_000, 450_000

    def made(transactions: int, groups: int) -> Window:
        return _window(1, transactions, transactions, groups,
                       transactions * per_request + groups * per_group)

    solved = fit(made(4_000, 800), made(5_000, 100))
    assert solved is not None
    assert solved[0] == pytest.approx(per_request)
    assert solved[1] == pytest.approx(per_group)
    assert fit(made(4_000, 800), made(8_000, 1_600)) is None  # one group size: no fit
    assert fit(made(4_000, 0), made(5_000, 100)) is None


def test_the_verdict_compares_instructions_a_transaction_at_the_same_connections() -> None:
    one = _window(1, 100, 5_000, 100, 5_000 * 790_000)
    small = _window(1, 10, 4_000, 800, 4_000 * 870_000)
    close = _window(2, 100, 10_000, 400, 10_000 * 810_000)
    lines = report([one, close, small], None, 30.0)
    text = "\n".join(lines)
    assert "PostgreSQL, 2 workers, 100 connections: 10,000 transactions, 400 groups (25.0 " \
           "requests a group)" in text
    assert "fit, 1 worker at 10 and 100 connections:" in text
    assert lines[-1].endswith("810k vs 790k = 1.025x (groups of 25.0 vs 50.0 requests): MET")
    far = _window(2, 100, 10_000, 400, 10_000 * 900_000)
    assert report([one, far], None, 30.0)[-1].endswith(": MISSED")
    assert report([one], None, 30.0)[-1].endswith("not measured: NOT MEASURED")
    other = _window(2, 50, 10_000, 400, 10_000 * 810_000)  # not the same connections
    assert report([one, other], None, 30.0)[-1].endswith("NOT MEASURED")


def test_without_valgrind_or_postgresql_it_says_what_to_install() -> None:
    assert report([], "valgrind is not installed: apt-get install valgrind (Debian)",
                  30.0) == ["host_instructions: not run: valgrind is not installed: "
                            "apt-get install valgrind (Debian)"]


@pytest.mark.slow
def test_a_short_real_run_counts_both_configurations(tmp_path: Path) -> None:
    missing = host_instructions.valgrind_missing() or host_load.pg_missing()
    if missing is not None:
        pytest.skip(missing)
    windows, why = host_instructions.run(connections=8, seconds=4.0, fit_connections=None,
                                         directory=tmp_path)
    assert why is None
    assert [(w.workers, w.error) for w in windows] == [(1, None), (2, None)]
    for w in windows:
        assert w.transactions > 0
        assert w.groups > 0
        assert w.per_transaction > 100_000  # a transaction is far more than this
    assert windows[0].by_process.keys() == {"serve"}
    assert sum(name.startswith("worker") for name in windows[1].by_process) == 2
