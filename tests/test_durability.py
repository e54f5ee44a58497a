"""A key that was reported created survives node crashes (kill -9) and restarts;
session keys do not outlive their session."""

from __future__ import annotations

import pytest

from helpers import (
    command_output,
    found_keys,
    keypair_handles,
    parse_hsm_info,
    returned,
    sym_handle,
)

NODES = 3


@pytest.fixture(scope="module")
def created(cluster):
    """Token keys (an RSA pair, two AES keys) and a session key, made in one session."""
    out = cluster.kmu([
        "genRSAKeyPair -m 2048 -e 65537 -l durable_rsa",
        "genSymKey -t 31 -s 32 -l durable_aes",
        "genSymKey -t 31 -s 16 -l durable_aes",
        "genSymKey -t 31 -s 16 -sess -l durable_session",
        "getHSMInfo",
    ])
    pub, priv = keypair_handles(out)
    aes = [sym_handle(command_output(out, "genSymKey -t 31 -s 32")),
           sym_handle(command_output(out, "genSymKey -t 31 -s 16 -l durable_aes"))]
    session = sym_handle(command_output(out, "genSymKey -t 31 -s 16 -sess"))
    cluster.kmu([f"exportPubKey -k {pub} -out durable_pub.pem"])
    (cluster.work / "durable_msg.txt").write_text("still here after kill -9\n")
    return {"pub": pub, "priv": priv, "aes": aes, "session": session, "transcript": out,
            "info": parse_hsm_info(command_output(out, "getHSMInfo"))}


def assert_keys_present(cluster, created, openssl, tag: str):
    token = [created["pub"], created["priv"], *created["aes"]]
    lines = ["findKey -l durable_rsa", "findKey -l durable_aes"]
    lines += [f"getAttribute -o {h} -a 512 -out attrs_{tag}_{h}.txt" for h in token]
    lines += [f"sign -f durable_msg.txt -k {created['priv']} -m 1 -out durable_{tag}.sig"]
    out = cluster.kmu(lines)
    _, rsa = found_keys(command_output(out, "findKey -l durable_rsa"))
    _, aes = found_keys(command_output(out, "findKey -l durable_aes"))
    assert {created["pub"], created["priv"]} <= set(rsa), out
    assert set(created["aes"]) <= set(aes), out
    for h in token:
        attr = command_output(out, f"getAttribute -o {h} ")
        assert f"Attributes dumped into attrs_{tag}_{h}.txt file" in attr, out
    assert returned(command_output(out, "sign"), "Cfm3Sign") == 0, out
    openssl("dgst", "-sha256", "-verify", "durable_pub.pem", "-signature", f"durable_{tag}.sig", "durable_msg.txt",
            cwd=cluster.work)


def test_creation_reports_success_on_every_node(created):
    out = created["transcript"]
    assert "Cfm3GenerateKeyPair returned: 0x00" in out or "Cfm3GenerateKeyPair:" in out
    assert returned(command_output(out, "genSymKey -t 31 -s 32"), "Cfm3GenerateSymmetricKey") == 0


def test_token_keys_are_on_every_node(cluster, created):
    info = cluster.node_info()
    counts = {n: info[n].int("Token keys") for n in range(NODES)}
    assert len(set(counts.values())) == 1 and counts[0] >= 4, f"token keys per node differ: {counts}"


def test_session_key_is_gone_after_logout(cluster, created):
    out = cluster.kmu([f"getAttribute -o {created['session']} -a 512 -out session_attrs.txt",
                       "findKey -l durable_session"])
    assert "0xa8 : HSM Error: Invalid key handle" in command_output(out, "getAttribute"), out
    count, _ = found_keys(command_output(out, "findKey"))
    assert count == 0, out


def test_keys_survive_kill_9_of_one_node(cluster, created, openssl):
    victim = created["priv"] & 0xF  # the node that created the key
    cluster.kill(victim)
    try:
        assert_keys_present(cluster, created, openssl, "one_down")
    finally:
        cluster.restart()
    cluster.wait_all_up()
    assert_keys_present(cluster, created, openssl, "one_back")


def test_keys_survive_kill_9_of_every_node(cluster, created, openssl):
    for n in range(NODES):
        cluster.kill(n)
    out = cluster.restart()
    assert out.stdout.count("is listening on") == NODES, out.stdout
    cluster.wait_all_up()
    assert_keys_present(cluster, created, openssl, "all_back")
    info = cluster.node_info()
    for n in range(NODES):
        assert info[n].int("Token keys") == created["info"][n].int("Token keys"), (n, info[n], created["info"][n])


def test_each_node_alone_holds_every_key(cluster, created, openssl):
    """Kill all but one node, in turn: the survivor alone still has every token key."""
    for survivor in range(NODES):
        for n in range(NODES):
            if n != survivor:
                cluster.kill(n)
        try:
            assert_keys_present(cluster, created, openssl, f"only_{survivor}")
        finally:
            cluster.restart()
        cluster.wait_all_up()


def test_a_node_that_was_down_catches_up(cluster, openssl):
    cluster.kill(2)
    try:
        out = cluster.kmu(["genRSAKeyPair -m 2048 -e 65537 -l made_while_2_down"])
        pub, priv = keypair_handles(out)
        cluster.kmu([f"exportPubKey -k {pub} -out late_pub.pem"])
    finally:
        cluster.restart()
    cluster.wait_all_up()

    # Node 2 catches up at start-up or within a few seconds: poll, then use it alone.
    from helpers import wait_until

    def caught_up():
        info = cluster.node_info()
        counts = {n: info[n].int("Token keys") for n in info}
        return len(counts) == NODES and len(set(counts.values())) == 1 and counts
    wait_until(caught_up, 60, "node 2 to hold as many token keys as the others", interval=1)

    cluster.kill(0)
    cluster.kill(1)
    try:
        (cluster.work / "late_msg.txt").write_text("node 2 caught up\n")
        out = cluster.kmu([f"sign -f late_msg.txt -k {priv} -m 1 -out late.sig"])
        assert returned(out, "Cfm3Sign") == 0, out
        openssl("dgst", "-sha256", "-verify", "late_pub.pem", "-signature", "late.sig", "late_msg.txt",
                cwd=cluster.work)
    finally:
        cluster.restart()
    cluster.wait_all_up()
