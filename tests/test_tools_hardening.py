"""The tools and the provider against careless operators and odd input, on a real
cluster: no password in scripted output, exit statuses that tell scripts what failed,
the CO password kept off the command line, secret files refused alike, raw signatures
and exponents refused as invalid arguments, messages that survive what files hold, and
large or odd key files refused fast with their size."""

from __future__ import annotations

import os
import re
import socket
import ssl
import stat
import struct
import subprocess
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from helpers import (
    CLUSTER_SH,
    REPO,
    assert_no_crash,
    command_output,
    free_ports,
    keypair_handles,
    pem_body,
    der_children,
    der_read,
    returned,
)
from test_provider import OpenSSL, provider_module  # noqa: F401  (a fixture)

NODES = 3


@pytest.fixture(scope="module")
def ossl(cluster, provider_module) -> OpenSSL:  # noqa: F811
    return OpenSSL(cluster, provider_module)


@pytest.fixture(scope="module")
def fake_pem(ossl) -> Path:
    ossl.run("genrsa", "-out", ossl.path("hardening.key"), "2048")
    return Path(ossl.path("hardening.key"))


def run_tool(cluster, tool: str, lines: list[str], env: dict | None = None) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [str(cluster.bin_dir / tool)], input="\n".join(lines) + "\n", capture_output=True, text=True,
        env=env or cluster.env, cwd=cluster.work, timeout=120,
    )
    assert_no_crash(proc.returncode, proc.stdout + proc.stderr)
    return proc


# ------------------------------------------------------------------ passwords in output


def test_scripted_runs_print_no_password(cluster):
    cu, co = cluster.cu_password, cluster.co_password
    kmu = run_tool(cluster, "key_mgmt_util", [
        cluster.login_line(),
        "getHSMInfo",
        "logoutHSM",
        f"loginhsm -u CU -s {cluster.cu_user} -p {cu}",  # a mistyped command leaks nothing either
        f'loginHSM -u CU -s {cluster.cu_user} -p "{cu} unterminated',
        "exit",
    ])
    out = kmu.stdout + kmu.stderr
    assert cu not in out, out
    assert f"Command:  loginHSM -u CU -s {cluster.cu_user} -p ********\n" in out, out
    assert "Command:  loginhsm -u CU -s" in out and out.count("********") == 3, out
    assert returned(command_output(out, "loginHSM"), "Cfm3LoginHSM") == 0, out

    cmu = run_tool(cluster, "cloudhsm_mgmt_util", [
        f"loginHSM CO admin {co}",
        "createUser CU maskme Mask-pw-4711",
        "changePswd CU maskme Mask-pw-4712",
        "createuser CU x Mask-pw-4713",
        "logoutHSM",
        "quit",
    ])
    out = cmu.stdout + cmu.stderr
    for secret in (co, "Mask-pw-4711", "Mask-pw-4712", "Mask-pw-4713"):
        assert secret not in out, f"{secret} printed:\n{out}"
    assert "aws-cloudhsm> loginHSM CO admin ********\n" in out, out
    assert "aws-cloudhsm> createUser CU maskme ********\n" in out, out
    assert out.count("createUser success on server") == NODES, out
    assert out.count("changePswd success on server") == NODES, out


def test_demo_prints_no_password(cluster, tmp_path):
    """scripts/demo.sh end to end against this cluster (its own nginx port): all of its
    output, with the key_mgmt_util transcript it shows, holds neither password."""
    env = dict(os.environ)
    env.update(CLUSTER_DIR=str(cluster.dir), DEMO_DIR=str(tmp_path / "demo"), DEMO_PORT=str(free_ports(1)[0]))
    demo = REPO / "scripts" / "demo.sh"
    try:
        proc = subprocess.run([str(demo)], env=env, capture_output=True, text=True, timeout=600, cwd=REPO)
    finally:
        subprocess.run([str(demo), "stop"], env=env, capture_output=True, timeout=60, cwd=REPO)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "loginHSM -u CU -s crypto_user -p ********" in out, out
    assert cluster.cu_password not in out and cluster.co_password not in out, out
    # Both certificates served from one server block, each handshake signed in the HSMs by
    # its own kind (the demo itself checks which certificate each curl got).
    assert "EC 256 bit key (prime256v1) held by the HSM cluster" in out, out
    assert out.count("certificate: O=CloudHSM offload demo ECDSA P-256; CN=localhost") == 2, out
    assert out.count("certificate: O=CloudHSM offload demo; CN=localhost") == 3, out
    assert re.search(r"all nodes: \+5 private-key operations for 5 full handshakes "
                     r"\(RSA sign \+2, decrypt \+1, ECDSA sign \+2\)", out), out


