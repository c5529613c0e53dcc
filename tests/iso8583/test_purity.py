"""iso8583 stays pure: importing all of it pulls in no I/O, UI or device module."""

from __future__ import annotations

import json
import subprocess
import sys

FORBIDDEN = ("socket", "asyncio", "sqlite3", "textual", "serial", "smartcard", "selectors",
             "emulator", "drivers", "terminal")


def test_iso8583_imports_no_io_modules() -> None:
    code = (
        "import importlib, json, pkgutil, sys\n"
        "import iso8583\n"
        "for m in pkgutil.walk_packages(iso8583.__path__, 'iso8583.'):\n"
        "    if not m.name.endswith(('.cli', '__main__')):\n"
        "        importlib.import_module(m.name)\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    loaded = json.loads(out)
    bad = [m for m in loaded if m.split(".")[0] in FORBIDDEN]
    assert bad == []
