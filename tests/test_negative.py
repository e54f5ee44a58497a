"""Bad input gets a clear error, loses nothing, and never takes a node down: wrong and
locked-out passwords, unknown and foreign handles, broken key files, malformed frames,
an untrusted node certificate, a node that is down."""

from __future__ import annotations

import socket
import ssl
import struct
import subprocess
import time

import pytest

from helpers import (
    command_output,
    found_keys,
    keypair_handles,
    returned,
    status_codes,
    sym_handle,
)

NODES = 3
NEVER_A_HANDLE = 987654320  # counter 61728395 on node 0: never reached in a test


@pytest.fixture(scope="module")
def users(cluster):
    users = {"wrongpw": "Right-pw-1", "lockme": "Right-pw-2", "other": "Other-pw-3"}
    for name, pw in users.items():
        cluster.create_cu(name, pw)
    return users


def login_block(out: str, occurrence: int = 0) -> str:
    return command_output(out, "loginHSM", occurrence)


def test_wrong_password(cluster, users):
    out = cluster.kmu([cluster.login_line("wrongpw", "not-the-password")], login=False)
    block = login_block(out)
    assert returned(block, "Cfm3LoginHSM") == 0x22, out
    assert status_codes(block) == {n: 0x22 for n in range(NODES)}, out
    # The right password still works after one failure.
    out = cluster.kmu([cluster.login_line("wrongpw", users["wrongpw"])], login=False)
    assert returned(login_block(out), "Cfm3LoginHSM") == 0, out
    cluster.assert_serves()


def test_lockout_after_five_failures(cluster, users):
    lines = [cluster.login_line("lockme", f"wrong-{i}") for i in range(5)]
    lines.append(cluster.login_line("lockme", users["lockme"]))
    out = cluster.kmu(lines, login=False)
    for i in range(5):
        assert returned(login_block(out, i), "Cfm3LoginHSM") in (0x22, 0x23), out
    assert returned(login_block(out, 0), "Cfm3LoginHSM") == 0x22, out
    right = login_block(out, 5)
    assert returned(right, "Cfm3LoginHSM") == 0x23, f"the right password after 5 failures must be refused:\n{out}"
    assert status_codes(right) == {n: 0x23 for n in range(NODES)}, out
    # Still locked in a new process: the lock lives on the nodes.
    out = cluster.kmu([cluster.login_line("lockme", users["lockme"])], login=False)
    assert returned(login_block(out), "Cfm3LoginHSM") == 0x23, out
    # Other users are not affected.
    cluster.assert_serves()


def test_unknown_handle(cluster):
    (cluster.work / "neg_msg.txt").write_text("x\n")
    out = cluster.kmu([
        f"getAttribute -o {NEVER_A_HANDLE} -a 512 -out never.txt",
        f"deleteKey -k {NEVER_A_HANDLE}",
        f"sign -f neg_msg.txt -k {NEVER_A_HANDLE} -m 1 -out never.sig",
        f"exportPubKey -k {NEVER_A_HANDLE} -out never.pem",
    ])
    assert "0xa8 : HSM Error: Invalid key handle" in command_output(out, "getAttribute"), out
    assert "Cfm3DeleteKey returned: 0xa8 : HSM Error: Invalid key handle" in out, out
    assert returned(command_output(out, "sign"), "Cfm3Sign") == 0xA8, out
    assert "0xa8 : HSM Error: Invalid key handle" in command_output(out, "exportPubKey"), out
    assert not (cluster.work / "never.sig").exists()
    cluster.assert_serves()