# ------------------------------------------------------------------ exit status


@pytest.mark.parametrize("failing", [
    "frobnicate",                               # unknown command
    "genSymKey -t 99 -s 16 -l x",               # a bad argument
    "deleteKey -k 987654320",                   # an HSM return code other than 0
    "importPrivateKey -f missing.pem -l x -w 1",  # a file that cannot be read
])
def test_key_mgmt_util_exits_1_when_a_command_failed(cluster, failing):
    good = run_tool(cluster, "key_mgmt_util", [cluster.login_line(), "findKey", "getHSMInfo", "exit"])
    assert good.returncode == 0, good.stdout + good.stderr
    bad = run_tool(cluster, "key_mgmt_util", [cluster.login_line(), failing, "findKey", "exit"])
    assert bad.returncode == 1, bad.stdout + bad.stderr
    assert "key_mgmt_util: 1 command(s) failed" in bad.stderr, bad.stderr
    # Without a login, a command that needs one fails the run too.
    anonymous = run_tool(cluster, "key_mgmt_util", ["findKey", "exit"])
    assert anonymous.returncode == 1 and "not logged in" in anonymous.stdout, anonymous.stdout


def test_cloudhsm_mgmt_util_exits_1_when_a_command_failed(cluster):
    co = cluster.co_password
    good = run_tool(cluster, "cloudhsm_mgmt_util", [f"loginHSM CO admin {co}", "listUsers", "logoutHSM", "quit"])
    assert good.returncode == 0, good.stdout + good.stderr
    bad = run_tool(cluster, "cloudhsm_mgmt_util", [
        f"loginHSM CO admin {co}", "deleteUser CU nobody-here", "listUsers", "logoutHSM", "quit"])
    assert bad.returncode == 1, bad.stdout + bad.stderr
    assert "cloudhsm_mgmt_util: 1 command(s) failed" in bad.stderr, bad.stderr


# ------------------------------------------------------------------ hsmd init password


