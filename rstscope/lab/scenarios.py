"""Scenario presets and the plan: what a lab run will do, as plain data.

:func:`plan` turns :class:`LabOptions` (a preset plus the user's overrides), the
run's unique :class:`Names` and the machine's :class:`Capabilities` into a list
of :class:`Step`.  Nothing here runs a command, so plans are tested without root,
playbook style (the expected sequence of steps).  ``netns.Executor`` runs them.

Topology (namespaces mode)::

    netns <prefix>-srv                       netns <prefix>-cli
    server  SRV_IP:port  [dev <p>s] ==veth== [dev <p>c]  CLI_IP  clients, capture
            tbf (+netem)  -> client                 server <- tbf (+netem)

Both ends of the veth are shaped with tbf (rate, queue as tbf latency), and have
TSO/GSO/GRO turned off so the capture holds wire-sized segments.  The capture
runs in the client namespace: it sees what the clients see, after the server's
queue (see RESETS.md on what that does to in-flight estimates).

``--loopback`` mode runs server and clients on 127.0.0.1 in the host's own
namespace, with no shaping and no sysctls (those would change the host).
"""

from __future__ import annotations

import dataclasses
import enum
import shlex
from dataclasses import dataclass
from pathlib import Path

# --------------------------------------------------------------------------- options


@dataclass(kw_only=True)
class LabOptions:
    """Every knob of a lab run; a preset fills some, the command line may override any."""

    scenario: str = "custom"
    """Preset name, or ``custom`` when only options were given."""
    # link
    rate: str = "20mbit"
    """tbf rate in each direction (tc syntax)."""
    queue: str = "200ms"
    """tbf queue, as the longest time a packet may wait (tbf ``latency``)."""
    client_rate: str | None = None
    """tbf rate of the client->server direction when it differs from ``rate``.  A slow uplink
    delays handshake ACKs behind other clients' SYNs, so half-open handshakes pile up."""
    delay: str | None = None
    """One-way delay added by netem (needs the netem qdisc)."""
    loss: float | None = None
    """Random loss in percent, each direction: netem where the kernel has it, else nftables."""
    loopback: bool = False
    """Run on 127.0.0.1 in the host namespace: no shaping, no sysctls."""
    # server
    port: int = 8080
    close: str = "close"
    backlog: int = 128
    accept_delay: float = 0.0
    read_bytes: int = 16
    response_bytes: int = 200_000
    server: bool = True
    """False for ``refused``: nothing listens on the port."""
    # clients
    loops: int = 20
    count: int | None = 1
    """Attempts per client loop; None when ``duration`` is given."""
    duration: float | None = None
    request_bytes: int = 16
    trailing_bytes: int = 8
    late_bytes: int = 0
    late_delay: float = 0.0
    timeout: float = 10.0
    """Client connect/read timeout, seconds."""
    # per-namespace sysctls of the server namespace (None: the namespace's default)
    somaxconn: int | None = None
    abort_on_overflow: int | None = None
    syncookies: int | None = None
    synack_retries: int | None = None
    # capture and ground truth
    snaplen: int = 0
    """Bytes kept per packet; 0 keeps whole packets."""
    capture_tool: str = "auto"
    """``auto`` (dumpcap, then tcpdump), or one of them; scapy only when asked for (it drops packets)."""
    trace: bool = True
    """Record the kernel's tracepoints when tracefs is available."""
    settle: float = 1.0
    """Seconds to keep capturing after the last client ends (late RSTs and their echoes)."""

    def sysctls(self) -> dict[str, int]:
        """The sysctls to set in the server namespace, by their ``sysctl`` names."""
        wanted = {
            "net.core.somaxconn": self.somaxconn,
            "net.ipv4.tcp_abort_on_overflow": self.abort_on_overflow,
            "net.ipv4.tcp_syncookies": self.syncookies,
            "net.ipv4.tcp_synack_retries": self.synack_retries,
        }
        return {name: value for name, value in wanted.items() if value is not None}

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


