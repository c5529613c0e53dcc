"""Cashier app cold start and memory, beside a minimal Textual app started the same way.

Each measurement is a fresh Python process (``python -m bench.ui --child KIND``)
that runs its app headless and reports the moment its first screen is up:
for ``pos`` the operator login screen of the real app over a real data
directory (journal, operators, settings; host link configured but not
contacted), for ``minimal`` a one-label Textual app. Cold start is the wall
time from spawning the process to that moment; RSS is the child's resident
set then. Runs alternate between the two so load hits both alike; the best
run of each is kept.

Run: ``.venv/bin/python -m bench.ui [runs]`` (default 5 runs each).
Targets (issue 9): start <= 1.5x the minimal app's, RSS <= 150 MB.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from terminal.ui.backend import Backend

START_RATIO_TARGET = 1.5
RSS_TARGET_MB = 150.0
READY = "READY"
CORE = "CORE"


@dataclass(frozen=True)
class Start:
    """One cold start: seconds to the first screen, resident set (MB) at that moment."""

    seconds: float
    rss_mb: float
    ready_seconds: float | None = None  # the core loaded: a login would go through


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _prepare(data_dir: Path) -> None:
    """A terminal as ``pos-terminal init`` leaves it, with operators (not timed)."""
    from emulator.host.terminals import DEMO_MID, DEMO_TID, DEMO_TMK
    from terminal.core.config import TerminalSettings, init_terminal
    from terminal.core.journal import Journal
    from terminal.core.operators import OperatorStore

    journal = Journal.open(data_dir)
    try:
        init_terminal(journal, TerminalSettings(tid=DEMO_TID, mid=DEMO_MID), DEMO_TMK)
        OperatorStore(journal.conn, journal.clock).bootstrap("9999", "0000")
    finally:
        journal.close()


def _child(kind: str, data_dir: str) -> int:
    """Run one app headless; print READY <rss MB> once its first screen is mounted."""
    from textual.app import App, ComposeResult
    from textual.pilot import Pilot
    from textual.widgets import Label

    app: App[None]
    if kind == "minimal":
        class Minimal(App[None]):
            def compose(self) -> ComposeResult:
                yield Label("ready", id="field0")

        app = Minimal()
    else:
        from terminal.ui.app import PosApp

        def load() -> Backend:
            # what pos-terminal ui does: the core loads behind the login screen
            from iso8583.dialects import get_dialect
            from terminal.core.session import Session
            from terminal.core.till import Till
            from terminal.hostlink import TcpHostLink
            from terminal.ui.backend import Backend

            link = TcpHostLink(get_dialect("cup"), "127.0.0.1", 9, timeout=1.0)
            return Backend(Session(Till.open(Path(data_dir), link=link)))

        app = PosApp(loader=load)

    async def pilot(p: Pilot[object]) -> None:
        while not p.app.screen.query("#field0"):
            await p.pause()
        while not getattr(p.app, "backend_ready", True):
            await p.pause(0.005)
        # the login screen's own record of when it was painted (the core loads after it)
        painted = getattr(p.app, "first_screen_at", None) or time.time()
        print(READY, f"{painted:.6f}", flush=True)
        print(CORE, f"{time.time():.6f}", f"{_rss_mb():.1f}", flush=True)
        p.app.exit()

    app.run(headless=True, auto_pilot=pilot, size=(80, 24))
    return 0


def _spawn(kind: str, data_dir: Path) -> Start:
    wall0 = time.time()  # the children report wall-clock moments
    proc = subprocess.Popen([sys.executable, "-m", "bench.ui", "--child", kind, str(data_dir)],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    took: float | None = None
    for line in proc.stdout:
        if line.startswith(READY):
            took = float(line.split()[1]) - wall0
        elif line.startswith(CORE) and took is not None:
            ready = float(line.split()[1]) - wall0
            rss = float(line.split()[2])  # with the core loaded
            proc.wait(timeout=30)
            return Start(took, rss, ready)
    proc.wait(timeout=30)
    raise RuntimeError(f"{kind} app exited with {proc.returncode} before its first screen")


def run(runs: int = 5) -> dict[str, Start]:
    """Best cold start of each app over ``runs`` alternating runs."""
    best: dict[str, Start] = {}
    with tempfile.TemporaryDirectory(prefix="bench-ui-") as tmp:
        data_dir = Path(tmp) / "terminal"
        _prepare(data_dir)
        for _ in range(runs):
            for kind in ("minimal", "pos"):
                start = _spawn(kind, data_dir)
                prev = best.get(kind)
                if prev is None or start.seconds < prev.seconds:
                    best[kind] = Start(start.seconds, max(start.rss_mb,
                                                          prev.rss_mb if prev else 0.0),
                                       start.ready_seconds)
    return best


def _table(best: dict[str, Start]) -> str:
    anchor, ours = best["minimal"], best["pos"]
    ratio = ours.seconds / anchor.seconds if anchor.seconds else float("inf")
    start_ok = "ok" if ratio <= START_RATIO_TARGET else "ABOVE TARGET"
    rss_ok = "ok" if ours.rss_mb <= RSS_TARGET_MB else "ABOVE TARGET"
    return "\n".join([
        "Cashier app cold start to the login screen (fresh process, headless 80x24; "
        "best of alternating runs; anchor = minimal Textual app)",
        f"{'app':<10}{'start ms':>10}{'RSS MB':>10}",
        f"{'minimal':<10}{anchor.seconds * 1000:>10.0f}{anchor.rss_mb:>10.1f}",
        f"{'pos':<10}{ours.seconds * 1000:>10.0f}{ours.rss_mb:>10.1f}",
        f"start ratio {ratio:.2f}x (target <= {START_RATIO_TARGET}x): {start_ok}",
        f"core loaded behind the login screen (journal open, a login would go through) "
        f"at {ours.ready_seconds * 1000:.0f} ms = "
        f"{ours.ready_seconds / anchor.seconds:.2f}x the minimal app's start"
        if ours.ready_seconds else "core load time not measured",
        f"RSS {ours.rss_mb:.1f} MB = {ours.rss_mb / anchor.rss_mb:.2f}x minimal "
        f"(target <= {RSS_TARGET_MB:.0f} MB): {rss_ok}",
    ])


def main(argv: list[str]) -> int:
    """Print the table; ``--child KIND DIR`` is one measured process; exit 2 on bad arguments."""
    if argv[:1] == ["--child"] and len(argv) == 3:
        return _child(argv[1], argv[2])
    try:
        runs = int(argv[0]) if argv else 5
    except ValueError:
        print(f"bench.ui: runs must be a whole number, got {argv[0]!r}", file=sys.stderr)
        return 2
    print(_table(run(max(1, runs))))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
