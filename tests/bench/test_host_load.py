"""bench.host_load and bench.host_soak: their /proc readings, targets and bad arguments.

The benches themselves take minutes (they start servers and PostgreSQL); these checks
are the cheap parts: the CPU/RSS readings of a process tree, the MET/MISSED verdicts
and the one-line refusal of bad options.
"""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from bench import _proc, host_load, host_soak


def test_tree_cpu_counts_a_busy_child() -> None:
    child = subprocess.Popen([sys.executable, "-c",
                              "import time\nt = time.process_time()\n"
                              "while time.process_time() - t < 0.3: pass\n"
                              "time.sleep(30)"])
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if _proc.tree_cpu(child.pid) >= 0.25:
                break
            time.sleep(0.05)
        tree = _proc.tree(child.pid)
        assert [p.pid for p in tree] == [child.pid]
        assert _proc.tree_cpu(child.pid) >= 0.25
        assert _proc.tree_rss(child.pid) > 1_000_000
    finally:
        child.kill()
        child.wait()
    assert _proc.tree(child.pid) == []  # gone: nothing to count
    assert _proc.proc_stat(child.pid) is None


def _phase(tps: float, p99: float, host_s: float, failures: int = 0) -> host_load.PhaseResult:
    n = int(tps * 10)
    return host_load.PhaseResult(n, n, 0, n, failures, tps, 1.0, p99, 2.0, p99, host_s, None, 0.0)


def test_targets_met_and_missed() -> None:
    sq = host_load.ConfigResult("sqlite", "sqlite", 1, _phase(1000, 10, 10), _phase(1000, 40, 10))
    pg1 = host_load.ConfigResult("pg1", "postgresql", 1, _phase(600, 10, 12),
                                 _phase(1000, 60, 12))
    pg2 = host_load.ConfigResult("pg2", "postgresql", 2, _phase(500, 10, 10),
                                 _phase(0, 0, 1, failures=3))
    result = host_load.HostLoadResult(100, 10, 1000, [sq, pg1, pg2], 3000, None, None,
                                      10_000, 60)
    verdicts = {label.split(",")[-1].strip() if "paced" in label else label.split(" (")[0]: met
                for label, _, met in result.targets()}
    assert verdicts == {
        "PostgreSQL 1 worker >= 0.5x the SQLite host's TPS": True,  # 600 / 1000
        "sqlite": True,  # p99 40 ms
        "pg1": False,  # p99 60 ms
        "pg2": False,  # nothing answered: never MET
        "2 workers not slower than 1": False,  # 500 < 600
        "host CPU per transaction does not grow with workers": True,  # 2.0 <= 2.0 x 1.1
    }


def test_targets_not_measured_without_postgresql(capsys: pytest.CaptureFixture[str]) -> None:
    sq = host_load.ConfigResult("sqlite", "sqlite", 1, _phase(1000, 10, 10), None)
    missing = "PostgreSQL is not installed: apt-get install postgresql"
    pg1 = host_load.ConfigResult("pg1", "postgresql", 1, error=missing)
    result = host_load.HostLoadResult(100, 10, 0, [sq, pg1], 3000, None, missing, 10_000, 60)
    assert result.targets()[0][2] is None
    host_load.print_result(result)
    out = capsys.readouterr().out
    assert "not run: PostgreSQL is not installed" in out
    assert "NOT MEASURED" in out
    assert "10,000 terminals = 167 TPS at peak" in out


@pytest.mark.parametrize("argv", [["--configs", "oracle"], ["--seconds", "0"],
                                  ["--peak-interval", "-1"]])
def test_host_load_refuses_bad_options(argv: list[str],
                                       capsys: pytest.CaptureFixture[str]) -> None:
    assert host_load.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("host_load: ")
    assert "Traceback" not in err


@pytest.mark.parametrize("argv", [["--first", "0"], ["--rows", "10", "--first", "20"],
                                  ["--chunk", "0"]])
def test_host_soak_refuses_bad_options(argv: list[str],
                                       capsys: pytest.CaptureFixture[str]) -> None:
    assert host_soak.main(argv) == 2
    assert capsys.readouterr().err.startswith("host_soak: ")
