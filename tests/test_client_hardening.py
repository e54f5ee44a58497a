"""The client against real nodes, as a careless operator would meet it: a cluster.cfg whose
cluster_id is not the nodes' (key_mgmt_util and the provider refuse, naming both ids), the
precedence of CLOUDHSM_CONFIG over openssl.cnf's cluster_config (the real openssl binary
and the provider; a named file that does not exist is an error), and cloudhsm_check giving
only the advice that fits a failure (wrong password, stopped cluster, deleted key)."""

from __future__ import annotations

import base64
import re
import subprocess
from pathlib import Path

import pytest

from helpers import der_children, der_read, free_ports, pem_body, status_codes
from test_provider import OpenSSL, provider_module  # noqa: F401 - the fixture is used below

NODES = 3
WRONG_ID = "wrong-cluster"


@pytest.fixture(scope="module")
def ossl(cluster, provider_module) -> OpenSSL:  # noqa: F811
    return OpenSSL(cluster, provider_module)


@pytest.fixture(scope="module")
def key(ossl) -> str:
    ossl.run("genrsa", "-out", ossl.path("hardening.key"), "2048")
    return ossl.path("hardening.key")


def with_cluster_id(pem: str, cluster_id: str) -> str:
    """The same fake PEM (handle, public key, label) naming another cluster id."""
    fields = der_children(der_read(pem_body(pem, "CLOUDHSM KEY REFERENCE"))[1])
    encoded = cluster_id.encode()
    body = fields[0][2] + b"\x0c" + bytes([len(encoded)]) + encoded + b"".join(f[2] for f in fields[2:])
    der = b"\x30\x82" + len(body).to_bytes(2, "big") + body
    return ("-----BEGIN CLOUDHSM KEY REFERENCE-----\n" + base64.encodebytes(der).decode()
            + "-----END CLOUDHSM KEY REFERENCE-----\n")


def config_copy(cluster, directory: Path, name: str, cluster_id: str | None = None,
                dead: bool = False) -> Path:
    """cluster.cfg copied to `directory` (absolute trust anchor), optionally with another
    cluster_id or with every node on a port where nothing listens."""
    text = cluster.config.read_text().replace("trust_anchor = customerCA.crt", f"trust_anchor = {cluster.ca}")
    if cluster_id:
        text = re.sub(r"^cluster_id = .*$", f"cluster_id = {cluster_id}", text, flags=re.M)
    if dead:
        for port, unused in zip(cluster.ports, free_ports(len(cluster.ports))):
            text = text.replace(f"127.0.0.1:{port}", f"127.0.0.1:{unused}")
        text = re.sub(r"^connect_timeout_ms = .*$", "connect_timeout_ms = 1000", text, flags=re.M)
    path = directory / name
    path.write_text(text)
    return path


