"""Plans as data: the expected step sequences, checked without root (playbook style)."""

from __future__ import annotations

import pytest

from rstscope.lab import scenarios
from rstscope.lab.scenarios import Action, Capabilities, Names

CAPS = Capabilities(python="/py", project_root="/src", capture_tool="dumpcap", netem=False, tracefs=True)
NAMES = Names.make(1234, 0xABCD)


def titles(steps):
    return [(s.action, s.title) for s in steps]


def test_names_are_unique_short_and_prefixed():
    names = Names.make(1234, 0xABCD)
    assert names.server_ns == "rs-1234-abcd-srv" and names.client_ns == "rs-1234-abcd-cli"
    assert len(names.server_dev) <= 15 and len(names.client_dev) <= 15  # IFNAMSIZ - 1
    assert names.server_dev != names.client_dev
    other = Names.make(1234, 0xABCE)
    assert other.server_ip != names.server_ip  # concurrent runs get their own /24
    assert names.server_ip.rsplit(".", 1)[0] == names.client_ip.rsplit(".", 1)[0]


def test_close_race_plan_sequence():
    options = scenarios.options_for("close-race", port=8080)
    steps = scenarios.plan(options, NAMES, CAPS)
    kinds = [s.action for s in steps]
    # namespaces first (with undo), then the link, then capture < server < clients < wait < stop
    assert steps[0].argv == ("ip", "netns", "add", "rs-1234-abcd-srv")
    assert steps[0].undo == ("ip", "netns", "del", "rs-1234-abcd-srv")
    assert steps[1].undo == ("ip", "netns", "del", "rs-1234-abcd-cli")
    assert "veth" in steps[2].argv
    spawn = [s.process for s in steps if s.action is Action.SPAWN]
    assert spawn == ["capture", "server", "clients"]
    order = [s.title for s in steps]
    assert order.index("kernel trace instance rs-1234-abcd") < order.index("capture with dumpcap on rsabcdc")
    assert kinds[-1] is Action.STOP and steps[-1].process == "server"
    stop_capture = next(i for i, s in enumerate(steps) if s.action is Action.STOP and s.process == "capture")
    wait_clients = next(i for i, s in enumerate(steps) if s.action is Action.WAIT)
    assert wait_clients < stop_capture < len(steps) - 1


def test_every_link_command_runs_inside_a_namespace():
    """The host's interfaces are never touched: every ip/tc/ethtool/sysctl names a namespace."""
    for scenario in scenarios.PRESETS:
        options = scenarios.options_for(scenario, port=8080, loss=1.0)
        steps = scenarios.plan(options, Names.make(1234, 0xABCD, via_router=options.via_router), CAPS)
        for step in steps:
            if not step.argv or step.argv[:3] == ("ip", "netns", "add"):
                continue
            inside = step.argv[:3] == ("ip", "netns", "exec") or step.argv[:2] == ("ip", "-n")
            assert inside, f"{scenario}: {step.command_line()} runs in the host namespace"


def test_offloads_off_and_tbf_both_ways():
    steps = scenarios.plan(scenarios.options_for("close-race", port=8080), NAMES, CAPS)
    ethtool = [s for s in steps if "ethtool" in s.argv]
    assert len(ethtool) == 2 and all(s.argv[-6:] == ("tso", "off", "gso", "off", "gro", "off") for s in ethtool)
    tbf = [s for s in steps if "tbf" in s.argv]
    assert len(tbf) == 2
    assert all("20mbit" in s.argv and "200ms" in s.argv for s in tbf)


def test_backlog_sets_server_namespace_sysctls():
    steps = scenarios.plan(scenarios.options_for("backlog", port=8080), NAMES, CAPS)
    sysctl = [s.argv[-1] for s in steps if "sysctl" in s.argv and "-w" in s.argv]
    assert "net.ipv4.tcp_abort_on_overflow=1" in sysctl
    assert "net.ipv4.tcp_syncookies=0" in sysctl
    assert all(NAMES.server_ns in s.argv for s in steps if "sysctl" in s.argv and "-w" in s.argv)
    server = next(s for s in steps if s.process == "server" and s.action is Action.SPAWN)
    assert server.argv[server.argv.index("--backlog") + 1] == "4"
    slow = next(s for s in steps if "tbf" in s.argv and NAMES.client_ns in s.argv)
    assert "100kbit" in slow.argv and "1600" in slow.argv  # small bucket: slow from the first SYN