OPTION_NAMES = frozenset(f.name for f in dataclasses.fields(LabOptions))


@dataclass(frozen=True, kw_only=True)
class Preset:
    summary: str
    """One line: what the preset reproduces."""
    expect: str
    """What a run should show (the tests check this)."""
    overrides: dict
    """LabOptions fields this preset sets."""


PRESETS: dict[str, Preset] = {
    "close-race": Preset(
        summary="naive close() with unread trailing request bytes: RST overtakes the response",
        expect="clients read part of the response, then ECONNRESET; kernel TCP_ABORT_ON_CLOSE, then echoes",
        overrides={"close": "close", "read_bytes": 16, "request_bytes": 16, "trailing_bytes": 8},
    ),
    "lingering": Preset(
        summary="the same requests with a lingering close (shutdown, drain, close): the fix",
        expect="every client reads the whole response; no RST",
        overrides={"close": "lingering", "read_bytes": 16, "request_bytes": 16, "trailing_bytes": 8},
    ),
    "linger0": Preset(
        summary="SO_LINGER {on, 0}: an abortive close on purpose",
        expect="clients get ECONNRESET; kernel TCP_STATE",
        overrides={"close": "linger0", "read_bytes": 16, "request_bytes": 16, "trailing_bytes": 0},
    ),
    "late-data": Preset(
        summary="the server closes with FIN; the client sends more after the response",
        expect="clients read the whole response, then EPIPE on write; kernel TCP_TIMEWAIT_SOCKET/ABORT_ON_DATA",
        overrides={
            "close": "close",
            "read_bytes": 16,
            "request_bytes": 16,
            "trailing_bytes": 0,
            "response_bytes": 2_000,
            "late_bytes": 100,
            "late_delay": 0.3,
            "loops": 8,
        },
    ),
    "backlog": Preset(
        summary="tiny backlog, stalled accept loop, tcp_abort_on_overflow=1: the listener resets handshakes",
        expect="bare RSTs answering the handshake ACK; kernel INVALID_SYN in LISTEN; EmbryonicRsts",
        overrides={
            "close": "lingering",
            "read_bytes": 16,
            "request_bytes": 16,
            "trailing_bytes": 0,
            "response_bytes": 20_000,
            "backlog": 4,
            "accept_delay": 0.5,
            "client_rate": "100kbit",
            "loops": 20,
            "timeout": 8.0,
            "abort_on_overflow": 1,
            "syncookies": 0,
        },
    ),
    "backlog-silent": Preset(
        summary="the same overflow with tcp_abort_on_overflow=0: SYN-ACK retransmits and timeouts, no RST",
        expect="no RST; ListenOverflows > 0; SYN (and SYN-ACK) retransmissions; clients time out",
        overrides={
            "close": "lingering",
            "read_bytes": 16,
            "request_bytes": 16,
            "trailing_bytes": 0,
            "response_bytes": 2_000,
            "backlog": 1,
            "accept_delay": 60.0,
            "loops": 6,
            "timeout": 3.0,
            "abort_on_overflow": 0,
            "syncookies": 0,
            "settle": 0.5,
        },
    ),
    "refused": Preset(
        summary="nothing listens on the port: every SYN is answered with RST",
        expect="clients get ECONNREFUSED; kernel NO_SOCKET",
        overrides={"server": False, "loops": 5, "trailing_bytes": 0},
    ),
    "clean": Preset(
        summary="the server reads the whole request and closes with FIN: no reset at all",
        expect="every client reads the whole response; no RST",
        overrides={"close": "close", "read_bytes": 16, "request_bytes": 16, "trailing_bytes": 0},
    ),
}
"""Scenario presets for ``rstscope lab --scenario``; each fills :class:`LabOptions` fields."""


