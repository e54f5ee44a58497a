"""A cluster whose nodes listen on 127.0.0.2, .3 and .4 (scripts/cluster.sh with
CLUSTER_HOSTS), all three on the same port: nothing listens on 127.0.0.1, so a node, a
tool or the provider that assumed it would fail. Key generation, replication, signing
through the provider with each node on its own, the nodes' logs; `cluster.sh pki` for
hosts named by DNS and IPv6 addresses; restoring a node's store from a backup and adding
a fourth node, as docs/deploy.md describes them."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
from pathlib import Path

import pytest

from conftest import Cluster
from helpers import (
    sym_handle,
    CLUSTER_SH,
    REPO,
    command_output,
    found_keys,
    free_ports,
    keypair_handles,
    process_alive,
    returned,
    wait_until,
)
from test_provider import OpenSSL, provider_module  # noqa: F401  (fixture)

HOSTS = ["127.0.0.2", "127.0.0.3", "127.0.0.4"]
NEW_HOST = "127.0.0.5"  # the node added last
CATCH_UP = 30  # seconds: sync runs every 2 s; generous for a loaded machine


def common_free_port(hosts: list[str]) -> int:
    """A port free on every one of hosts right now."""
    for _ in range(50):
        port = free_ports(1, hosts[0])[0]
        socks = []
        try:
            for host in hosts[1:]:
                s = socket.socket()
                socks.append(s)
                s.bind((host, port))
            return port
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise AssertionError(f"no port free on all of {hosts}")


def connectable(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=2).close()
        return True
    except OSError:
        return False


@pytest.fixture(scope="module")
def spread(tmp_path_factory, bin_dir):
    """Three nodes on 127.0.0.2-4, one port for all, stopped at the end whatever happens."""
    directory = tmp_path_factory.mktemp("spread")
    c = Cluster(directory, [common_free_port(HOSTS + [NEW_HOST])], bin_dir, hosts=HOSTS)
    try:
        c.start()
        yield c
    finally:
        out = c.stop()
        for pid_file in directory.glob("node*.pid"):
            raise AssertionError(f"cluster.sh stop left {pid_file}:\n{out.stdout}{out.stderr}")


@pytest.fixture(scope="module")
def ossl(spread, provider_module):  # noqa: F811
    return OpenSSL(spread, provider_module)


def only_node(ossl: OpenSSL, node: int) -> dict:
    """The provider's environment with a cluster.cfg that names only `node`."""
    env = dict(ossl.env)
    env["CLOUDHSM_CONFIG"] = ossl.cluster.node_env(node)["CLOUDHSM_CONFIG"]
    return env


def signs_per_node(cluster) -> dict[int, int]:
    return {n: info.signs for n, info in cluster.node_info().items()}


def handles_on(cluster, node: int, label: str) -> list[int]:
    out = cluster.kmu_on(node, [f"findKey -l {label}"])
    count, handles = found_keys(command_output(out, "findKey"))
    assert count == len(handles), out
    return handles


def wait_for_handles(cluster, node: int, label: str, expected: set[int]):
    """Until node holds exactly expected for label; a node that has not yet pulled the
    crypto user (a new node) fails the login meanwhile, which counts as not yet."""
    last = []

    def holds():
        try:
            found = set(handles_on(cluster, node, label))
        except AssertionError as error:
            last[:] = [str(error)[-2000:]]
            return None
        last[:] = [f"holds {sorted(found)}"]
        return found == expected or None
    try:
        wait_until(holds, CATCH_UP, f"node {node} to hold {sorted(expected)} for label {label}", interval=0.5)
    except AssertionError as error:
        raise AssertionError(f"{error}\nlast answer: {last[0] if last else None}") from None


