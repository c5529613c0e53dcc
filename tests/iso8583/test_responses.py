"""Every response code DESIGN.md names is explained in both languages."""

from __future__ import annotations

from terminal.response_codes import explain, known_codes

DESIGN_CODES = ["00", "05", "12", "13", "14", "25", "51", "54", "55", "61", "64", "94", "96",
                "98", "A0"]


def test_design_codes_explained() -> None:
    for code in DESIGN_CODES:
        text = explain(code)
        assert code in known_codes()
        assert text.zh
        assert text.en
        assert text.zh != text.en


def test_unknown_code_shows_the_code() -> None:
    assert "Q9" in explain("Q9").en
    assert explain(None).en == "No answer"