def options_for(scenario: str | None, **overrides) -> LabOptions:
    """A preset's options with ``overrides`` (None values ignored) applied on top.

    Raises KeyError for an unknown preset, TypeError for an unknown option.
    """
    values: dict = {}
    if scenario is not None and scenario != "custom":
        values.update(PRESETS[scenario].overrides)
        values["scenario"] = scenario
    unknown = set(overrides) - OPTION_NAMES
    if unknown:
        raise TypeError(f"unknown lab option(s): {', '.join(sorted(unknown))}")
    values.update({k: v for k, v in overrides.items() if v is not None})
    if values.get("duration") is not None:
        values["count"] = None
    return LabOptions(**values)


# --------------------------------------------------------------------------- names, capabilities


@dataclass(frozen=True, kw_only=True)
class Names:
    """Every name a run creates, unique per run so that runs never collide or clean up each other."""

    prefix: str
    """``rs-<pid>-<rand>``: starts every namespace and the trace instance."""
    server_ns: str
    client_ns: str
    server_dev: str
    """Server end of the veth (at most 15 characters)."""
    client_dev: str
    server_ip: str
    client_ip: str
    trace_instance: str

    @classmethod
    def make(cls, pid: int, token: int, *, loopback: bool = False) -> Names:
        """Names for process ``pid`` and a random ``token`` (0..65535).

        The /24 is chosen from the token too, so that two concurrent runs also have
        different addresses: the kernel's tracepoints are host-wide and a run keeps
        only the records with its own addresses.
        """
        prefix = f"rs-{pid}-{token:04x}"
        short = f"rs{token:04x}"
        if loopback:
            return cls(
                prefix=prefix,
                server_ns="",
                client_ns="",
                server_dev="lo",
                client_dev="lo",
                server_ip="127.0.0.1",
                client_ip="127.0.0.1",
                trace_instance=prefix,
            )
        subnet = f"10.{200 + token % 50}.{(token // 50) % 256}"
        return cls(
            prefix=prefix,
            server_ns=f"{prefix}-srv",
            client_ns=f"{prefix}-cli",
            server_dev=f"{short}s",
            client_dev=f"{short}c",
            server_ip=f"{subnet}.1",
            client_ip=f"{subnet}.2",
            trace_instance=prefix,
        )


@dataclass(frozen=True, kw_only=True)
class Capabilities:
    """What this machine offers, found by ``netns.probe_capabilities`` (or given by a test)."""

    python: str
    """Interpreter that runs ``-m rstscope pair`` inside the namespaces."""
    project_root: str
    """Directory holding the ``rstscope`` package (put on PYTHONPATH for the pair)."""
    capture_tool: str
    """``dumpcap``, ``tcpdump`` or ``scapy``."""
    netem: bool = False
    """The kernel has the netem qdisc (it does not on this project's machines)."""
    tracefs: bool = True
    """tracefs is mounted or can be mounted, and the tcp tracepoints exist."""


# --------------------------------------------------------------------------- steps


class Action(enum.Enum):
    """What the executor does with a step."""

    RUN = "run"
    """Run ``argv`` to completion; a non-zero exit fails the run (unless ``optional``)."""
    SPAWN = "spawn"
    """Start ``argv`` in the background (own session); wait until ``ready`` shows in its output."""
    WAIT = "wait"
    """Wait for process ``process`` to exit, at most ``timeout`` seconds (then stop it)."""
    STOP = "stop"
    """Send ``signal`` to process ``process`` and wait for it (SIGKILL after a grace period)."""
    SLEEP = "sleep"
    """Let ``timeout`` seconds pass (the capture keeps running)."""
    TRACE_START = "trace-start"
    """Create the private tracefs instance and enable the events."""
    TRACE_STOP = "trace-stop"
    """Stop tracing and write kernel.jsonl."""


