"""Values from run folders and user files, made literal for Markdown.

A report (index.md, index.html, verdicts.md) is made to be mailed and opened by others, and
everything a run folder holds is data: a path, a knob value, an error message, a host name,
a sweep or study name may hold Markdown or HTML syntax, control characters or bytes that
were not UTF-8. `literal` turns such a value into Markdown that reads as exactly that text
in python-markdown (the HTML writer, analysis/report/html.py) and in CommonMark viewers,
and leaves an ordinary value (a path, `fashion-mnist`, `at_start`, `84.2 [83.1, 85.0]`)
unchanged, so the Markdown stays readable as plain text:

- `\\`, `` ` ``, `*`, `|` and an underscore at a word's edge are backslash-escaped (code
  spans, emphasis, table cells); an underscore inside a word is never emphasis and stays;
- `<`, `>`, `&`, `~` become entities (raw HTML, autolinks, entity references, GitHub's
  strike-through, which python-markdown cannot backslash-escape);
- `](` and `][` become `]\\(` and `]\\[` (no link or image, which would leave the page);
- control and format characters (a newline that would end a table row, a terminal escape,
  a right-to-left override, a byte that was not UTF-8 read back as a surrogate) are shown
  as `\\xNN` or `\\uNNNN`, so no value starts a new Markdown line;
- a value longer than LIMIT characters is cut, saying how many characters were left out.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Any

import pandas as pd

LIMIT = 300
_ENTITIES = {"<": "&lt;", ">": "&gt;", "&": "&amp;", "~": "&#126;"}
_SPECIAL = re.compile(r"[\\`*|~<>&]|\](?=[(\[])|(?<![^\W_])_|_(?![^\W_])")


def visible(text: str) -> str:
    """`text` with every control, format, surrogate or unassigned character as an escape."""
    def shown(ch: str) -> str:
        if unicodedata.category(ch)[0] != "C":
            return ch
        code = ord(ch)
        return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 \
            else f"\\U{code:08x}"
    return "".join(shown(ch) for ch in text)


def _escape(match: re.Match) -> str:
    text = match.group(0)
    if text in _ENTITIES:
        return _ENTITIES[text]
    return "]\\" if text == "]" else "\\" + text


def literal(value: Any, limit: int = LIMIT) -> str:
    """Markdown that shows str(value) as text (see the module docstring)."""
    text = visible(value if isinstance(value, str) else str(value))
    if len(text) > limit:
        text = f"{text[:limit]}… ({len(text) - limit} more characters)"
    return _SPECIAL.sub(_escape, text)


def literal_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """`frame` with every text cell and column name made literal (numbers stay numbers)."""
    out = frame.map(lambda v: literal(v) if isinstance(v, str) else v)
    out.columns = [literal(c) if isinstance(c, str) else c for c in frame.columns]
    return out


def markdown_table(frame: pd.DataFrame) -> str:
    """A pipe table of `frame` whose cells and headers read as the text they hold."""
    return literal_frame(frame).to_markdown(index=False, disable_numparse=True) + "\n"


def literal_fields(record: Any) -> Any:
    """A NamedTuple (nested ones too) whose text and DataFrame fields are made literal: the
    values a report's section was computed from, ready to be written into its Markdown."""
    if isinstance(record, str):
        return literal(record)
    if isinstance(record, pd.DataFrame):
        return literal_frame(record)
    if isinstance(record, tuple) and hasattr(record, "_fields"):
        return record._replace(**{name: literal_fields(getattr(record, name))
                                  for name in record._fields})
    return record
