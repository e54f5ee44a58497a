"""Replication between real nodes: one handle per key on every node, concurrent creation
on different nodes, catch-up after kill -9, users made while a node was down, min_nodes
(0xbd, and no half-made key). Each node is asked on its own through a cluster.cfg that
names only that node (Cluster.kmu_on)."""

from __future__ import annotations

import os
import re
import signal
import socket
import ssl
import threading

from helpers import (
    KmuSession,
    command_output,
    found_keys,
    keypair_handles,
    returned,
    status_codes,
    sym_handle,
    wait_until,
)

NODES = 3
CATCH_UP = 30  # seconds: sync runs every 2 s; generous for a loaded machine


def handles_on(cluster, node: int, label: str) -> list[int]:
    out = cluster.kmu_on(node, [f"findKey -l {label}"])
    count, handles = found_keys(command_output(out, "findKey"))
    assert count == len(handles), out
    return handles


def attribute_code(cluster, node: int, handle: int) -> int:
    out = cluster.kmu_on(node, [f"getAttribute -o {handle} -a 512 -out attr_{node}_{handle}.txt"])
    return returned(command_output(out, "getAttribute"), "Cfm3GetAttribute")


def wait_for_handles(cluster, node: int, label: str, expected: set[int]):
    def caught_up():
        found = set(handles_on(cluster, node, label))
        return found == expected or None
    wait_until(caught_up, CATCH_UP, f"node {node} to hold exactly {sorted(expected)} for label {label}", interval=0.5)


def test_a_key_is_served_by_every_node_under_its_handle(cluster):
    out = cluster.kmu(["genSymKey -t 31 -s 32 -l repl_sym", "genRSAKeyPair -m 2048 -e 65537 -l repl_rsa"])
    sym = sym_handle(out)
    public, private = keypair_handles(out)
    (cluster.work / "repl_msg.txt").write_text("signed on every node\n")
    for node in range(NODES):
        # Asked directly: a node that has not stored the key yet fetches it from its creator.
        for handle in (sym, public, private):
            assert attribute_code(cluster, node, handle) == 0, f"node {node} does not serve {handle}"
        out = cluster.kmu_on(node, [f"sign -f repl_msg.txt -k {private} -m 1 -out repl_{node}.sig"])
        assert returned(command_output(out, "sign"), "Cfm3Sign") == 0, out
        wait_for_handles(cluster, node, "repl_sym", {sym})
        wait_for_handles(cluster, node, "repl_rsa", {public, private})
    # Every node signed with the same key: PKCS#1 v1.5 signatures are deterministic.
    signatures = {(cluster.work / f"repl_{n}.sig").read_bytes() for n in range(NODES)}
    assert len(signatures) == 1


def test_a_delete_reaches_every_node(cluster):
    out = cluster.kmu(["genSymKey -t 31 -s 16 -l repl_gone"])
    handle = sym_handle(out)
    for node in range(NODES):
        wait_for_handles(cluster, node, "repl_gone", {handle})
    out = cluster.kmu_on(1, [f"deleteKey -k {handle}"])
    assert "Cfm3DeleteKey returned: 0x00" in out, out
    for node in range(NODES):
        wait_for_handles(cluster, node, "repl_gone", set())
        assert attribute_code(cluster, node, handle) == 0xA8


def test_session_keys_stay_on_their_node(cluster):
    s = KmuSession([cluster.kmu_path], cluster.node_env(0), cluster.work)
    try:
        s.send(cluster.login_line())
        s.expect(r"^Cfm3LoginHSM returned: 0x00")
        s.send("genSymKey -t 31 -s 16 -l repl_session -sess")
        handle = int(s.expect(r"Symmetric Key Created\.  Key Handle: (\d+)").group(1))
        for node in (1, 2):
            assert attribute_code(cluster, node, handle) == 0xA8
            assert handles_on(cluster, node, "repl_session") == []
    finally:
        s.finish(["exit"])


