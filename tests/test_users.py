"""cloudhsm_mgmt_util manages users on every node; key_mgmt_util logins follow."""

from __future__ import annotations

import re

import pytest

from helpers import cmu_output, command_output, returned, status_codes

NODES = 3


def login_code(cluster, user: str, password: str) -> tuple[int, str]:
    out = cluster.kmu([cluster.login_line(user, password)], login=False)
    return returned(command_output(out, "loginHSM"), "Cfm3LoginHSM"), out


def users_per_server(out: str) -> dict[str, list[tuple[str, str]]]:
    """listUsers: server -> [(role, name)]."""
    servers: dict[str, list[tuple[str, str]]] = {}
    current = None
    for line in out.splitlines():
        m = re.match(r"^Users on server (\d+\(.*\)):", line)
        if m:
            current = m.group(1)
            servers[current] = []
            continue
        if current is not None:
            m = re.match(r"^\s*\d+\s+(CO|CU)\s+(\S+)", line)
            if m:
                servers[current].append((m.group(1), m.group(2)))
    return servers


def test_co_login_on_every_node(cluster):
    out = cluster.cmu(["listUsers"])
    assert len(re.findall(r"^loginHSM success on server \d+\(", out, re.M)) == NODES, out


def test_create_list_change_delete(cluster):
    out = cluster.cmu(["createUser CU bob Bob-pw-1", "listUsers"])
    create = cmu_output(out, "createUser")
    assert f"Creating User bob(CU) on {NODES} nodes" in create, out
    assert len(re.findall(r"^createUser success on server \d+\(", create, re.M)) == NODES, out

    listing = cmu_output(out, "listUsers")
    servers = users_per_server(listing)
    assert len(servers) == NODES, listing
    for server, users in servers.items():
        assert ("CO", "admin") in users and ("CU", "bob") in users and ("CU", cluster.cu_user) in users, (
            server, listing)
    found = [int(k) for k in re.findall(r"Number of users found:\s*(\d+)", listing)]
    assert found == [len(u) for u in servers.values()], listing

    code, out = login_code(cluster, "bob", "Bob-pw-1")
    assert code == 0, out
    assert status_codes(command_output(out, "loginHSM")) == {n: 0 for n in range(NODES)}, out

    out = cluster.cmu(["changePswd CU bob Bob-pw-2"])
    change = cmu_output(out, "changePswd")
    assert "HSM Error" not in change and len(re.findall(r"success on server", change)) == NODES, out
    assert login_code(cluster, "bob", "Bob-pw-2")[0] == 0
    code, out = login_code(cluster, "bob", "Bob-pw-1")
    assert code == 0x22, f"the old password must fail with 0x22:\n{out}"

    out = cluster.cmu(["deleteUser CU bob", "listUsers"])
    delete = cmu_output(out, "deleteUser")
    assert "HSM Error" not in delete and len(re.findall(r"success on server", delete)) == NODES, out
    for users in users_per_server(cmu_output(out, "listUsers")).values():
        assert ("CU", "bob") not in users, out
    code, out = login_code(cluster, "bob", "Bob-pw-2")
    assert code in (0x22, 0x26), f"a deleted user must not log in:\n{out}"


def test_duplicate_user_is_refused(cluster):
    out = cluster.cmu([f"createUser CU {cluster.cu_user} whatever-pw"])
    create = cmu_output(out, "createUser")
    assert "createUser success on server" not in create, out
    # The existing user's password did not change.
    assert login_code(cluster, cluster.cu_user, cluster.cu_password)[0] == 0


def test_crypto_user_cannot_manage_users(cluster):
    out = cluster.cmu([f"loginHSM CU {cluster.cu_user} {cluster.cu_password}", "createUser CU mallory pw-123",
                       "logoutHSM"], login_co=False)
    assert "createUser success on server" not in out, out
    code, _ = login_code(cluster, "mallory", "pw-123")
    assert code != 0


def test_users_survive_a_restart(cluster):
    cluster.create_cu("carol", "Carol-pw-1")
    for n in range(NODES):
        cluster.kill(n)
    cluster.restart()
    cluster.wait_all_up()
    code, out = login_code(cluster, "carol", "Carol-pw-1")
    assert code == 0, out
    assert status_codes(command_output(out, "loginHSM")) == {n: 0 for n in range(NODES)}, out
