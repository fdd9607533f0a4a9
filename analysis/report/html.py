"""index.md as a self-contained index.html: one file a person can open from the file system
(or mail) and see every figure, because each image is inlined as a base64 data URI; the
links to PDFs, Parquet and CSV stay relative, so they work beside the files.

The page is rendered from the same Markdown as index.md (python-markdown), so the two never
disagree. Verdict cells are tinted by verdict, so the eye finds what is resolved.

The page must be safe to open whatever the run folders held (analysis/markup.py escapes
their values before they reach the Markdown; this is the second and third line):
- python-markdown's raw-HTML passthrough is switched off: a tag in the Markdown is shown
  as text, never parsed;
- only the images the report itself wrote (`images`, inside its folder) are inlined; any
  other image in the Markdown is dropped to its alt text, so no file from elsewhere on the
  disk ends up in a mailed page and no image fetches anything;
- a Content-Security-Policy in the page forbids every script, and every request except the
  inlined images and the page's own style.
"""

from __future__ import annotations

import base64
import html
import re
from collections.abc import Iterable
from pathlib import Path

from experiments.records import atomic_write_text

TINTS = {"better": "#c8ecdc", "confirmed": "#c8ecdc", "worse": "#f6d5c0",
         "contradicted": "#f6d5c0", "equivalent": "#cfe2f3", "unresolved": "#e4e4e4"}
STYLE = """
body { font-family: Georgia, 'Times New Roman', serif; max-width: 72rem; margin: 2rem auto;
       padding: 0 1rem; color: #222; line-height: 1.45; }
table { border-collapse: collapse; margin: 0.8rem 0; font-size: 0.9rem; }
th, td { border: 1px solid #bbb; padding: 0.25rem 0.5rem; text-align: left;
         overflow-wrap: anywhere; }
th { background: #f3f3f3; }
img { max-width: 100%; height: auto; }
code { background: #f6f6f6; padding: 0 0.2rem; }
""" + "\n".join(f"td.{name} {{ background: {tint}; }}" for name, tint in TINTS.items())
CSP = ("default-src 'none'; script-src 'none'; img-src data:; style-src 'unsafe-inline'; "
       "base-uri 'none'; form-action 'none'")
IMAGE_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg"}
_IMG = re.compile(r"<img\b[^>]*>")
_ATTRIBUTE = r'\b{}="([^"]*)"'


def _inline(match: re.Match, folder: Path, images: set[Path]) -> str:
    """The image as a data URI when the report wrote it, else its alt text."""
    alt, source = (re.search(_ATTRIBUTE.format(name), match.group(0))
                   for name in ("alt", "src"))
    alt = alt.group(1) if alt else ""
    if source is None:
        return f"[image not inlined: {alt}]"
    path = (folder / html.unescape(source.group(1))).resolve()
    if path not in images or path.suffix.lower() not in IMAGE_TYPES or not path.is_file():
        return f"[image not inlined: {alt}]"
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img alt="{alt}" src="data:{IMAGE_TYPES[path.suffix.lower()]};base64,{data}">'


def _tint(match: re.Match) -> str:
    attributes, text = match.groups()
    kind = next((k for k in TINTS if text.startswith(k)), None)
    return f'<td class="{kind}"{attributes}>{text}</td>' if kind else match.group(0)


def render(markdown_text: str, folder: Path, images: Iterable[Path] = ()) -> str:
    """The page of `markdown_text`; `images`: the files under `folder` it may inline."""
    import markdown

    converter = markdown.Markdown(extensions=["tables", "fenced_code"], output_format="html")
    converter.preprocessors.deregister("html_block")  # no raw HTML: tags stay text
    converter.inlinePatterns.deregister("html")
    body = converter.convert(markdown_text)
    root = folder.resolve()
    allowed = {p for p in (Path(i).resolve() for i in images) if p.is_relative_to(root)}
    body = _IMG.sub(lambda m: _inline(m, folder, allowed), body)
    body = re.sub(r"<td([^>]*)>([^<]*)</td>", _tint, body)
    heading = re.search(r"<h1>(.*?)</h1>", body, re.DOTALL)
    title = re.sub(r"<[^>]*>", "", heading.group(1)) if heading else "report"  # escaped
    return (f"<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            f"<meta http-equiv=\"Content-Security-Policy\" content=\"{CSP}\">\n"
            f"<title>{title}</title>\n<style>{STYLE}</style>\n</head>\n"
            f"<body>\n{body}\n</body>\n</html>\n")


def write_html(index_md: Path, images: Iterable[Path] = ()) -> Path:
    """index.html beside `index_md`, from its text, inlining `images` (files the report
    wrote in its folder); returns its path."""
    out = index_md.with_suffix(".html")
    atomic_write_text(out, render(index_md.read_text(), index_md.parent, images))
    return out
