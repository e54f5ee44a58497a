"""Each node's Prometheus metrics against real nodes: promtool accepts every node's page;
signatures through key_mgmt_util and through the provider move the right counter and the
latency histogram; failed logins, lockouts, refused logins, evictions and failed TLS
handshakes show up; replication is reported per peer, a dead peer too; cluster.sh writes
.cluster/metrics and `status` prints the counts; the metrics port survives slow,
oversized and malformed requests. And `cloudhsm_check --stats`, the client pool's view
of each node, checked against the nodes' own counts, throttling included."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import NODES, Cluster
from helpers import (
    REPO,
    command_output,
    free_ports,
    keypair_handles,
    process_alive,
    wait_until,
)

OPS = "hsmd_private_key_operations_total"
LATENCY = "hsmd_private_key_operation_duration_seconds"


# ---------------------------------------------------------------------------- helpers


def promtool() -> str:
    """promtool: PROMTOOL, else PATH, else where `make deps` puts it."""
    for candidate in (os.environ.get("PROMTOOL", ""), shutil.which("promtool") or "",
                      str(REPO / ".tools" / "bin" / "promtool")):
        if candidate and Path(candidate).exists():
            return candidate
    pytest.fail("promtool not found: `make deps` extracts it into .tools/bin (or set PROMTOOL)")


def metrics_url(cluster: Cluster, node: int) -> str:
    return (cluster.dir / f"node{node}.metrics").read_text().strip()


def fetch(url: str) -> tuple[int, dict, str]:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.status, dict(response.headers), response.read().decode()


def parse(text: str) -> dict[str, float]:
    """Samples by series: `name{labels}` as written, or `name` without labels."""
    values: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        series, value = line.rsplit(" ", 1)
        values[series] = float(value)
    return values


def scrape(cluster: Cluster, node: int) -> dict[str, float]:
    status, _, text = fetch(metrics_url(cluster, node))
    assert status == 200
    return parse(text)


def ops(kind: str, outcome: str = "success") -> str:
    return f'{OPS}{{operation="{kind}",outcome="{outcome}"}}'


def latency_count(kind: str) -> str:
    return f'{LATENCY}_count{{operation="{kind}"}}'


def total(cluster: Cluster, series: str) -> float:
    return sum(scrape(cluster, n).get(series, 0) for n in range(NODES))


def host_port(url: str) -> tuple[str, int]:
    m = re.fullmatch(r"http://(\d+\.\d+\.\d+\.\d+):(\d+)/metrics", url)
    assert m, url
    return m.group(1), int(m.group(2))


def raw_http(url: str, data: bytes, timeout: float = 15) -> tuple[str, float]:
    """Sends `data` on a fresh connection; the answer's status line (or '' when the
    connection closed without one) and how long until the node closed it."""
    started = time.monotonic()
    with socket.create_connection(host_port(url), timeout=timeout) as conn:
        try:
            conn.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass
        received = b""
        try:
            while chunk := conn.recv(65536):
                received += chunk
        except ConnectionResetError:
            pass
    return received.split(b"\r\n", 1)[0].decode(errors="replace"), time.monotonic() - started


def listening_ports(pid: int) -> set[int]:
    """The TCP ports process `pid` listens on (its socket inodes in /proc/net/tcp*)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def message_file(cluster: Cluster) -> str:
    path = cluster.work / "metrics_msg.txt"
    path.write_text("signed on the HSMs\n")
    return path.name


def make_key(cluster: Cluster, label: str, ec: bool = False) -> int:
    command = f"genECCKeyPair -i 2 -l {label}" if ec else f"genRSAKeyPair -m 2048 -e 65537 -l {label}"
    out = cluster.kmu_on(0, [command])
    return keypair_handles(command_output(out, command))[1]


def fake_pem(cluster: Cluster, handle: int, name: str) -> Path:
    out = cluster.kmu([f"getCaviumPrivKey -k {handle} -out {name}"])
    path = cluster.work / name
    assert path.exists(), out
    assert path.read_text().startswith("-----BEGIN CLOUDHSM KEY REFERENCE-----"), path.read_text()
    return path


@pytest.fixture(scope="module")
def rsa_key(cluster) -> int:
    return make_key(cluster, "metrics_rsa")


# ---------------------------------------------------------------------------- the pages