def run_check(cluster, key_path: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([str(cluster.bin_dir / "cloudhsm_check"), key_path], env=env, capture_output=True,
                          text=True, timeout=120)


def advice(output: str) -> list[str]:
    """cloudhsm_check's advice lines: indented six spaces, after the FAIL line."""
    tail = output.split("FAIL  ", 1)[1] if "FAIL  " in output else ""
    return [line.strip() for line in tail.splitlines() if line.startswith("      ")]


# ------------------------------------------------------------------------------ cluster id


def test_key_mgmt_util_refuses_nodes_of_another_cluster(cluster, tmp_path):
    cfg = config_copy(cluster, tmp_path, "wrong_id.cfg", cluster_id=WRONG_ID)
    out = cluster.kmu(["getHSMInfo"], env=dict(cluster.env, CLOUDHSM_CONFIG=str(cfg)))
    login = out.split("Command:  getHSMInfo")[0]
    assert "Cfm3LoginHSM returned: 0xe5 : HSM Error: HSM belongs to another cluster than the configured " \
           "cluster_id" in login, out
    assert status_codes(login) == {n: 0xE5 for n in range(NODES)}, out
    for n, port in enumerate(cluster.ports):
        assert (f"Node id {n} and err state 0x000000e5 : HSM Error: HSM belongs to another cluster than the "
                f"configured cluster_id - node {n} (127.0.0.1:{port}) belongs to cluster 'local-dev', but "
                f"{cfg} is for cluster '{WRONG_ID}'") in login, out
    cluster.assert_serves()


def test_provider_refuses_nodes_of_another_cluster(cluster, ossl, key, tmp_path):
    """The key file and the configuration agree on a cluster id; the nodes are of another
    cluster: the signature fails with both ids, not with a generic message."""
    cfg = config_copy(cluster, tmp_path, "wrong_id.cfg", cluster_id=WRONG_ID)
    foreign = tmp_path / "foreign_fake_PEM.key"
    foreign.write_text(with_cluster_id(Path(key).read_text(), WRONG_ID))
    env = dict(ossl.env, CLOUDHSM_CONFIG=str(cfg))
    proc = ossl.run("dgst", "-sha256", "-sign", str(foreign), "-out", str(tmp_path / "s.bin"), key, env=env,
                    check=False)
    text = proc.stdout.decode(errors="replace") + proc.stderr.decode(errors="replace")
    assert proc.returncode != 0, text
    assert "0xe5 : HSM Error: HSM belongs to another cluster than the configured cluster_id" in text, text
    for n, port in enumerate(cluster.ports):
        assert f"node {n} (127.0.0.1:{port}) belongs to cluster 'local-dev', but {cfg} is for cluster " \
               f"'{WRONG_ID}'" in text, text
    assert "No HSM in the cluster could serve" not in text, text

    check = run_check(cluster, str(foreign), env)
    assert check.returncode == 1, check.stdout
    assert advice(check.stdout) == [
        f"the nodes belong to another cluster than the cluster_id of {cfg}: check its node lines and cluster_id"
    ], check.stdout


# ------------------------------------------------------------------------------ CLOUDHSM_CONFIG vs cluster_config


def openssl_conf_naming(ossl, directory: Path, cluster_config: Path) -> Path:
    conf = directory / "openssl.cnf"
    conf.write_text(re.sub(r"^cluster_config = .*$", f"cluster_config = {cluster_config}", ossl.conf.read_text(),
                           flags=re.M))
    return conf


def sign(ossl, key: str, env: dict, directory: Path) -> subprocess.CompletedProcess:
    return ossl.run("dgst", "-sha256", "-sign", key, "-out", str(directory / "sig.bin"), key, env=env, check=False)


def output(proc: subprocess.CompletedProcess) -> str:
    return proc.stdout.decode(errors="replace") + proc.stderr.decode(errors="replace")


def test_a_missing_cloudhsm_config_is_an_error_not_a_fallback(cluster, ossl, key, tmp_path):
    # openssl.cnf names the working cluster; the environment names a file that is not there.
    env = dict(ossl.env, CLOUDHSM_CONFIG="/nonexistent/cluster.cfg")
    proc = sign(ossl, key, env, tmp_path)
    text = output(proc)
    assert proc.returncode != 0, text
    assert "CloudHSM provider configuration error" in text, text
    assert "cluster configuration /nonexistent/cluster.cfg: cannot read the file" in text, text

    check = run_check(cluster, key, env)
    assert check.returncode == 1, check.stdout
    assert f"WARN  CLOUDHSM_CONFIG (/nonexistent/cluster.cfg) and cluster_config in the OpenSSL configuration " \
           f"({cluster.config}) differ" in check.stdout, check.stdout
    assert "FAIL  cluster configuration /nonexistent/cluster.cfg (CLOUDHSM_CONFIG): cannot read the file" \
           in check.stdout, check.stdout


def test_cloudhsm_config_wins_over_cluster_config(cluster, ossl, key, tmp_path):
    dead = config_copy(cluster, tmp_path, "dead.cfg", dead=True)
    alive = config_copy(cluster, tmp_path, "alive.cfg")

    # The environment names the dead cluster, openssl.cnf the live one: the signature fails.
    env = dict(ossl.env, CLOUDHSM_CONFIG=str(dead))
    proc = sign(ossl, key, env, tmp_path)
    assert proc.returncode != 0 and "no HSM node reachable" in output(proc), output(proc)

    # The other way round: the environment names the live cluster, openssl.cnf the dead one.
    env = dict(ossl.env, CLOUDHSM_CONFIG=str(alive), OPENSSL_CONF=str(openssl_conf_naming(ossl, tmp_path, dead)),
               CLOUDHSM_PROVIDER_TRACE="1")
    proc = sign(ossl, key, env, tmp_path)
    text = output(proc)
    assert proc.returncode == 0, text
    assert f"cluster configuration: {alive} (CLOUDHSM_CONFIG)" in text, text
    assert (f"CLOUDHSM_CONFIG={alive} is used; cluster_config = {dead} in the OpenSSL configuration is ignored "
            "(the environment variable wins)") in text, text
    env.pop("CLOUDHSM_PROVIDER_TRACE")
    check = run_check(cluster, key, env)
    assert check.returncode == 0, check.stdout
    assert (f"WARN  CLOUDHSM_CONFIG ({alive}) and cluster_config in the OpenSSL configuration ({dead}) differ: "
            f"the provider uses CLOUDHSM_CONFIG's {alive}") in check.stdout, check.stdout
    assert f"ok    cluster configuration: {alive} (CLOUDHSM_CONFIG)" in check.stdout, check.stdout

    # Without the environment variable openssl.cnf decides, quietly.
    env.pop("CLOUDHSM_CONFIG")
    env["OPENSSL_CONF"] = str(openssl_conf_naming(ossl, tmp_path, alive))
    env["CLOUDHSM_PROVIDER_TRACE"] = "1"
    proc = sign(ossl, key, env, tmp_path)
    text = output(proc)
    assert proc.returncode == 0, text
    assert f"cluster configuration: {alive} (cluster_config in the OpenSSL configuration)" in text, text
    assert "is ignored" not in text, text
    env.pop("CLOUDHSM_PROVIDER_TRACE")
    check = run_check(cluster, key, env)
    assert check.returncode == 0 and "WARN" not in check.stdout, check.stdout

    # Both name the same file: no warning either.
    check = run_check(cluster, key, dict(ossl.env))
    assert check.returncode == 0 and "WARN" not in check.stdout, check.stdout


# ------------------------------------------------------------------------------ cloudhsm_check advice


def test_cloudhsm_check_advice_for_a_wrong_password(cluster, ossl, key):
    env = dict(ossl.env, n3fips_password=f"{cluster.cu_user}:not-the-password")
    check = run_check(cluster, key, env)
    assert check.returncode == 1 and "FAIL  signing on the HSM cluster" in check.stdout, check.stdout
    assert "0x22" in check.stdout, check.stdout
    assert advice(check.stdout) == [
        "check the credentials: n3fips_password (or CLOUDHSM_PIN) must be user:password of a crypto user of "
        "this cluster"
    ], check.stdout


def test_cloudhsm_check_advice_for_a_deleted_key(cluster, ossl):
    ossl.run("genrsa", "-out", ossl.path("deleted.key"), "2048")
    handle = int(re.search(r"handle: (\d+)", ossl.run("pkey", "-in", ossl.path("deleted.key"), "-text", "-noout")
                           .stdout.decode()).group(1))
    out = cluster.kmu([f"deleteKey -k {handle}"])
    assert "Cfm3DeleteKey returned: 0x00" in out, out
    check = run_check(cluster, ossl.path("deleted.key"), ossl.env)
    assert check.returncode == 1 and "key not found on the HSM cluster" in check.stdout, check.stdout
    assert advice(check.stdout) == [
        "the key file names a key handle this user does not have on the cluster (deleted, owned by another crypto "
        "user, or the cluster was made anew): generate or export the key again"
    ], check.stdout


def test_cloudhsm_check_advice_for_a_stopped_cluster(cluster, ossl, key):
    for n in range(NODES):
        cluster.kill(n)
    try:
        check = run_check(cluster, key, ossl.env)
    finally:
        cluster.restart()
    assert check.returncode == 1 and "no HSM node reachable" in check.stdout, check.stdout
    assert advice(check.stdout) == [
        f"check that the cluster is running and reachable at the node lines of {cluster.config} (make status, "
        "or scripts/cluster.sh status)"
    ], check.stdout
    cluster.wait_all_up()
