"""Load the public crypto test vectors committed in tests/vectors/crypto.json."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[3]
LOCAL = REPO_ROOT / "tests" / "vectors" / "crypto.json"
#: The team's shared copy, beside the repo on dev machines and in CI clones.
SHARED = REPO_ROOT.parent / "shared" / "vectors" / "crypto.json"


@cache
def vectors() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(LOCAL.read_text(encoding="utf-8"))
    return data


def vector(name: str) -> dict[str, str]:
    item: dict[str, str] = vectors()[name]
    return item


def h(text: str) -> bytes:
    return bytes.fromhex(text)