def test_backlog_silent_keeps_abort_on_overflow_off():
    options = scenarios.options_for("backlog-silent", port=8080)
    assert options.sysctls()["net.ipv4.tcp_abort_on_overflow"] == 0


def test_refused_has_no_server():
    steps = scenarios.plan(scenarios.options_for("refused", port=8080), NAMES, CAPS)
    assert [s.process for s in steps if s.action is Action.SPAWN] == ["capture", "clients"]


def test_delay_needs_netem_step_and_loss_falls_back_to_nftables():
    steps = scenarios.plan(scenarios.options_for("clean", port=8080, loss=2.0), NAMES, CAPS)
    nft = [s for s in steps if "nft" in s.argv]
    assert len(nft) == 2 and "numgen random mod 1000 < 20" in nft[0].argv[-1]
    assert not any("netem" in s.argv for s in steps)
    with_netem = Capabilities(python="/py", project_root="/src", capture_tool="dumpcap", netem=True)
    steps = scenarios.plan(scenarios.options_for("clean", port=8080, delay="20ms"), NAMES, with_netem)
    netem = [s for s in steps if "netem" in s.argv]
    assert len(netem) == 2 and "netem" in netem[0].fix
    assert all("parent" in s.argv for s in steps if "tbf" in s.argv)


def test_no_trace_step_without_tracefs():
    caps = Capabilities(python="/py", project_root="/src", capture_tool="tcpdump", tracefs=False)
    steps = scenarios.plan(scenarios.options_for("close-race", port=8080), NAMES, caps)
    assert not any(s.action in (Action.TRACE_START, Action.TRACE_STOP) for s in steps)
    capture = next(s for s in steps if s.process == "capture")
    assert "tcpdump" in capture.argv and "capture.pcap" in capture.argv


def test_loopback_plan_has_no_namespaces_nor_shaping():
    names = Names.make(1, 2, loopback=True)
    steps = scenarios.plan(scenarios.options_for("clean", port=45678, loopback=True), names, CAPS)
    assert not any(s.argv[:2] in (("ip", "netns"), ("ip", "-n")) for s in steps)
    assert not any("tc" in s.argv[:1] or "tbf" in s.argv for s in steps)
    capture = next(s for s in steps if s.process == "capture")
    assert capture.argv[:2] == ("dumpcap", "-q") and "lo" in capture.argv


def test_client_and_server_arguments_follow_the_options():
    options = scenarios.options_for("late-data", port=9000)
    argv = scenarios.client_argv(options, NAMES, CAPS)
    assert argv[:4] == ("ip", "netns", "exec", NAMES.client_ns)
    assert argv[argv.index("--late-bytes") + 1] == "100"
    assert argv[argv.index("--expect-bytes") + 1] == "2000"
    duration = scenarios.options_for("clean", port=9000, duration=5.0)
    argv = scenarios.client_argv(duration, NAMES, CAPS)
    assert "--duration" in argv and "--count" not in argv


def test_options_for_rejects_unknown():
    with pytest.raises(KeyError):
        scenarios.options_for("no-such-preset")
    with pytest.raises(TypeError):
        scenarios.options_for("clean", colour="red")


def test_snaplen_reaches_the_capture_tool():
    steps = scenarios.plan(scenarios.options_for("clean", port=8080, snaplen=96), NAMES, CAPS)
    capture = next(s for s in steps if s.process == "capture")
    assert capture.argv[capture.argv.index("-s") + 1] == "96"


def test_describe_numbers_every_step():
    steps = scenarios.plan(scenarios.options_for("clean", port=8080), NAMES, CAPS)
    text = scenarios.describe(steps)
    assert text.count("\n") == len(steps) - 1 and text.startswith("  1. create server namespace: ip netns add")


def test_capture_plan_runs_the_command_between_capture_and_stop():
    options = scenarios.CaptureOptions(command=("true",), iface="lo")
    steps = scenarios.capture_plan(options, Names.make(1, 2, loopback=True), CAPS)
    processes = [(s.action, s.process) for s in steps if s.process]
    assert processes == [
        (Action.SPAWN, "capture"),
        (Action.SPAWN, "command"),
        (Action.WAIT, "command"),
        (Action.STOP, "capture"),
    ]


# --------------------------------------------------------------------------- the router (--via-router)

ROUTED = Names.make(1234, 0xABCD, via_router=True)


def routed_plan(scenario: str, **overrides):
    return scenarios.plan(scenarios.options_for(scenario, port=8080, **overrides), ROUTED, CAPS)


def nft_script(steps):
    return next(s for s in steps if s.title.startswith("router nftables table")).argv[-1]


