"""Item text: clean-up of attribute values and rendering them into one string per item."""

from __future__ import annotations

import html

import pyarrow as pa
import pyarrow.compute as pc

SEPARATORS = {"key_colon_value": "\n", "key_value": " ", "values": ". "}


def clean(values: pa.Array) -> pa.Array:
    """Unescape HTML entities (`AT&amp;T`), collapse whitespace runs, trim; nulls become ""."""
    unescaped = pa.array([html.unescape(v) if v and "&" in v else v for v in values.to_pylist()], pa.string())
    collapsed = pc.replace_substring_regex(unescaped, r"\s+", " ")
    return pc.fill_null(pc.utf8_trim_whitespace(collapsed), "")


def concrete_template(template: str, fields: list[str]) -> str:
    """`auto`: the bare value where an item has one attribute ("Red pen", not "title: Red pen"), else
    "key: value" lines."""
    if template != "auto":
        return template
    return "values" if len(fields) == 1 else "key_colon_value"


def render(items: pa.Table, fields: list[str], template: str) -> pa.Array:
    """One text per item from its (cleaned) attribute columns; empty attributes are left out.

    `key_colon_value` gives "title: X" lines, `key_value` Recformer's "title X brand Y",
    `values` the bare values joined by ". ", `auto` one of the first and last (`concrete_template`).
    """
    template = concrete_template(template, fields)
    parts = []
    for name in fields:
        column = items.column(name)
        nonempty = pc.not_equal(pc.utf8_length(column), 0)
        if template == "key_colon_value":
            piece = pc.binary_join_element_wise(name + ":", column, " ")
        elif template == "key_value":
            piece = pc.binary_join_element_wise(name, column, " ")
        else:
            piece = column
        parts.append(pc.if_else(nonempty, piece, pa.scalar(None, pa.string())))
    # pyarrow's null-skipping join drops rows whose every part is null (pyarrow 26), which would shift
    # texts onto the wrong items; a leading "" keeps every row, and the separator it adds is cut off.
    separator = SEPARATORS[template]
    lead = pa.array([""] * items.num_rows, pa.string())
    joined = pc.binary_join_element_wise(lead, *parts, separator, null_handling="skip")
    return pc.utf8_slice_codeunits(joined, len(separator))