def sign_and_verify(ossl: OpenSSL, key: str, env: dict, tag: str):
    """openssl dgst -sign through the provider; the signature verified without it."""
    message = Path(ossl.path(f"msg-{tag}.txt"))
    message.write_bytes(os.urandom(512))
    ossl.run("dgst", "-sha256", "-sign", key, "-out", ossl.path(f"sig-{tag}.bin"), str(message), env=env)
    ossl.run("pkey", "-in", key, "-pubout", "-out", ossl.path(f"pub-{tag}.pem"), env=env)
    out = ossl.plain("dgst", "-sha256", "-verify", ossl.path(f"pub-{tag}.pem"), "-signature",
                     ossl.path(f"sig-{tag}.bin"), str(message))
    assert b"Verified OK" in out.stdout, out.stdout


def key_handle(ossl: OpenSSL, key: str) -> int:
    text = ossl.run("pkey", "-in", key, "-text", "-noout").stdout.decode()
    return int(re.search(r"handle: (\d+)", text).group(1))


# ------------------------------------------------------------------------------ addresses


def test_config_certificates_and_listeners_use_the_node_addresses(spread):
    port = spread.ports[0]
    cfg = spread.config.read_text()
    assert re.findall(r"^node = (\d+) (\S+)$", cfg, re.M) == [
        (str(n), f"{host}:{port}") for n, host in enumerate(HOSTS)], cfg
    for n, host in enumerate(HOSTS):
        text = subprocess.run(["openssl", "x509", "-in", str(spread.dir / f"node{n}.crt"), "-noout", "-ext",
                               "subjectAltName"], capture_output=True, text=True, check=True).stdout
        # Exactly this node's address: no 127.0.0.1, no localhost to fall back on.
        assert re.findall(r"(?:IP Address|DNS):\S+", text) == [f"IP Address:{host}"], text
        assert connectable(host, port), f"node {n} does not listen on {host}:{port}"
    assert not connectable("127.0.0.1", port), "something listens on 127.0.0.1; the nodes should not"
    status = spread.script("status").stdout
    for n, host in enumerate(HOSTS):
        assert re.search(rf"^node {n} {re.escape(host)}:{port} running \(pid \d+\)$", status, re.M), status
    # Each node serves its metrics on its own address too, and status reads them there.
    urls = (spread.dir / "metrics").read_text().splitlines()
    assert len(urls) == len(HOSTS), urls
    for host, url in zip(HOSTS, urls):
        assert re.fullmatch(rf"http://{re.escape(host)}:\d+/metrics", url), urls
        assert re.search(rf"^    connections: .*; {re.escape(url)}$", status, re.M), status


def test_nodes_sync_with_their_peers_at_the_peer_addresses(spread):
    port = spread.ports[0]
    for n, host in enumerate(HOSTS):
        def synced_with_all(n=n):
            log = spread.log(n)
            return all(f"synced with peer node {m} ({HOSTS[m]}:{port})" in log for m in range(3) if m != n) and log
        log = wait_until(synced_with_all, CATCH_UP, f"node {n} to sync with both peers")
        assert f"hsmd node {n} listening on {host}:{port}" in log, log
        assert f"127.0.0.1:{port}" not in log, log


def test_tools_reach_every_node_at_its_address(spread):
    info = spread.assert_serves()
    assert {n: i.address for n, i in info.items()} == {
        n: f"{host}:{spread.ports[0]}" for n, host in enumerate(HOSTS)}


# ------------------------------------------------------------------------------ keys


def test_key_made_through_node0_signs_on_nodes_1_and_2(spread, ossl):
    """openssl genrsa with only node 0 configured: the key is made there (its handle
    carries node id 0), replicates, and the provider signs with it on node 1 alone and
    on node 2 alone; the nodes' counters show who signed."""
    key = ossl.path("made_on_node0.key")
    ossl.run("genrsa", "-out", key, "2048", env=only_node(ossl, 0))
    assert Path(key).read_text().startswith("-----BEGIN CLOUDHSM KEY REFERENCE-----")
    handle = key_handle(ossl, key)
    assert handle & 0xF == 0, f"handle {handle} was not made by node 0"
    for node in (1, 2):
        wait_for_handles(spread, node, "openssl-genrsa", set(handles_on(spread, 0, "openssl-genrsa")))
        before = signs_per_node(spread)
        sign_and_verify(ossl, key, only_node(ossl, node), f"node{node}")
        after = signs_per_node(spread)
        assert after[node] > before[node], f"node {node} did not sign: {before} -> {after}"
        assert all(after[m] == before[m] for m in range(3) if m != node), f"{before} -> {after}"


