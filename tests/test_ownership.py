"""Keys belong to an immutable user id, deleteUser's rules, and the cluster-wide lockout,
against real nodes: a user deleted and made again under the same name never gets the old
user's keys (not even keys that reach a node after the deletion), a CU that owns keys or
is logged in (on another node) cannot be deleted, a deletion that arrives by replication
ends the user's sessions, and failed logins count on every node, also on a node that was
down while they happened."""

from __future__ import annotations

import os
import re
import signal
import subprocess

from helpers import (
    TOOL_TIMEOUT,
    KmuSession,
    assert_no_crash,
    cmu_output,
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

USER_LINE = re.compile(r"^\s*(\d+)\s+(CO|CU)\s+(\S+)\s+NO\s+(\d+)\s+NO\s*$")


def cmu_with(cluster, env: dict, lines: list[str]) -> str:
    """cloudhsm_mgmt_util with `env` (e.g. a config naming one node), logged in as admin."""
    script = [f"loginHSM CO admin {cluster.co_password}", *lines, "logoutHSM", "quit"]
    proc = subprocess.run(
        [cluster.cmu_path], input="\n".join(script) + "\n", capture_output=True, text=True, env=env,
        cwd=cluster.work, timeout=TOOL_TIMEOUT,
    )
    out = proc.stdout + proc.stderr
    assert_no_crash(proc.returncode, out)
    return out


def users_by_server(out: str) -> dict[int, dict[str, tuple[int, str, int]]]:
    """listUsers: node id -> {name: (user id, role, LoginFailureCnt)}."""
    servers: dict[int, dict[str, tuple[int, str, int]]] = {}
    current = None
    for line in cmu_output(out, "listUsers").splitlines():
        m = re.match(r"^Users on server (\d+)\(", line)
        if m:
            current = servers.setdefault(int(m.group(1)), {})
            continue
        m = USER_LINE.match(line)
        if m and current is not None:
            current[m.group(3)] = (int(m.group(1)), m.group(2), int(m.group(4)))
    return servers


def list_users(cluster) -> dict[int, dict[str, tuple[int, str, int]]]:
    servers = users_by_server(cluster.cmu(["listUsers"]))
    assert sorted(servers) == list(range(NODES)), servers
    return servers


def user_id_everywhere(cluster, name: str) -> int:
    """The id every node shows for `name` (they must agree)."""
    ids = {node: users[name][0] for node, users in list_users(cluster).items() if name in users}
    assert len(ids) == NODES and len(set(ids.values())) == 1, f"ids of {name} per node: {ids}"
    return next(iter(ids.values()))


def wait_for_user_id(cluster, name: str, expected: int):
    def agreed():
        servers = list_users(cluster)
        return all(users.get(name, (None,))[0] == expected for users in servers.values()) or None

    wait_until(agreed, CATCH_UP, f"every node to show {name} with id {expected}", interval=0.5)


def create_user(cluster, name: str, password: str) -> int:
    """createUser on every node, then waits until every node shows the one id the name
    keeps (the nodes may have made one each; a node that missed a push learns the winner
    at its next sync). Returns the id."""
    cluster.create_cu(name, password)

    def agreed():
        ids = {users[name][0] for users in list_users(cluster).values() if name in users}
        return next(iter(ids)) if len(ids) == 1 else None

    return wait_until(agreed, CATCH_UP, f"every node to show one id for {name}", interval=0.5)


def kmu_as(cluster, node: int | None, user: str, password: str, lines: list[str]) -> str:
    login = [cluster.login_line(user, password)]
    if node is None:
        return cluster.kmu(login + lines, login=False)
    return cluster.kmu_on(node, login + lines, login=False)


def login_codes(cluster, node: int | None, user: str, password: str) -> dict[int, int]:
    out = kmu_as(cluster, node, user, password, [])
    return status_codes(command_output(out, "loginHSM"))


# ------------------------------------------------------------------------------ lockout


def test_failed_logins_spread_over_the_nodes_lock_the_user_everywhere(cluster):
    create_user(cluster, "own_lock", "Lock-pw-1")
    for attempt, node in enumerate([0, 1, 2, 0, 1]):
        assert login_codes(cluster, node, "own_lock", f"wrong-{attempt}") == {node: 0x22}
    for node in range(NODES):
        assert login_codes(cluster, node, "own_lock", "Lock-pw-1") == {node: 0x23}, (
            f"node {node}\n" + "\n".join(f"--- node {n}:\n{cluster.log(n)[-4000:]}" for n in range(NODES)))
    for node, users in list_users(cluster).items():
        assert users["own_lock"][2] == 5, (node, users)
    out = cluster.cmu(["changePswd CU own_lock Lock-pw-2"])
    assert out.count("changePswd success on server") == NODES, out
    for node in range(NODES):
        assert login_codes(cluster, node, "own_lock", "Lock-pw-2") == {node: 0}, f"node {node}"
    for users in list_users(cluster).values():
        assert users["own_lock"][2] == 0, users


def test_the_same_wrong_password_on_every_node_counts_once(cluster):
    """key_mgmt_util logs in on every node at once: one typo is one failure, not three."""
    create_user(cluster, "own_typo", "Typo-pw-1")
    assert login_codes(cluster, None, "own_typo", "typo") == {n: 0x22 for n in range(NODES)}
    for users in list_users(cluster).values():
        assert users["own_typo"][2] == 1, users
    assert login_codes(cluster, None, "own_typo", "Typo-pw-1") == {n: 0 for n in range(NODES)}
    for users in list_users(cluster).values():
        assert users["own_typo"][2] == 0, users


def test_a_node_that_was_down_learns_the_failures_at_sync(cluster):
    create_user(cluster, "own_late", "Late-pw-1")
    cluster.kill(2)
    try:
        for attempt, node in enumerate([0, 1, 0, 1, 0]):
            assert login_codes(cluster, node, "own_late", f"wrong-{attempt}") == {node: 0x22}
    finally:
        cluster.restart()
    # Node 2 syncs with its peers before it listens: locked there at once.
    assert login_codes(cluster, 2, "own_late", "Late-pw-1") == {2: 0x23}
    out = cluster.cmu(["changePswd CU own_late Late-pw-2"])
    assert out.count("changePswd success on server") == NODES, out
    assert login_codes(cluster, None, "own_late", "Late-pw-2") == {n: 0 for n in range(NODES)}


# ------------------------------------------------------------------------------ ownership
# Last: these stop and restart nodes.


def test_keys_belong_to_the_user_id_and_a_cu_that_owns_keys_cannot_be_deleted(cluster):
    old_id = create_user(cluster, "own_bob", "Bob-pw-1")
    out = kmu_as(cluster, None, "own_bob", "Bob-pw-1", [
        "genRSAKeyPair -m 2048 -e 65537 -l own_bob_rsa", "genSymKey -t 31 -s 16 -l own_bob_aes",
    ])
    public, private = keypair_handles(out)
    secret = sym_handle(out)
    # getKeyInfo names the owner by the id listUsers shows, on every node.
    for node in range(NODES):
        out = kmu_as(cluster, node, "own_bob", "Bob-pw-1", [f"getKeyInfo -k {private}"])
        assert f"Owned by user {old_id}" in command_output(out, "getKeyInfo"), out

    # Refused on every node, with the count; nothing is deleted.
    out = cluster.cmu(["deleteUser CU own_bob"])
    delete = cmu_output(out, "deleteUser")
    refusals = re.findall(r"^deleteUser failed on server (\d+)\(.*0x27 .*user own_bob owns 3 keys; delete them",
                          delete, re.M)
    assert sorted(map(int, refusals)) == list(range(NODES)), out
    assert user_id_everywhere(cluster, "own_bob") == old_id
    assert returned(command_output(kmu_as(cluster, 1, "own_bob", "Bob-pw-1", [f"getKeyInfo -k {secret}"]),
                                   "getKeyInfo"), "Cfm3GetKey") == 0

    out = kmu_as(cluster, None, "own_bob", "Bob-pw-1", [f"deleteKey -k {h}" for h in (public, private, secret)])
    assert out.count("Cfm3DeleteKey returned: 0x00") == 3, out
    out = cluster.cmu(["deleteUser CU own_bob"])
    assert cmu_output(out, "deleteUser").count("deleteUser success on server") == NODES, out

    # The same name again is a new user: a new id, the same on every node.
    new_id = create_user(cluster, "own_bob", "Bob-pw-2")
    assert new_id != old_id
    (cluster.work / "own_msg.txt").write_text("not for the new bob\n")
    for node in range(NODES):
        out = kmu_as(cluster, node, "own_bob", "Bob-pw-2", [
            "findKey -l own_bob_rsa", f"sign -f own_msg.txt -k {private} -m 1 -out own_{node}.sig",
        ])
        assert found_keys(command_output(out, "findKey")) == (0, []), out
        assert returned(command_output(out, "sign"), "Cfm3Sign") == 0xA8, out
        assert login_codes(cluster, node, "own_bob", "Bob-pw-1") == {node: 0x22}


def test_keys_that_reach_a_node_after_their_user_was_deleted_stay_that_users(cluster):
    """Node 2 is away while own_eve makes keys on nodes 0 and 1; then nodes 0 and 1 hang
    (SIGSTOP) and node 2, which cannot ask them, deletes own_eve and makes a new own_eve.
    When all meet again the old keys reach node 2 and the tombstone and the new user
    reach nodes 0 and 1: the new own_eve cannot see, sign with or delete the old keys on
    any node."""
    old_id = create_user(cluster, "own_eve", "Eve-pw-1")
    cluster.kill(2)
    stopped: list[int] = []
    try:
        out = kmu_as(cluster, None, "own_eve", "Eve-pw-1", ["genRSAKeyPair -m 2048 -e 65537 -l own_eve_rsa"])
        public, private = keypair_handles(out)
        for node in (0, 1):
            pid = cluster.pid(node)
            os.kill(pid, signal.SIGSTOP)
            stopped.append(pid)
        cluster.restart()  # only node 2: the others still run (stopped)
        out = cmu_with(cluster, cluster.node_env(2), ["deleteUser CU own_eve", "createUser CU own_eve Eve-pw-2"])
        assert re.search(r"^deleteUser success on server 2\(", out, re.M), out
        assert re.search(r"^createUser success on server 2\(", out, re.M), out
    finally:
        for pid in stopped:
            os.kill(pid, signal.SIGCONT)
    new_id = users_by_server(cmu_with(cluster, cluster.node_env(2), ["listUsers"]))[2]["own_eve"][0]
    assert new_id != old_id and new_id & 0xF == 2, (old_id, new_id)
    wait_for_user_id(cluster, "own_eve", new_id)

    (cluster.work / "own_eve.txt").write_text("old keys stay the old user's\n")
    for node in range(NODES):
        # The old key is on the node (its creator has it, the others pulled it) ...
        def has_key():
            out = cluster.kmu_on(node, [f"getKeyInfo -k {private}"])
            return returned(command_output(out, "getKeyInfo"), "Cfm3GetKey") == 0xC6 or None
        wait_until(has_key, CATCH_UP, f"node {node} to hold {private}", interval=0.5)
        # ... and it is not the new own_eve's.
        out = kmu_as(cluster, node, "own_eve", "Eve-pw-2", [
            "findKey -l own_eve_rsa", f"sign -f own_eve.txt -k {private} -m 1 -out own_eve_{node}.sig",
            f"getKeyInfo -k {public}", f"deleteKey -k {private}",
        ])
        assert found_keys(command_output(out, "findKey")) == (0, []), out
        assert returned(command_output(out, "sign"), "Cfm3Sign") == 0xC6, out
        assert returned(command_output(out, "getKeyInfo"), "Cfm3GetKey") == 0xC6, out
        assert returned(command_output(out, "deleteKey"), "Cfm3DeleteKey") == 0xC6, out
        assert login_codes(cluster, node, "own_eve", "Eve-pw-1") == {node: 0x22}


def test_deleting_a_user_logged_in_on_another_node_is_refused(cluster):
    create_user(cluster, "own_carl", "Carl-pw-1")
    session = KmuSession([cluster.kmu_path], cluster.node_env(2), cluster.work)
    try:
        session.send(cluster.login_line("own_carl", "Carl-pw-1"))
        session.expect(r"^Cfm3LoginHSM returned: 0x00")
        # Asked on node 0 only: node 0 learns from node 2 that own_carl is logged in there.
        out = cmu_with(cluster, cluster.node_env(0), ["deleteUser CU own_carl"])
        assert re.search(
            r"^deleteUser failed on server 0\(.*0x28 .*user own_carl is logged in \(1 session on node 2\)", out, re.M
        ), out
        # Asked everywhere: every node refuses.
        out = cluster.cmu(["deleteUser CU own_carl"])
        assert len(re.findall(r"^deleteUser failed on server \d\(.*0x28 ", out, re.M)) == NODES, out
        session.send("genSymKey -t 31 -s 16 -l own_carl_key -sess")
        session.expect(r"Symmetric Key Created")
    finally:
        session.finish(["exit"])
    out = cluster.cmu(["deleteUser CU own_carl"])
    assert out.count("deleteUser success on server") == NODES, out


def test_a_deletion_that_arrives_by_replication_ends_the_sessions(cluster):
    """own_dora is logged in on node 2 while node 2 hangs; node 0 deletes her (node 2
    cannot refuse). When node 2 wakes, the tombstone reaches it and her session there can
    do nothing more."""
    create_user(cluster, "own_dora", "Dora-pw-1")
    session = KmuSession([cluster.kmu_path], cluster.node_env(2), cluster.work)
    try:
        session.send(cluster.login_line("own_dora", "Dora-pw-1"))
        session.expect(r"^Cfm3LoginHSM returned: 0x00")
        pid = cluster.pid(2)
        os.kill(pid, signal.SIGSTOP)
        try:
            out = cmu_with(cluster, cluster.node_env(0), ["deleteUser CU own_dora"])
            assert re.search(r"^deleteUser success on server 0\(", out, re.M), out
        finally:
            os.kill(pid, signal.SIGCONT)

        # Either the tombstone ends the session (0x20), or the connection was closed meanwhile
        # (a stopped node drops its connections when it resumes) and logging in again as
        # the deleted user fails (0x22): the user can do nothing either way.
        def ended():
            session.send("findKey")
            m = session.expect(r"Cfm3FindKey returned: (0x[0-9a-f]+)", fail_on=None)
            return m.group(1) in ("0x20", "0x22") or None

        try:
            wait_until(ended, CATCH_UP, "own_dora's session on node 2 to end", interval=1)
        except AssertionError as e:
            raise AssertionError(f"{e}\nsession transcript:\n{session.transcript}\nnode 2 log:\n{cluster.log(2)[-3000:]}")
        session.send("genSymKey -t 31 -s 16 -l own_dora_late")
        m = session.expect(r"Cfm3GenerateSymmetricKey returned: (0x[0-9a-f]+)", fail_on=None)
        assert m.group(1) != "0x00", session.transcript
    finally:
        transcript = session.finish(["exit"])
    assert "Symmetric Key Created" not in transcript, transcript
    assert cluster.kmu_on(2, ["findKey -l own_dora_late"]).count("Total number of keys present: 0") == 1