def test_metrics_file_lists_every_node_and_each_page_passes_promtool(cluster, rsa_key):
    urls = (cluster.dir / "metrics").read_text().splitlines()
    assert urls == [metrics_url(cluster, n) for n in range(NODES)], urls
    assert len(set(urls)) == NODES
    for n, url in enumerate(urls):
        host, port = host_port(url)
        assert host == "127.0.0.1" and port not in cluster.ports
        assert f"hsmd node {n} metrics on {url}" in cluster.log(n)
        # Something counted, so the histogram and counters are not all zero.
        out = cluster.kmu_on(n, [f"sign -f {message_file(cluster)} -k {rsa_key} -m 1 -out page_{n}.sig"])
        assert "Cfm3Sign returned: 0x00" in out, out
        status, headers, text = fetch(url)
        assert status == 200
        assert headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8", headers
        check = subprocess.run([promtool(), "check", "metrics"], input=text, capture_output=True, text=True)
        assert check.returncode == 0 and check.stdout + check.stderr == "", (
            f"promtool check metrics on node {n}:\n{check.stdout}{check.stderr}\n--- page:\n{text}"
        )
        values = parse(text)
        assert values[ops("rsa_sign")] >= 1
        assert values['hsmd_keys{kind="token"}'] >= 2
        assert values["hsmd_users"] == 2  # the officer and the crypto user
        for peer in set(range(NODES)) - {n}:
            assert f'hsmd_replication_peer_up{{peer="{peer}"}}' in values, values.keys()


def test_a_signature_through_key_mgmt_util_counts_on_its_node(cluster, rsa_key):
    before = [scrape(cluster, n) for n in range(NODES)]
    out = cluster.kmu_on(1, [f"sign -f {message_file(cluster)} -k {rsa_key} -m 1 -out kmu.sig"])
    assert "Cfm3Sign returned: 0x00" in out, out
    after = [scrape(cluster, n) for n in range(NODES)]
    assert after[1][ops("rsa_sign")] == before[1][ops("rsa_sign")] + 1
    assert after[1][latency_count("rsa_sign")] == before[1][latency_count("rsa_sign")] + 1
    assert after[1][f'{LATENCY}_sum{{operation="rsa_sign"}}'] > before[1][f'{LATENCY}_sum{{operation="rsa_sign"}}']
    assert after[1][ops("rsa_decrypt")] == before[1][ops("rsa_decrypt")]
    for n in (0, 2):
        assert after[n][ops("rsa_sign")] == before[n][ops("rsa_sign")], f"node {n} counted a sign it did not do"
    # A key that does not exist: a failed sign, outside the histogram.
    out = cluster.kmu_on(1, [f"sign -f {message_file(cluster)} -k 999999 -m 1 -out none.sig"])
    assert "Cfm3Sign returned: 0x00" not in out, out
    failed = scrape(cluster, 1)
    assert failed[ops("rsa_sign", "failure")] == after[1][ops("rsa_sign", "failure")] + 1
    assert failed[latency_count("rsa_sign")] == after[1][latency_count("rsa_sign")]


def test_an_ecdsa_signature_counts_as_ecdsa(cluster):
    handle = make_key(cluster, "metrics_ec", ec=True)
    before = scrape(cluster, 2)
    out = cluster.kmu_on(2, [f"sign -f {message_file(cluster)} -k {handle} -m 17 -out ec.sig"])
    assert "Cfm3Sign returned: 0x00" in out, out
    after = scrape(cluster, 2)
    assert after[ops("ecdsa_sign")] == before[ops("ecdsa_sign")] + 1
    assert after[latency_count("ecdsa_sign")] == before[latency_count("ecdsa_sign")] + 1
    assert after[ops("rsa_sign")] == before[ops("rsa_sign")]