def test_another_users_key(cluster, users):
    other = cluster.login_line("other", users["other"])
    out = cluster.kmu([other, "genRSAKeyPair -m 2048 -e 65537 -l others_key"], login=False)
    _, priv = keypair_handles(out)
    (cluster.work / "others_msg.txt").write_text("not yours\n")
    out = cluster.kmu([
        f"sign -f others_msg.txt -k {priv} -m 1 -out stolen.sig",
        f"deleteKey -k {priv}",
    ])
    assert returned(command_output(out, "sign"), "Cfm3Sign") == 0xC6, out
    assert "0xc6 : HSM Error: Key access denied" in out, out
    assert returned(command_output(out, "deleteKey"), "Cfm3DeleteKey") == 0xC6, out
    # The owner still has it.
    out = cluster.kmu([other, f"sign -f others_msg.txt -k {priv} -m 1 -out own.sig"], login=False)
    assert returned(command_output(out, "sign"), "Cfm3Sign") == 0, out
    cluster.assert_serves()


def test_bad_key_files_create_nothing(cluster, openssl):
    w = cluster.work
    openssl("genrsa", "-out", "good.key", "2048", cwd=w)
    good = (w / "good.key").read_bytes()
    (w / "truncated.key").write_bytes(good[: len(good) // 2])
    (w / "garbage.key").write_bytes(bytes(range(256)) * 4)
    (w / "empty.key").write_bytes(b"")
    (w / "cert_not_key.pem").write_bytes(b"-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----\n")
    # EC keys import (tests/test_ec_keys.py), but not on a curve the HSMs do not hold.
    openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:secp256k1", "-out", "ec_k1.key", cwd=w)
    bad = ["truncated.key", "garbage.key", "empty.key", "cert_not_key.pem", "ec_k1.key"]

    s = cluster.session()
    try:
        s.send("genSymKey -t 31 -s 16 -sess -l neg_wrap")
        wrap = int(s.expect(r"^Symmetric Key Created\.  Key Handle: (\d+)$").group(1))
        s.send("findKey")
        before = int(s.expect(r"^Total number of keys present: (\d+)$").group(1))
        for name in bad:
            s.send(f"importPrivateKey -f {name} -l neg_import -w {wrap}")
        s.send("findKey -l neg_import")
        s.send("findKey")
        out = s.finish(["exit"])
    finally:
        s.close()
    for name in bad:
        block = command_output(out, f"importPrivateKey -f {name} ")
        assert (f"Error: {name} is not an RSA or EC private key the HSMs accept (PEM or DER; PKCS#1, SEC1 or "
                "PKCS#8): ") in block, (
            f"{name}:\n{block}"
        )
        assert "Private Key Unwrapped" not in block
    count, _ = found_keys(command_output(out, "findKey -l neg_import"))
    assert count == 0, out
    after, _ = found_keys(command_output(out, "findKey", occurrence=2))
    assert after == before, f"findKey counted {before} keys before the bad imports and {after} after:\n{out}"
    cluster.assert_serves()


# ------------------------------------------------------------------------------ the wire


def tls_connect(cluster, node: int) -> ssl.SSLSocket:
    ctx = ssl.create_default_context(cafile=str(cluster.ca))
    raw = socket.create_connection(("127.0.0.1", cluster.ports[node]), timeout=10)
    return ctx.wrap_socket(raw, server_hostname="localhost")


def read_until_closed(sock: ssl.SSLSocket, timeout: float = 15) -> tuple[bytes, bool]:
    """Everything the node sends until it closes; (data, closed)."""
    data = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        sock.settimeout(max(0.1, deadline - time.monotonic()))
        try:
            chunk = sock.recv(65536)
        except (ConnectionResetError, ssl.SSLError, BrokenPipeError, OSError) as e:
            if isinstance(e, socket.timeout):
                break
            return data, True
        if not chunk:
            return data, True
        data += chunk
    return data, False


def check_answer_or_close(data: bytes, closed: bool, what: str):
    assert closed, f"the node neither closed the connection nor stopped talking after {what}"
    if data:
        assert len(data) >= 16 and data[:3] == b"HS\x01", f"after {what} the node sent {data[:40]!r}"
        assert data[3] & 0x80, "a response has the high bit of its operation set"
        (length,) = struct.unpack(">I", data[8:12])
        (code,) = struct.unpack(">I", data[12:16])
        assert code == 0x10, f"after {what} the node answered 0x{code:02x}, not 0x10 invalid request"
        assert length == len(data) - 12, "one frame, then close"


def node_info_frame(request_id: int) -> bytes:
    return b"HS\x01\x0f" + struct.pack(">II", request_id, 0)


def valid_request_works(cluster, node: int):
    with tls_connect(cluster, node) as s:
        s.sendall(node_info_frame(0x1234))
        s.settimeout(15)
        header = b""
        while len(header) < 12:
            chunk = s.recv(12 - len(header))
            assert chunk, "the node closed the connection instead of answering a valid request"
            header += chunk
        assert header[:3] == b"HS\x01" and header[3] == 0x8F, header
        assert struct.unpack(">I", header[4:8])[0] == 0x1234, "the response echoes the request id"


MALFORMED = {
    "garbage": b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" + bytes(range(200)),
    "oversized length": b"HS\x01\x0f" + struct.pack(">II", 1, 0x7FFFFFF0),
    "bad version": b"HS\x09\x0f" + struct.pack(">II", 1, 0),
    "unknown operation": b"HS\x01\x7e" + struct.pack(">II", 1, 0),
    "trailing payload": b"HS\x01\x0f" + struct.pack(">II", 1, 3) + b"abc",
    "bad string in login": b"HS\x01\x01" + struct.pack(">II", 1, 9) + b"\x02\xff\xff\xff\xf0abcd",
}


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_malformed_frame(cluster, name):
    node = 1
    pid = cluster.pid(node)
    with tls_connect(cluster, node) as s:
        s.sendall(MALFORMED[name])
        data, closed = read_until_closed(s)
    check_answer_or_close(data, closed, name)
    valid_request_works(cluster, node)
    assert cluster.pid(node) == pid, f"node {node} restarted or died; log:\n{cluster.log(node)}"
    cluster.assert_serves()


def test_truncated_frame_then_disconnect(cluster):
    node = 0
    for _ in range(3):
        with tls_connect(cluster, node) as s:
            s.sendall(b"HS\x01\x0c" + struct.pack(">II", 7, 500) + b"only part of it")
    raw = socket.create_connection(("127.0.0.1", cluster.ports[node]), timeout=10)
    raw.sendall(b"\x16\x03\x01\x00\x05hello not TLS")  # a broken TLS handshake
    raw.close()
    valid_request_works(cluster, node)
    cluster.assert_serves()


def test_untrusted_node_certificate(cluster, tmp_path, openssl):
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "other.key", "-out", "otherCA.crt",
            "-days", "2", "-subj", "/CN=some other CA", cwd=tmp_path)
    cfg = cluster.config.read_text().replace("trust_anchor = customerCA.crt",
                                             f"trust_anchor = {tmp_path / 'otherCA.crt'}")
    assert str(tmp_path) in cfg
    (tmp_path / "cluster.cfg").write_text(cfg)
    env = dict(cluster.env, CLOUDHSM_CONFIG=str(tmp_path / "cluster.cfg"))
    out = cluster.kmu(["getHSMInfo"], env=env)
    block = login_block(out)
    assert status_codes(block) == {n: 0xE1 for n in range(NODES)}, out
    assert "0x000000e1 : HSM Error: TLS handshake with the HSM failed" in block, out
    cluster.assert_serves()


def test_one_node_down(cluster):
    cluster.kill(2)
    try:
        out = cluster.kmu(["getHSMInfo"])
        codes = status_codes(login_block(out))
        assert codes == {0: 0, 1: 0, 2: 0xE0}, out
        assert "Node id 2 and err state 0x000000e0 : HSM Error: " in out
    finally:
        cluster.restart()
    cluster.wait_all_up()
    cluster.assert_serves()


def test_nodes_never_crashed(cluster):
    for n in range(NODES):
        log = cluster.log(n)
        for bad in ("Fatal error", "Segmentation fault", "Illegal instruction", "Assertion failed"):
            assert bad not in log, f"node {n} log mentions {bad!r}:\n{log[-3000:]}"
