"""A private PostgreSQL cluster for the tests: initdb in a temp dir, Unix socket only.

``private_cluster(base)`` finds Debian's server binaries (``/usr/lib/postgresql/*/bin``
or ``initdb`` on PATH), runs ``initdb`` and the server as a non-root user (``nobody``
when the tests run as root), with ``listen_addresses=''`` (no TCP at all) and the
socket in a directory of its own, and yields a DSN. ``POS_TEST_PG_DSN`` points the
tests at an existing server instead. Without either, :data:`SKIP_REASON` says how to
get one.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

SKIP_REASON = ("PostgreSQL tests need the server and psycopg: apt-get install postgresql "
               "and pip install 'psycopg[binary]>=3.1' (or set POS_TEST_PG_DSN)")
DSN_ENV = "POS_TEST_PG_DSN"

#: how to restart each running private cluster: DSN -> (pg_ctl argv head, its options, env)
_RUNNING: dict[str, tuple[list[str], str, dict[str, str]]] = {}


def server_bin() -> Path | None:
    """The directory of initdb/pg_ctl, newest version first, or None."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                   key=lambda p: int(Path(p).parent.parent.name), reverse=True)
    if found:
        return Path(found[0]).parent
    on_path = shutil.which("initdb")
    return Path(on_path).parent if on_path else None


def available() -> bool:
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return False
    return bool(os.environ.get(DSN_ENV)) or server_bin() is not None


def _as_user(argv: list[str]) -> list[str]:
    """Run ``argv`` as ``nobody`` when we are root (PostgreSQL refuses to run as root)."""
    if os.geteuid() != 0:
        return argv
    return ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", *argv]


@contextlib.contextmanager
def private_cluster(base: Path) -> Iterator[str]:
    """Start a throwaway cluster under ``base``; yields its DSN; stops it afterwards."""
    given = os.environ.get(DSN_ENV)
    if given:
        yield given
        return
    bindir = server_bin()
    if bindir is None:
        raise RuntimeError(SKIP_REASON)
    if os.geteuid() == 0:
        # pytest's temp dirs are root's (0700): nobody gets a directory of its own in /tmp
        base = Path(tempfile.mkdtemp(prefix="pos-pg-"))
        shutil.chown(base, "nobody", "nogroup")
    base.mkdir(parents=True, exist_ok=True)
    data, sock = base / "data", base / "sock"
    sock.mkdir(exist_ok=True)
    if os.geteuid() == 0:
        shutil.chown(sock, "nobody", "nogroup")
    env = {**os.environ, "LC_ALL": "C", "TZ": "UTC"}
    subprocess.run(_as_user([str(bindir / "initdb"), "-D", str(data), "-A", "trust",
                             "-U", "postgres", "-E", "UTF8", "--no-sync"]),
                   check=True, capture_output=True, env=env, cwd=base)
    options = (f"-c listen_addresses='' -c unix_socket_directories={sock} "
               "-c fsync=on -c max_connections=100 -c shared_buffers=32MB")
    subprocess.run(_as_user([str(bindir / "pg_ctl"), "-D", str(data), "-o", options,
                             "-l", str(base / "server.log"), "-w", "-t", "30", "start"]),
                   check=True, capture_output=True, env=env, cwd=base)
    dsn = f"postgresql://postgres@/postgres?host={sock}"
    _RUNNING[dsn] = ([str(bindir / "pg_ctl"), "-D", str(data), "-l", str(base / "server.log")],
                     options, env)
    try:
        yield dsn
    finally:
        _RUNNING.pop(dsn, None)
        subprocess.run(_as_user([str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate",
                                 "-w", "stop"]), check=False, capture_output=True, env=env,
                       cwd=base)
        if os.geteuid() == 0:
            shutil.rmtree(base, ignore_errors=True)


def restart(dsn: str, *, mode: str = "fast", down: float = 0.0) -> None:
    """Stop the private cluster behind ``dsn``, wait ``down`` seconds, start it again.

    Every connection drops. ``mode`` is pg_ctl's shutdown mode: ``fast`` (roll
    back, disconnect) or ``immediate`` (as a crash). Only clusters started by
    :func:`private_cluster`.
    """
    if dsn not in _RUNNING:
        raise RuntimeError("only a cluster started by private_cluster can be restarted")
    head, options, env = _RUNNING[dsn]
    subprocess.run(_as_user([*head, "-m", mode, "-w", "-t", "30", "stop"]),
                   check=True, capture_output=True, env=env)
    time.sleep(down)
    subprocess.run(_as_user([*head, "-o", options, "-w", "-t", "30", "start"]),
                   check=True, capture_output=True, env=env)