def test_the_provider_signs_and_decrypts_and_the_nodes_count_it(cluster, rsa_key):
    conf = cluster.dir / "openssl.cnf"
    if not conf.exists():
        pytest.fail("cluster.sh wrote no openssl.cnf: run `make build` (it builds build/ossl-modules/cloudhsm.so)")
    key = fake_pem(cluster, rsa_key, "metrics_key.pem")
    env = dict(cluster.env, OPENSSL_CONF=str(conf))
    message = cluster.work / "provider_msg.txt"
    message.write_text("counted on the HSMs\n")
    sign_before, decrypt_before = total(cluster, ops("rsa_sign")), total(cluster, ops("rsa_decrypt"))
    subprocess.run(["openssl", "dgst", "-sha256", "-sign", str(key), "-out", str(cluster.work / "provider.sig"),
                    str(message)], env=env, check=True, capture_output=True, timeout=120)
    assert total(cluster, ops("rsa_sign")) == sign_before + 1
    assert total(cluster, ops("rsa_decrypt")) == decrypt_before
    # A decryption: encrypted with the public key by plain openssl, decrypted on the HSMs.
    public = cluster.work / "metrics_pub.pem"
    plain = dict(cluster.env, OPENSSL_CONF="/dev/null")
    subprocess.run(["openssl", "pkey", "-in", str(key), "-pubout", "-out", str(public)], env=env, check=True,
                   capture_output=True, timeout=120)
    subprocess.run(["openssl", "pkeyutl", "-encrypt", "-pubin", "-inkey", str(public), "-in", str(message), "-out",
                    str(cluster.work / "enc.bin")], env=plain, check=True, capture_output=True, timeout=120)
    out = subprocess.run(["openssl", "pkeyutl", "-decrypt", "-inkey", str(key), "-in", str(cluster.work / "enc.bin")],
                         env=env, check=True, capture_output=True, timeout=120)
    assert out.stdout == message.read_bytes()
    assert total(cluster, ops("rsa_decrypt")) == decrypt_before + 1
    assert total(cluster, latency_count("rsa_decrypt")) >= 1


# ---------------------------------------------------------------------------- logins


def test_failed_logins_and_a_lockout_show_up(cluster):
    cluster.create_cu("metrics_lock", "right-password")
    before = scrape(cluster, 0)
    lines = [f"loginHSM -u CU -s metrics_lock -p wrong-{i}" for i in range(5)]
    lines.append("loginHSM -u CU -s metrics_lock -p right-password")
    out = cluster.kmu(lines, login=False, env=cluster.node_env(0))
    assert out.count("Cfm3LoginHSM returned: 0x") == 6, out
    after = scrape(cluster, 0)
    assert after['hsmd_logins_total{outcome="failure"}'] == before['hsmd_logins_total{outcome="failure"}'] + 5
    assert after['hsmd_logins_total{outcome="locked"}'] == before['hsmd_logins_total{outcome="locked"}'] + 1
    assert after["hsmd_user_lockouts_total"] == before["hsmd_user_lockouts_total"] + 1
    assert after["hsmd_users_locked"] == before["hsmd_users_locked"] + 1
    # The failed logins reached the peers: the user is locked there too.
    for n in (1, 2):
        wait_until(lambda: scrape(cluster, n)["hsmd_users_locked"] >= 1, 30, f"node {n} to count the locked user")
    cluster.cmu(["changePswd CU metrics_lock new-password"])
    wait_until(lambda: all(scrape(cluster, n)["hsmd_users_locked"] == 0 for n in range(NODES)), 30,
               "the new password to unlock the user everywhere")


# ---------------------------------------------------------------------------- connections


def start_node(tmp_path_factory, bin_dir, run_args: str) -> Cluster:
    directory = tmp_path_factory.mktemp("metrics_node")
    node = Cluster(directory, free_ports(1), bin_dir)
    saved = os.environ.get("HSMD_RUN_ARGS")
    os.environ["HSMD_RUN_ARGS"] = run_args
    try:
        node.start()
    finally:
        if saved is None:
            os.environ.pop("HSMD_RUN_ARGS", None)
        else:
            os.environ["HSMD_RUN_ARGS"] = saved
    return node


@pytest.fixture(scope="module")
def tiny_node(tmp_path_factory, bin_dir):
    """One logged-in slot and two for connections not logged in."""
    node = start_node(
        tmp_path_factory, bin_dir,
        "--max-connections 3 --max-unauthenticated 2 --max-unauthenticated-per-source 2 --handshake-timeout-ms 3000",
    )
    yield node
    node.stop()


def node_scrape(node: Cluster) -> dict[str, float]:
    return parse(fetch(metrics_url(node, 0))[2])


