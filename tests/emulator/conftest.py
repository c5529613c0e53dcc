"""Fixtures shared by the emulator's tests: the private PostgreSQL cluster.

``pg_dsn`` starts one throwaway cluster per test session (tests/pgcluster.py) the
first time a test asks for it, and skips with an install hint where PostgreSQL
is missing. Tests keep apart in it by schema (or database) of their own.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests import pgcluster


@pytest.fixture(scope="session")
def pg_dsn(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if not pgcluster.available():
        pytest.skip(pgcluster.SKIP_REASON)
    with pgcluster.private_cluster(tmp_path_factory.mktemp("pg")) as dsn:
        yield dsn
