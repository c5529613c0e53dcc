"""Start and stop a private pcscd with the vpcd driver, for HIL tests and benchmarks.

Only one pcscd may own ``/run/pcscd`` (its pid file and socket live there) and
vpcd listens on fixed TCP ports, so a test run must not collide with a pcscd
that is already running, nor with another test run on the same machine. The
harness therefore gives its pcscd:

* its own ``/run/pcscd``: pcscd runs under ``unshare -m`` (a private mount
  namespace, needs root) where a per-run directory is bind-mounted over
  ``/run/pcscd``. The directory is an ordinary one in the host's view, so a
  client in the calling process reaches the daemon through
  ``<workdir>/run/pcscd.comm`` by setting ``PCSCLITE_CSOCK_NAME`` (libpcsclite
  reads it once, on the first context of the process);
* its own vpcd ports: a private ``reader.conf.d`` (``pcscd -c``) with a free
  pair of TCP ports, so slot 0 is ``base_port`` and slot 1 ``base_port + 1``.

The network namespace is left alone: the virtual card connects to vpcd over
127.0.0.1 in the normal namespace, which keeps the card server, the pyscard
client and the test in one process.

When ``unshare`` is not permitted (a container without CAP_SYS_ADMIN) but no
other pcscd runs, pcscd is started directly in the host's ``/run/pcscd`` and
``<workdir>/run/pcscd.comm`` is made a symbolic link to its socket, so clients
are configured the same way in both modes. When neither works, or pcscd / vpcd are not
installed, or the process is not root, :func:`unavailable_reason` says why and
what to install; callers skip.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

__all__ = [
    "INSTALL_HINT",
    "PcscdHarness",
    "PcscdStartError",
    "find_vpcd_driver",
    "socket_path_for",
    "unavailable_reason",
    "vpcd_reader_name",
]

INSTALL_HINT = "apt-get install --no-install-recommends pcscd vsmartcard-vpcd libpcsclite-dev"
SOCKET_ENV = "PCSCLITE_CSOCK_NAME"
HOST_SOCKET = Path("/run/pcscd/pcscd.comm")


class PcscdStartError(RuntimeError):
    """The private pcscd did not start or did not become ready."""


def find_vpcd_driver() -> str | None:
    """Path of the vpcd IFD handler library, or None when vsmartcard-vpcd is missing."""
    for pattern in ("/usr/lib/pcsc/drivers/serial/libifdvpcd.so*",
                    "/usr/lib/*/pcsc/drivers/serial/libifdvpcd.so*",
                    "/usr/local/lib/pcsc/drivers/serial/libifdvpcd.so*"):
        found = sorted(glob.glob(pattern))
        if found:
            return found[0]
    return None


def socket_path_for(workdir: str | Path) -> Path:
    """Where a harness with this ``workdir`` puts the pcscd socket (for ``PCSCLITE_CSOCK_NAME``)."""
    return Path(workdir) / "run" / "pcscd.comm"


def vpcd_reader_name(slot: int) -> str:
    """The PC/SC reader name pcscd gives vpcd slot ``slot`` (first reader of the config)."""
    return f"Virtual PCD 00 {slot:02d}"


def _other_pcscd_running() -> bool:
    pid_file = Path("/run/pcscd/pcscd.pid")
    try:
        pid = int(pid_file.read_text().strip())
    except (OSError, ValueError):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _unshare_works() -> bool:
    unshare = shutil.which("unshare")
    if unshare is None:
        return False
    try:
        result = subprocess.run([unshare, "-m", "true"],  # noqa: S603 - fixed argv
                                capture_output=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return result.returncode == 0


def unavailable_reason() -> str | None:
    """Why a private pcscd cannot be started here, or None when it can."""
    if shutil.which("pcscd") is None:
        return f"pcscd is not installed ({INSTALL_HINT})"
    if find_vpcd_driver() is None:
        return f"the vpcd reader driver is not installed ({INSTALL_HINT})"
    if os.geteuid() != 0:
        return "starting a private pcscd needs root (run the HIL tests as root)"
    if not _unshare_works() and _other_pcscd_running():
        return ("another pcscd is running and unshare -m is not permitted here; "
                "stop the other pcscd or allow mount namespaces")
    return None


def _free_port_pair() -> int:
    """A port p such that p and p + 1 are both free on every interface (vpcd binds all)."""
    for _ in range(200):
        with socket.socket() as first:
            first.bind(("0.0.0.0", 0))  # noqa: S104 - probing what vpcd will bind
            port = first.getsockname()[1]
            if port >= 65535:
                continue
            with socket.socket() as second:
                try:
                    second.bind(("0.0.0.0", port + 1))  # noqa: S104
                except OSError:
                    continue
                return int(port)
    raise PcscdStartError("no free pair of TCP ports for vpcd")


def _listening(port: int) -> bool:
    """True when something listens on TCP ``port`` (read from /proc, no connection made:
    a connection to vpcd would count as a card insertion)."""
    wanted = f":{port:04X}"
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) > 3 and fields[1].endswith(wanted) and fields[3] == "0A":
                return True
    return False


class PcscdHarness:
    """A private pcscd with two vpcd slots; start, stop, restart.

    Use as a context manager or call :meth:`start` / :meth:`stop`. The client
    side (pyscard in this process) must see ``PCSCLITE_CSOCK_NAME`` =
    :attr:`socket_path` before its first context; :meth:`export_socket_env`
    sets it.
    """

    def __init__(self, workdir: str | Path | None = None, *, base_port: int | None = None,
                 mode: str | None = None) -> None:
        self._own_workdir = workdir is None
        self.workdir = Path(workdir) if workdir is not None else Path(
            tempfile.mkdtemp(prefix="pos-pcscd-"))
        self.run_dir = self.workdir / "run"
        self.conf_dir = self.workdir / "reader.conf.d"
        self.log_path = self.workdir / "pcscd.log"
        self.base_port = base_port if base_port is not None else _free_port_pair()
        if mode not in (None, "unshare", "host"):
            raise ValueError("mode is 'unshare' or 'host'")
        self.mode = mode or ("unshare" if _unshare_works() else "host")
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def socket_path(self) -> Path:
        return socket_path_for(self.workdir)

    def port(self, slot: int) -> int:
        """vpcd TCP port of ``slot`` (0 or 1)."""
        return self.base_port + slot

    def reader_name(self, slot: int) -> str:
        return vpcd_reader_name(slot)

    def export_socket_env(self) -> None:
        """Point this process's libpcsclite at the private pcscd."""
        os.environ[SOCKET_ENV] = str(self.socket_path)

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def _write_config(self) -> None:
        driver = find_vpcd_driver()
        if driver is None:
            raise PcscdStartError(f"vpcd driver missing ({INSTALL_HINT})")
        self.conf_dir.mkdir(parents=True, exist_ok=True)
        (self.conf_dir / "vpcd").write_text(
            'FRIENDLYNAME "Virtual PCD"\n'
            f"DEVICENAME   /dev/null:{self.base_port}\n"
            f"LIBPATH      {driver}\n"
            f"CHANNELID    {self.base_port}\n"
        )

    def start(self, timeout: float = 15.0) -> None:
        """Start pcscd and wait until its socket exists and both vpcd slots listen."""
        if self.running:
            return
        pcscd = shutil.which("pcscd")
        if pcscd is None:
            raise PcscdStartError(f"pcscd is not installed ({INSTALL_HINT})")
        self._write_config()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        for stale in ("pcscd.comm", "pcscd.pid", "pcscd.pub"):
            with contextlib.suppress(FileNotFoundError):
                (self.run_dir / stale).unlink()
        env = dict(os.environ)
        if self.mode == "unshare":
            env.pop(SOCKET_ENV, None)
            script = ('mkdir -p /run/pcscd && mount --bind "$0" /run/pcscd && '
                      'exec "$1" --foreground --config "$2"')
            argv = ["unshare", "-m", "--propagation", "private", "sh", "-c", script,
                    str(self.run_dir), pcscd, str(self.conf_dir)]
        else:
            if _other_pcscd_running():
                raise PcscdStartError("another pcscd owns /run/pcscd and unshare -m is not "
                                      "permitted here")
            # pcscd itself ignores PCSCLITE_CSOCK_NAME: it listens in /run/pcscd, and
            # our socket path is a symbolic link to it, so clients need not know.
            env.pop(SOCKET_ENV, None)
            self.socket_path.symlink_to(HOST_SOCKET)
            argv = [pcscd, "--foreground", "--config", str(self.conf_dir)]
        log = self.log_path.open("ab")
        try:
            # argv is built here from which() results and our own paths.
            self._proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log,  # noqa: S603
                                          stderr=subprocess.STDOUT, env=env,
                                          start_new_session=True)
        finally:
            log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise PcscdStartError(
                    f"pcscd exited with {self._proc.returncode}: {self._log_tail()}")
            if (self.socket_path.exists() and _listening(self.port(0))
                    and _listening(self.port(1))):
                return
            time.sleep(0.02)  # polling for readiness, not waiting a fixed time
        self.stop()
        raise PcscdStartError(f"pcscd did not become ready in {timeout:.0f} s: {self._log_tail()}")

    def _log_tail(self) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").strip().splitlines()
        except OSError:
            return "(no log)"
        return " | ".join(lines[-3:]) or "(empty log)"

    def stop(self, timeout: float = 5.0) -> None:
        """Stop pcscd (SIGTERM, then SIGKILL) and wait until the vpcd ports are free."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and (_listening(self.port(0))
                                               or _listening(self.port(1))):
            time.sleep(0.02)

    def restart(self, timeout: float = 15.0) -> None:
        """Stop and start again with the same socket and ports (a pcscd upgrade or crash)."""
        self.stop()
        self.start(timeout)

    def __enter__(self) -> PcscdHarness:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
        if self._own_workdir:  # a directory we made up ourselves: leave nothing behind
            shutil.rmtree(self.workdir, ignore_errors=True)