def test_router_names_are_unique_and_split_the_subnet():
    assert (ROUTED.router_ns, ROUTED.router_server_dev, ROUTED.router_client_dev) == (
        "rs-1234-abcd-rtr", "rsabcdrs", "rsabcdrc",
    )  # fmt: skip
    devices = {ROUTED.server_dev, ROUTED.client_dev, ROUTED.router_server_dev, ROUTED.router_client_dev}
    assert len(devices) == 4 and all(len(d) <= 15 for d in devices)
    assert ROUTED.prefix_len == 25
    assert ROUTED.server_ip.endswith(".1") and ROUTED.router_server_ip.endswith(".126")  # low /25
    assert ROUTED.router_client_ip.endswith(".129") and ROUTED.client_ip.endswith(".130")  # high /25


def test_via_router_topology_sequence():
    steps = routed_plan("close-race", via_router=True)
    assert [s.argv for s in steps[:3]] == [
        ("ip", "netns", "add", "rs-1234-abcd-srv"),
        ("ip", "netns", "add", "rs-1234-abcd-rtr"),
        ("ip", "netns", "add", "rs-1234-abcd-cli"),
    ]
    assert all(s.undo == ("ip", "netns", "del", s.argv[-1]) for s in steps[:3])
    veths = [s.argv for s in steps if "veth" in s.argv]
    assert veths == [
        ("ip", "-n", "rs-1234-abcd-srv", "link", "add", "rsabcds", "type", "veth", "peer", "name", "rsabcdrs",
         "netns", "rs-1234-abcd-rtr"),
        ("ip", "-n", "rs-1234-abcd-cli", "link", "add", "rsabcdc", "type", "veth", "peer", "name", "rsabcdrc",
         "netns", "rs-1234-abcd-rtr"),
    ]  # fmt: skip
    ethtool = [s.argv[6] for s in steps if "ethtool" in s.argv]
    assert ethtool == ["rsabcds", "rsabcdrs", "rsabcdrc", "rsabcdc"]  # offloads off on all four ends
    routes = [s.argv for s in steps if "route" in s.argv]
    assert routes == [
        ("ip", "-n", "rs-1234-abcd-srv", "route", "add", "default", "via", ROUTED.router_server_ip),
        ("ip", "-n", "rs-1234-abcd-cli", "route", "add", "default", "via", ROUTED.router_client_ip),
    ]
    assert any(s.argv[-1] == "net.ipv4.ip_forward=1" and ROUTED.router_ns in s.argv for s in steps)
    tbf = [s for s in steps if "tbf" in s.argv]
    # the slow link as before, at both ends
    assert [s.argv[s.argv.index("dev") + 1] for s in tbf] == ["rsabcds", "rsabcdc"]
    table = next(s for s in steps if s.title.startswith("router nftables table"))
    assert table.undo == ("ip", "netns", "exec", ROUTED.router_ns, "nft", "delete", "table", "inet", "rstscope")
    assert "add chain inet rstscope forward { type filter hook forward priority 0; policy accept; }" in table.argv[-1]
    counters = [s for s in steps if s.output_key.startswith("nft.")]
    assert [s.output_key for s in counters] == ["nft.before", "nft.after"]
    order = [s.title for s in steps]
    assert order.index("router rule counters after") > order.index("stop the capture")
    capture = next(s for s in steps if s.process == "capture")
    assert capture.argv[3] == ROUTED.client_ns and "rsabcdc" in capture.argv


def test_plan_through_the_router_needs_router_names():
    with pytest.raises(ValueError, match="via_router=True"):
        scenarios.plan(scenarios.options_for("firewall-reject", port=8080), NAMES, CAPS)


@pytest.mark.parametrize(
    ("preset", "via_router"),
    [
        ("firewall-reject", True), ("firewall-syn", True), ("conntrack-idle", True), ("inject", True),
        ("ignored", True), ("keepalive", True), ("shutdown-close", False), ("late-fin", False),
    ],
)  # fmt: skip
def test_new_presets_imply_the_router_where_they_need_it(preset, via_router):
    assert scenarios.options_for(preset).via_router is via_router


def test_firewall_reject_rejects_the_second_request_only():
    steps = routed_plan("firewall-reject")
    rule = (
        f"add rule inet rstscope forward ip saddr {ROUTED.client_ip} ip daddr {ROUTED.server_ip} tcp dport 8080 "
        'ip length > 68 counter reject with tcp reset comment "reject-request"'
    )
    assert rule in nft_script(steps)  # 52 header bytes + the 16-byte first request; the second has 600
    client = next(s for s in steps if s.process == "clients").argv
    assert client[client.index("--requests") + 1] == "2" and client[client.index("--next-request-bytes") + 1] == "600"
    server = next(s for s in steps if s.process == "server").argv
    assert server[server.index("--requests") + 1] == "2"


