"""The sweep report as one self-contained HTML page (plots inlined), the form the MLflow UI shows among a run's
artifacts, and as the report run's description (its text, with a pointer to the page for the plots)."""

from __future__ import annotations

import base64
import re
from pathlib import Path

import markdown

IMAGE = re.compile(r"!\[([^\]]*)\]\((plots/[^)]+\.png)\)")
STYLE = """body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#1f2328}
table{border-collapse:collapse;font-size:13px;margin:1em 0}th,td{border:1px solid #d0d7de;padding:3px 8px;text-align:right}
th:first-child,td:first-child{text-align:left}tr:nth-child(even){background:#f6f8fa}img{max-width:100%}code{background:#eff1f3}"""


def inline_plots(text: str, folder: Path) -> str:
    """Markdown whose `![...](plots/x.png)` images are data URIs, so that the page needs no other file."""
    def data_uri(match: re.Match[str]) -> str:
        encoded = base64.b64encode((folder / match.group(2)).read_bytes()).decode()
        return f"![{match.group(1)}](data:image/png;base64,{encoded})"

    return IMAGE.sub(data_uri, text)


def write_page(report_md: Path) -> Path:
    """report.html beside report.md: its tables as HTML tables, its plots inlined."""
    body = markdown.markdown(inline_plots(report_md.read_text(), report_md.parent), extensions=["tables"])
    title = report_md.read_text().splitlines()[0].lstrip("# ")
    page = report_md.with_suffix(".html")
    page.write_text(f"<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>{title}</title><style>{STYLE}</style></head>"
                    f"<body>\n{body}\n</body></html>\n")
    return page


def description(report_md: Path, artifact_path: str) -> str:
    """The report's markdown for the run's description: plots replaced by a pointer to the page that shows them."""
    pointer = f"*(plot: open `{artifact_path}/report.html` under Artifacts)*"
    return IMAGE.sub(pointer, report_md.read_text())
