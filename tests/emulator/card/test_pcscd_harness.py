"""The private-pcscd harness: availability reasons and port probing (no pcscd started here;
the HIL suite starts real ones)."""

from __future__ import annotations

import os
import shutil
import socket
from pathlib import Path

import pytest

from emulator.card import pcscd_harness as h


def test_reason_when_pcscd_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shutil, "which", lambda _name: None)
    reason = h.unavailable_reason()
    assert reason is not None
    assert "pcscd is not installed" in reason
    assert h.INSTALL_HINT in reason


def test_reason_when_vpcd_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: f"/usr/sbin/{name}")
    monkeypatch.setattr(h, "find_vpcd_driver", lambda: None)
    reason = h.unavailable_reason()
    assert reason is not None
    assert "vpcd" in reason
    assert "vsmartcard-vpcd" in reason


def test_reason_when_not_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: f"/usr/sbin/{name}")
    monkeypatch.setattr(h, "find_vpcd_driver", lambda: "/usr/lib/libifdvpcd.so")
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert h.unavailable_reason() == (
        "starting a private pcscd needs root (run the HIL tests as root)")


def test_reason_when_another_pcscd_and_no_namespaces(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: f"/usr/sbin/{name}")
    monkeypatch.setattr(h, "find_vpcd_driver", lambda: "/usr/lib/libifdvpcd.so")
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setattr(h, "_unshare_works", lambda: False)
    monkeypatch.setattr(h, "_other_pcscd_running", lambda: True)
    reason = h.unavailable_reason()
    assert reason is not None
    assert "another pcscd" in reason
    monkeypatch.setattr(h, "_other_pcscd_running", lambda: False)
    assert h.unavailable_reason() is None  # falls back to a pcscd in the host namespace


def test_paths_and_names(tmp_path: Path) -> None:
    assert h.socket_path_for(tmp_path) == tmp_path / "run" / "pcscd.comm"
    assert h.vpcd_reader_name(0) == "Virtual PCD 00 00"
    assert h.vpcd_reader_name(1) == "Virtual PCD 00 01"
    harness = h.PcscdHarness(tmp_path, base_port=40100)
    assert harness.socket_path == tmp_path / "run" / "pcscd.comm"
    assert (harness.port(0), harness.port(1)) == (40100, 40101)
    assert not harness.running
    harness.stop()  # stopping what never started is harmless


def test_free_port_pair_and_listening_probe() -> None:
    port = h._free_port_pair()
    assert not h._listening(port)
    with socket.create_server(("127.0.0.1", port)):
        assert h._listening(port)
    assert not h._listening(port)
