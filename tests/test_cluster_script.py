"""scripts/cluster.sh itself: what it creates, that a second start changes nothing, that
it restarts only dead nodes, status and stop."""

from __future__ import annotations

import hashlib
import re
import stat
import subprocess

from helpers import process_alive, wait_until

NODES = 3
GENERATED = ["customerCA.key", "customerCA.crt", "co_password", "crypto_user_password", "cluster.cfg", "env",
             "cluster.key"] + [
    f"node{n}.{ext}" for n in range(NODES) for ext in ("key", "crt")
] + [f"node{n}/master.key" for n in range(NODES)]


def digests(cluster) -> dict[str, str]:
    return {f: hashlib.sha256((cluster.dir / f).read_bytes()).hexdigest() for f in GENERATED}


def x509(path, *args) -> str:
    return subprocess.run(["openssl", "x509", "-in", str(path), "-noout", *args], capture_output=True, text=True,
                          check=True).stdout


def test_files_and_permissions(cluster):
    for f in GENERATED:
        assert (cluster.dir / f).is_file(), f
    for secret in ["customerCA.key", "co_password", "crypto_user_password", "env", "cluster.key"] + [
            f"node{n}.key" for n in range(NODES)]:
        mode = stat.S_IMODE((cluster.dir / secret).stat().st_mode)
        assert mode & 0o077 == 0, f"{secret} is readable by others: {oct(mode)}"


def test_config_names_the_nodes_and_the_ca(cluster):
    cfg = cluster.config.read_text()
    assert re.search(r"^cluster_id = local-dev$", cfg, re.M)
    assert re.search(r"^trust_anchor = customerCA.crt$", cfg, re.M)
    nodes = re.findall(r"^node = (\d+) 127\.0\.0\.1:(\d+)$", cfg, re.M)
    assert [(int(n), int(p)) for n, p in nodes] == list(enumerate(cluster.ports)), cfg
    env = (cluster.dir / "env").read_text()
    assert f"CLOUDHSM_CONFIG={cluster.config}" in env
    assert re.search(r"^export n3fips_password=crypto_user:[0-9a-f]+$", env, re.M), env
    assert str(cluster.bin_dir) in env


def test_certificates(cluster):
    ca = cluster.dir / "customerCA.crt"
    text = x509(ca, "-text")
    assert re.search(r"CA:TRUE", text)
    nine_years = subprocess.run(["openssl", "x509", "-in", str(ca), "-noout", "-checkend", str(9 * 365 * 86400)],
                                capture_output=True)
    assert nine_years.returncode == 0, "the CA should be valid for about 10 years"
    for n in range(NODES):
        crt = cluster.dir / f"node{n}.crt"
        verify = subprocess.run(["openssl", "verify", "-CAfile", str(ca), str(crt)], capture_output=True, text=True)
        assert verify.returncode == 0, verify.stdout + verify.stderr
        text = x509(crt, "-text")
        assert f"CN = hsm-node-{n}" in x509(crt, "-subject")
        assert "IP Address:127.0.0.1" in text and "DNS:localhost" in text
        assert "TLS Web Server Authentication" in text and "TLS Web Client Authentication" in text
        key_pub = subprocess.run(["openssl", "pkey", "-in", str(cluster.dir / f"node{n}.key"), "-pubout"],
                                 capture_output=True, text=True, check=True).stdout
        assert key_pub == x509(crt, "-pubkey"), f"node{n}.key does not match node{n}.crt"


def test_second_start_changes_nothing(cluster):
    before = digests(cluster)
    pids = [cluster.pid(n) for n in range(NODES)]
    out = cluster.start()
    assert out.stdout.count("already running") == NODES, out.stdout
    assert "creating" not in out.stdout and "initialising" not in out.stdout, out.stdout
    assert digests(cluster) == before
    assert [cluster.pid(n) for n in range(NODES)] == pids


def test_status_and_restart_of_one_dead_node(cluster):
    out = cluster.script("status")
    assert out.stdout.count(" running (pid ") == NODES, out.stdout
    before = digests(cluster)
    pids = [cluster.pid(n) for n in range(NODES)]
    cluster.kill(1)
    out = cluster.script("status", check=False)
    assert out.returncode != 0 and re.search(r"^node 1 .* stopped$", out.stdout, re.M), out.stdout
    out = cluster.start()
    assert "node 1 is listening" in out.stdout and out.stdout.count("already running") == NODES - 1, out.stdout
    assert cluster.pid(0) == pids[0] and cluster.pid(2) == pids[2] and cluster.pid(1) not in (None, pids[1])
    assert digests(cluster) == before
    cluster.assert_serves()


def test_stale_pid_file_is_not_trusted(cluster):
    """A pid file naming some other live process (here: a sleep) must not count as a node."""
    cluster.kill(2)
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        (cluster.dir / "node2.pid").write_text(f"{sleeper.pid}\n")
        out = cluster.start()
        assert "node 2 is listening" in out.stdout, out.stdout
        assert process_alive(sleeper.pid), "the script must not kill an unrelated process"
    finally:
        sleeper.kill()
        sleeper.wait()
    cluster.assert_serves()


def test_stop_then_start(cluster):
    pids = [cluster.pid(n) for n in range(NODES)]
    out = cluster.stop()
    assert out.returncode == 0, out.stderr
    for n, pid in enumerate(pids):
        wait_until(lambda: not process_alive(pid), 15, f"node {n} to stop")
        assert not (cluster.dir / f"node{n}.pid").exists()
    out = cluster.script("status", check=False)
    assert out.returncode != 0 and out.stdout.count("stopped") == NODES
    out = cluster.start()
    assert out.stdout.count("is listening on") == NODES, out.stdout
    cluster.assert_serves()