@dataclass(frozen=True, kw_only=True)
class Step:
    """One step of a plan.  Commands are complete argv lists: what is recorded is what ran."""

    action: Action
    title: str
    """Short description, shown in progress and in errors."""
    argv: tuple[str, ...] = ()
    undo: tuple[str, ...] = ()
    """Command that reverses this step at teardown (empty: nothing, or torn down with its namespace)."""
    process: str = ""
    """Name of the background process (SPAWN/WAIT/STOP); also names its output files."""
    stdout: str = ""
    """File in the run directory that receives the process's stdout (SPAWN), or '' for logs/."""
    ready: str = ""
    """Text whose appearance in the process's stdout or stderr means it is ready (SPAWN)."""
    timeout: float = 0.0
    signal: str = "SIGTERM"
    output_key: str = ""
    """RUN: keep the command's stdout in the run record under this key (nstat, sysctl, tc -s)."""
    optional: bool = False
    """A failure is recorded as a warning and the run goes on."""
    ok_exit: tuple[int, ...] = (0,)
    """WAIT: exit statuses of the process that mean it did its job (others fail the step)."""
    fix: str = ""
    """What to do when this step fails (shown in the error)."""
    requires_root: bool = True

    def command_line(self) -> str:
        return shlex.join(self.argv)

    def to_json(self) -> dict:
        data = dataclasses.asdict(self)
        data["action"] = self.action.value
        data["argv"] = list(self.argv)
        data["undo"] = list(self.undo)
        return data


ROOT_FIX = "run as root (CAP_NET_ADMIN), or analyze an existing capture with `rstscope analyze`"


def _in_ns(ns: str, *argv: str) -> tuple[str, ...]:
    return ("ip", "netns", "exec", ns, *argv) if ns else tuple(argv)


def _tc_rate_steps(names: Names, options: LabOptions, caps: Capabilities) -> list[Step]:
    steps = []
    for ns, dev, direction, rate in (
        (names.server_ns, names.server_dev, "server->client", options.rate),
        (names.client_ns, names.client_dev, "client->server", options.client_rate or options.rate),
    ):
        # A 4 kB bucket lets a burst of small packets through at once; below 1 Mbit/s keep one
        # frame's worth so that a slow link is slow from the first packet.
        burst = "32kbit" if _bits_per_second(rate) >= 1_000_000 else "1600"
        tbf = ("tbf", "rate", rate, "burst", burst, "latency", options.queue)
        use_netem = options.delay is not None or (options.loss is not None and caps.netem)
        if use_netem:
            netem: tuple[str, ...] = ("netem",)
            if options.delay is not None:
                netem += ("delay", options.delay)
            if options.loss is not None:
                netem += ("loss", f"{options.loss}%")
            steps.append(
                Step(
                    action=Action.RUN,
                    title=f"netem {direction}",
                    argv=_in_ns(ns, "tc", "qdisc", "add", "dev", dev, "root", "handle", "1:", *netem),
                    fix="this kernel has no netem qdisc: drop --delay (use --queue for latency under load); "
                    "--loss falls back to nftables without netem",
                )
            )
            parent = ("parent", "1:1", "handle", "10:")
        else:
            parent = ("root", "handle", "1:")
        steps.append(
            Step(
                action=Action.RUN,
                title=f"tbf {rate} queue {options.queue} {direction}",
                argv=_in_ns(ns, "tc", "qdisc", "add", "dev", dev, *parent, *tbf),
                fix="check --rate (e.g. 20mbit) and --queue (e.g. 200ms): tc must accept them",
            )
        )
    return steps


_RATE_UNITS = {"bit": 1, "kbit": 1e3, "mbit": 1e6, "gbit": 1e9, "bps": 8, "kbps": 8e3, "mbps": 8e6, "gbps": 8e9}


