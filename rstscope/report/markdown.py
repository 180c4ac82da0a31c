"""The Markdown twin of the HTML report, rendered from the same blocks (:mod:`.sections`).

Figures are written as PNG files into a folder beside the Markdown file and linked relatively,
so the pair renders on GitHub, GitLab or any viewer; nothing is fetched from the network.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from rstscope.output import atomic_path, make_dir
from rstscope.report import sections as S

FIGURE_DPI = 110


def _text(text: S.Text, *, in_table: bool = False) -> str:
    if isinstance(text, S.Code):
        body = text.text.replace("|", "\\|") if in_table else text.text
        fence = "``" if "`" in body else "`"
        return f"{fence}{body}{fence}"
    if isinstance(text, tuple):
        return "".join(_text(part, in_table=in_table) for part in text)
    out = text.replace("|", "\\|") if in_table else text
    return out.replace("\n", " ")


def render(blocks: Sequence[S.Block], figures_dir: Path, *, relative_to: Path) -> str:
    """The Markdown text; figures are saved into ``figures_dir`` and linked relative to ``relative_to``."""
    lines: list[str] = []
    used: set[str] = set()
    prefix = ""
    for block in blocks:
        if isinstance(block, S.Heading):
            if block.level == 2 and block.anchor:  # a run of a comparison: its figures get its prefix
                prefix = f"{block.anchor}-"
            lines += [f"{'#' * min(block.level, 6)} {block.text}", ""]
        elif isinstance(block, S.Paragraph):
            text = _text(block.text)
            if block.kind == "lead":
                text = f"**{text}**"
            elif block.kind == "note":
                text = f"_{text}_"
            lines += [text, ""]
        elif isinstance(block, S.Bullets):
            lines += [f"- {_text(item)}" for item in block.items] + [""]
        elif isinstance(block, S.Table):
            lines.append("| " + " | ".join(block.columns) + " |")
            lines.append(
                "|" + "|".join("---:" if i in block.numeric else "---" for i in range(len(block.columns))) + "|"
            )
            for row in block.rows:
                lines.append("| " + " | ".join(_text(cell, in_table=True) for cell in row) + " |")
            lines.append("")
            if block.notice:
                lines += [f"_{block.notice}_", ""]
        elif isinstance(block, S.FigureBlock):
            name = f"{prefix}{block.name}"
            while name in used:
                name += "-2"
            used.add(name)
            make_dir(figures_dir, what="figures directory")
            path = figures_dir / f"{name}.png"
            with atomic_path(path) as tmp:
                block.draw().savefig(tmp, format="png", dpi=FIGURE_DPI, bbox_inches="tight")
            link = path.relative_to(relative_to) if path.is_relative_to(relative_to) else path
            lines += [f"![{block.caption}]({link.as_posix()})", "", f"_{block.caption}_", ""]
        else:
            raise TypeError(f"unknown report block {type(block).__name__}")
    return "\n".join(lines).rstrip() + "\n"