def test_a_login_refused_for_the_connection_limit_shows_up(tiny_node):
    before = node_scrape(tiny_node)
    holder = tiny_node.session()
    try:
        wait_until(lambda: node_scrape(tiny_node)['hsmd_connections{state="logged_in"}'] == 1, 10,
                   "the held session to count as logged in")
        out = tiny_node.kmu(["getHSMInfo"])
        assert "0x000000bb" in out.lower() or "0xbb" in out.lower(), out
    finally:
        holder.close()
    after = node_scrape(tiny_node)
    assert after['hsmd_connections_refused_total{when="login"}'] >= before['hsmd_connections_refused_total{when="login"}'] + 1
    assert after['hsmd_throttled_responses_total{reason="connection_limit"}'] >= (
        before['hsmd_throttled_responses_total{reason="connection_limit"}'] + 1)
    assert after["hsmd_connections_max"] == 3 and after["hsmd_unauthenticated_connections_max"] == 2


def test_an_eviction_and_a_failed_handshake_show_up(tiny_node):
    before = node_scrape(tiny_node)
    port = tiny_node.ports[0]
    held = []
    try:
        # Three connections that never start TLS, from one address allowed two: the
        # oldest is closed to make room.
        for _ in range(3):
            held.append(socket.create_connection(("127.0.0.1", port), timeout=10))
            time.sleep(0.2)
        wait_until(lambda: node_scrape(tiny_node)["hsmd_connections_evicted_total"] >= before[
            "hsmd_connections_evicted_total"] + 1, 10, "the eviction to be counted")
        values = node_scrape(tiny_node)
        assert values['hsmd_connections{state="unauthenticated"}'] == 2, values
    finally:
        for conn in held:
            conn.close()
    # Plain HTTP on the TLS port: a handshake that fails.
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(b"GET / HTTP/1.0\r\n\r\n")
        conn.recv(100)
    wait_until(lambda: node_scrape(tiny_node)["hsmd_tls_handshake_failures_total"] >= before[
        "hsmd_tls_handshake_failures_total"] + 1, 10, "the failed handshake to be counted")
    values = node_scrape(tiny_node)
    assert values["hsmd_connections_accepted_total"] >= before["hsmd_connections_accepted_total"] + 4


# ---------------------------------------------------------------------------- the metrics port