def test_firewall_syn_rejects_one_port_of_a_working_server():
    steps = routed_plan("firewall-syn")
    assert f"ip daddr {ROUTED.server_ip} tcp dport 8081 tcp flags & (syn | ack) == syn counter reject with tcp reset" \
        in nft_script(steps)  # fmt: skip
    server = next(s for s in steps if s.process == "server").argv
    client = next(s for s in steps if s.process == "clients").argv
    assert server[server.index("--second-port") + 1] == "8081" == client[client.index("--second-port") + 1]
    capture = next(s for s in steps if s.process == "capture")
    assert capture.argv[capture.argv.index("-f") + 1] == "tcp port 8080 or tcp port 8081"


def test_conntrack_idle_sets_the_router_conntrack_after_its_table():
    steps = routed_plan("conntrack-idle")
    assert 'ct state invalid counter reject with tcp reset comment "ct-invalid"' in nft_script(steps)
    sysctls = [s for s in steps if "-w" in s.argv and ROUTED.router_ns in s.argv]
    assert [s.argv[-1] for s in sysctls] == [
        "net.ipv4.ip_forward=1",
        "net.netfilter.nf_conntrack_tcp_timeout_established=2",
        "net.netfilter.nf_conntrack_tcp_loose=0",
    ]
    order = [s.title for s in steps]
    assert order.index("router nftables table inet rstscope (ct-invalid)") < order.index(sysctls[1].title)
    client = next(s for s in steps if s.process == "clients").argv
    assert float(client[client.index("--idle") + 1]) > 2  # idles past the conntrack timeout


@pytest.mark.parametrize("preset", ["inject", "ignored"])
def test_injector_runs_in_the_router_between_capture_and_server(preset):
    steps = routed_plan(preset)
    injector = next(s for s in steps if s.process == "injector" and s.action is Action.SPAWN)
    assert injector.argv[:4] == ("ip", "netns", "exec", ROUTED.router_ns)
    assert injector.argv[injector.argv.index("--iface") + 1] == ROUTED.router_client_dev
    assert injector.argv[injector.argv.index("--mode") + 1] == ("exact" if preset == "inject" else "ignored")
    assert injector.stdout == "injector.jsonl" and injector.signal == "SIGINT"
    spawns = [s.process for s in steps if s.action is Action.SPAWN]
    assert spawns == ["capture", "injector", "server", "clients"]
    stops = [s.process for s in steps if s.action is Action.STOP]
    assert stops == ["capture", "injector", "server"]
    server = next(s for s in steps if s.process == "server").argv
    assert server[server.index("--pause-after") + 1] == "20000"  # the gap the forged RST is timed into


def test_keepalive_drops_the_client_direction_after_the_first_response():
    steps = routed_plan("keepalive")
    server = next(s for s in steps if s.process == "server").argv
    assert server[server.index("--keepalive") + 1] == "1/1/2"
    order = [(s.action, s.title) for s in steps]
    drop = next(i for i, s in enumerate(steps) if s.title == "router drops the client's direction")
    assert steps[drop].argv[-1] == (
        f"add rule inet rstscope forward ip saddr {ROUTED.client_ip} ip daddr {ROUTED.server_ip} counter drop "
        'comment "drop-client"'
    )
    assert order[drop - 1] == (Action.SLEEP, "let the clients get their first response")
    assert order[drop - 2][1] == "2 client loops" and order[drop + 1] == (Action.WAIT, "clients run")


def test_shutdown_close_and_late_fin_need_no_router():
    for preset, flag in (("shutdown-close", "shutdown-close"), ("late-fin", "--late-fin")):
        steps = scenarios.plan(scenarios.options_for(preset, port=8080), NAMES, CAPS)
        assert not any("rtr" in " ".join(s.argv) for s in steps)
        argv = [a for s in steps if s.process in ("server", "clients") for a in s.argv]
        assert flag in argv


def test_old_presets_plans_are_unchanged_by_the_new_options():
    steps = scenarios.plan(scenarios.options_for("close-race", port=8080), NAMES, CAPS)
    argv = [a for s in steps for a in s.argv]
    for new in ("--requests", "--pause-after", "--keepalive", "--second-port", "--late-fin", "nft"):
        assert new not in argv
