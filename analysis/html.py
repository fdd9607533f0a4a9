"""index.md as a self-contained index.html: one file a person can open from the file system
(or mail) and see every figure, because each image is inlined as a base64 data URI; the
links to PDFs, Parquet and CSV stay relative, so they work beside the files.

The page is rendered from the same Markdown as index.md (python-markdown), so the two never
disagree. Verdict cells are tinted by verdict, so the eye finds what is resolved.
"""

from __future__ import annotations

import base64
import html
import mimetypes
import re
from pathlib import Path

from experiments.records import atomic_write_text

TINTS = {"better": "#c8ecdc", "confirmed": "#c8ecdc", "worse": "#f6d5c0",
         "contradicted": "#f6d5c0", "equivalent": "#cfe2f3", "unresolved": "#e4e4e4"}
STYLE = """
body { font-family: Georgia, 'Times New Roman', serif; max-width: 72rem; margin: 2rem auto;
       padding: 0 1rem; color: #222; line-height: 1.45; }
table { border-collapse: collapse; margin: 0.8rem 0; font-size: 0.9rem; }
th, td { border: 1px solid #bbb; padding: 0.25rem 0.5rem; text-align: left; }
th { background: #f3f3f3; }
img { max-width: 100%; height: auto; }
code { background: #f6f6f6; padding: 0 0.2rem; }
""" + "\n".join(f"td.{name} {{ background: {tint}; }}" for name, tint in TINTS.items())


def _inline(match: re.Match, folder: Path) -> str:
    source = html.unescape(match.group(2))
    path = folder / source
    if "://" in source or source.startswith("data:") or not path.is_file():
        return match.group(0)
    kind = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'{match.group(1)}data:{kind};base64,{data}{match.group(3)}'


def _tint(match: re.Match) -> str:
    attributes, text = match.groups()
    kind = next((k for k in TINTS if text.startswith(k)), None)
    return f'<td class="{kind}"{attributes}>{text}</td>' if kind else match.group(0)


def render(markdown_text: str, folder: Path, title: str) -> str:
    import markdown

    body = markdown.markdown(markdown_text, extensions=["tables", "fenced_code"],
                             output_format="html")
    body = re.sub(r'(<img[^>]*?src=")([^"]+)(")', lambda m: _inline(m, folder), body)
    body = re.sub(r"<td([^>]*)>([^<]*)</td>", _tint, body)
    return (f"<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            f"<title>{html.escape(title)}</title>\n<style>{STYLE}</style>\n</head>\n"
            f"<body>\n{body}\n</body>\n</html>\n")


def write_html(index_md: Path) -> Path:
    """index.html beside `index_md`, from its text; returns its path."""
    text = index_md.read_text()
    title = text.splitlines()[0].lstrip("# ").replace("`", "") if text else "report"
    out = index_md.with_suffix(".html")
    atomic_write_text(out, render(text, index_md.parent, title))
    return out