def _bits_per_second(rate: str) -> float:
    """tc rate text -> bits per second (``20mbit`` -> 2e7); unknown units count as fast."""
    text = rate.strip().lower()
    for unit in sorted(_RATE_UNITS, key=len, reverse=True):
        if text.endswith(unit):
            try:
                return float(text[: -len(unit)]) * _RATE_UNITS[unit]
            except ValueError:
                break
    try:
        return float(text) * 8  # tc: a bare number is bytes per second
    except ValueError:
        return float("inf")


def _nft_loss_steps(names: Names, options: LabOptions) -> list[Step]:
    """Random loss with nftables' ``numgen random`` on each namespace's output (no netem needed)."""
    per_mille = round(options.loss * 10)
    script = (
        "add table inet rstscope; "
        "add chain inet rstscope out { type filter hook output priority 0; policy accept; }; "
        f"add rule inet rstscope out meta l4proto tcp numgen random mod 1000 < {per_mille} counter drop"
    )
    return [
        Step(
            action=Action.RUN,
            title=f"nftables {options.loss}% loss {label}",
            argv=_in_ns(ns, "nft", script),
            fix="nftables must be usable (nft, CONFIG_NFT_NUMGEN)",
        )
        for ns, label in ((names.server_ns, "server->client"), (names.client_ns, "client->server"))
    ]


def _pair_argv(caps: Capabilities, ns: str, *args: str) -> tuple[str, ...]:
    # `env` sets PYTHONPATH inside the namespace without a shell.
    return _in_ns(ns, "env", f"PYTHONPATH={caps.project_root}", caps.python, "-m", "rstscope", "pair", *args)


def server_argv(options: LabOptions, names: Names, caps: Capabilities) -> tuple[str, ...]:
    return _pair_argv(
        caps,
        names.server_ns,
        "server",
        "--host",
        names.server_ip,
        "--port",
        str(options.port),
        "--close",
        options.close,
        "--backlog",
        str(options.backlog),
        "--accept-delay",
        str(options.accept_delay),
        "--read-bytes",
        str(options.read_bytes),
        "--response-bytes",
        str(options.response_bytes),
    )


def client_argv(options: LabOptions, names: Names, caps: Capabilities) -> tuple[str, ...]:
    until = ("--duration", str(options.duration)) if options.duration else ("--count", str(options.count or 1))
    return _pair_argv(
        caps,
        names.client_ns,
        "client",
        names.server_ip,
        "--port",
        str(options.port),
        "--bind",
        names.client_ip,
        "--loops",
        str(options.loops),
        *until,
        "--request-bytes",
        str(options.request_bytes),
        "--trailing-bytes",
        str(options.trailing_bytes),
        "--late-bytes",
        str(options.late_bytes),
        "--late-delay",
        str(options.late_delay),
        "--expect-bytes",
        str(options.response_bytes),
        "--timeout",
        str(options.timeout),
    )


def capture_argv(options: LabOptions, names: Names, caps: Capabilities, out: str) -> tuple[str, ...]:
    """The capture command for the client side (``out`` is the file name in the run directory)."""
    dev = names.client_dev
    bpf = f"tcp port {options.port}"
    if caps.capture_tool == "dumpcap":
        argv = ["dumpcap", "-q", "-i", dev, "-f", bpf, "-w", out, "-n"]
        if options.snaplen:
            argv += ["-s", str(options.snaplen)]
    elif caps.capture_tool == "tcpdump":
        argv = ["tcpdump", "-i", dev, "-U", "-n", "-w", out, bpf]
        argv[1:1] = ["-s", str(options.snaplen or 262144)]
    else:
        argv = [
            caps.python,
            "-m",
            "rstscope.lab.sniff",
            "--iface",
            dev,
            "--filter",
            bpf,
            "--snaplen",
            str(options.snaplen),
            out,
        ]
        argv = ["env", f"PYTHONPATH={caps.project_root}", *argv]
    return _in_ns(names.client_ns, *argv)


