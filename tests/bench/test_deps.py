"""Benchmark helpers: isolated loading of anchors whose import name clashes with ours."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

import iso8583
from bench._deps import BenchDependencyError, ensure, load_isolated
from bench._util import measure, measure_interleaved, ratio


def _fake_clashing_package(root: Path) -> Path:
    pkg = root / "iso8583"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("from iso8583.helper import WHO\n")
    (pkg / "helper.py").write_text("WHO = 'theirs'\n")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "deep.py").write_text("from iso8583.helper import WHO as DEEP\n")
    return root


def test_load_isolated_keeps_our_package(tmp_path: Path) -> None:
    ours_before = sys.modules["iso8583"]
    theirs = load_isolated(_fake_clashing_package(tmp_path), "iso8583", "fake_theirs_pkg")
    try:
        assert theirs.WHO == "theirs"
        assert sys.modules["fake_theirs_pkg.sub.deep"].DEEP == "theirs"
        import iso8583 as again

        assert again is ours_before is iso8583
        assert Path(again.__file__ or "").parent.name == "iso8583"
        assert not hasattr(again, "WHO")
        assert "iso8583.helper" not in sys.modules
    finally:
        for name in [n for n in sys.modules if n.startswith("fake_theirs_pkg")]:
            del sys.modules[name]


def test_load_isolated_refuses_a_module_from_elsewhere(tmp_path: Path) -> None:
    # Nothing named iso8583 in tmp_path: the import finds ours, which must be refused.
    with pytest.raises((BenchDependencyError, ModuleNotFoundError)):
        load_isolated(tmp_path, "iso8583", "fake_nothing_pkg")
    assert sys.modules["iso8583"] is iso8583
    assert "fake_nothing_pkg" not in sys.modules


def test_pyiso8583_loads_beside_ours() -> None:
    try:
        target = ensure("pyiso8583==4.0.1", "iso8583")
    except BenchDependencyError as exc:  # no network on this machine
        pytest.skip(str(exc))
    theirs = load_isolated(target, "iso8583", "pyiso8583")
    assert theirs is sys.modules["pyiso8583"]
    assert callable(theirs.decode)
    assert callable(theirs.encode)
    assert target in Path(theirs.__file__ or "").parents
    import iso8583 as ours

    assert ours is iso8583
    assert not hasattr(ours, "decode")


def test_measure_counts_calls() -> None:
    calls: list[int] = []
    result = measure("append", lambda: calls.append(1), seconds=0.02)
    assert result.ops == len(calls) - 1  # one warm-up call is not counted
    assert result.ops_per_s > 0
    assert ratio(result, result) == pytest.approx(1.0)


def test_measure_interleaved_merges_rounds_in_case_order() -> None:
    counts = {"a": 0, "b": 0}

    def bump(key: str) -> None:
        counts[key] += 1

    results = measure_interleaved([("a", lambda: bump("a")), ("b", lambda: bump("b"))],
                                  seconds=0.02, rounds=3)
    assert [r.name for r in results] == ["a", "b"]
    # Each of the 3 rounds makes one untimed warm-up call per case.
    assert results[0].ops == counts["a"] - 3
    assert results[1].ops == counts["b"] - 3
