"""The Markdown twin: same blocks, figures as PNG files linked relatively."""

from __future__ import annotations

import re

from rstscope.report import markdown
from rstscope.report import sections as S


def test_markdown_twin(tmp_path, close_race_doc, close_race_pcap):
    loaded = S.Loaded(label="close-race", source=close_race_pcap, doc=close_race_doc)
    text = markdown.render(S.single_report(loaded, examples=1), tmp_path / "r-figures", relative_to=tmp_path)
    assert text.startswith("# rstscope report: close-race\n")
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert links == ["r-figures/overview.png", "r-figures/connection-0.png"]
    assert all((tmp_path / link).read_bytes()[:4] == b"\x89PNG" for link in links)
    assert "| frame | t (s) | sender |" in text
    assert "`frame.number == 12`" in text and "`tcp.stream eq 0`" in text


def test_pipes_in_table_cells_are_escaped(tmp_path):
    table = S.Table(columns=("a",), rows=((S.Code("x || y"),),))
    assert "`x \\|\\| y`" in markdown.render([table], tmp_path, relative_to=tmp_path)