CAPTURE_FILES = {"dumpcap": "capture.pcapng", "tcpdump": "capture.pcap", "scapy": "capture.pcapng"}
"""File each capture tool writes: tcpdump 4.x cannot write pcapng."""
CAPTURE_READY = {"dumpcap": "Capturing on", "tcpdump": "listening on", "scapy": "sniffing on"}
"""Text each capture tool prints on stderr once it captures."""


def client_wait_timeout(options: LabOptions) -> float:
    """How long the clients may take before they are stopped (generous: timeouts, slow links)."""
    if options.duration:
        return options.duration + 2 * options.timeout + 10
    per_attempt = 2 * options.timeout + options.late_delay + 5
    return (options.count or 1) * per_attempt + 10


def plan(options: LabOptions, names: Names, caps: Capabilities) -> list[Step]:
    """The steps of one run, in order.  Teardown is each step's ``undo``, in reverse."""
    steps: list[Step] = []
    loopback = options.loopback
    srv, cli = names.server_ns, names.client_ns
    if not loopback:
        steps += [
            Step(
                action=Action.RUN,
                title="create server namespace",
                argv=("ip", "netns", "add", srv),
                undo=("ip", "netns", "del", srv),
                fix=ROOT_FIX,
            ),
            Step(
                action=Action.RUN,
                title="create client namespace",
                argv=("ip", "netns", "add", cli),
                undo=("ip", "netns", "del", cli),
                fix=ROOT_FIX,
            ),
            Step(
                action=Action.RUN,
                title="veth pair between the namespaces",
                argv=(
                    "ip",
                    "-n",
                    srv,
                    "link",
                    "add",
                    names.server_dev,
                    "type",
                    "veth",
                    "peer",
                    "name",
                    names.client_dev,
                    "netns",
                    cli,
                ),
                fix="the kernel needs veth support (CONFIG_VETH)",
            ),
        ]
        for ns, dev, ip in ((srv, names.server_dev, names.server_ip), (cli, names.client_dev, names.client_ip)):
            side = "server" if ns == srv else "client"
            steps += [
                Step(
                    action=Action.RUN,
                    title=f"address {ip}/24 on the {side} end",
                    argv=("ip", "-n", ns, "addr", "add", f"{ip}/24", "dev", dev),
                ),
                Step(action=Action.RUN, title=f"{side} link up", argv=("ip", "-n", ns, "link", "set", dev, "up")),
                Step(action=Action.RUN, title=f"{side} loopback up", argv=("ip", "-n", ns, "link", "set", "lo", "up")),
                Step(
                    action=Action.RUN,
                    title=f"{side} offloads off (wire-sized segments)",
                    argv=_in_ns(ns, "ethtool", "-K", dev, "tso", "off", "gso", "off", "gro", "off"),
                    optional=True,
                    fix="install ethtool; without it the capture shows super-segments above the MTU",
                ),
            ]
        steps += _tc_rate_steps(names, options, caps)
        if options.loss is not None and not caps.netem:
            steps += _nft_loss_steps(names, options)
        for name, value in options.sysctls().items():
            steps.append(
                Step(
                    action=Action.RUN,
                    title=f"server namespace {name}={value}",
                    argv=_in_ns(srv, "sysctl", "-q", "-w", f"{name}={value}"),
                    fix="this sysctl must be per-namespace in this kernel",
                )
            )
        sysctl_names = (
            "net.core.somaxconn",
            "net.ipv4.tcp_abort_on_overflow",
            "net.ipv4.tcp_syncookies",
            "net.ipv4.tcp_synack_retries",
            "net.ipv4.tcp_max_syn_backlog",
        )
        for ns, side in ((srv, "server"), (cli, "client")):
            steps.append(
                Step(
                    action=Action.RUN,
                    title=f"read back {side} sysctls",
                    argv=_in_ns(ns, "sysctl", *sysctl_names),
                    output_key=f"sysctl.{side}",
                    optional=True,
                )
            )
    sides = (("server", srv), ("client", cli)) if not loopback else (("host", ""),)
    for side, ns in sides:
        steps.append(
            Step(
                action=Action.RUN,
                title=f"{side} counters before",
                argv=_in_ns(ns, "nstat", "-a", "-s", "-z", "--json"),
                output_key=f"nstat.before.{side}",
                optional=True,
                fix="install iproute2's nstat",
            )
        )
    if options.trace and caps.tracefs:
        steps.append(
            Step(
                action=Action.TRACE_START,
                title=f"kernel trace instance {names.trace_instance}",
                optional=True,
                fix="mount tracefs (mount -t tracefs nodev /sys/kernel/tracing) or run without --trace",
            )
        )
    capture_file = CAPTURE_FILES[caps.capture_tool]
    steps.append(
        Step(
            action=Action.SPAWN,
            title=f"capture with {caps.capture_tool} on {names.client_dev}",
            argv=capture_argv(options, names, caps, capture_file),
            process="capture",
            ready=CAPTURE_READY[caps.capture_tool],
            timeout=10.0,
            signal="SIGINT",
            fix="install dumpcap (wireshark-common) or tcpdump, or use --capture-tool scapy",
        )
    )
    if options.server:
        steps.append(
            Step(
                action=Action.SPAWN,
                title=f"server on {names.server_ip}:{options.port} ({options.close})",
                argv=server_argv(options, names, caps),
                process="server",
                stdout="server.jsonl",
                ready='"event": "listening"',
                timeout=10.0,
                fix="see logs/server.stderr in the run directory",
            )
        )
    steps += [
        Step(
            action=Action.SPAWN,
            title=f"{options.loops} client loops",
            argv=client_argv(options, names, caps),
            process="clients",
            stdout="clients.jsonl",
            timeout=10.0,
            fix="see logs/clients.stderr in the run directory",
        ),
        Step(
            action=Action.WAIT,
            title="clients run",
            process="clients",
            timeout=client_wait_timeout(options),
            ok_exit=(0, 1),  # `pair client` exits 1 when attempts failed: what a scenario is for; 2 is a usage error
        ),
        Step(action=Action.SLEEP, title="let late resets arrive", timeout=options.settle),
        Step(action=Action.STOP, title="stop the capture", process="capture", signal="SIGINT", timeout=5.0),
    ]
    if options.trace and caps.tracefs:
        steps.append(Step(action=Action.TRACE_STOP, title="collect the kernel trace", optional=True))
    for side, ns in sides:
        steps.append(
            Step(
                action=Action.RUN,
                title=f"{side} counters after",
                argv=_in_ns(ns, "nstat", "-a", "-s", "-z", "--json"),
                output_key=f"nstat.after.{side}",
                optional=True,
            )
        )
    if not loopback:
        for ns, dev, side in ((srv, names.server_dev, "server"), (cli, names.client_dev, "client")):
            steps.append(
                Step(
                    action=Action.RUN,
                    title=f"{side} qdisc statistics",
                    argv=_in_ns(ns, "tc", "-s", "-j", "qdisc", "show", "dev", dev),
                    output_key=f"qdisc.{side}",
                    optional=True,
                )
            )
    if options.server:
        steps.append(Step(action=Action.STOP, title="stop the server", process="server", timeout=5.0))
    return steps


