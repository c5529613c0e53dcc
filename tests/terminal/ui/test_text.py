"""The catalogue: every key in both languages, every progress step worded, no text in screens."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from terminal.core.ports import Step
from terminal.core.records import RefundReason, TxnKind, TxnStatus
from terminal.ui import text

UI = Path(text.__file__).parent
CJK = re.compile(r"[\u4e00-\u9fff]")


def test_every_key_has_both_languages() -> None:
    assert text.missing_keys() == []


@pytest.mark.parametrize("step", list(Step))
def test_every_progress_step_is_worded(step: Step) -> None:
    assert text.step_text(step, "zh") != text.step_text(step, "en")


def test_kinds_statuses_and_reasons_are_worded() -> None:
    for lang in text.LANGS:
        for kind in TxnKind:
            assert text.kind_text(kind, lang)
        for status in TxnStatus:
            assert text.status_text(status, lang)
        for reason in RefundReason:
            assert text.reason_text(reason, lang)


def test_catalogue_keys_used_by_screens_exist() -> None:
    used: set[str] = set()
    for path in UI.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) \
                    and re.fullmatch(r"[a-z]+(_[a-z0-9]+)+", node.value) \
                    and node.value in text.TEXT:
                used.add(node.value)
    assert used, "screens use catalogue keys"


#: text.py is the catalogue; web.py is the ``pos-terminal web`` launcher (CLI text, not a screen).
NOT_SCREENS = ("text.py", "web.py")


SCREEN_FILES = sorted(p.name for p in UI.glob("*.py") if p.name not in NOT_SCREENS)


@pytest.mark.parametrize("path", SCREEN_FILES)
def test_no_chinese_text_outside_the_catalogue(path: str) -> None:
    """Screens hold no cashier text of their own (docstrings and comments may name things)."""
    tree = ast.parse((UI / path).read_text(encoding="utf-8"))
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef
                                | ast.AsyncFunctionDef)
                  and node.body and isinstance(node.body[0], ast.Expr)}
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) \
                and id(node) not in docstrings:
            assert not CJK.search(node.value), f"{path}: {node.value!r}"
