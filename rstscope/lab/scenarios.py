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

``--via-router`` puts a third namespace between them, a router running nftables
(the middlebox presets need it)::

    netns <p>-srv                 netns <p>-rtr                      netns <p>-cli
    server SRV_IP [<p>s]==veth==[<p>rs] ip_forward=1 [<p>rc]==veth==[<p>c] CLI_IP
           tbf -> router        nft table inet rstscope           router <- tbf
                                (chain `forward`; `fwd` is an nft keyword)

Each side is a /25 of the run's /24 with a default route via the router; the
router's table holds the preset's rules, each with a counter and a comment that
names it (read before and after the run: the middlebox's ground truth), and the
router's own sysctls (conntrack timeouts) are set in its namespace.  The forger
of ``inject``/``ignored`` (``rstscope.lab.inject``) runs in the router namespace.

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
    requests: int = 1
    """Requests per connection (the client sends the next after each response)."""
    next_request_bytes: int | None = None
    """Size of the requests after the first (None: the first request's size)."""
    idle: float = 0.0
    """Seconds the client stays silent before each next request."""
    request_timeout: float = 10.0
    """Seconds the server waits for a connection's next request before closing it."""
    pause_after: int = 0
    """The server pauses each response after this many bytes (0: never)."""
    pause: float = 0.0
    """Seconds of that pause."""
    keepalive: str | None = None
    """Server TCP keepalive as ``IDLE/INTERVAL/COUNT`` (``rstscope pair server --keepalive``)."""
    second_port: int | None = None
    """A second server port; odd-numbered client loops use it."""
    late_fin: bool = False
    """The client's late bytes carry its FIN."""
    hold: float = 0.0
    """Seconds each client keeps its socket open after EOF before closing it."""
    # the router (middlebox) between client and server
    via_router: bool = False
    """Three namespaces: client -- router -- server (implied by ``firewall`` and ``inject``)."""
    firewall: str = "none"
    """The router's nftables rules: one of :data:`FIREWALLS`."""
    drop_after: float = 1.0
    """``firewall=drop-client``: seconds after the clients start before the router drops their packets."""
    inject: str = "none"
    """``exact`` or ``ignored``: forged RSTs from the router (``rstscope.lab.inject``); ``none``."""
    inject_after_bytes: int = 10_000
    """Forge only once the server sent this much on a connection (then at the first pause)."""
    conntrack_timeout: int | None = None
    """Router's ``net.netfilter.nf_conntrack_tcp_timeout_established`` in seconds."""
    conntrack_loose: int | None = None
    """Router's ``net.netfilter.nf_conntrack_tcp_loose`` (0: mid-stream packets do not re-create an entry)."""
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

    def router_sysctls(self) -> dict[str, int]:
        """The sysctls to set in the router namespace (conntrack: the module must be loaded first)."""
        wanted = {
            "net.netfilter.nf_conntrack_tcp_timeout_established": self.conntrack_timeout,
            "net.netfilter.nf_conntrack_tcp_loose": self.conntrack_loose,
        }
        return {name: value for name, value in wanted.items() if value is not None}

    @property
    def needs_router(self) -> bool:
        return self.firewall != "none" or self.inject != "none" or bool(self.router_sysctls())

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


FIREWALLS = ("none", "reject-request", "reject-syn", "ct-invalid", "drop-client")
"""The router's rule sets (see :func:`firewall_rules`)."""
INJECT_MODES = ("none", "exact", "ignored")

OPTION_NAMES = frozenset(f.name for f in dataclasses.fields(LabOptions))


@dataclass(frozen=True, kw_only=True)
class Preset:
    summary: str
    """One line: what the preset reproduces."""
    expect: str
    """What a run should show (the tests check this)."""
    overrides: dict
    """LabOptions fields this preset sets."""


_WHOLE_REQUEST = {"read_bytes": 16, "request_bytes": 16, "trailing_bytes": 0}
"""The server reads every request byte: whatever resets these connections, it is not a close race."""

_PAUSED_RESPONSE = {
    "via_router": True,
    "inject_after_bytes": 10_000,
    "close": "lingering",
    **_WHOLE_REQUEST,
    "response_bytes": 60_000,
    "pause_after": 20_000,
    "pause": 0.6,  # the gap a forged RST is timed into
    "loops": 3,
}
"""The forger's presets: a response that pauses after 20 kB for 0.6 s."""

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
    "firewall-reject": Preset(
        summary="router: nft `reject with tcp reset` of each connection's second request, mid-connection",
        expect="clients get ECONNRESET on the second request; the RST is the router's (no endpoint record); "
        "the server's later FIN draws the client's NO_SOCKET echo",
        overrides={
            "via_router": True,
            "firewall": "reject-request",
            "close": "close",
            **_WHOLE_REQUEST,
            "response_bytes": 4_000,
            "requests": 2,
            "next_request_bytes": 600,
            "request_timeout": 0.5,
            "loops": 4,
        },
    ),
    "firewall-syn": Preset(
        summary="router: nft rejects SYNs to one port (8081) with a RST while the server's port 8080 works",
        expect="even loops read the whole response on 8080; odd loops get ECONNREFUSED on 8081 from the router "
        "(the server listens there: no endpoint record)",
        overrides={
            "via_router": True,
            "firewall": "reject-syn",
            "second_port": 8081,
            "close": "close",
            **_WHOLE_REQUEST,
            "response_bytes": 4_000,
            "loops": 4,
        },
    ),
    "conntrack-idle": Preset(
        summary="router: conntrack established timeout 2 s, loose 0, `ct state invalid` rejected; clients idle 4 s",
        expect="the request after the idle is rejected by the router with a RST: clients get ECONNRESET",
        overrides={
            "via_router": True,
            "firewall": "ct-invalid",
            "conntrack_timeout": 2,
            "conntrack_loose": 0,
            "close": "close",
            **_WHOLE_REQUEST,
            "response_bytes": 4_000,
            "requests": 2,
            "idle": 4.0,
            "request_timeout": 6.0,
            "loops": 3,
        },
    ),
    "inject": Preset(
        summary="router: a forged RST at exactly the client's rcv_nxt, during a pause mid-response",
        expect="clients get ECONNRESET after the pause's bytes; the server keeps sending and the client's "
        "kernel answers with NO_SOCKET RSTs; the injector's log names each forged RST",
        overrides={**_PAUSED_RESPONSE, "inject": "exact"},
    ),
    "ignored": Preset(
        summary="router: forged RSTs out of the window and in the window but not at rcv_nxt: both ignored",
        expect="every client reads the whole response (connections end with FINs); a challenge ACK answers "
        "each inexact RST; no endpoint sends a RST",
        overrides={**_PAUSED_RESPONSE, "inject": "ignored"},
    ),
    "keepalive": Preset(
        summary="server keepalive 1/1/2 while the router drops the client's direction: the server gives up",
        expect="the server sends RST with kernel reason TCP_KEEPALIVE_TIMEOUT (ETIMEDOUT in the server); "
        "the client's next request fails",
        overrides={
            "via_router": True,
            "firewall": "drop-client",
            "drop_after": 1.0,
            "keepalive": "1/1/2",
            "close": "close",
            **_WHOLE_REQUEST,
            "response_bytes": 2_000,
            "requests": 2,
            "idle": 6.0,
            "request_timeout": 30.0,
            "loops": 2,
        },
    ),
    "shutdown-close": Preset(
        summary="shutdown(SHUT_WR) then close() with unread request bytes while the response is in flight",
        expect="the FIN, then a RST (kernel TCP_ABORT_ON_CLOSE from FIN_WAIT1); clients read part of the response",
        overrides={
            "close": "shutdown-close",
            "read_bytes": 16,
            "request_bytes": 16,
            "trailing_bytes": 8,
            "hold": 0.5,  # a client FIN before the server's close() would end it without a RST
            "loops": 4,
            # A slower link keeps the response in flight for ~0.3 s after the FIN left: longer than a busy
            # machine's scheduling delay between "FIN sent" and close(), so the RST finds data unacknowledged.
            "rate": "5mbit",
        },
    ),
    "late-fin": Preset(
        summary="after the server's FIN the client sends late bytes and its FIN in one segment",
        expect="the server's kernel answers with RST (TCP_ABORT_ON_DATA); clients read the whole response",
        overrides={
            "close": "close",
            **_WHOLE_REQUEST,
            "response_bytes": 2_000,
            "late_bytes": 100,
            "late_fin": True,
            "loops": 4,
        },
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
    options = LabOptions(**values)
    if options.firewall not in FIREWALLS:
        raise ValueError(f"unknown firewall {options.firewall!r}: use one of {', '.join(FIREWALLS)}")
    if options.inject not in INJECT_MODES:
        raise ValueError(f"unknown inject mode {options.inject!r}: use one of {', '.join(INJECT_MODES)}")
    if options.needs_router and not options.via_router:
        options = dataclasses.replace(options, via_router=True)  # the middlebox lives in the router
    return options


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
    prefix_len: int = 24
    """Length of the network prefix on each link (25 with a router: one half of the /24 per side)."""
    router_ns: str = ""
    """Router namespace (``--via-router``), else ''."""
    router_server_dev: str = ""
    """Router's end of the server's veth."""
    router_client_dev: str = ""
    """Router's end of the client's veth."""
    router_server_ip: str = ""
    router_client_ip: str = ""

    @classmethod
    def make(cls, pid: int, token: int, *, loopback: bool = False, via_router: bool = False) -> Names:
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
        two = cls(
            prefix=prefix,
            server_ns=f"{prefix}-srv",
            client_ns=f"{prefix}-cli",
            server_dev=f"{short}s",
            client_dev=f"{short}c",
            server_ip=f"{subnet}.1",
            client_ip=f"{subnet}.2",
            trace_instance=prefix,
        )
        if not via_router:
            return two
        # one /25 per side of the router: server .1 and router .126, router .129 and client .130
        return dataclasses.replace(
            two,
            client_ip=f"{subnet}.130",
            prefix_len=25,
            router_ns=f"{prefix}-rtr",
            router_server_dev=f"{short}rs",
            router_client_dev=f"{short}rc",
            router_server_ip=f"{subnet}.126",
            router_client_ip=f"{subnet}.129",
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
        *_server_extras(options),
    )


def _server_extras(options: LabOptions) -> tuple[str, ...]:
    """Server options of the middlebox presets, only when set (older plans stay as they were)."""
    extra: list[str] = []
    if options.requests > 1:
        extra += ["--requests", str(options.requests), "--request-timeout", str(options.request_timeout)]
    if options.pause_after and options.pause:
        extra += ["--pause-after", str(options.pause_after), "--pause", str(options.pause)]
    if options.keepalive:
        extra += ["--keepalive", options.keepalive]
    if options.second_port is not None:
        extra += ["--second-port", str(options.second_port)]
    return tuple(extra)


def _client_extras(options: LabOptions) -> tuple[str, ...]:
    extra: list[str] = []
    if options.requests > 1:
        extra += ["--requests", str(options.requests), "--idle", str(options.idle)]
        if options.next_request_bytes is not None:
            extra += ["--next-request-bytes", str(options.next_request_bytes)]
    if options.late_fin:
        extra.append("--late-fin")
    if options.second_port is not None:
        extra += ["--second-port", str(options.second_port)]
    if options.hold:
        extra += ["--hold", str(options.hold)]
    return tuple(extra)


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
        *_client_extras(options),
    )


def capture_argv(options: LabOptions, names: Names, caps: Capabilities, out: str) -> tuple[str, ...]:
    """The capture command for the client side (``out`` is the file name in the run directory)."""
    dev = names.client_dev
    bpf = capture_filter(options)
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


def capture_filter(options: LabOptions) -> str:
    if options.second_port is not None:
        return f"tcp port {options.port} or tcp port {options.second_port}"
    return f"tcp port {options.port}"


CAPTURE_FILES = {"dumpcap": "capture.pcapng", "tcpdump": "capture.pcap", "scapy": "capture.pcapng"}
"""File each capture tool writes: tcpdump 4.x cannot write pcapng."""
CAPTURE_READY = {"dumpcap": "Capturing on", "tcpdump": "listening on", "scapy": "sniffing on"}
"""Text each capture tool prints on stderr once it captures."""


def client_wait_timeout(options: LabOptions) -> float:
    """How long the clients may take before they are stopped (generous: timeouts, slow links)."""
    if options.duration:
        return options.duration + 2 * options.timeout + 10
    per_attempt = 2 * options.timeout + options.late_delay + options.idle * (options.requests - 1) + 5
    return (options.count or 1) * per_attempt + 10


# --------------------------------------------------------------------------- the router (middlebox)

NFT_TABLE = "rstscope"
"""The router's own nftables table (``inet`` family), removed at teardown with its namespace."""
NFT_FIX = "nftables must work in a namespace (nft, nf_tables, nf_reject_ipv4, nf_conntrack)"
DROP_CLIENT = "drop-client"


def _link_steps(ns: str, dev: str, ip: str, prefix_len: int, side: str) -> list[Step]:
    return [
        Step(
            action=Action.RUN,
            title=f"address {ip}/{prefix_len} on the {side} end",
            argv=("ip", "-n", ns, "addr", "add", f"{ip}/{prefix_len}", "dev", dev),
        ),
        Step(action=Action.RUN, title=f"{side} link up", argv=("ip", "-n", ns, "link", "set", dev, "up")),
        Step(
            action=Action.RUN,
            title=f"{side} offloads off (wire-sized segments)",
            argv=_in_ns(ns, "ethtool", "-K", dev, "tso", "off", "gso", "off", "gro", "off"),
            optional=True,
            fix="install ethtool; without it the capture shows super-segments above the MTU",
        ),
    ]


def router_link_steps(names: Names) -> list[Step]:
    """Three namespaces, two veth pairs, addresses, routes via the router, forwarding on."""
    srv, cli, rtr = names.server_ns, names.client_ns, names.router_ns
    steps = [
        Step(
            action=Action.RUN,
            title=f"create {role} namespace",
            argv=("ip", "netns", "add", ns),
            undo=("ip", "netns", "del", ns),
            fix=ROOT_FIX,
        )
        for role, ns in (("server", srv), ("router", rtr), ("client", cli))
    ]
    for ns, dev, peer, side in (
        (srv, names.server_dev, names.router_server_dev, "server"),
        (cli, names.client_dev, names.router_client_dev, "client"),
    ):
        steps.append(
            Step(
                action=Action.RUN,
                title=f"veth pair {side} -- router",
                argv=("ip", "-n", ns, "link", "add", dev, "type", "veth", "peer", "name", peer, "netns", rtr),
                fix="the kernel needs veth support (CONFIG_VETH)",
            )
        )
    bits = names.prefix_len
    for ns, dev, ip, side in (
        (srv, names.server_dev, names.server_ip, "server"),
        (rtr, names.router_server_dev, names.router_server_ip, "router (server side)"),
        (rtr, names.router_client_dev, names.router_client_ip, "router (client side)"),
        (cli, names.client_dev, names.client_ip, "client"),
    ):
        steps += _link_steps(ns, dev, ip, bits, side)
    for ns, side in ((srv, "server"), (rtr, "router"), (cli, "client")):
        steps.append(
            Step(action=Action.RUN, title=f"{side} loopback up", argv=("ip", "-n", ns, "link", "set", "lo", "up"))
        )
    steps += [
        Step(
            action=Action.RUN,
            title="server route via the router",
            argv=("ip", "-n", srv, "route", "add", "default", "via", names.router_server_ip),
        ),
        Step(
            action=Action.RUN,
            title="client route via the router",
            argv=("ip", "-n", cli, "route", "add", "default", "via", names.router_client_ip),
        ),
        Step(
            action=Action.RUN,
            title="router forwards (net.ipv4.ip_forward=1)",
            argv=_in_ns(rtr, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1"),
        ),
    ]
    return steps


def firewall_rules(names: Names, options: LabOptions) -> list[tuple[str, str]]:
    """(comment, rule) of the router's forward chain for ``options.firewall`` (set at the start).

    Every rule counts what it matched; the comment names the rule in the counters.
    ``drop-client`` is added later in the run (:data:`DROP_CLIENT`), not here.
    """
    cli, srv, port = names.client_ip, names.server_ip, options.port
    first_request = options.request_bytes + options.trailing_bytes
    if options.firewall == "reject-request":
        # IPv4 + TCP with timestamps = 52 bytes of headers: anything longer than the first request
        # from the client is a later request.
        return [
            (
                "reject-request",
                f"ip saddr {cli} ip daddr {srv} tcp dport {port} ip length > {52 + first_request} "
                "counter reject with tcp reset",
            )
        ]
    if options.firewall == "reject-syn":
        second = options.second_port
        return [
            ("reject-syn", f"ip daddr {srv} tcp dport {second} tcp flags & (syn | ack) == syn "
             "counter reject with tcp reset"),
        ]  # fmt: skip
    if options.firewall == "ct-invalid":
        return [
            ("ct-new", "ct state new counter"),
            ("ct-invalid", "ct state invalid counter reject with tcp reset"),
        ]
    return []


def _nft_rule(names: Names, options: LabOptions, comment: str) -> str:
    if comment == DROP_CLIENT:
        rule = f"ip saddr {names.client_ip} ip daddr {names.server_ip} counter drop"
    else:
        rule = dict(firewall_rules(names, options))[comment]
    return f'add rule inet {NFT_TABLE} forward {rule} comment "{comment}"'


def _nft_counters_step(names: Names, when: str) -> Step:
    return Step(
        action=Action.RUN,
        title=f"router rule counters {when}",
        argv=_in_ns(names.router_ns, "nft", "-j", "list", "table", "inet", NFT_TABLE),
        output_key=f"nft.{when}",
        optional=True,
    )


def router_rule_steps(names: Names, options: LabOptions) -> list[Step]:
    """The router's nftables table and chain, the preset's rules, its sysctls, counters before."""
    rtr = names.router_ns
    script = [
        f"add table inet {NFT_TABLE}",
        f"add chain inet {NFT_TABLE} forward {{ type filter hook forward priority 0; policy accept; }}",
    ]
    script += [_nft_rule(names, options, comment) for comment, _ in firewall_rules(names, options)]
    steps = [
        Step(
            action=Action.RUN,
            title=f"router nftables table inet {NFT_TABLE} ({options.firewall})",
            argv=_in_ns(rtr, "nft", "; ".join(script)),
            undo=_in_ns(rtr, "nft", "delete", "table", "inet", NFT_TABLE),
            fix=NFT_FIX,
        )
    ]
    for name, value in options.router_sysctls().items():
        steps.append(
            Step(
                action=Action.RUN,
                title=f"router namespace {name}={value}",
                argv=_in_ns(rtr, "sysctl", "-q", "-w", f"{name}={value}"),
                fix="conntrack sysctls exist once nf_conntrack is loaded (the `ct` rule loads it)",
            )
        )
    steps.append(
        Step(
            action=Action.RUN,
            title="read back router sysctls",
            argv=_in_ns(rtr, "sysctl", "net.ipv4.ip_forward", *options.router_sysctls()),
            output_key="sysctl.router",
            optional=True,
        )
    )
    steps.append(_nft_counters_step(names, "before"))
    return steps


def injector_step(options: LabOptions, names: Names, caps: Capabilities) -> Step:
    """The forger in the router namespace; its stdout (injector.jsonl) is the ground truth of its RSTs."""
    argv = _in_ns(
        names.router_ns,
        "env",
        f"PYTHONPATH={caps.project_root}",
        caps.python,
        "-m",
        "rstscope.lab.inject",
        "--iface",
        names.router_client_dev,
        "--server",
        f"{names.server_ip}:{options.port}",
        "--client",
        names.client_ip,
        "--mode",
        options.inject,
        "--after-bytes",
        str(options.inject_after_bytes),
    )
    return Step(
        action=Action.SPAWN,
        title=f"forged RSTs ({options.inject}) from the router",
        argv=argv,
        process="injector",
        stdout="injector.jsonl",
        ready='"event": "ready"',
        timeout=20.0,
        signal="SIGINT",
        fix="the injector needs scapy (pip install scapy); see logs/injector.stderr",
    )


def plan(options: LabOptions, names: Names, caps: Capabilities) -> list[Step]:
    """The steps of one run, in order.  Teardown is each step's ``undo``, in reverse."""
    steps: list[Step] = []
    loopback = options.loopback
    if options.via_router and not loopback and not names.router_ns:
        raise ValueError("a plan through the router needs Names.make(..., via_router=True)")
    srv, cli = names.server_ns, names.client_ns
    if not loopback and options.via_router:
        steps += router_link_steps(names)
    if not loopback and not options.via_router:
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
    if not loopback:
        steps += _tc_rate_steps(names, options, caps)
        if options.via_router:
            steps += router_rule_steps(names, options)
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
    if options.inject != "none":
        steps.append(injector_step(options, names, caps))
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
    ]
    if options.firewall == "drop-client":
        steps += [
            Step(action=Action.SLEEP, title="let the clients get their first response", timeout=options.drop_after),
            Step(
                action=Action.RUN,
                title="router drops the client's direction",
                argv=_in_ns(names.router_ns, "nft", _nft_rule(names, options, DROP_CLIENT)),
                fix=NFT_FIX,
            ),
        ]
    steps += [
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
    if options.inject != "none":
        steps.append(Step(action=Action.STOP, title="stop the injector", process="injector", signal="SIGINT"))
    if options.via_router:
        steps.append(_nft_counters_step(names, "after"))
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