def test_key_made_by_key_mgmt_util_on_node2_is_on_every_node(spread):
    out = spread.kmu_on(2, ["genRSAKeyPair -m 2048 -e 65537 -l spread_rsa"])
    public, private = keypair_handles(out)
    assert public & 0xF == 2 and private & 0xF == 2, out
    (spread.work / "spread_msg.txt").write_text("signed on every node\n")
    signatures = set()
    for node in range(3):
        wait_for_handles(spread, node, "spread_rsa", {public, private})
        out = spread.kmu_on(node, [f"sign -f spread_msg.txt -k {private} -m 1 -out spread_{node}.sig"])
        assert returned(command_output(out, "sign"), "Cfm3Sign") == 0, out
        signatures.add((spread.work / f"spread_{node}.sig").read_bytes())
    assert len(signatures) == 1, "PKCS#1 v1.5 signatures of one key differ between nodes"


def test_the_whole_cluster_through_the_provider(spread, ossl):
    """The full cluster.cfg (three addresses): key generation, a CSR and signatures."""
    key = ossl.path("whole.key")
    ossl.run("genrsa", "-out", key, "2048")
    ossl.run("req", "-new", "-key", key, "-subj", "/CN=spread.example", "-out", ossl.path("whole.csr"))
    out = ossl.plain("req", "-in", ossl.path("whole.csr"), "-verify", "-noout")
    assert b"verify OK" in out.stdout + out.stderr
    sign_and_verify(ossl, key, ossl.env, "whole")


# ------------------------------------------------------------------------------ cluster.sh pki


def run_script(command: str, env_extra: dict, directory: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("CLUSTER_PORTS", "CLUSTER_HOSTS")}
    env.update(env_extra, CLUSTER_DIR=str(directory))
    return subprocess.run([str(CLUSTER_SH), command], env=env, capture_output=True, text=True, timeout=120, cwd=REPO)


def test_pki_for_hosts_named_by_dns_and_ipv6(tmp_path, ossl):
    """The files for nodes on separate hosts, made from a shell that loads the provider of
    a running cluster: the CA and node keys are still plain software keys."""
    directory = tmp_path / "pki"
    extra = {"CLUSTER_HOSTS": "hsm-a.example 10.1.2.3 [fd00::5]", "CLUSTER_PORTS": "2223",
             "OPENSSL_CONF": str(ossl.conf), "CLOUDHSM_CONFIG": str(ossl.cluster.config),
             "n3fips_password": ossl.env["n3fips_password"]}
    proc = run_script("pki", extra, directory)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    cfg = (directory / "cluster.cfg").read_text()
    assert re.findall(r"^node = (.*)$", cfg, re.M) == ["0 hsm-a.example:2223", "1 10.1.2.3:2223", "2 [fd00::5]:2223"]
    expected = ["DNS:hsm-a.example", "IP Address:10.1.2.3", "IP Address:FD00:0:0:0:0:0:0:5"]
    for n, san in enumerate(expected):
        crt = directory / f"node{n}.crt"
        text = subprocess.run(["openssl", "x509", "-in", str(crt), "-noout", "-ext", "subjectAltName", "-subject"],
                              capture_output=True, text=True, check=True).stdout
        assert re.findall(r"(?:IP Address|DNS):\S+", text) == [san], text
        assert f"CN = hsm-node-{n}" in text, text
        verify = subprocess.run(["openssl", "verify", "-CAfile", str(directory / "customerCA.crt"), str(crt)],
                                capture_output=True, text=True, env=dict(os.environ, OPENSSL_CONF="/dev/null"))
        assert verify.returncode == 0, verify.stdout + verify.stderr
    for key in ["customerCA.key"] + [f"node{n}.key" for n in range(3)]:
        assert (directory / key).read_text().startswith("-----BEGIN PRIVATE KEY-----"), key
        assert (directory / key).stat().st_mode & 0o077 == 0, key
    assert (directory / "cluster.key").stat().st_size == 32
    # No node was initialised or started, no credentials written.
    assert not list(directory.glob("node*/")) and not list(directory.glob("*.pid"))
    assert not (directory / "env").exists()


