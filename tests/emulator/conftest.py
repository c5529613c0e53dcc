"""Fixtures shared by the emulator's tests: the private PostgreSQL cluster, the event loop.

``pg_dsn`` starts one throwaway cluster per test session (tests/pgcluster.py) the
first time a test asks for it, and skips with an install hint where PostgreSQL
is missing. Tests keep apart in it by schema (or database) of their own.

The async tests run on the loop a host process would serve on (emulator.loop:
uvloop when installed, ``POS_EMULATOR_LOOP`` chooses), as do the hosts the tests
start as processes (they inherit the variable): ``POS_EMULATOR_LOOP=asyncio
pytest tests/emulator`` runs the whole tree on asyncio's loop, the fallback.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator

import pytest

from emulator.loop import choose
from tests import pgcluster


def pytest_asyncio_loop_factories(
        config: pytest.Config, item: pytest.Item,
) -> dict[str, Callable[[], asyncio.AbstractEventLoop]]:
    """pytest-asyncio's hook: the loop every async test under tests/emulator runs on
    (one factory: the tests' ids do not change)."""
    name, factory = choose()
    return {name: factory if factory is not None else asyncio.new_event_loop}


@pytest.fixture(scope="session")
def pg_dsn(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if not pgcluster.available():
        pytest.skip(pgcluster.SKIP_REASON)
    with pgcluster.private_cluster(tmp_path_factory.mktemp("pg")) as dsn:
        yield dsn