def hsmd(cluster, *args, input: str | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([str(cluster.bin_dir / "hsmd"), *args], input=input, capture_output=True, text=True,
                          timeout=timeout)


def init_args(directory: Path) -> list[str]:
    return ["init", "--data-dir", str(directory), "--node-id", "0", "--cluster-id", "local-dev",
            "--password-iterations", "1000"]


class LoneNode:
    """One hsmd on a port of its own, with the cluster's CA and node 0's certificate."""

    def __init__(self, cluster, data: Path, extra: list[str] = ()):
        self.cluster = cluster
        self.proc = subprocess.Popen(
            [str(cluster.bin_dir / "hsmd"), "run", "--data-dir", str(data), "--listen", "127.0.0.1:0",
             "--cert", str(cluster.dir / "node0.crt"), "--key", str(cluster.dir / "node0.key"),
             "--ca", str(cluster.ca), *extra],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def wait_listening(self) -> int:
        line = self.proc.stdout.readline()
        m = re.search(r"listening on 127\.0\.0\.1:(\d+)", line)
        assert m, f"no 'listening on' line: {line!r} {self.stop()}"
        return int(m.group(1))

    def exit_status(self, timeout: float = 60) -> tuple[int, str]:
        """Waits for the node to end by itself: (status, stderr)."""
        _, err = self.proc.communicate(timeout=timeout)
        return self.proc.returncode, err

    def stop(self) -> str:
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            _, err = self.proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, err = self.proc.communicate()
        return err


def co_can_log_in(cluster, port: int, password: str, work: Path) -> str:
    cfg = work / "lone.cfg"
    cfg.write_text(f"cluster_id = local-dev\ntrust_anchor = {cluster.ca}\nnode = 0 127.0.0.1:{port}\n")
    env = dict(cluster.env)
    env["CLOUDHSM_CONFIG"] = str(cfg)
    proc = run_tool(cluster, "cloudhsm_mgmt_util", [f"loginHSM CO admin {password}", "logoutHSM", "quit"], env=env)
    return proc.stdout + proc.stderr


@pytest.mark.parametrize("how", ["file", "stdin"])
def test_hsmd_init_takes_the_co_password_from_a_file_or_stdin(cluster, tmp_path, how):
    password = "Init-pw-from-" + how
    data = tmp_path / "node"
    if how == "file":
        pw_file = tmp_path / "co_password"
        pw_file.write_text(password + "\n")
        pw_file.chmod(0o600)
        proc = hsmd(cluster, *init_args(data), "--co-password-file", str(pw_file))
    else:
        proc = hsmd(cluster, *init_args(data), "--co-password-file", "-", input=password + "\n")
    assert proc.returncode == 0, proc.stderr
    assert "visible" not in proc.stderr, proc.stderr
    node = LoneNode(cluster, data)
    try:
        port = node.wait_listening()
        out = co_can_log_in(cluster, port, password, tmp_path)
        assert "loginHSM success on server 0" in out, out
        assert "loginHSM failed" in co_can_log_in(cluster, port, password + "-not", tmp_path)
    finally:
        node.stop()


def test_hsmd_init_refuses_an_open_password_file_and_notes_the_visible_flag(cluster, tmp_path):
    pw_file = tmp_path / "co_password"
    pw_file.write_text("Open-pw-1\n")
    pw_file.chmod(0o644)
    proc = hsmd(cluster, *init_args(tmp_path / "a"), "--co-password-file", str(pw_file))
    assert proc.returncode == 1, proc.stderr
    assert f"the CO password {pw_file} is readable by group or others (mode 0644): chmod 600 it" in proc.stderr
    assert not (tmp_path / "a").exists(), "nothing is created when the password cannot be read"
    proc = hsmd(cluster, *init_args(tmp_path / "b"), "--co-password-file", str(pw_file), "--co-password", "x")
    assert proc.returncode == 2 and "not both" in proc.stderr, proc.stderr
    proc = hsmd(cluster, *init_args(tmp_path / "c"), "--co-password", "Visible-pw-1")
    assert proc.returncode == 0 and "visible to other users" in proc.stderr, proc.stderr


def test_cluster_script_passes_no_password_on_the_command_line(cluster, tmp_path):
    """cluster.sh with an hsmd wrapper that records its arguments: init gets the
    password file, and no argument of any hsmd call holds the CO password."""
    log = tmp_path / "argv.log"
    wrapper = tmp_path / "hsmd"
    wrapper.write_text(f'#!/bin/bash\nprintf "%s\\n" "$*" >>{log}\nexec -a hsmd {cluster.bin_dir / "hsmd"} "$@"\n')
    wrapper.chmod(0o755)
    directory = tmp_path / "one"
    env = dict(os.environ)
    env.update(CLUSTER_DIR=str(directory), CLUSTER_PORTS=str(free_ports(1)[0]), BIN_DIR=str(cluster.bin_dir),
               HSMD=str(wrapper), HSMD_INIT_ARGS="--password-iterations 1000")
    try:
        proc = subprocess.run([str(CLUSTER_SH), "start"], env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stdout + proc.stderr
    finally:
        subprocess.run([str(CLUSTER_SH), "stop"], env=env, capture_output=True, text=True, timeout=120)
    password = (directory / "co_password").read_text().strip()
    calls = log.read_text()
    assert f"--co-password-file {directory / 'co_password'}" in calls, calls
    assert password not in calls, calls


# ------------------------------------------------------------------ secret files


def test_master_key_and_cluster_key_refused_alike_when_open(cluster, tmp_path):
    data = tmp_path / "node"
    pw_file = tmp_path / "pw"
    pw_file.write_text("Secret-pw-1\n")
    pw_file.chmod(0o600)
    assert hsmd(cluster, *init_args(data), "--co-password-file", str(pw_file)).returncode == 0
    master = data / "master.key"
    assert stat.S_IMODE(master.stat().st_mode) == 0o600

    master.chmod(0o644)
    status, err = LoneNode(cluster, data).exit_status()
    assert status == 1, err
    assert f"the master key {master} is readable by group or others (mode 0644): chmod 600 it" in err, err

    master.chmod(0o600)
    cluster_key = tmp_path / "cluster.key"
    cluster_key.write_bytes(os.urandom(32))
    cluster_key.chmod(0o644)
    node = LoneNode(cluster, data, ["--peer", "1=127.0.0.1:1", "--cluster-key", str(cluster_key), "--min-nodes", "1"])
    status, err = node.exit_status()
    assert status == 1, err
    assert f"the cluster key {cluster_key} is readable by group or others (mode 0644): chmod 600 it" in err, err

    # Owner-only, both are accepted and the node serves.
    node = LoneNode(cluster, data)
    try:
        node.wait_listening()
    finally:
        node.stop()


# ------------------------------------------------------------------ raw signs, exponents


def recv_exact(sock, count: int) -> bytes:
    data = b""
    while len(data) < count:
        chunk = sock.recv(count - len(data))
        assert chunk, "the node closed the connection"
        data += chunk
    return data


def wire_string(value: bytes) -> bytes:
    return struct.pack(">I", len(value)) + value


class Wire:
    """The client protocol by hand, to send what the tools refuse to send."""

    def __init__(self, cluster, node: int = 0):
        ctx = ssl.create_default_context(cafile=str(cluster.ca))
        raw = socket.create_connection(("127.0.0.1", cluster.ports[node]), timeout=60)
        self.sock = ctx.wrap_socket(raw, server_hostname="localhost")
        self.request_id = 0

    def call(self, operation: int, payload: bytes) -> tuple[int, str, bytes]:
        self.request_id += 1
        self.sock.sendall(b"HS\x01" + bytes([operation]) + struct.pack(">II", self.request_id, len(payload)) + payload)
        header = recv_exact(self.sock, 12)
        assert header[:3] == b"HS\x01" and header[3] == operation | 0x80, header
        body = recv_exact(self.sock, struct.unpack(">I", header[8:12])[0])
        code, length = struct.unpack(">II", body[:8])
        return code, body[8:8 + length].decode(), body[8 + length:]

    def login(self, user: str, password: str):
        code, detail, _ = self.call(0x01, b"\x02" + wire_string(user.encode()) + wire_string(password.encode()))
        assert code == 0, detail

    def close(self):
        self.sock.close()


@pytest.fixture(scope="module")
def key_pair(cluster) -> tuple[int, int, object]:
    out = cluster.kmu(["genRSAKeyPair -m 2048 -e 65537 -l raw_sign_pair"])
    public, private = keypair_handles(out)
    out = cluster.kmu([f"exportPubKey -k {public} -out raw_sign_pub.pem"])
    assert "written to" in out, out
    return public, private, load_pem_public_key((cluster.work / "raw_sign_pub.pem").read_bytes())


def test_raw_sign_of_a_block_not_below_n_is_an_invalid_argument(cluster, key_pair):
    _, private, public_key = key_pair
    numbers = public_key.public_numbers()
    n = numbers.n
    wire = Wire(cluster)
    try:
        wire.login(cluster.cu_user, cluster.cu_password)

        def raw_sign(block: bytes):
            return wire.call(0x0C, struct.pack(">Q", private) + b"\x03" + wire_string(block))

        for name, value in [("n", n), ("n + 1", n + 1), ("2^2048 - 1", 2**2048 - 1)]:
            code, detail, _ = raw_sign(value.to_bytes(256, "big"))
            assert code == 0x11, f"{name}: 0x{code:02x} {detail}"
            assert "not smaller than the modulus" in detail, detail
        code, detail, _ = raw_sign(b"\x00" + (n - 1).to_bytes(256, "big"))
        assert code == 0x11 and "257 bytes, the modulus is 256" in detail, detail
        # The largest block there is: signed, and the public key undoes it.
        code, detail, body = raw_sign((n - 1).to_bytes(256, "big"))
        assert code == 0, detail
        signature = int.from_bytes(body[4:], "big")
        assert pow(signature, numbers.e, n) == n - 1
        # The node still serves the same connection.
        assert raw_sign((n - 1).to_bytes(256, "big"))[0] == 0
    finally:
        wire.close()


def test_the_provider_refuses_a_raw_block_not_below_n_before_sending(ossl, fake_pem):
    pub = ossl.run("pkey", "-in", str(fake_pem), "-pubout").stdout
    n = load_pem_public_key(pub).public_numbers().n
    Path(ossl.path("n.bin")).write_bytes(n.to_bytes(256, "big"))
    proc = ossl.run("pkeyutl", "-sign", "-inkey", str(fake_pem), "-pkeyopt", "rsa_padding_mode:none", "-in",
                    ossl.path("n.bin"), "-out", ossl.path("n.sig"), check=False)
    text = proc.stdout.decode() + proc.stderr.decode()
    if "looks too long to be a hash" in text:  # pkeyutl of OpenSSL 3.0 checks the length itself
        proc = ossl.run("rsautl", "-sign", "-raw", "-inkey", str(fake_pem), "-in", ossl.path("n.bin"),
                        "-out", ossl.path("n.sig"), check=False)
        text = proc.stdout.decode() + proc.stderr.decode()
    assert proc.returncode != 0, text
    assert "invalid input" in text and "raw input is not smaller than the modulus" in text, text
    assert "Internal HSM error" not in text, text


def test_public_exponents_outside_3_to_2_32_are_refused(cluster, ossl):
    # The node, over the wire.
    wire = Wire(cluster)
    try:
        wire.login(cluster.cu_user, cluster.cu_password)
        for exponent in (2**64 - 1, 2**32 + 1, 65536, 1):
            payload = struct.pack(">IQ", 2048, exponent) + wire_string(b"e") + b"\x01\x00"
            code, detail, _ = wire.call(0x04, payload)
            assert code == 0x11 and "an odd number from 3 to 4294967295" in detail, f"{exponent}: {detail}"
    finally:
        wire.close()
    # key_mgmt_util.
    out = cluster.kmu(["genRSAKeyPair -m 2048 -e 18446744073709551615 -l e", "genRSAKeyPair -m 2048 -e 3 -l e3 -sess"])
    assert ("Error: genRSAKeyPair: -e must be an odd number from 3 to 4294967295 (65537 is usual), "
            "found 18446744073709551615") in out, out
    assert returned(command_output(out, "genRSAKeyPair -m 2048 -e 3"), "Cfm3GenerateKeyPair") == 0, out
    assert cluster.last_returncode == 1
    # The provider's genpkey and genrsa.
    proc = ossl.run("genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-pkeyopt",
                    f"rsa_keygen_pubexp:{2**64 - 1}", "-out", ossl.path("e.key"), check=False)
    text = proc.stdout.decode() + proc.stderr.decode()
    assert proc.returncode != 0 and "public exponent that is an odd number from 3 to 4294967295" in text, text
    ossl.run("genrsa", "-3", "-out", ossl.path("e3.key"), "2048")
    assert "Exponent: 3 (0x3)" in ossl.run("pkey", "-in", ossl.path("e3.key"), "-text", "-noout").stdout.decode()


# ------------------------------------------------------------------ messages


def der_tlv(tag: int, value: bytes) -> bytes:
    n = len(value)
    length = bytes([n]) if n < 0x80 else bytes([0x80 | ((n.bit_length() + 7) // 8)]) + n.to_bytes(
        (n.bit_length() + 7) // 8, "big")
    return bytes([tag]) + length + value


def fake_pem_text(cluster_id: bytes, handle: int, spki: bytes, label: bytes | None) -> str:
    import base64

    handle_bytes = handle.to_bytes(max(1, (handle.bit_length() + 8) // 8), "big")
    body = der_tlv(0x02, b"\x01") + der_tlv(0x0C, cluster_id) + der_tlv(0x02, handle_bytes) + spki
    if label is not None:
        body += der_tlv(0x0C, label)
    b64 = base64.b64encode(der_tlv(0x30, body)).decode()
    lines = [b64[i:i + 64] for i in range(0, len(b64), 64)]
    return "-----BEGIN CLOUDHSM KEY REFERENCE-----\n" + "\n".join(lines) + "\n-----END CLOUDHSM KEY REFERENCE-----\n"


def reference_fields(path: Path) -> tuple[int, bytes]:
    """The handle and the SubjectPublicKeyInfo of a fake PEM."""
    fields = der_children(der_read(pem_body(path.read_text(), "CLOUDHSM KEY REFERENCE"))[1])
    return int.from_bytes(fields[2][1], "big"), fields[3][2]


def sign_error(ossl, key: str) -> str:
    Path(ossl.path("msg.txt")).write_text("message\n")
    proc = ossl.run("dgst", "-sha256", "-sign", key, "-out", ossl.path("msg.sig"), ossl.path("msg.txt"), check=False)
    assert proc.returncode != 0
    return proc.stdout.decode(errors="replace") + proc.stderr.decode(errors="replace")


def test_a_nul_in_the_cluster_id_does_not_cut_the_message(ossl, fake_pem):
    handle, spki = reference_fields(fake_pem)
    Path(ossl.path("nul.key")).write_text(fake_pem_text(b"local\x00-dev\x1b[31m", handle, spki, b"web"))
    text = sign_error(ossl, ossl.path("nul.key"))
    assert ("the key file names cluster 'local\\0-dev\\x1b[31m', but this client is configured for 'local-dev'"
            in text), text
    assert "\x1b" not in text, text
    shown = ossl.run("pkey", "-in", ossl.path("nul.key"), "-text", "-noout").stdout.decode()
    assert "cluster: local\\0-dev\\x1b[31m\n" in shown, shown


def test_a_public_key_handle_is_named_as_such(cluster, ossl, fake_pem):
    handle, spki = reference_fields(fake_pem)
    # genrsa makes the pair in one request: the public key's handle is the private one's
    # predecessor from the same node's counter (handle = counter << 4 | node).
    out = cluster.kmu([f"exportPubKey -k {handle - 16} -out paired_pub.pem", f"getAttribute -o {handle - 16} -a 0 "
                       "-out paired_class.txt"])
    assert (cluster.work / "paired_pub.pem").read_bytes() == ossl.run("pkey", "-in", str(fake_pem), "-pubout").stdout
    assert (cluster.work / "paired_class.txt").read_text() == "OBJ_ATTR_CLASS\n0x02\n", out  # a public key
    Path(ossl.path("public.key")).write_text(fake_pem_text(b"local-dev", handle - 16, spki, b"openssl-genrsa"))
    text = sign_error(ossl, ossl.path("public.key"))
    assert (f"key handle {handle - 16} on cluster 'local-dev' is a public RSA key, not an RSA private key; "
            f"the private key of this pair is handle {handle}") in text, text
    assert "holds a different key" not in text, text


def test_a_100_kb_user_name_is_refused_with_the_limit(cluster, ossl, fake_pem):
    name = "u" * 100_000
    limit = "the user name is 100000 bytes long; user names are at most 32 bytes"
    out = cluster.kmu([f"loginHSM -u CU -s {name} -p whatever"], login=False)
    block = command_output(out, "loginHSM")
    assert f"Error: loginHSM: -s: {limit}" in block and name not in block, block[:500]
    cmu = run_tool(cluster, "cloudhsm_mgmt_util", [
        f"loginHSM CO admin {cluster.co_password}", f"createUser CU {name} Some-pw-1", "logoutHSM", "quit"])
    created = cmu.stdout.split(f"createUser CU {name} ********", 1)[1].split("aws-cloudhsm>", 1)[0]
    assert f"Error: createUser: {limit}" in created and name not in created, created[:500]
    env = dict(ossl.env)
    env["n3fips_password"] = f"{name}:whatever"
    Path(ossl.path("msg.txt")).write_text("message\n")
    proc = ossl.run("dgst", "-sha256", "-sign", str(fake_pem), "-out", ossl.path("msg.sig"), ossl.path("msg.txt"),
                    env=env, check=False)
    text = proc.stderr.decode()
    assert proc.returncode != 0 and limit in text and name not in text, text[:2000]


def test_long_file_content_leaves_the_message_readable(ossl, fake_pem):
    _, spki = reference_fields(fake_pem)
    Path(ossl.path("longlabel.key")).write_text(fake_pem_text(b"local-dev", 987654320, spki, b"L" * 5000))
    text = sign_error(ossl, ossl.path("longlabel.key"))
    assert "... (5000 bytes in all)) is not on cluster 'local-dev' for this user: Invalid key handle" in text, text


# ------------------------------------------------------------------ large and odd key files


def junk_text(size: int) -> bytes:
    """`size` bytes of lines of text, the last one ended too."""
    line = b"lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod\n"
    return (line * (size // len(line) + 1))[:size - 1] + b"\n"


@pytest.mark.parametrize("size", [256 * 1024, 10_000_000])
def test_large_junk_is_refused_fast_with_its_size(ossl, size):
    path = Path(ossl.path(f"junk{size}.txt"))
    path.write_bytes(junk_text(size))
    started = time.monotonic()
    proc = ossl.run("pkey", "-in", str(path), "-noout", check=False)
    elapsed = time.monotonic() - started
    text = proc.stdout.decode() + proc.stderr.decode()
    assert proc.returncode != 0, text
    assert f"key file too large: {size} bytes of text and no PEM block in the first 65536" in text, text
    # The bound is the feature (a refusal took 18 s for 256 KiB, minutes for 10 MB);
    # generous for a loaded machine.
    assert elapsed < 10, f"refusing {size} bytes took {elapsed:.1f}s"


def test_where_a_fake_pem_may_sit_in_a_file(cluster, ossl, fake_pem, tmp_path):
    pem = fake_pem.read_bytes()
    pubkey = ossl.run("pkey", "-in", str(fake_pem), "-pubout").stdout
    ossl.run("req", "-new", "-x509", "-key", str(fake_pem), "-subj", "/CN=combined", "-out", ossl.path("c.crt"))
    cert = Path(ossl.path("c.crt")).read_bytes()
    bundle = Path("/etc/ssl/certs/ca-certificates.crt")
    cases = {
        "after 60 KB of text": junk_text(60_000) + pem,
        "after a certificate": cert + pem,
        "before a certificate": pem + cert,
        "after a 200 KB bundle of certificates": (bundle.read_bytes() if bundle.exists() else cert * 150) + pem,
    }
    for name, content in cases.items():
        path = tmp_path / "key.pem"
        path.write_bytes(content)
        assert ossl.run("pkey", "-in", str(path), "-pubout").stdout == pubkey, name
    # Beyond the limit: refused, and the message says why.
    path = tmp_path / "far.pem"
    path.write_bytes(junk_text(1_258_291) + pem)
    proc = ossl.run("pkey", "-in", str(path), "-noout", check=False)
    text = proc.stderr.decode()
    assert proc.returncode != 0 and (
        f"key file too large: {1_258_291 + len(pem)} bytes of text and no PEM block in the first 65536 (the "
        "CloudHSM provider looks for a key reference in the first 64 KiB)") in text, text
    # One BIO, key then certificate: the key is read without swallowing the certificate.
    program = tmp_path / "read_key_then_cert"
    subprocess.run(["cc", "-Wall", "-o", str(program), str(REPO / "tests" / "c" / "read_key_then_cert.c"), "-lssl",
                    "-lcrypto"], check=True)
    path = tmp_path / "key_then_cert.pem"
    path.write_bytes(pem + cert)
    proc = subprocess.run([str(program), str(path)], env=ossl.env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout.count(": ok") == 3, proc.stdout