@pytest.mark.parametrize("hosts,ports,message", [
    ("10.0.0.1 10.0.0.2", "2223 2224 2225", "CLUSTER_HOSTS names 2 address(es) and CLUSTER_PORTS 3 port(s)"),
    ("10.0.0.1 bad_name!", "2223", "bad address 'bad_name!' in CLUSTER_HOSTS"),
    ("10.0.0.1 10.0.0.1", "2223", "two nodes would listen on 10.0.0.1:2223"),
])
def test_bad_cluster_hosts_are_named(tmp_path, hosts, ports, message):
    directory = tmp_path / "bad"
    proc = run_script("pki", {"CLUSTER_HOSTS": hosts, "CLUSTER_PORTS": ports}, directory)
    assert proc.returncode != 0 and message in proc.stderr, proc.stdout + proc.stderr
    assert list(directory.iterdir()) == [], "nothing may be created for a bad address list"


# ------------------------------------------------------------------------------ deploy.md procedures


def stop_node(cluster, node: int):
    """SIGTERM, as systemctl stop sends it; waits until the node is gone."""
    pid = cluster.pid(node)
    assert pid, f"node {node} is not running"
    os.kill(pid, signal.SIGTERM)
    wait_until(lambda: not process_alive(pid), 30, f"node {node} (pid {pid}) to stop")