def describe(steps: list[Step]) -> str:
    """The plan as numbered lines (``rstscope lab --dry-run``)."""
    lines = []
    for number, step in enumerate(steps, 1):
        what = step.command_line() if step.argv else f"({step.action.value} {step.process})".replace(" )", ")")
        lines.append(f"{number:3d}. {step.title}: {what}")
    return "\n".join(lines)


def capture_file_name(caps: Capabilities) -> str:
    return CAPTURE_FILES[caps.capture_tool]


def default_project_root() -> str:
    """The directory that holds the ``rstscope`` package."""
    return str(Path(__file__).resolve().parents[2])


__all__ = [
    "PRESETS",
    "Action",
    "Capabilities",
    "LabOptions",
    "Names",
    "Preset",
    "Step",
    "describe",
    "options_for",
    "plan",
]


# --------------------------------------------------------------------------- capture around the user's programs


@dataclass(kw_only=True)
class CaptureOptions:
    """``rstscope capture``: record a run directory around the user's own servers and clients."""

    iface: str = "lo"
    bpf: str = "tcp"
    snaplen: int = 0
    duration: float | None = None
    """Capture this long (when no command is given)."""
    command: tuple[str, ...] = ()
    """Run this and capture until it exits."""
    capture_tool: str = "auto"
    trace: bool = True
    settle: float = 1.0
    name: str = "capture"
    """Scenario name in the run directory's name."""

    def to_json(self) -> dict:
        data = dataclasses.asdict(self)
        data["command"] = list(self.command)
        return data