def test_the_metrics_port_cuts_slow_oversized_and_malformed_requests(tiny_node):
    url = metrics_url(tiny_node, 0)
    # Two seconds for the whole head: a trickle is cut with 408.
    status, took = raw_http(url, b"GET /metr")
    assert status == "HTTP/1.1 408 Request Timeout" and took < 10, (status, took)
    # 100 kB of header: 431 once 8 kB arrived, and the connection is closed.
    status, took = raw_http(url, b"GET /metrics HTTP/1.1\r\nX-Big: " + b"a" * 100_000 + b"\r\n\r\n")
    assert status == "HTTP/1.1 431 Request Header Fields Too Large", status
    for data, expected in [
        (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n", "HTTP/1.1 400 Bad Request"),
        (b"POST /metrics HTTP/1.1\r\nContent-Length: 4\r\n\r\nbody", "HTTP/1.1 405 Method Not Allowed"),
        (b"GET /admin HTTP/1.1\r\n\r\n", "HTTP/1.1 404 Not Found"),
        (b"GET /metrics HTTP/3\r\n\r\n", "HTTP/1.1 505 HTTP Version Not Supported"),
    ]:
        assert raw_http(url, data)[0] == expected, data
    # Four slow clients hold every worker; a fifth hears 503 at once, not after them. A
    # worker that answered one of the requests above may still be closing (it waits up
    # to 200 ms for the client to close): then a slow one hears the 503 instead, and the
    # round proves nothing, so it is tried again.
    for attempt in range(3):
        time.sleep(1)
        slow = [socket.create_connection(host_port(url), timeout=15) for _ in range(4)]
        try:
            for conn in slow:
                conn.sendall(b"GET /met")
            time.sleep(0.3)
            status, took = raw_http(url, b"GET /metrics HTTP/1.1\r\n\r\n")
            # Each slow one is cut at its deadline.
            answers = [conn.recv(100).split(b"\r\n")[0] for conn in slow]
        finally:
            for conn in slow:
                conn.close()
        if answers == [b"HTTP/1.1 408 Request Timeout"] * 4:
            break
        assert answers.count(b"HTTP/1.1 503 Service Unavailable") == 1, answers
    assert answers == [b"HTTP/1.1 408 Request Timeout"] * 4, answers
    assert status == "HTTP/1.1 503 Service Unavailable" and took < 2, (status, took)
    values = node_scrape(tiny_node)
    for code in ("408", "431", "400", "405", "404", "505", "503"):
        assert values[f'hsmd_metrics_http_requests_total{{code="{code}"}}'] >= 1, code
    # The node serves on: its TLS port and its metrics.
    assert tiny_node.pid(0)
    assert "Cfm3LoginHSM returned: 0x00" in tiny_node.kmu(["getHSMInfo"])
    assert fetch(url)[0] == 200


def test_metrics_are_off_unless_asked_for(tmp_path_factory, bin_dir, tiny_node):
    """hsmd without --metrics-listen listens on its TLS port only; with it, on one more."""
    assert listening_ports(tiny_node.pid(0)) == {tiny_node.ports[0], host_port(metrics_url(tiny_node, 0))[1]}
    plain = tmp_path_factory.mktemp("plain_node")
    port = free_ports(1)[0]
    data = plain / "data"
    subprocess.run([str(bin_dir / "hsmd"), "init", "--data-dir", str(data), "--node-id", "0", "--cluster-id", "c",
                    "--co-password", "pw", "--password-iterations", "10"], check=True, capture_output=True)
    cluster_dir = tiny_node.dir
    proc = subprocess.Popen(
        [str(bin_dir / "hsmd"), "run", "--data-dir", str(data), "--listen", f"127.0.0.1:{port}",
         "--cert", str(cluster_dir / "node0.crt"), "--key", str(cluster_dir / "node0.key"),
         "--ca", str(cluster_dir / "customerCA.crt")],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        line = proc.stdout.readline()
        assert line == f"hsmd node 0 listening on 127.0.0.1:{port}\n", line
        assert listening_ports(proc.pid) == {port}
    finally:
        proc.terminate()
        proc.wait(timeout=20)


# ---------------------------------------------------------------------------- replication


def test_replication_is_reported_per_peer_and_a_dead_peer_shows(cluster):
    values = scrape(cluster, 0)
    for peer in (1, 2):
        assert values[f'hsmd_replication_peer_up{{peer="{peer}"}}'] == 1, values
        assert values[f'hsmd_replication_syncs_total{{peer="{peer}"}}'] >= 1
        # Syncs run every 2 s; a generous bound for a loaded machine.
        assert 0 <= values[f'hsmd_replication_lag_seconds{{peer="{peer}"}}'] < 30
        assert values[f'hsmd_replication_last_sync_timestamp_seconds{{peer="{peer}"}}'] > time.time() - 60
    assert 'hsmd_replication_peer_up{peer="0"}' not in values
    cluster.kill(2)
    try:
        wait_until(lambda: scrape(cluster, 0)['hsmd_replication_peer_up{peer="2"}'] == 0, 30,
                   "node 0 to see peer 2 down")
        down = scrape(cluster, 0)
        assert down['hsmd_replication_sync_failures_total{peer="2"}'] >= values[
            'hsmd_replication_sync_failures_total{peer="2"}'] + 1
        assert down['hsmd_replication_peer_up{peer="1"}'] == 1
        # A key made on node 0 cannot be pushed to node 2; node 1 is enough to make it.
        make_key(cluster, "metrics_while_down")
        pushed = scrape(cluster, 0)
        assert pushed['hsmd_replication_push_failures_total{peer="2"}'] >= down[
            'hsmd_replication_push_failures_total{peer="2"}'] + 1
        wait_until(lambda: scrape(cluster, 0)['hsmd_replication_lag_seconds{peer="2"}'] > scrape(cluster, 0)[
            'hsmd_replication_lag_seconds{peer="1"}'] + 2, 30, "peer 2's lag to grow past peer 1's")
    finally:
        cluster.restart()
    # Back: a new metrics port, in both files, and node 0 syncs with it again.
    urls = (cluster.dir / "metrics").read_text().splitlines()
    assert urls == [metrics_url(cluster, n) for n in range(NODES)]
    wait_until(lambda: scrape(cluster, 0)['hsmd_replication_peer_up{peer="2"}'] == 1, 30,
               "node 0 to sync with node 2 again")
    assert scrape(cluster, 2)['hsmd_keys{kind="token"}'] == scrape(cluster, 0)['hsmd_keys{kind="token"}']


# ---------------------------------------------------------------------------- cluster.sh status


def test_status_prints_each_nodes_counts_from_its_metrics(cluster, rsa_key):
    for n in range(NODES):
        out = cluster.kmu_on(n, [f"sign -f {message_file(cluster)} -k {rsa_key} -m 1 -out status_{n}.sig"])
        assert "Cfm3Sign returned: 0x00" in out, out
    for command in (["scripts/cluster.sh", "status"], ["make", "-s", "status"]):
        env = dict(os.environ, CLUSTER_DIR=str(cluster.dir), CLUSTER_PORTS=" ".join(map(str, cluster.ports)))
        out = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=60).stdout
        pages = [scrape(cluster, n) for n in range(NODES)]
        for n in range(NODES):
            block = re.search(rf"^node {n} 127\.0\.0\.1:{cluster.ports[n]} running \(pid \d+\)\n(    .*\n)+", out, re.M)
            assert block, out
            m = re.search(r"operations: rsa_sign (\d+), rsa_decrypt (\d+), ecdsa_sign (\d+), failed (\d+); "
                          r"throttled (\d+); failed logins (\d+)", block.group(0))
            assert m, block.group(0)
            page = pages[n]
            assert int(m.group(1)) == page[ops("rsa_sign")]
            assert int(m.group(2)) == page[ops("rsa_decrypt")]
            assert int(m.group(3)) == page[ops("ecdsa_sign")]
            assert int(m.group(4)) == sum(page[ops(k, "failure")] for k in ("rsa_sign", "rsa_decrypt", "ecdsa_sign"))
            tokens = int(page['hsmd_keys{kind="token"}'])
            assert re.search(rf"keys: {tokens} token, 0 session; {re.escape(metrics_url(cluster, n))}$",
                             block.group(0), re.M), block.group(0)
    assert sum(int(x) for x in re.findall(r"rsa_sign (\d+)", out)) >= 3


# ---------------------------------------------------------------------------- the client's view


def stats(cluster: Cluster, key: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(cluster.bin_dir / "cloudhsm_check"), "--stats", *args, str(key)],
                          env=cluster.env, capture_output=True, text=True, timeout=300)


