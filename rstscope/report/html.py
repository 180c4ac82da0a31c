"""The HTML report: one self-contained file (inline CSS, figures as base64 PNG, no script, no
external resource), rendered from the blocks of :mod:`rstscope.report.sections`."""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Sequence

from rstscope.report import sections as S

CSS = """
:root { color-scheme: light; }
body { font: 15px/1.5 system-ui, -apple-system, "Segoe UI", "DejaVu Sans", sans-serif; color: #1d1d1f;
       background: #fff; margin: 0; }
main { max-width: 1180px; margin: 0 auto; padding: 24px 32px 64px; }
h1 { font-size: 26px; margin: 8px 0 4px; }
h2 { font-size: 20px; margin: 32px 0 8px; border-bottom: 1px solid #ddd; padding-bottom: 4px; }
h3 { font-size: 17px; margin: 24px 0 6px; }
p.lead { font-size: 17px; font-weight: 600; background: #fff4e5; border-left: 4px solid #e8590c;
         padding: 10px 14px; }
p.note { color: #555; font-size: 13px; }
code { font: 13px/1.4 ui-monospace, "DejaVu Sans Mono", monospace; background: #f3f3f3; padding: 1px 4px;
       border-radius: 3px; white-space: nowrap; }
table { border-collapse: collapse; margin: 8px 0 4px; font-size: 13.5px; width: 100%; }
th, td { border: 1px solid #ddd; padding: 4px 8px; vertical-align: top; text-align: left; }
th { background: #f6f6f6; }
td code { white-space: normal; overflow-wrap: anywhere; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
tr:nth-child(even) td { background: #fbfbfb; }
p.notice { font-size: 13px; color: #8a4b00; margin: 2px 0 12px; }
figure { margin: 16px 0 24px; }
figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { font-size: 13px; color: #555; }
section.run { border-top: 3px solid #333; margin-top: 40px; }
"""

FIGURE_DPI = 110
"""PNG resolution of embedded figures (keeps a report with a few figures around 1 MB)."""


def _text(text: S.Text) -> str:
    if isinstance(text, S.Code):
        return f"<code>{html.escape(text.text)}</code>"
    if isinstance(text, tuple):
        return "".join(_text(part) for part in text)
    return html.escape(text)


def _png_base64(fig) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=FIGURE_DPI, bbox_inches="tight")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def render_block(block: S.Block) -> str:
    if isinstance(block, S.Heading):
        anchor = f' id="{html.escape(block.anchor)}"' if block.anchor else ""
        level = min(block.level, 6)
        return f"<h{level}{anchor}>{html.escape(block.text)}</h{level}>"
    if isinstance(block, S.Paragraph):
        cls = f' class="{block.kind}"' if block.kind else ""
        return f"<p{cls}>{_text(block.text)}</p>"
    if isinstance(block, S.Bullets):
        return "<ul>" + "".join(f"<li>{_text(item)}</li>" for item in block.items) + "</ul>"
    if isinstance(block, S.Table):
        head = "".join(f"<th>{html.escape(c)}</th>" for c in block.columns)
        rows = []
        for row in block.rows:
            cells = "".join(
                f'<td class="num">{_text(cell)}</td>' if i in block.numeric else f"<td>{_text(cell)}</td>"
                for i, cell in enumerate(row)
            )
            rows.append(f"<tr>{cells}</tr>")
        notice = f'<p class="notice">{html.escape(block.notice)}</p>' if block.notice else ""
        return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>{notice}"
    if isinstance(block, S.FigureBlock):
        from matplotlib.figure import Figure

        fig: Figure = block.draw()
        data = _png_base64(fig)
        alt = html.escape(fig.axes[0].get_title(loc="left") if fig.axes else block.caption)
        return (f'<figure><img alt="{alt}" src="data:image/png;base64,{data}">'
                f"<figcaption>{html.escape(block.caption)}</figcaption></figure>")  # fmt: skip
    raise TypeError(f"unknown report block {type(block).__name__}")


def render(blocks: Sequence[S.Block], *, title: str) -> str:
    """The whole HTML document."""
    body = []
    in_section = False
    for block in blocks:
        if isinstance(block, S.Heading) and block.level == 2 and block.anchor:  # one run of a comparison
            body.append("</section>" if in_section else "")
            body.append('<section class="run">')
            in_section = True
        body.append(render_block(block))
    if in_section:
        body.append("</section>")
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{html.escape(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n<main>\n"
        + "\n".join(body)
        + "\n</main>\n</body>\n</html>\n"
    )
