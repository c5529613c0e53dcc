"""One response-code table: every code DESIGN.md names is explained, with a next step."""

from __future__ import annotations

import pytest

from iso8583 import responses
from iso8583.responses import TerminalAction, explain, known_codes

DESIGN_CODES = ["00", "05", "12", "13", "14", "25", "51", "54", "55", "61", "64", "94", "96",
                "98", "A0"]
TABLE_CODES = ["00", "03", "05", "12", "13", "14", "25", "30", "41", "51", "54", "55", "61",
               "64", "77", "94", "96", "98", "A0"]


def test_design_codes_explained() -> None:
    for code in DESIGN_CODES:
        text = explain(code)
        assert code in known_codes()
        assert text.zh
        assert text.en
        assert text.zh != text.en


def test_table_covers_every_code_the_host_answers() -> None:
    assert set(TABLE_CODES) <= set(known_codes())


@pytest.mark.parametrize("code", TABLE_CODES)
def test_terminal_action(code: str) -> None:
    want = {"00": TerminalAction.APPROVED, "A0": TerminalAction.SIGN_ON_AGAIN,
            "77": TerminalAction.SIGN_ON_AGAIN}.get(code, TerminalAction.DECLINED)
    assert explain(code).terminal_action is want
    assert explain(code).approved == (code == "00")


def test_constants_name_table_entries() -> None:
    assert responses.MAC_ERROR == "A0"
    assert responses.ORIGINAL_NOT_FOUND == "25"
    assert explain(responses.SIGN_ON_AGAIN).en == "Sign on again"
    assert {"A0", "77", "03", "30"} == responses.UNMACED_CODES


def test_unknown_code_shows_the_code() -> None:
    assert "Q9" in explain("Q9").en
    assert explain("Q9").terminal_action is TerminalAction.DECLINED
    assert explain(None).en == "No answer"