def test_restore_a_node_from_a_store_backup(spread, tmp_path):
    """docs/deploy.md "Backup": sqlite3 .backup of a running node's store, the master key
    kept apart. The store alone, or with another node's master key, is useless; with its
    own master key the node comes back, serves its keys and catches up."""
    out = spread.kmu(["genRSAKeyPair -m 2048 -e 65537 -l before_backup"])
    _, before = keypair_handles(out)
    wait_for_handles(spread, 1, "before_backup", set(keypair_handles(out)))
    backup = tmp_path / "node1-backup.sqlite"
    data = spread.dir / "node1"
    proc = subprocess.run(["sqlite3", str(data / "node.sqlite"), f".backup '{backup}'"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    check = subprocess.run(["sqlite3", str(backup), "PRAGMA integrity_check;"], capture_output=True, text=True)
    assert check.stdout.strip() == "ok", check.stdout + check.stderr
    master_copy = tmp_path / "node1-master.key"
    shutil.copy2(data / "master.key", master_copy)
    # Node 1 makes a key after the backup; it reaches node 0 before node 1 is lost.
    made_after = sym_handle(spread.kmu_on(1, ["genSymKey -t 31 -s 16 -l made_by_node1_after_backup"]))
    assert made_after & 0xF == 1
    wait_for_handles(spread, 0, "made_by_node1_after_backup", {made_after})

    # Node 1's host is lost; a key is made while it is gone.
    stop_node(spread, 1)
    out = spread.kmu_on(0, ["genRSAKeyPair -m 2048 -e 65537 -l after_backup"])
    after_public, after_private = keypair_handles(out)
    shutil.rmtree(data)

    def restore(master: Path):
        shutil.rmtree(data, ignore_errors=True)
        data.mkdir(mode=0o700)
        shutil.copy2(backup, data / "node.sqlite")
        shutil.copy2(master, data / "master.key")
        os.chmod(data / "node.sqlite", 0o600)
        os.chmod(data / "master.key", 0o600)

    restore(spread.dir / "node0" / "master.key")  # the wrong one
    proc = spread.script("start", check=False)
    assert proc.returncode != 0, proc.stdout
    assert "cannot be decrypted or parsed (wrong master key or damaged store)" in proc.stderr, proc.stderr

    restore(master_copy)
    spread.start()
    (spread.work / "restored_msg.txt").write_text("signed by the restored node\n")
    for private in (before, after_private):
        out = spread.kmu_on(1, [f"sign -f restored_msg.txt -k {private} -m 1 -out restored_{private}.sig"])
        assert returned(command_output(out, "sign"), "Cfm3Sign") == 0, out
    wait_for_handles(spread, 1, "after_backup", {after_public, after_private})
    # The restored node pulled its own later key back, and does not give its handle out
    # again: a new key gets a new handle, and the old handle still names the old key.
    wait_for_handles(spread, 1, "made_by_node1_after_backup", {made_after})
    fresh = sym_handle(spread.kmu_on(1, ["genSymKey -t 31 -s 16 -l made_after_restore"]))
    assert fresh & 0xF == 1 and fresh > made_after, (fresh, made_after)
    for node in range(3):
        wait_for_handles(spread, node, "made_by_node1_after_backup", {made_after})


def test_add_a_fourth_node(spread, ossl):
    """docs/deploy.md "Adding a node": its line in cluster.cfg, cluster.sh makes its
    certificate and store; the running nodes are restarted one at a time to learn the new
    peer. The new node pulls every key and user at start and its own keys replicate."""
    port = spread.ports[0]
    existing = handles_on(spread, 0, "openssl-genrsa")
    assert existing, "the earlier tests made keys with openssl genrsa"
    with spread.config.open("a") as f:
        f.write(f"node = 3 {NEW_HOST}:{port}\n")
    for node in range(3):
        stop_node(spread, node)
        out = spread.start().stdout  # restarts this node with peer 3 (and starts node 3 the first time)
        assert f"node {node} is listening on {HOSTS[node]}:{port}" in out, out
    assert connectable(NEW_HOST, port)
    san = subprocess.run(["openssl", "x509", "-in", str(spread.dir / "node3.crt"), "-noout", "-ext", "subjectAltName"],
                         capture_output=True, text=True, check=True).stdout
    assert f"IP Address:{NEW_HOST}" in san, san
    # The crypto user and the keys come by replication.
    wait_for_handles(spread, 3, "openssl-genrsa", set(existing))
    before = signs_per_node(spread)
    sign_and_verify(ossl, ossl.path("made_on_node0.key"), only_node(ossl, 3), "node3")
    assert signs_per_node(spread)[3] > before.get(3, 0)
    # A key made on node 3 reaches node 0.
    out = spread.kmu_on(3, ["genRSAKeyPair -m 2048 -e 65537 -l made_on_node3"])
    public, private = keypair_handles(out)
    assert private & 0xF == 3
    wait_for_handles(spread, 0, "made_on_node3", {public, private})
    # Until its peers were restarted they refused node 3's requests, and node 3's log
    # says so (not that the cluster key is wrong); then its sync, every 2 s, reaches all.
    wait_until(lambda: all(f"synced with peer node {m} ({host}:{port})" in spread.log(3)
                           for m, host in enumerate(HOSTS)), CATCH_UP, "node 3 to sync with every peer")
    log = spread.log(3)
    assert "refused the peer request" in log, log
    assert "authentication failed" not in log, log


# ------------------------------------------------------------------------------ examples/systemd

UNIT = REPO / "examples" / "systemd" / "hsmd.service"
UNIT_ENV = REPO / "examples" / "systemd" / "hsmd.env"


def unit_exec_start(unit: str) -> str:
    joined = re.sub(r"\\\n\s*", " ", unit)
    return re.search(r"^ExecStart=(.*)$", joined, re.M).group(1)


def systemd_expand(command: str, env: dict) -> list[str]:
    """ExecStart= as systemd expands it: ${VAR} is one word, $VAR splits on whitespace."""
    words = []
    for word in command.split():
        m = re.fullmatch(r"\$\{(\w+)\}", word)
        if m:
            words.append(env[m.group(1)])
            continue
        m = re.fullmatch(r"\$(\w+)", word)
        words += env[m.group(1)].split() if m else [word]
    return words


def test_systemd_unit_and_env_file_start_a_node(tmp_path, bin_dir):
    """The unit's ExecStart with an env file shaped like examples/systemd/hsmd.env (this
    test's paths): hsmd init as docs/deploy.md runs it, the node serves, ExecReload's
    SIGHUP reopens the log file, SIGTERM stops it."""
    unit = UNIT.read_text()
    assert "EnvironmentFile=/etc/cloudhsm/hsmd.env" in unit
    example = dict(re.findall(r"^(HSMD_\w+)=(.*)$", UNIT_ENV.read_text(), re.M))
    assert set(example) == {"HSMD_DATA_DIR", "HSMD_LISTEN", "HSMD_CERT", "HSMD_KEY", "HSMD_CA", "HSMD_CLUSTER_KEY",
                            "HSMD_PEERS", "HSMD_ARGS"}
    host = "127.0.0.6"
    port = free_ports(1, host)[0]
    pki = tmp_path / "pki"
    proc = run_script("pki", {"CLUSTER_HOSTS": host, "CLUSTER_PORTS": str(port)}, pki)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    password = tmp_path / "co_password"
    password.write_text("co-password-1234\n")
    password.chmod(0o600)
    log = tmp_path / "hsmd.log"
    env = {
        "HSMD_DATA_DIR": str(tmp_path / "hsmd" / "node0"), "HSMD_LISTEN": f"{host}:{port}",
        "HSMD_CERT": str(pki / "node0.crt"), "HSMD_KEY": str(pki / "node0.key"), "HSMD_CA": str(pki / "customerCA.crt"),
        "HSMD_CLUSTER_KEY": str(pki / "cluster.key"), "HSMD_PEERS": "", "HSMD_ARGS": f"--log-file {log} --workers 2",
    }
    (tmp_path / "hsmd").mkdir(mode=0o700)  # what StateDirectory= makes
    hsmd = str(bin_dir / "hsmd")
    subprocess.run([hsmd, "init", "--data-dir", env["HSMD_DATA_DIR"], "--node-id", "0", "--cluster-id", "local-dev",
                    "--co-password-file", str(password)], check=True, capture_output=True, timeout=60)
    argv = systemd_expand(unit_exec_start(unit), env)
    assert argv[0] == "/usr/local/bin/hsmd"
    node = subprocess.Popen([hsmd] + argv[1:], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        line = node.stdout.readline()
        assert line.strip() == f"hsmd node 0 listening on {host}:{port}", line + log.read_text(errors="replace")
        cmu_env = dict(os.environ, CLOUDHSM_CONFIG=str(pki / "cluster.cfg"))
        out = subprocess.run([str(bin_dir / "cloudhsm_mgmt_util")], input="loginHSM CO admin co-password-1234\n"
                             "listUsers\nlogoutHSM\nquit\n", env=cmu_env, capture_output=True, text=True, timeout=60)
        assert "loginHSM success on server 0" in out.stdout and "admin" in out.stdout, out.stdout + out.stderr
        # logrotate: rename, then `systemctl reload hsmd` (ExecReload: kill -HUP $MAINPID).
        assert "ExecReload=/bin/kill -HUP $MAINPID" in unit
        log.rename(tmp_path / "hsmd.log.1")
        node.send_signal(signal.SIGHUP)
        wait_until(lambda: log.exists() and "SIGHUP: log file reopened" in log.read_text(), 20, "the log to reopen")
        node.send_signal(signal.SIGTERM)
        assert node.wait(timeout=20) == 0
        assert "signal 15, shutting down" in log.read_text()
    finally:
        if node.poll() is None:
            node.kill()
            node.wait()


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_systemd_unit_verifies(tmp_path, bin_dir):
    """systemd-analyze verify: no unknown keys or bad values (the executable path is this
    build's, since verify checks it exists)."""
    unit = tmp_path / "hsmd.service"
    unit.write_text(UNIT.read_text().replace("/usr/local/bin/hsmd", str(bin_dir / "hsmd")))
    proc = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout + proc.stderr == "", proc.stdout + proc.stderr
    bad = tmp_path / "bad.service"
    bad.write_text(unit.read_text().replace("ProtectHome=yes", "ProtectHom=yes"))
    proc = subprocess.run(["systemd-analyze", "verify", str(bad)], capture_output=True, text=True, timeout=60)
    assert "Unknown key 'ProtectHom'" in proc.stderr, "verify would not have noticed a mistake"
