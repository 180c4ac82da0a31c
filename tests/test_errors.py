"""Issue 10, item 3: every user-facing failure is one line ``rstscope: error: ...`` and exit 2.

One table per kind of bad input, each row a case from the issue: files in run directories,
options (checked before anything is created), outputs, standard output full or closed, names
that are not UTF-8.  A row's expectation is a piece of the message: the error must say what
was wrong, not only fail.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from scapy.utils import wrpcap

from rstscope.cli import COMMANDS, Environment, run
from tests import scenarios

REPO = Path(__file__).resolve().parents[1]


def rstscope(*argv: str, run_root: Path | None = None) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    env = Environment(stdout=out, stderr=err, stdout_isatty=False, stderr_isatty=False)
    if run_root is not None:
        env.run_root = run_root
    status = run(list(argv), env)
    return status, out.getvalue(), err.getvalue()


def assert_one_line_error(status: int, err: str, expect: str) -> None:
    assert status == 2, err
    assert err.startswith("rstscope: error: ") and err.count("\n") == 1, err
    assert expect in err, err
    assert "Traceback" not in err and "internal error" not in err


@pytest.fixture
def capture(tmp_path) -> Path:
    path = tmp_path / "close-race.pcap"
    wrpcap(str(path), scenarios.close_race().packets)
    return path


KERNEL = {"event": "tcp_send_reset", "time": 10.1, "src": "10.1.2.1:8080", "dst": "10.1.2.2:40000",
          "state": "TCP_CLOSE", "reason": "TCP_ABORT_ON_CLOSE", "listener": False}  # fmt: skip
ATTEMPT = {"attempt": 1, "client_port": 40000, "t_start": 9.9, "t_end": 10.3, "outcome": "ECONNRESET@read"}


def make_run_dir(path: Path, capture: Path, *, kernel: list[dict] | None = None, kept: int | None = None) -> Path:
    """A small, valid run directory (what `rstscope lab` writes, trimmed)."""
    path.mkdir()
    kernel = [KERNEL] if kernel is None else kernel
    run_json = {
        "rstscope_run": 1,
        "kind": "lab",
        "status": "ok",
        "options": {"scenario": "close-race"},
        "capture": {"file": "capture.pcap"},
        "trace": {"available": True, "kept": len(kernel) if kept is None else kept},
    }
    (path / "run.json").write_text(json.dumps(run_json))
    (path / "capture.pcap").write_bytes(capture.read_bytes())
    (path / "kernel.jsonl").write_text("".join(json.dumps(r) + "\n" for r in kernel))
    (path / "clients.jsonl").write_text(json.dumps(ATTEMPT) + "\n")
    (path / "nstat.json").write_text(json.dumps({"server": {"counters": {"TcpOutRsts": 1}, "other": {}}}))
    return path


def _kernel_line(**change) -> str:
    record = dict(KERNEL)
    for key, value in change.items():
        if value is _DROP:
            record.pop(key)
        else:
            record[key] = value
    return json.dumps(record) + "\n"


_DROP = object()

# (file, content, what the message says)
RUN_DIR_FILES = [
    # kernel.jsonl records of the wrong shape
    ("kernel.jsonl", _kernel_line(time=_DROP), "record without 'time'"),
    ("kernel.jsonl", _kernel_line(time="soon"), "'time' is \"soon\", expected a number"),
    ("kernel.jsonl", _kernel_line(time=None), "'time' is null, expected a number"),
    ("kernel.jsonl", _kernel_line(reason=["TCP_ABORT_ON_CLOSE"]), "'reason' is"),
    # a kernel.jsonl emptied or cut short, while run.json says what the trace kept
    ("kernel.jsonl", "", "0 kernel records, but run.json says 1 were kept"),
    # clients.jsonl, nstat.json, run.json, analysis.json
    ("clients.jsonl", json.dumps({**ATTEMPT, "client_port": "forty"}) + "\n", "'client_port' is \"forty\""),
    ("nstat.json", "{garbage", "nstat.json: not valid JSON"),
    ("nstat.json", json.dumps({"server": {"counters": {"TcpOutRsts": "many"}}}), "counter TcpOutRsts"),
    ("run.json", json.dumps({"rstscope_run": 1, "capture": "capture.pcap"}), "'capture' is \"capture.pcap\""),
    ("analysis.json", json.dumps({"resets": 5}), "'resets' is not a list of objects"),
]


@pytest.mark.parametrize("command", ["validate", "analyze", "report", "plot"])
@pytest.mark.parametrize(("name", "content", "expect"), RUN_DIR_FILES, ids=[f"{r[0]}-{i}" for i, r in
                                                                             enumerate(RUN_DIR_FILES)])  # fmt: skip
def test_bad_file_in_a_run_directory(tmp_path, capture, command, name, content, expect):
    run_dir = make_run_dir(tmp_path / "run", capture)
    (run_dir / name).write_text(content)
    extra = {"report": ["-o", str(tmp_path / "r.html")], "plot": ["-o", str(tmp_path / "plots")]}.get(command, [])
    status, _, err = rstscope(command, str(run_dir), *extra)
    if command in ("analyze", "report", "plot") and name == "analysis.json":
        expect = "analysis.json"  # analysing again still reads the run directory, and refuses it the same way
    assert_one_line_error(status, err, expect)


def test_truncated_kernel_jsonl_is_not_full_agreement(tmp_path, capture):
    """A kernel.jsonl cut after 2 of its 3 records: not "2/2 agree (100%)"."""
    records = [dict(KERNEL, time=10.1 + i) for i in range(3)]
    run_dir = make_run_dir(tmp_path / "run", capture, kernel=records)
    text = (run_dir / "kernel.jsonl").read_text()
    (run_dir / "kernel.jsonl").write_text(text[: text.rindex("{")])
    status, _, err = rstscope("validate", str(run_dir))
    assert_one_line_error(status, err, "2 kernel records, but run.json says 3 were kept")


# (argv, what the message names) -- every one refused before a namespace or run directory exists
LAB_OPTIONS = [
    (["--compare", "close-race", "nosuch"], "unknown scenario 'nosuch'"),
    (["--loss", "nan"], "--loss nan: expected a finite number"),
    (["--loss", "200"], "--loss 200.0: must be at most 100"),
    (["--loss", "-5"], "--loss -5.0: must be at least 0"),
    (["--settle", "-1"], "--settle -1.0: must be at least 0"),
    (["--timeout", "-1", "--loops", "2"], "--timeout -1.0: must be more than 0"),
    (["--timeout", "inf"], "--timeout inf: expected a finite number"),
    (["--duration", "-1"], "--duration -1.0: must be more than 0"),
    (["--count", "-1"], "--count -1: must be at least 1"),
    (["--count", "0"], "--count 0: must be at least 1"),
    (["--loops", "0"], "--loops 0: must be at least 1"),
    (["--rate", "0mbit"], "--rate 0mbit: the rate must be more than 0"),
    (["--rate=-5mbit"], "--rate -5mbit"),
    (["--rate", "20parsecs"], "unknown unit 'parsecs'"),
    (["--client-rate=-1kbit"], "--client-rate -1kbit"),
    (["--queue", "forever"], "--queue forever"),
    (["--queue", "0ms"], "--queue 0ms: must be more than 0"),
    (["--delay=-3ms"], "--delay -3ms"),
    (["--port", "70000"], "--port 70000: must be at most 65535"),
    (["--port", "-1"], "--port -1: must be at least 0"),
    (["--backlog", "-1"], "--backlog -1: must be at least 0"),
    (["--somaxconn", "-1"], "--somaxconn -1: must be at least 0"),
    (["--synack-retries", "300"], "--synack-retries 300: must be at most 255"),
    (["--snaplen", "-1"], "--snaplen -1: must be at least 0"),
    (["--accept-delay", "nan"], "--accept-delay nan: expected a finite number"),
    (["--late-delay", "-2"], "--late-delay -2.0: must be at least 0"),
    (["--response-bytes", "-1"], "--response-bytes -1: must be at least 0"),
    (["--close", "sometimes"], "unknown close mode 'sometimes'"),
]


@pytest.mark.parametrize(("argv", "expect"), LAB_OPTIONS, ids=[" ".join(a) for a, _ in LAB_OPTIONS])
def test_bad_lab_option_is_refused_before_anything_is_created(tmp_path, argv, expect):
    runs = tmp_path / "runs"
    status, _, err = rstscope("lab", *argv, "--run-root", str(runs))
    assert_one_line_error(status, err, expect)
    assert not runs.exists()


CAPTURE_OPTIONS = [
    (["--duration", "-1"], "--duration -1.0: must be more than 0"),
    (["--duration", "nan"], "--duration nan: expected a finite number"),
    (["--duration", "inf"], "--duration inf: expected a finite number"),
    (["--duration", "1", "--settle", "-1"], "--settle -1.0"),
    (["--duration", "1", "--snaplen", "-5"], "--snaplen -5"),
    (["--duration", "1", "--iface", "nosuch0"], "--iface nosuch0: no such interface"),
    (["--duration", "1", "--filter", " "], "--filter is empty"),
    (["--duration", "1", "--", "true"], "give either --duration"),
]


@pytest.mark.parametrize(("argv", "expect"), CAPTURE_OPTIONS, ids=[" ".join(a) for a, _ in CAPTURE_OPTIONS])
def test_bad_capture_option_is_refused_before_anything_is_created(tmp_path, argv, expect):
    runs = tmp_path / "runs"
    status, _, err = rstscope("capture", "--run-root", str(runs), *argv)
    assert_one_line_error(status, err, expect)
    assert not runs.exists()


@pytest.mark.parametrize("command", ["lab", "capture"])
def test_run_root_that_is_a_file(tmp_path, command):
    afile = tmp_path / "afile"
    afile.write_text("x")
    extra = ["--duration", "1"] if command == "capture" else []
    for root, expect in ((afile, "exists and is not a directory"), (afile / "sub", "cannot create run root")):
        status, _, err = rstscope(command, "--run-root", str(root), *extra)
        assert_one_line_error(status, err, expect)


# (command and arguments with {cap} and {tmp}, what the message says)
OUTPUTS = [
    ("plot {cap} -o {tmp}/afile", "output directory"),
    ("plot {cap} -o /dev/full", "/dev/full exists and is not a directory"),
    ("report {cap} -o {tmp}/afile/r.html", "output directory"),
    ("analyze {cap} -o {tmp}/nodir/out.txt", "cannot write"),
    ("analyze {cap} --json -o {tmp}/nodir/out.json", "cannot write"),
    ("conns {cap} -o {tmp}/nodir/conns.tsv", "cannot write"),
    ("analyze {cap} -o /dev/full", "cannot write /dev/full: No space left on device"),
    ("analyze {cap} --json -o /dev/full", "cannot write /dev/full: No space left on device"),
    ("conns {cap} -o /dev/full", "cannot write /dev/full: No space left on device"),
]


@pytest.mark.parametrize(("line", "expect"), OUTPUTS, ids=[o[0] for o in OUTPUTS])
def test_unwritable_output(tmp_path, capture, line, expect):
    (tmp_path / "afile").write_text("x")
    argv = line.format(cap=capture, tmp=tmp_path).split()
    status, _, err = rstscope(*argv)
    assert_one_line_error(status, err, expect)
    assert not list(tmp_path.glob("**/.*.tmp")), "a temporary file was left behind"


def test_non_utf8_file_names_work_in_plot_and_report(tmp_path, capture):
    name = os.fsdecode(b"trace-\xff\xfe.pcap")  # undecodable bytes become surrogates, as Python passes argv
    odd = tmp_path / name
    odd.write_bytes(capture.read_bytes())
    status, _, err = rstscope("plot", str(odd), "-o", str(tmp_path / "plots"), "--format", "png")
    assert status == 0, err
    assert (tmp_path / "plots" / "overview.png").is_file()
    status, _, err = rstscope("report", str(odd), "-o", str(tmp_path / "r.html"))
    assert status == 0, err
    assert "trace-\\xff\\xfe" in (tmp_path / "r.html").read_text(encoding="utf-8")


def _cli(*argv: str, **kwargs) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-m", "rstscope", *argv], cwd=REPO, env=env, capture_output=False,
                          stderr=subprocess.PIPE, text=True, timeout=120, **kwargs)  # fmt: skip


@pytest.mark.parametrize("command", [None, *COMMANDS])
def test_help_into_a_full_or_closed_stdout(command):
    argv = ["--help"] if command is None else [command, "--help"]
    with open("/dev/full", "w") as full:
        result = _cli(*argv, stdout=full)
    assert result.returncode == 2, result.stderr
    assert result.stderr == "rstscope: error: writing the output: No space left on device\n"
    closed = _cli(*argv, stdout=subprocess.DEVNULL, pass_fds=(), preexec_fn=lambda: os.close(1))
    assert closed.returncode == 2
    assert closed.stderr == "rstscope: error: writing the output: standard output is closed\n"


@pytest.mark.parametrize(
    "command",
    ["analyze", "conns", "analyze --json", "analyze --csv", "conns --zeek", "plot", "report", "validate"],
)
def test_output_into_a_full_or_closed_stdout(tmp_path, capture, command):
    argv = command.split()
    if argv[0] == "validate":
        argv.append(str(make_run_dir(tmp_path / "run", capture)))
    else:
        argv.append(str(capture))
    argv += {"plot": ["-o", str(tmp_path / "p"), "--format", "png"], "report": ["-o", str(tmp_path / "r.html")]}.get(
        argv[0], []
    )
    with open("/dev/full", "w") as full:
        result = _cli(*argv, stdout=full)
    assert result.returncode == 2, result.stderr
    assert result.stderr == "rstscope: error: writing the output: No space left on device\n"
    closed = _cli(*argv, stdout=subprocess.DEVNULL, preexec_fn=lambda: os.close(1))
    assert closed.returncode == 2
    assert closed.stderr == "rstscope: error: writing the output: standard output is closed\n"


def test_output_into_a_closed_pipe_is_quiet(capture):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    head = subprocess.run(f"{sys.executable} -m rstscope conns {capture} --json | head -c 10", shell=True, cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert head.stderr == "" and len(head.stdout) == 10


def test_file_under_an_unreadable_directory(tmp_path, capture):
    """As an ordinary user (root reads everything): PermissionError is one line, exit 2."""
    if os.geteuid() != 0:
        pytest.skip("needs root to switch to the user nobody")
    import shutil
    import tempfile

    top = Path(tempfile.mkdtemp(prefix="rstscope-locked-"))  # pytest's tmp_path is root's alone
    top.chmod(0o755)
    locked = top / "locked"
    locked.mkdir()
    (locked / "c.pcap").write_bytes(capture.read_bytes())
    (top / "open.pcap").write_bytes(capture.read_bytes())
    (top / "open.pcap").chmod(0o644)
    locked.chmod(0o700)
    env = dict(os.environ, PYTHONPATH=str(REPO), HOME="/tmp")
    try:
        _as_nobody_on(locked, top, env)
    finally:
        shutil.rmtree(top, ignore_errors=True)


def _as_nobody_on(locked: Path, top: Path, env: dict) -> None:
    readable = subprocess.run(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
         sys.executable, "-m", "rstscope", "analyze", str(top / "open.pcap")],
        cwd="/", env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert readable.returncode == 0, readable.stderr  # the same file is fine where nobody may read it
    for command in ("analyze", "conns", "plot", "report"):
        extra = {"plot": ["-o", "/tmp"], "report": ["-o", "/tmp/r-nobody.html"]}.get(command, [])
        result = subprocess.run(
            ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
             sys.executable, "-m", "rstscope", command, str(locked / "c.pcap"), *extra],
            cwd="/", env=env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert result.returncode == 2, result.stderr
        assert result.stderr.lower() == f"rstscope: error: {locked / 'c.pcap'}: permission denied\n", command


def test_a_bug_is_one_line_with_the_way_to_the_traceback(monkeypatch, capture):
    from rstscope.commands import analyze

    def broken(args, env):
        raise RuntimeError("boom")

    monkeypatch.setattr(analyze, "run", broken)
    status, _, err = rstscope("analyze", str(capture))
    assert status == 1 and err.count("\n") == 1
    assert err.startswith("rstscope: internal error: RuntimeError: boom") and "--traceback" in err
    with pytest.raises(RuntimeError):
        rstscope("--traceback", "analyze", str(capture))


# A Ctrl-C that lands while a dataclass or namedtuple is being built (lazy imports do that all
# the time) escapes an exec() of source text; CPython then remembers it as unhandled and makes
# `python -m` die by SIGINT even though rstscope handled it (the start-up race of issue 10).
_INTERRUPTED_IN_EXEC = {
    "while running": """
import sys
from rstscope import cli
from rstscope.commands import analyze
analyze.run = lambda args, env: exec("raise KeyboardInterrupt")
sys.argv = ["rstscope", "analyze", "x.pcap"]
cli.main()
""",
    "while loading": """
import runpy, sys
class InterruptCli:
    def find_spec(self, name, path=None, target=None):
        if name == "rstscope.cli":
            exec("raise KeyboardInterrupt")
sys.meta_path.insert(0, InterruptCli())
runpy.run_module("rstscope", run_name="__main__", alter_sys=True)
""",
}


@pytest.mark.parametrize("when", list(_INTERRUPTED_IN_EXEC))
def test_ctrl_c_inside_an_exec_still_exits_130(tmp_path, when):
    package = tmp_path / "interrupted_in_exec"
    package.mkdir()
    (package / "__main__.py").write_text(_INTERRUPTED_IN_EXEC[when])
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path), str(REPO)]))
    result = subprocess.run([sys.executable, "-m", package.name], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=120)  # fmt: skip
    assert (result.returncode, result.stderr) == (130, "rstscope: interrupted\n")