def test_cloudhsm_check_stats_matches_the_nodes_counts(cluster, rsa_key):
    key = fake_pem(cluster, rsa_key, "stats_key.pem")
    before = [scrape(cluster, n)[ops("rsa_sign")] for n in range(NODES)]
    proc = stats(cluster, key, "-n", "30", "-t", "3", "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(proc.stdout)
    assert (report["succeeded"], report["failed"], report["not_verified"]) == (30, 0, 0), report
    after = [scrape(cluster, n)[ops("rsa_sign")] for n in range(NODES)]
    nodes = {node["id"]: node for node in report["nodes"]}
    assert sorted(nodes) == list(range(NODES))
    for n in range(NODES):
        node = nodes[n]
        assert node["up"] and node["failures"] == 0 and node["retries"] == 0, node
        # What the pool says each node answered is what each node counted.
        assert node["answered"] == after[n] - before[n] == node["sent"], (node, before, after)
        if node["answered"]:
            assert 0 < node["latency_ms_p50"] <= node["latency_ms_p99"] <= node["latency_ms_max"]
    assert sum(node["answered"] for node in nodes.values()) == 30
    assert sum(1 for node in nodes.values() if node["answered"]) >= 2, "the pool spread the load"

    text = stats(cluster, key, "-n", "6", "-t", "2")
    assert text.returncode == 0, text.stdout + text.stderr
    assert "6 verified, 0 failed" in text.stdout, text.stdout
    for n in range(NODES):
        assert re.search(rf"^{n}\s+127\.0\.0\.1:{cluster.ports[n]}\s+up\s", text.stdout, re.M), text.stdout


def test_cloudhsm_check_stats_shows_a_dead_node(cluster, rsa_key):
    key = fake_pem(cluster, rsa_key, "stats_key_down.pem")
    cluster.kill(1)
    try:
        proc = stats(cluster, key, "-n", "20", "-t", "2", "--json")
        assert proc.returncode == 0, proc.stdout + proc.stderr
        report = json.loads(proc.stdout)
        assert report["succeeded"] == 20, report
        nodes = {node["id"]: node for node in report["nodes"]}
        assert not nodes[1]["up"] and nodes[1]["answered"] == 0, nodes[1]
        # The login found it down: one failure, and its reason.
        assert nodes[1]["failures"] >= 1 and "Connection refused" in nodes[1]["reason"], nodes[1]
        assert nodes[0]["up"] and nodes[2]["up"]
        assert nodes[0]["answered"] + nodes[2]["answered"] == 20
        text = stats(cluster, key, "-n", "4", "-t", "1")
        assert re.search(r"^1\s+127\.0\.0\.1:\d+\s+down\s", text.stdout, re.M), text.stdout
        assert re.search(r"^node 1: down \(0xe0 : .*Connection refused", text.stdout, re.M), text.stdout
    finally:
        cluster.restart()


def test_cloudhsm_check_stats_names_bad_arguments(cluster):
    proc = subprocess.run([str(cluster.bin_dir / "cloudhsm_check"), "--stats", "-n", "zero", "k.pem"],
                          env=cluster.env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "-n must be a whole number in 1...100000, not 'zero'" in proc.stderr, proc.stderr
    missing = subprocess.run([str(cluster.bin_dir / "cloudhsm_check"), "--stats", str(cluster.work / "absent.pem")],
                             env=cluster.env, capture_output=True, text=True, timeout=60)
    assert missing.returncode == 1 and missing.stdout.startswith("FAIL  "), missing.stdout
    assert "absent.pem" in missing.stdout


@pytest.fixture(scope="module")
def paced_cluster(tmp_path_factory, bin_dir):
    """Three nodes with one crypto slot each, no waiting line, 100 operations a second:
    four client threads are always one request over capacity, so nodes throttle."""
    directory = tmp_path_factory.mktemp("paced")
    paced = Cluster(directory, free_ports(NODES), bin_dir)
    saved = os.environ.get("HSMD_RUN_ARGS")
    os.environ["HSMD_RUN_ARGS"] = "--workers 1 --queue 0 --max-ops-per-second 100"
    try:
        paced.start()
    finally:
        if saved is None:
            os.environ.pop("HSMD_RUN_ARGS", None)
        else:
            os.environ["HSMD_RUN_ARGS"] = saved
    yield paced
    paced.stop()


def test_throttled_answers_are_counted_alike_by_the_pool_and_the_nodes(paced_cluster):
    key = fake_pem(paced_cluster, make_key(paced_cluster, "paced"), "paced.pem")
    before = [scrape(paced_cluster, n) for n in range(NODES)]
    proc = stats(paced_cluster, key, "-n", "200", "-t", "4", "--json")
    report = json.loads(proc.stdout)
    # The nodes have no waiting line, so an operation can find every node busy through
    # all of the pool's retry rounds (about half a second) while the other threads keep
    # the slots: rare, and then it fails as "no HSM could serve", every node throttled.
    failed = report["failed"]
    assert report["succeeded"] + failed == 200 and failed <= 3, report
    assert proc.returncode == (1 if failed else 0), proc.stdout + proc.stderr
    if failed:
        assert report["first_error"].startswith("0xe4 : "), report
        assert report["first_error"].count("(throttled)") == NODES, report
    after = [scrape(paced_cluster, n) for n in range(NODES)]
    nodes = {node["id"]: node for node in report["nodes"]}
    throttled = 'hsmd_throttled_responses_total{reason="crypto_queue"}'
    for n in range(NODES):
        node = nodes[n]
        assert node["busy_answers"] == after[n][throttled] - before[n][throttled], (n, node)
        # Every throttled answer sent the operation on to another node, except the last
        # answer of an operation that failed.
        assert node["busy_answers"] - failed <= node["retries"] <= node["busy_answers"], node
        assert node["answered"] == after[n][ops("rsa_sign")] - before[n][ops("rsa_sign")], node
        assert after[n][ops("rsa_sign", "failure")] - before[n][ops("rsa_sign", "failure")] == node["busy_answers"]
        assert after[n]["hsmd_crypto_slots"] == 1 and after[n]["hsmd_crypto_queue_max"] == 0
    busy = sum(node["busy_answers"] for node in nodes.values())
    assert busy > 0, nodes
    assert sum(node["retries"] for node in nodes.values()) == busy - failed, nodes
