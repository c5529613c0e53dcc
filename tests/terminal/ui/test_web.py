"""``pos-terminal web`` serves the cashier app over HTTP and a websocket on loopback."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def web_server(tmp_path: Path) -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    port = _free_port()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "terminal.cli", "--lang", "en", "web", "--port", str(port),
         "--training-dir", str(tmp_path / "training"), "--in-process"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                break
        if proc.poll() is not None:
            raise AssertionError(proc.stdout.read().decode() if proc.stdout else "exited")
        time.sleep(0.1)
    yield port, proc
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)


def test_page_and_websocket_answer(web_server: tuple[int, subprocess.Popen[bytes]]) -> None:
    port, _ = web_server

    async def talk() -> tuple[str, bytes]:
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{port}/") as page:
                assert page.status == 200
                html = await page.text()
            screen = b""
            async with http.ws_connect(f"ws://127.0.0.1:{port}/ws?width=80&height=24") as ws:
                await ws.send_json(["ping", "hello"])
                deadline = time.monotonic() + 60
                pong = False
                while time.monotonic() < deadline and not (pong and b"Operator" in screen):
                    msg = await ws.receive(timeout=deadline - time.monotonic())
                    if msg.type == aiohttp.WSMsgType.TEXT:
                        pong = pong or msg.json() == ["pong", "hello"]
                    elif msg.type == aiohttp.WSMsgType.BINARY:
                        screen += msg.data
                    else:
                        break
                assert pong
            return html, screen

    html, screen = asyncio.run(talk())
    assert "/ws" in html
    assert b"Operator" in screen  # the login screen of the training till reached the browser
    assert b"TRAINING" in screen
