"""bench._util: the host benchmarks' ``--dir``."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

import pytest

from bench import host_instructions, host_load, host_soak
from bench._util import work_dir


def test_work_dir_makes_a_missing_directory(tmp_path: Path) -> None:
    wanted = tmp_path / "runs" / "today"
    assert work_dir(str(wanted)) == wanted
    assert wanted.is_dir()
    assert work_dir(str(wanted)) == wanted  # and takes one that exists


def test_work_dir_under_a_file_is_a_usage_error(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(argparse.ArgumentTypeError, match="work directory: Not a directory"):
        work_dir(str(blocker / "x"))


@pytest.mark.parametrize("main", [host_load.main, host_soak.main, host_instructions.main],
                         ids=["host_load", "host_soak", "host_instructions"])
def test_each_host_bench_refuses_such_a_dir_before_running(
        main: Callable[[list[str] | None], int], tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(SystemExit) as stop:
        main(["--dir", str(blocker / "x")])
    assert stop.value.code == 2
    assert "cannot use" in capsys.readouterr().err