def capture_plan(options: CaptureOptions, names: Names, caps: Capabilities) -> list[Step]:
    """Steps of ``rstscope capture``: counters, trace, capture on a host interface, the command."""
    tool = caps.capture_tool
    out = CAPTURE_FILES[tool]
    if tool == "dumpcap":
        argv = ["dumpcap", "-q", "-i", options.iface, "-f", options.bpf, "-w", out, "-n"]
        if options.snaplen:
            argv += ["-s", str(options.snaplen)]
    elif tool == "tcpdump":
        argv = ["tcpdump", "-i", options.iface, "-s", str(options.snaplen or 262144), "-U", "-n", "-w", out]
        argv += [options.bpf]
    else:
        argv = ["env", f"PYTHONPATH={caps.project_root}", caps.python, "-m", "rstscope.lab.sniff"]
        argv += ["--iface", options.iface, "--filter", options.bpf, "--snaplen", str(options.snaplen), out]
    steps = [
        Step(
            action=Action.RUN,
            title="host counters before",
            argv=("nstat", "-a", "-s", "-z", "--json"),
            output_key="nstat.before.host",
            optional=True,
            requires_root=False,
        )
    ]
    if options.trace and caps.tracefs:
        steps.append(
            Step(action=Action.TRACE_START, title=f"kernel trace instance {names.trace_instance}", optional=True)
        )
    steps.append(
        Step(
            action=Action.SPAWN,
            title=f"capture with {tool} on {options.iface}",
            argv=tuple(argv),
            process="capture",
            ready=CAPTURE_READY[tool],
            timeout=10.0,
            signal="SIGINT",
            fix="capturing needs root or CAP_NET_RAW; check --iface (ip link)",
        )
    )
    if options.command:
        steps += [
            Step(
                action=Action.SPAWN,
                title=f"run `{shlex.join(options.command)}`",
                argv=tuple(options.command),
                process="command",
                stdout="command.stdout",
                requires_root=False,
            ),
            # optional: the command's own failure is reported (and is the exit status), the capture stands
            Step(action=Action.WAIT, title="command runs", process="command", timeout=24 * 3600.0, optional=True),
            Step(action=Action.SLEEP, title="let late resets arrive", timeout=options.settle),
        ]
    else:
        steps.append(
            Step(action=Action.SLEEP, title=f"capture for {options.duration:g} s", timeout=options.duration or 0)
        )
    steps.append(Step(action=Action.STOP, title="stop the capture", process="capture", signal="SIGINT", timeout=5.0))
    if options.trace and caps.tracefs:
        steps.append(Step(action=Action.TRACE_STOP, title="collect the kernel trace", optional=True))
    steps.append(
        Step(
            action=Action.RUN,
            title="host counters after",
            argv=("nstat", "-a", "-s", "-z", "--json"),
            output_key="nstat.after.host",
            optional=True,
            requires_root=False,
        )
    )
    return steps
