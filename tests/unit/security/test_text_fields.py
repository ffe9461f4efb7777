"""``PlainText``: the one validator every text field of every request model uses."""

from __future__ import annotations

import pytest
from pydantic import BaseModel, ValidationError

from app.security.text import PlainText

pytestmark = pytest.mark.unit


class Field(BaseModel):
    value: PlainText


@pytest.mark.parametrize(
    "text",
    ["a \ud800", "\udfff", "pair reversed \udc00\ud800", "nul \u0000", "bell \u0007", "del \u007f"],
    ids=["lone-high", "lone-low", "reversed-pair", "nul", "bell", "del"],
)
def test_text_that_is_not_plain_utf8_is_refused(text: str) -> None:
    with pytest.raises(ValidationError) as refused:
        Field(value=text)
    assert refused.value.errors()[0]["type"] == "value_error"


@pytest.mark.parametrize("text", ["plain", "tab\tand\nlines\r\n", "été 東京 😀 \U0010ffff", ""])
def test_any_encodable_text_without_controls_passes(text: str) -> None:
    assert Field(value=text).value == text
    text.encode("utf-8")
