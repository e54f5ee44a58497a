"""The client pool against three real hsmd nodes, driven by pkpspeed (one shared client,
several threads): load spreads over the nodes (by the nodes' own counters), a node killed
with -9 mid-run costs no operation and gets work again after its restart, and a node capped
to a low rate answers throttled while the pool moves the load elsewhere.

Tests marked xfail "needs replication" depend on token keys existing on every node under
one handle (node-side replication); without it, only the creating node can sign, and the
pool's retries keep operations succeeding but send all work there."""

from __future__ import annotations

import json
import os
import subprocess
import time

import pytest

from helpers import kill_pid, process_alive, wait_until

NEEDS_REPLICATION = pytest.mark.xfail(reason="needs replication", strict=False)


def pkpspeed(cluster, *args: str, timeout: float = 120) -> dict:
    """Runs pkpspeed --json with the cluster's credentials; returns its report."""
    proc = subprocess.run(
        [pkpspeed_path(cluster), "--json", *args], capture_output=True, text=True, env=cluster.env,
        cwd=cluster.work, timeout=timeout,
    )
    return report(proc.stdout, proc.stderr, proc.returncode)


def pkpspeed_path(cluster) -> str:
    path = cluster.bin_dir / "pkpspeed"
    if not path.exists():
        pytest.fail(f"{path} not found: build it (make build)")
    return str(path)


def report(stdout: str, stderr: str, returncode: int) -> dict:
    assert returncode in (0, 3), f"pkpspeed failed ({returncode}):\n{stdout}\n{stderr}"
    lines = [l for l in stdout.splitlines() if l.startswith("{")]
    assert lines, f"no JSON report from pkpspeed:\n{stdout}\n{stderr}"
    return json.loads(lines[-1])


def node_signs(cluster, node: int) -> int:
    return cluster.node_info()[node].signs


def served(rep: dict) -> dict[int, int]:
    return {n["id"]: n["served"] for n in rep["nodes"]}


@NEEDS_REPLICATION
def test_600_signatures_from_4_threads_spread_over_the_nodes(cluster):
    before = {n: info.signs for n, info in cluster.node_info().items()}
    rep = pkpspeed(cluster, "-t", "4", "-d", "60", "-n", "600")
    after = {n: info.signs for n, info in cluster.node_info().items()}
    assert rep["operations"] == 600 and rep["errors"] == 0, rep
    # The nodes' own counters, read here as well as by pkpspeed; the key check and the
    # first verified signature add one sign outside the 600.
    delta = {n: after[n] - before[n] for n in after}
    assert 600 <= sum(delta.values()) <= 602, (delta, rep)
    for n, count in delta.items():
        assert count >= 0.2 * 600, f"node {n} served {count} of 600: {delta}\n{rep}"


@NEEDS_REPLICATION
def test_kill_9_mid_run_loses_nothing_and_the_node_comes_back(cluster):
    # A key first, so that the run signs from its first second.
    key = pkpspeed(cluster, "-t", "1", "-n", "1")["key_handle"]
    victim = ((key & 0xF) + 1) % 3
    run = subprocess.Popen(
        [pkpspeed_path(cluster), "--json", "-k", str(key), "-t", "4", "-d", "12"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=cluster.env, cwd=cluster.work,
    )
    try:
        time.sleep(2)
        cluster.kill(victim)
        time.sleep(2)
        cluster.restart()
        # The node's counters start again from its restart: what it serves from here on
        # came from the running client once it probed the node back in.
        restarted = node_signs(cluster, victim)
        out, err = run.communicate(timeout=120)
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
    rep = report(out, err, run.returncode)
    assert rep["errors"] == 0, rep
    assert rep["operations"] > 100, rep
    victim_view = next(n for n in rep["nodes"] if n["id"] == victim)
    assert victim_view["client_failures"] > 0 and not victim_view["down_at_end"], rep
    assert node_signs(cluster, victim) > restarted, f"node {victim} got no work after its restart: {rep}"


@NEEDS_REPLICATION
def test_a_throttled_node_sheds_load_without_failures(cluster):
    """Node 2 restarted with a 5 operations/second cap, one worker and a one-deep queue:
    it answers throttled (0xbb) and the pool serves from the other nodes."""
    capped = 2
    cluster.kill(capped)
    log = cluster.dir / f"node{capped}.log"
    offset = log.stat().st_size if log.exists() else 0
    with open(log, "a") as logf:
        proc = subprocess.Popen(
            [
                str(cluster.bin_dir / "hsmd"), "run", "--data-dir", str(cluster.dir / f"node{capped}"),
                "--listen", f"127.0.0.1:{cluster.ports[capped]}", "--cert", str(cluster.dir / f"node{capped}.crt"),
                "--key", str(cluster.dir / f"node{capped}.key"), "--ca", str(cluster.ca),
                "--max-ops-per-second", "5", "--workers", "1", "--queue", "1",
            ],
            stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT, start_new_session=True,
        )
    # The fixtures find (and finally stop) the node through its pid file.
    (cluster.dir / f"node{capped}.pid").write_text(f"{proc.pid}\n")
    try:
        wait_until(
            lambda: f"hsmd node {capped} listening on" in log.read_text(errors="replace")[offset:]
            or proc.poll() is not None,
            30, "the capped node to listen",
        )
        assert proc.poll() is None, f"capped node exited:\n{log.read_text(errors='replace')[offset:]}"
        rep = pkpspeed(cluster, "-t", "4", "-d", "5")
        assert rep["errors"] == 0, rep
        nodes = {n["id"]: n for n in rep["nodes"]}
        assert nodes[capped]["client_busy_answers"] > 0, f"node {capped} never answered throttled: {rep}"
        assert not nodes[capped]["down_at_end"], rep
        others = sum(n["served"] for i, n in nodes.items() if i != capped)
        # At 5 per second for 5 seconds the capped node serves at most ~30.
        assert nodes[capped]["served"] <= 40, rep
        assert others >= 10 * max(1, nodes[capped]["served"]), rep
    finally:
        # Back to a normal node for the rest of the module.
        kill_pid(proc.pid)
        proc.wait(timeout=30)
        wait_until(lambda: not process_alive(proc.pid), 10, "the capped node to stop")
        cluster.restart()


def test_status_lines_report_each_nodes_real_result(cluster):
    """key_mgmt_util's per-node lines: a dead node reports its own failure while the
    others succeed, and the pool still serves operations."""
    cluster.kill(1)
    try:
        out = cluster.kmu(["getHSMInfo"])
        assert "Node id 0 and err state 0x00000000 : HSM Return: SUCCESS" in out, out
        assert "Node id 2 and err state 0x00000000 : HSM Return: SUCCESS" in out, out
        assert "Node id 1 and err state 0x000000e0 : HSM Error: HSM node unreachable" in out, out
        rep = pkpspeed(cluster, "-t", "2", "-n", "50", "-d", "30")
        assert rep["errors"] == 0 and rep["operations"] == 50, rep
    finally:
        cluster.restart()
