"""The report as data (sections of paragraphs, tables and PNG images) and its two renderings.

HTML is self-contained: every figure is embedded as a base64 PNG data URI, and the page has
no script, so it opens the same from disk, from an MLflow artifact view or in a mail. The
Markdown links the same PNGs from `figures/` beside it.
"""

import base64
import html
from dataclasses import dataclass
from pathlib import Path

HTML_FILE = "report.html"
MARKDOWN_FILE = "report.md"
FIGURES_DIR = "figures"


@dataclass(frozen=True)
class Table:
    header: list[str]
    rows: list[list[str]]


@dataclass(frozen=True)
class Image:
    name: str  # file name under figures/
    caption: str
    png: bytes


Block = str | Table | Image  # a str is one paragraph of plain text


@dataclass(frozen=True)
class Section:
    title: str
    blocks: list[Block]


def write_report(title: str, sections: list[Section], out: Path) -> list[Path]:
    """Write report.html, report.md and figures/*.png under `out`; returns the paths written."""
    figures_dir = out / FIGURES_DIR
    figures_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for section in sections:
        for block in section.blocks:
            if isinstance(block, Image):
                path = figures_dir / block.name
                path.write_bytes(block.png)
                written.append(path)
    for name, text in (
        (HTML_FILE, to_html(title, sections)),
        (MARKDOWN_FILE, to_markdown(title, sections)),
    ):
        (out / name).write_text(text, encoding="utf-8")
        written.append(out / name)
    return written


CSS = """
body { font-family: sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em; color: #222; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
figure { margin: 1em 0; }
img { max-width: 100%; height: auto; }
figcaption { font-size: 0.85em; color: #555; }
"""


def to_html(title: str, sections: list[Section]) -> str:
    esc = html.escape
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{esc(title)}</title><style>{CSS}</style></head><body>",
        f"<h1>{esc(title)}</h1>",
    ]
    for section in sections:
        parts.append(f"<h2>{esc(section.title)}</h2>")
        for block in section.blocks:
            if isinstance(block, Table):
                head = "".join(f"<th>{esc(cell)}</th>" for cell in block.header)
                body = "".join(
                    "<tr>" + "".join(f"<td>{esc(cell)}</td>" for cell in row) + "</tr>"
                    for row in block.rows
                )
                parts.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
            elif isinstance(block, Image):
                data = base64.b64encode(block.png).decode("ascii")
                parts.append(
                    f'<figure><img src="data:image/png;base64,{data}" alt="{esc(block.caption)}">'
                    f"<figcaption>{esc(block.caption)}</figcaption></figure>"
                )
            else:
                parts.append(f"<p>{esc(block)}</p>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def to_markdown(title: str, sections: list[Section]) -> str:
    def cells(row: list[str]) -> str:
        return "| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |"

    lines = [f"# {title}", ""]
    for section in sections:
        lines += [f"## {section.title}", ""]
        for block in section.blocks:
            if isinstance(block, Table):
                lines += [cells(block.header), cells(["---"] * len(block.header))]
                lines += [cells(row) for row in block.rows]
            elif isinstance(block, Image):
                lines += [
                    f"![{block.caption}]({FIGURES_DIR}/{block.name})",
                    "",
                    f"*{block.caption}*",
                ]
            else:
                lines.append(block)
            lines.append("")
    return "\n".join(lines)
