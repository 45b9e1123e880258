"""Rendering item text from cleaned attribute columns."""

from __future__ import annotations

import pyarrow as pa
import pytest

from pipeline.text import clean, render


@pytest.mark.parametrize(("template", "expected"), [
    ("key_colon_value", ["title: Pen\nbrand: Acme", "", "brand: Zed"]),
    ("key_value", ["title Pen brand Acme", "", "brand Zed"]),
    ("values", ["Pen. Acme", "", "Zed"]),
])
def test_items_with_every_attribute_empty_keep_their_row(template: str, expected: list[str]) -> None:
    items = pa.table({"item_id": ["a", "b", "c"], "title": clean(pa.array(["Pen", " ", None])),
                      "brand": clean(pa.array(["Acme", "", "Zed"]))})
    assert render(items, ["title", "brand"], template).to_pylist() == expected


def test_no_fields_gives_empty_texts() -> None:
    items = pa.table({"item_id": ["a", "b"]})
    assert render(items, [], "values").to_pylist() == ["", ""]


def test_clean_unescapes_html_and_collapses_whitespace() -> None:
    assert clean(pa.array(["AT&amp;T  phone\n", None])).to_pylist() == ["AT&T phone", ""]


def test_auto_renders_a_single_attribute_as_its_bare_value() -> None:
    items = pa.table({"item_id": ["a", "b"], "title": clean(pa.array(["Red pen", "Notebook"])),
                      "brand": clean(pa.array(["Acme", ""]))})
    assert render(items, ["title"], "auto").to_pylist() == ["Red pen", "Notebook"]
    assert render(items, ["title", "brand"], "auto").to_pylist() == ["title: Red pen\nbrand: Acme", "title: Notebook"]
