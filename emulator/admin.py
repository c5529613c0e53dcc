"""The acquirer emulator's control channel: change faults and read counters at run time.

A running ``pos-emulator serve`` listens for JSON lines on a Unix socket next to
its ledger (``<ledger>.admin.sock``, mode 0600) or, when told, on a TCP port on
127.0.0.1. One request per line, one answer per line::

    {"cmd": "list"}                      -> {"ok": true, "faults": [{"spec", "fired", "armed"}...]}
    {"cmd": "add", "spec": "drop@p=0.1"} -> {"ok": true, "added": ["drop@p=0.1"], "faults": [...]}
    {"cmd": "clear"}                     -> {"ok": true, "cleared": 2, "faults": []}
    {"cmd": "stats"}                     -> {"ok": true, "stats": {...server counters...}}
    anything else                        -> {"ok": false, "error": "..."}

``pos-emulator faults add SPEC | clear | list | stats [--admin ADDR]`` is the
client side (:func:`admin_request`). With ``serve --workers N`` the supervisor
serves this channel and relays each request to every worker
(:mod:`emulator.workers`): the answers then sum the workers' counters.
Addresses: ``unix:/path``, a path with a ``/`` in it, ``tcp:127.0.0.1:5859``,
``127.0.0.1:5859`` or a bare port.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from emulator.host.errors import HostError
from emulator.host.faults import FaultPlan, FaultSpecError

log = logging.getLogger(__name__)

MAX_LINE = 16_384
#: seconds stop() gives the handlers of the clients it closed to end
STOP_WAIT = 2.0
#: sun_path is 108 bytes on Linux, NUL included
UNIX_PATH_MAX = 107


class AdminError(HostError):
    """The admin channel cannot be reached, or its address or answer is bad."""


@dataclass(frozen=True)
class AdminAddress:
    """Where the control channel listens: a Unix socket path or a TCP host and port."""

    path: Path | None = None
    host: str = "127.0.0.1"
    port: int = 0

    def __str__(self) -> str:
        return f"unix:{self.path}" if self.path is not None else f"tcp:{self.host}:{self.port}"


def default_admin_address(ledger: str | Path) -> AdminAddress:
    """The Unix socket next to ``ledger``: ``<ledger>.admin.sock``."""
    ledger = Path(ledger)
    return AdminAddress(path=ledger.with_name(ledger.name + ".admin.sock"))


def parse_admin_address(text: str) -> AdminAddress:
    """Parse ``unix:PATH``, ``PATH`` (with a /), ``tcp:HOST:PORT``, ``HOST:PORT`` or ``PORT``."""
    text = text.strip()
    if text.startswith("unix:"):
        path = text[5:]
        if not path:
            raise AdminError("unix: needs a socket path")
        return AdminAddress(path=Path(path))
    if "/" in text or text.endswith(".sock"):
        return AdminAddress(path=Path(text))
    rest = text.removeprefix("tcp:")
    host, colon, port = rest.rpartition(":")
    if not colon:
        host, port = "", rest
    if not port.isdigit() or int(port) > 65535:
        raise AdminError(f"bad admin address {text!r}: use unix:PATH or tcp:127.0.0.1:PORT")
    return AdminAddress(host=host or "127.0.0.1", port=int(port))


def admin_dispatch(plan: FaultPlan, stats: Callable[[], Mapping[str, object]],
                   request: object) -> dict[str, object]:
    """Answer one decoded admin request (sans-I/O: the server and tests both use it)."""
    if not isinstance(request, dict):
        return {"ok": False, "error": "request must be a JSON object"}
    cmd = request.get("cmd")
    if cmd == "list":
        return {"ok": True, "faults": plan.describe()}
    if cmd == "add":
        spec = request.get("spec")
        if not isinstance(spec, str):
            return {"ok": False, "error": "add needs a 'spec' string"}
        try:
            rules = plan.add(spec)
        except FaultSpecError as exc:
            return {"ok": False, "error": str(exc)}
        log.info("faults added at run time: %s", spec)
        return {"ok": True, "added": [r.spec for r in rules], "faults": plan.describe()}
    if cmd == "clear":
        count = plan.clear()
        log.info("faults cleared at run time (%d)", count)
        return {"ok": True, "cleared": count, "faults": []}
    if cmd == "stats":
        return {"ok": True, "stats": dict(stats()), "faults": plan.describe()}
    return {"ok": False, "error": f"unknown command {cmd!r}; use list, add, clear or stats"}


#: answers one decoded admin request (a relay may need to wait for others)
AdminHandler = Callable[[object], Awaitable[dict[str, object]]]


class AdminServer:
    """Serves admin requests as JSON lines on a Unix socket or loopback TCP.

    ``AdminServer(plan, stats)`` answers with :func:`admin_dispatch` over one
    process's fault plan and counters; ``AdminServer.relay(handler)`` hands each
    request to ``handler`` instead (the ``--workers`` supervisor).
    """

    def __init__(self, plan: FaultPlan, stats: Callable[[], Mapping[str, object]]) -> None:
        async def dispatch(request: object) -> dict[str, object]:
            return admin_dispatch(plan, stats, request)

        self._handle: AdminHandler = dispatch
        self._server: asyncio.Server | None = None
        self.address: AdminAddress | None = None
        # the clients connected now (closed by stop) and their handlers' tasks
        self._clients: dict[asyncio.StreamWriter, asyncio.Task[Any]] = {}

    @classmethod
    def relay(cls, handler: AdminHandler) -> AdminServer:
        """A channel whose requests ``handler`` answers."""
        server = cls(FaultPlan(), dict)
        server._handle = handler
        return server

    async def start(self, address: AdminAddress) -> AdminAddress:
        """Listen; returns the address actually bound (the real port for port 0)."""
        if address.path is not None:
            path = address.path
            if len(os.fsencode(path)) > UNIX_PATH_MAX:
                raise AdminError(f"admin socket path too long ({len(str(path))} > "
                                 f"{UNIX_PATH_MAX}): pass --admin tcp:127.0.0.1:PORT")
            if path.exists():
                if _unix_in_use(path):
                    raise AdminError(f"admin socket {path} is in use by another emulator")
                path.unlink()
            old = os.umask(0o177)  # the socket is created 0600
            try:
                self._server = await asyncio.start_unix_server(self._serve, path,
                                                               limit=MAX_LINE)
            except OSError as exc:
                raise AdminError(f"cannot listen on {path}: {exc.strerror}") from None
            finally:
                os.umask(old)
            self.address = address
        else:
            try:
                self._server = await asyncio.start_server(self._serve, address.host,
                                                          address.port, limit=MAX_LINE)
            except OSError as exc:
                raise AdminError(f"cannot listen on {address}: {exc.strerror}") from None
            port = int(self._server.sockets[0].getsockname()[1])
            self.address = AdminAddress(host=address.host, port=port)
        return self.address

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            # a client still connected is closed and its handler ends (reads the end)
            # before the loop does: a handler cancelled at the loop's end is logged with a
            # traceback (Python 3.11's streams ask a cancelled task for its exception)
            for writer in list(self._clients):
                writer.close()
            if self._clients:
                await asyncio.wait(list(self._clients.values()), timeout=STOP_WAIT)
            await self._server.wait_closed()
        if self.address is not None and self.address.path is not None:
            with contextlib.suppress(OSError):
                self.address.path.unlink()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._clients[writer] = task
        try:
            while True:
                try:
                    line = await asyncio.wait_for(reader.readline(), 60)
                except (TimeoutError, ValueError, ConnectionError):
                    return  # idle, over-long line, or gone
                if not line:
                    return
                try:
                    request: object = json.loads(line)
                except (json.JSONDecodeError, UnicodeDecodeError):
                    answer: dict[str, object] = {"ok": False, "error": "not JSON"}
                else:
                    answer = await self._handle(request)
                writer.write(json.dumps(answer).encode() + b"\n")
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            self._clients.pop(writer, None)
            writer.close()


def _unix_in_use(path: Path) -> bool:
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.settimeout(1)
        probe.connect(str(path))
    except OSError:
        return False
    finally:
        probe.close()
    return True


def admin_request(address: AdminAddress, request: Mapping[str, object], *,
                  timeout: float = 5.0) -> dict[str, object]:
    """Send one request to a running emulator's admin channel and return its answer."""
    try:
        if address.path is not None:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            target: str | tuple[str, int] = str(address.path)
        else:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            target = (address.host, address.port)
        with sock:
            sock.settimeout(timeout)
            sock.connect(target)
            sock.sendall(json.dumps(dict(request)).encode() + b"\n")
            data = b""
            while not data.endswith(b"\n"):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
    except OSError as exc:
        raise AdminError(f"cannot reach the emulator's admin channel at {address}: "
                         f"{exc.strerror or type(exc).__name__}") from None
    try:
        answer = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise AdminError(f"the admin channel at {address} did not answer in JSON") from None
    if not isinstance(answer, dict):
        raise AdminError(f"the admin channel at {address} answered {answer!r}")
    return answer