def test_two_clients_on_two_nodes_get_distinct_handles_every_node_serves(cluster):
    results: dict[int, str] = {}

    def create(node: int):
        lines = ["genSymKey -t 31 -s 16 -l repl_race" for _ in range(20)]
        results[node] = cluster.kmu_on(node, lines)

    threads = [threading.Thread(target=create, args=(n,)) for n in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    handles = []
    for node, out in results.items():
        made = [int(h) for h in re.findall(r"Symmetric Key Created\.  Key Handle: (\d+)", out)]
        assert len(made) == 20, out
        assert all(h & 0xF == node for h in made), f"node {node} made handles {made}"
        handles += made
    assert len(set(handles)) == 40
    for node in range(NODES):
        wait_for_handles(cluster, node, "repl_race", set(handles))


def test_a_node_that_was_down_catches_up(cluster):
    out = cluster.kmu(["genSymKey -t 31 -s 16 -l repl_before"])
    before = sym_handle(out)
    wait_for_handles(cluster, 2, "repl_before", {before})
    cluster.kill(2)
    try:
        out = cluster.kmu(["genSymKey -t 31 -s 16 -l repl_missed", "genRSAKeyPair -m 2048 -e 65537 -l repl_missed"])
        missed = {sym_handle(out), *keypair_handles(out)}
        out = cluster.kmu_on(0, [f"deleteKey -k {before}"])
        assert "Cfm3DeleteKey returned: 0x00" in out, out
    finally:
        cluster.restart()
    wait_for_handles(cluster, 2, "repl_missed", missed)
    wait_for_handles(cluster, 2, "repl_before", set())
    for handle in missed:
        assert attribute_code(cluster, 2, handle) == 0
    assert "synced with peer" in cluster.log(2)


def test_users_made_while_a_node_was_down_reach_it(cluster):
    cluster.kill(1)
    try:
        out = cluster.cmu(["createUser CU repl_user repl-pw-1"])
        assert out.count("createUser success on server") == NODES - 1, out
    finally:
        cluster.restart()

    def can_log_in():
        out = cluster.kmu_on(1, [cluster.login_line("repl_user", "repl-pw-1")], login=False)
        return status_codes(out).get(1) == 0 or None

    wait_until(can_log_in, CATCH_UP, "repl_user to log in on node 1", interval=0.5)
    # Sent to every node by cloudhsm_mgmt_util, and replicated as well: both are success.
    out = cluster.cmu(["changePswd CU repl_user repl-pw-2"])
    assert out.count("changePswd success on server") == NODES, out
    for node in range(NODES):
        out = cluster.kmu_on(node, [cluster.login_line("repl_user", "repl-pw-2")], login=False)
        assert status_codes(out).get(node) == 0, out
    out = cluster.cmu(["deleteUser CU repl_user"])
    assert out.count("deleteUser success on server") == NODES, out


def test_creation_needs_min_nodes_and_leaves_nothing_behind(cluster):
    cluster.kill(1)
    cluster.kill(2)
    try:
        out = cluster.kmu(["genSymKey -t 31 -s 16 -l repl_lonely", "genRSAKeyPair -m 2048 -e 65537 -l repl_lonely"])
        assert returned(command_output(out, "genSymKey"), "Cfm3GenerateSymmetricKey") == 0xBD, out
        assert returned(command_output(out, "genRSAKeyPair"), "Cfm3GenerateKeyPair") == 0xBD, out
        assert "Symmetric Key Created" not in out
        assert handles_on(cluster, 0, "repl_lonely") == []
    finally:
        cluster.restart()
    # The survivors' tombstones win over nothing: no node ever shows the key.
    for node in range(NODES):
        assert handles_on(cluster, node, "repl_lonely") == []
    # With the nodes back, creation works again.
    out = cluster.kmu(["genSymKey -t 31 -s 16 -l repl_back"])
    assert sym_handle(out)


def test_a_hung_peer_does_not_block_creation(cluster):
    """A node that accepts connections but never answers (SIGSTOP) costs at most the
    peer timeouts; creation succeeds on the two others and the hung node catches up."""
    pid = cluster.pid(2)
    os.kill(pid, signal.SIGSTOP)
    try:
        out = cluster.kmu_on(0, ["genSymKey -t 31 -s 16 -l repl_hung", "genSymKey -t 31 -s 16 -l repl_hung"])
        made = {int(h) for h in re.findall(r"Symmetric Key Created\.  Key Handle: (\d+)", out)}
        assert len(made) == 2, out
        assert set(handles_on(cluster, 1, "repl_hung")) == made
    finally:
        os.kill(pid, signal.SIGCONT)
    wait_for_handles(cluster, 2, "repl_hung", made)


def _peer_frame(cluster, node: int, cert: str | None) -> bytes:
    """Sends a bare listVersions (0x40) frame to `node` and returns what comes back."""
    context = ssl.create_default_context(cafile=str(cluster.ca))
    if cert:
        context.load_cert_chain(str(cluster.dir / f"{cert}.crt"), str(cluster.dir / f"{cert}.key"))
    with socket.create_connection(("127.0.0.1", cluster.ports[node]), timeout=10) as raw:
        with context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            tls.sendall(b"HS\x01\x40" + (7).to_bytes(4, "big") + (0).to_bytes(4, "big"))
            data = b""
            try:
                while chunk := tls.recv(4096):
                    data += chunk
            except (ssl.SSLError, ConnectionResetError):
                pass
            return data


def test_peer_operations_need_a_node_certificate_and_the_cluster_key(cluster):
    # A tool's connection (no client certificate): an unknown operation, 0x10, closed.
    answer = _peer_frame(cluster, 0, cert=None)
    assert answer[3] == 0xC0 and int.from_bytes(answer[12:16], "big") == 0x10, answer
    # A node's certificate but a payload not sealed under the cluster key: closed unanswered.
    assert _peer_frame(cluster, 0, cert="node1") == b""
    assert "does not open under the cluster key" in cluster.log(0)
