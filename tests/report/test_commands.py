"""`rstscope plot` and `rstscope report` as a user runs them."""

from __future__ import annotations

import io

from rstscope.cli import Environment, run


def rstscope(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    status = run([str(a) for a in argv], Environment(stdout=out, stderr=err, stdout_isatty=False, stderr_isatty=False))
    return status, out.getvalue(), err.getvalue()


def test_plot_writes_png_and_svg(tmp_path, close_race_pcap):
    status, out, err = rstscope("plot", close_race_pcap, "-o", tmp_path / "plots")
    assert (status, err) == (0, "")
    names = sorted(p.name for p in (tmp_path / "plots").iterdir())
    assert names == ["connection-0.png", "connection-0.svg", "overview.png", "overview.svg"]
    assert sorted(out.splitlines()) == [str(tmp_path / "plots" / n) for n in names]


def test_plot_one_connection_by_4_tuple(tmp_path, close_race_pcap):
    # the scenario's client is 10.0.0.1:40000, its server 10.0.0.2:8080; either order names it
    status, out, err = rstscope("plot", close_race_pcap, "-o", tmp_path, "--connection", "10.0.0.2:8080-10.0.0.1:40000",
                                "--format", "svg", "--only", "connections")  # fmt: skip
    assert (status, err) == (0, "")
    assert out.strip() == str(tmp_path / "connection-0.svg")
    status, _, err = rstscope("plot", close_race_pcap, "-o", tmp_path, "--connection", "10.0.0.2:40000-10.0.0.1:8080")
    assert status == 2 and "no such connection" in err


def test_plot_bad_connection_is_one_line(tmp_path, close_race_pcap):
    status, _out, err = rstscope("plot", close_race_pcap, "-o", tmp_path, "--connection", "42")
    assert status == 2
    assert err == "rstscope: error: --connection '42': no such connection (1 in the capture)\n"


def test_report_writes_html_and_markdown(tmp_path, close_race_pcap):
    status, out, err = rstscope("report", close_race_pcap, "-o", tmp_path / "r.html")
    assert (status, err) == (0, "")
    assert out.splitlines() == [str(tmp_path / "r.html"), str(tmp_path / "r.md")]
    assert (tmp_path / "r-figures" / "overview.png").is_file()


def test_report_compares_two_runs(tmp_path, close_race_run, lingering_run):
    status, _out, err = rstscope("report", close_race_run.source, lingering_run.source, "-o", tmp_path / "c.html",
                                "--no-markdown")  # fmt: skip
    assert (status, err) == (0, "")
    page = (tmp_path / "c.html").read_text()
    assert "rstscope comparison: close-race vs lingering" in page
    assert page.count('<section class="run">') == 2 and page.count("</section>") == 2


def test_report_wants_an_html_name(tmp_path, close_race_pcap):
    status, _, err = rstscope("report", close_race_pcap, "-o", tmp_path / "r.txt")
    assert status == 2 and "name it *.html" in err
