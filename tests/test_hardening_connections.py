"""A node against clients that never log in (issue 8), with real hsmd nodes and Python's
socket/ssl as the attacker: the handshake, each frame and the login have deadlines that
trickled bytes cannot stretch; 1,100 idle and slow unauthenticated connections (from other
loopback addresses, and from 127.0.0.1 itself) leave a logged-in key_mgmt_util and a
nodeInfo probe served; buffers follow the bytes received, not the lengths claimed; a node
at its limits says so (the notice frame, 0xbb "node busy: connection limit"); the log file
is 0640, reopens on SIGHUP and stays short under a flood.

Nodes here are single-node clusters started by scripts/cluster.sh with short deadlines
(HSMD_RUN_ARGS), so each bound is reached in seconds."""

from __future__ import annotations

import os
import re
import resource
import select
import signal
import socket
import ssl
import struct
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

from conftest import Cluster
from helpers import free_ports, process_alive, wait_until

HANDSHAKE_MS = 2000
FRAME_MS = 2000
LOGIN_MS = 3000
SHORT_DEADLINES = (
    f"--handshake-timeout-ms {HANDSHAKE_MS} --frame-timeout-ms {FRAME_MS} --login-timeout-ms {LOGIN_MS}"
)
# Bounds are asserted from below exactly and from above with this much slack: the
# machine is shared and loaded.
SLACK = 3.0

NODE_INFO = 0x0F
LOGIN = 0x01
NOTICE_OPERATION = 0x80
ONE_MIB = 1 << 20


def raise_descriptor_limit(needed: int = 4096):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(needed, hard), hard))
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed:
        pytest.skip(f"the open-file limit ({soft}) is too low for this test ({needed})")


@contextmanager
def environment(**values):
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def start_node(tmp_path_factory, bin_dir, run_args: str, umask: int | None = None) -> Cluster:
    """A one-node cluster with `run_args` (scripts/cluster.sh start)."""
    directory = tmp_path_factory.mktemp("node")
    node = Cluster(directory, free_ports(1), bin_dir)
    previous = os.umask(umask) if umask is not None else None
    try:
        with environment(HSMD_RUN_ARGS=run_args):
            node.start()
    finally:
        if previous is not None:
            os.umask(previous)
    node.ca_path = str(node.ca)
    node.port = node.ports[0]
    return node


def stop_node(node: Cluster):
    node.stop()


@pytest.fixture(scope="module")
def node(tmp_path_factory, bin_dir):
    """Default slots (64 unauthenticated, 16 per source), short deadlines, and started
    under umask 000 so that the log file's mode is hsmd's own doing."""
    n = start_node(tmp_path_factory, bin_dir, SHORT_DEADLINES, umask=0)
    yield n
    stop_node(n)


@pytest.fixture(autouse=True)
def _node_survives(request):
    yield
    for name in ("node", "roomy_node", "tiny_node"):
        if name in request.fixturenames:
            n = request.getfixturevalue(name)
            assert n.pid(0), f"the node died during this test; log:\n{n.log(0)[-3000:]}"


# ---------------------------------------------------------------------------- the wire


def frame(operation: int, request_id: int, payload: bytes = b"") -> bytes:
    return b"HS\x01" + bytes([operation]) + struct.pack(">II", request_id, len(payload)) + payload


def wire_string(text: str) -> bytes:
    data = text.encode()
    return struct.pack(">I", len(data)) + data


def login_payload(user: str, password: str, role: int = 2) -> bytes:
    return bytes([role]) + wire_string(user) + wire_string(password)


def recv_exactly(conn, count: int) -> bytes:
    data = b""
    while len(data) < count:
        chunk = conn.recv(count - len(data))
        if not chunk:
            raise EOFError(f"closed after {len(data)} of {count} bytes")
        data += chunk
    return data


def read_frame(conn) -> tuple[int, int, bytes]:
    header = recv_exactly(conn, 12)
    assert header[:3] == b"HS\x01", header
    request_id, length = struct.unpack(">II", header[4:12])
    return header[3], request_id, recv_exactly(conn, length)


def response_code(payload: bytes) -> tuple[int, str]:
    code, length = struct.unpack(">II", payload[:8])
    return code, payload[8 : 8 + length].decode()


def tls_context(node) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=node.ca_path)
    ctx.check_hostname = False
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    return ctx


def tls_connect(node, source: str | None = None, timeout: float = 10) -> ssl.SSLSocket:
    raw = socket.create_connection(
        ("127.0.0.1", node.port), timeout=timeout, source_address=(source, 0) if source else None
    )
    return tls_context(node).wrap_socket(raw)


def wait_for_close(conn, limit: float) -> tuple[float, list[tuple[int, int, bytes]]]:
    """Reads frames until the node closes; returns (when, the frames read)."""
    conn.settimeout(limit)
    frames = []
    try:
        while True:
            frames.append(read_frame(conn))
    except (EOFError, ConnectionResetError, ssl.SSLError, OSError):
        pass
    return time.monotonic(), frames


def probe(node, source: str | None = None) -> tuple[int, bytes]:
    """What the client pool's probe does: a fresh connection and nodeInfo, no login."""
    with tls_connect(node, source) as conn:
        conn.sendall(frame(NODE_INFO, 1))
        operation, request_id, payload = read_frame(conn)
        assert (operation, request_id) == (NODE_INFO | 0x80, 1)
        return response_code(payload)[0], payload


def readable_now(conns, timeout: float) -> list[int]:
    """The descriptors among `conns` with something to read (or a close), via poll():
    select() stops at descriptor 1023."""
    poller = select.poll()
    for conn in conns:
        poller.register(conn.fileno(), select.POLLIN)
    return [fd for fd, _ in poller.poll(timeout * 1000)]


def rss_kb(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"^VmRSS:\s+(\d+) kB", status, re.M).group(1))


def open_descriptors(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def served_logged_in(node, label: str) -> str:
    """key_mgmt_util logs in, makes and finds a session key, and reads the counters."""
    out = node.kmu([f"genSymKey -t 31 -s 16 -sess -l {label}", f"findKey -l {label}", "getHSMInfo"], timeout=60)
    assert "Cfm3LoginHSM returned: 0x00 : HSM Return: SUCCESS" in out, out
    assert "Cfm3GenerateSymmetricKey returned: 0x00" in out, out
    assert re.search(r"Total number of keys present: 1\b", out), out
    assert "Token keys:" in out and "Cfm3GetHSMInfo returned: 0x00" in out, out
    assert "0xe1" not in out, out
    return out


# ---------------------------------------------------------------------------- deadlines


def test_slow_tls_handshake_is_cut_at_the_handshake_deadline(node):
    """A partial ClientHello, one byte a second: the node closes at the handshake
    deadline however the bytes trickle, and sends nothing (there is no TLS to send in)."""
    hello = bytes.fromhex("16030100dc010000d80303") + os.urandom(32)
    with socket.create_connection(("127.0.0.1", node.port)) as raw:
        started = time.monotonic()
        received = b""
        closed_at = None
        for byte in hello:
            try:
                raw.send(bytes([byte]))
            except OSError:
                closed_at = time.monotonic()
                break
            ready, _, _ = select.select([raw], [], [], 1.0)
            if ready:
                try:
                    received = raw.recv(100)
                except ConnectionResetError:
                    received = b""
                closed_at = time.monotonic()
                break
        assert closed_at is not None, "the node still waited after the whole slow ClientHello"
    took = closed_at - started
    assert received == b"", f"the node sent {received!r} on a cut handshake"
    assert HANDSHAKE_MS / 1000 - 0.1 <= took <= HANDSHAKE_MS / 1000 + SLACK, took
    print(f"slow handshake cut after {took:.2f} s (bound {HANDSHAKE_MS} ms)")


def test_slow_frame_is_cut_at_the_frame_deadline_with_a_notice(node):
    """A header claiming 1 MiB, then one byte a second: the frame deadline counts from
    the frame's first byte; the client hears why before the close."""
    conn = tls_connect(node)
    started = time.monotonic()
    conn.sendall(b"HS\x01" + bytes([NODE_INFO]) + struct.pack(">II", 7, ONE_MIB))

    stop = threading.Event()

    def trickle():
        while not stop.wait(1.0):
            try:
                conn.sendall(b"x")
            except OSError:
                return

    writer = threading.Thread(target=trickle, daemon=True)
    writer.start()
    try:
        closed_at, frames = wait_for_close(conn, 30)
    finally:
        stop.set()
        writer.join()
        conn.close()
    took = closed_at - started
    assert FRAME_MS / 1000 - 0.1 <= took <= FRAME_MS / 1000 + SLACK, took
    assert len(frames) == 1, frames
    operation, request_id, payload = frames[0]
    assert (operation, request_id) == (NOTICE_OPERATION, 0), frames
    code, detail = response_code(payload)
    assert code == 0x10, (code, detail)
    assert f"did not arrive whole within {FRAME_MS} ms" in detail, detail
    assert f"of {ONE_MIB + 12} bytes" in detail, detail
    print(f"slow frame cut after {took:.2f} s (bound {FRAME_MS} ms): {detail}")


def test_node_info_keep_alive_is_closed_at_the_login_deadline(node):
    """nodeInfo every half second, never a login: answered (without counters) until the
    login deadline, then the notice and the close."""
    conn = tls_connect(node)
    started = time.monotonic()
    answered = 0
    notice = None
    try:
        for request_id in range(1, 100):
            conn.sendall(frame(NODE_INFO, request_id))
            operation, got_id, payload = read_frame(conn)
            if got_id == 0:
                notice = (operation, payload)
                break
            assert operation == NODE_INFO | 0x80 and response_code(payload)[0] == 0
            answered += 1
            time.sleep(0.5)
        closed_at, rest = wait_for_close(conn, 10)
    except (EOFError, OSError) as e:
        pytest.fail(f"closed without a notice after {answered} answers: {e!r}")
    finally:
        conn.close()
    took = closed_at - started
    assert notice is not None and rest == [], (notice, rest)
    assert notice[0] == NOTICE_OPERATION
    code, detail = response_code(notice[1])
    assert code == 0x20 and f"no login within {LOGIN_MS} ms" in detail, (code, detail)
    assert answered >= 3, answered
    assert LOGIN_MS / 1000 - 0.1 <= took <= LOGIN_MS / 1000 + SLACK, took
    print(f"nodeInfo keep-alive closed after {took:.2f} s (bound {LOGIN_MS} ms), {answered} answers")


def test_node_info_before_login_tells_only_who_the_node_is(node):
    code, payload = probe(node)
    assert code == 0
    # code, detail "", node id, cluster id, version, then the counters flag: 0, nothing more.
    expected = struct.pack(">II", 0, 0) + struct.pack(">I", 0) + wire_string("local-dev")
    assert payload.startswith(expected), payload
    rest = payload[len(expected) :]
    version_length = struct.unpack(">I", rest[:4])[0]
    assert rest[4 + version_length :] == b"\x00", payload
    out = node.kmu(["getHSMInfo"], login=False)
    assert "Cluster id: local-dev" in out and "Counters: shown after loginHSM" in out, out
    assert "Token keys" not in out and "Users:" not in out, out
    out = node.kmu(["getHSMInfo"])
    assert re.search(r"Users: \d+", out) and "Token keys: " in out, out


# ---------------------------------------------------------------------------- held slots


class Flood:
    """Unauthenticated connections from the given source addresses, in four kinds: TCP
    only (no ClientHello), a ClientHello sent one byte a second, a finished handshake
    and then nothing, a finished handshake and a frame header claiming 1 MiB followed
    by one byte a second. With `reopen`, a connection the node closed is opened again
    (at most `reopen_per_second`), so the pressure lasts."""

    def __init__(self, node, sources: list[str], count: int, reopen: bool, reopen_per_second: float = 100):
        self.node = node
        self.sources = sources
        self.count = count
        self.reopen = reopen
        self.interval = 1 / reopen_per_second
        self.conns: list[tuple[str, socket.socket, int]] = []
        self.closed_by_node = 0
        self.notices: list[tuple[int, str]] = []
        self.failed_opens = 0
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._maintain, daemon=True)
        self.hello = bytes.fromhex("16030100dc010000d80303") + os.urandom(32)

    def _open(self, index: int):
        kind = ("tcp", "slow-hello", "tls-idle", "slow-frame")[index % 4]
        source = self.sources[index % len(self.sources)]
        try:
            raw = socket.create_connection(("127.0.0.1", self.node.port), timeout=5, source_address=(source, 0))
            if kind in ("tcp", "slow-hello"):
                conn = raw
                if kind == "slow-hello":
                    conn.send(self.hello[:1])
            else:
                conn = tls_context(self.node).wrap_socket(raw)
                if kind == "slow-frame":
                    conn.sendall(b"HS\x01" + bytes([NODE_INFO]) + struct.pack(">II", 1, ONE_MIB) + b"x")
            conn.setblocking(False)
            return (kind, conn, 1)
        except (OSError, ssl.SSLError):
            self.failed_opens += 1
            return None

    def start(self):
        for i in range(self.count):
            opened = self._open(i)
            if opened:
                self.conns.append(opened)
        self.thread.start()

    def _closed(self, kind: str, conn) -> bool:
        """True when the node closed `conn` (reads what it sent, notices included)."""
        try:
            data = conn.recv(65536)
        except (ssl.SSLWantReadError, BlockingIOError):
            return False
        except (OSError, ssl.SSLError):
            return True
        if kind in ("tls-idle", "slow-frame") and data:
            self._collect_notice(data)
        return not data or kind in ("tls-idle", "slow-frame")

    def _collect_notice(self, data: bytes):
        if len(data) >= 20 and data[:3] == b"HS\x01" and data[3] == NOTICE_OPERATION:
            self.notices.append(response_code(data[12:]))

    def _maintain(self):
        next_trickle = time.monotonic() + 1
        while not self.stop.is_set():
            with self.lock:
                conns = list(self.conns)
            readable = set(readable_now([c for _, c, _ in conns], 0.2))
            keep = []
            for index, (kind, conn, sent) in enumerate(conns):
                if conn.fileno() in readable and self._closed(kind, conn):
                    self.closed_by_node += 1
                    conn.close()
                    if self.reopen and not self.stop.is_set():
                        time.sleep(self.interval)
                        again = self._open(index)
                        if again:
                            keep.append(again)
                    continue
                keep.append((kind, conn, sent))
            if time.monotonic() >= next_trickle:
                next_trickle += 1
                for i, (kind, conn, sent) in enumerate(keep):
                    try:
                        if kind == "slow-hello" and sent < len(self.hello):
                            conn.send(self.hello[sent : sent + 1])
                            keep[i] = (kind, conn, sent + 1)
                        elif kind == "slow-frame":
                            conn.send(b"x")
                    except (OSError, ssl.SSLError):
                        pass
            with self.lock:
                self.conns = keep

    def close(self):
        self.stop.set()
        self.thread.join(timeout=30)
        for _, conn, _ in self.conns:
            conn.close()


def test_logged_in_client_is_served_while_1100_connections_from_other_addresses_press(node):
    """1,100 idle and slow connections from 127.0.0.2-12, reopened as the node closes
    them: key_mgmt_util (from 127.0.0.1) still logs in and works, and the probe is
    answered, again and again while the flood goes on."""
    raise_descriptor_limit()
    pid = node.pid(0)
    flood = Flood(node, [f"127.0.0.{i}" for i in range(2, 13)], 1100, reopen=True)
    started = time.monotonic()
    flood.start()
    opened = time.monotonic() - started
    most_descriptors = 0
    try:
        for round_ in range(3):
            served_logged_in(node, f"held_{round_}")
            code, _ = probe(node)
            assert code == 0
            most_descriptors = max(most_descriptors, open_descriptors(pid))
        out = node.kmu(["getHSMInfo"], login=False)
        assert "Cluster id: local-dev" in out, out
        # The pressure was real: the node had to close far more than its 64 slots hold
        # (on a loaded machine the flood's thread may take a while to see every close).
        wait_until(lambda: flood.closed_by_node >= 1100 - 64, 60, "the node to close the flood's connections")
    finally:
        flood.close()
    print(
        f"flood of 1100 from 11 addresses opened in {opened:.1f} s; the node closed {flood.closed_by_node}, "
        f"{flood.failed_opens} opens failed, notices {len(flood.notices)}; most node descriptors {most_descriptors}"
    )
    assert any(code == 0xBB and detail.startswith("node busy: connection limit") for code, detail in flood.notices), (
        flood.notices[:5]
    )
    # The share was full while the client was served, and the node's descriptors stayed
    # near its 64 unauthenticated slots, not at the flood's 1,100.
    assert 64 <= most_descriptors < 64 + 200, most_descriptors


def test_logged_in_client_is_served_while_1100_connections_from_its_own_address_are_held(node):
    """The same flood from 127.0.0.1, the client's own address: held, not reopened (a
    client cannot be told from an attacker on its own address; the per-source share makes
    the flood evict its own connections first)."""
    raise_descriptor_limit()
    flood = Flood(node, ["127.0.0.1"], 1100, reopen=False)
    flood.start()
    try:
        for round_ in range(2):
            served_logged_in(node, f"own_{round_}")
            code, _ = probe(node)
            assert code == 0
        wait_until(lambda: flood.closed_by_node >= 1100 - 64, 60, "the node to close the flood's connections")
    finally:
        flood.close()


# ---------------------------------------------------------------------------- at the limits


@pytest.fixture(scope="module")
def tiny_node(tmp_path_factory, bin_dir):
    """Room for 2 logged-in and 2 unauthenticated connections."""
    n = start_node(
        tmp_path_factory, bin_dir,
        "--max-connections 4 --max-unauthenticated 2 --max-unauthenticated-per-source 2 " + SHORT_DEADLINES,
    )
    yield n
    stop_node(n)


def test_full_logged_in_share_answers_the_login_node_busy(tiny_node):
    logged_in = []
    try:
        for request_id in (1, 2):
            conn = tls_connect(tiny_node)
            conn.sendall(frame(LOGIN, request_id, login_payload(tiny_node.cu_user, tiny_node.cu_password)))
            operation, got_id, payload = read_frame(conn)
            assert response_code(payload)[0] == 0, response_code(payload)
            logged_in.append(conn)
        third = tls_connect(tiny_node)
        third.sendall(frame(LOGIN, 3, login_payload(tiny_node.cu_user, tiny_node.cu_password)))
        operation, got_id, payload = read_frame(third)
        code, detail = response_code(payload)
        assert (operation, got_id, code) == (LOGIN | 0x80, 3, 0xBB), (operation, got_id, code, detail)
        assert detail == "node busy: connection limit (2 logged-in connections)", detail
        _, rest = wait_for_close(third, 10)
        assert rest == []
        # The logged-in ones are still served.
        logged_in[0].sendall(frame(NODE_INFO, 9))
        assert response_code(read_frame(logged_in[0])[2])[0] == 0
    finally:
        for conn in logged_in:
            conn.close()
    # Their slots are free again once they close.
    wait_until(
        lambda: "Cfm3LoginHSM returned: 0x00" in tiny_node.kmu(["getHSMInfo"]), 10,
        "a login once the logged-in connections closed")


def test_full_unauthenticated_share_evicts_the_oldest_with_a_notice(tiny_node):
    first = tls_connect(tiny_node)
    time.sleep(0.2)
    second = tls_connect(tiny_node)
    time.sleep(0.2)
    third = tls_connect(tiny_node)
    try:
        _, frames = wait_for_close(first, 10)
        assert len(frames) == 1, frames
        operation, request_id, payload = frames[0]
        code, detail = response_code(payload)
        assert (operation, request_id, code) == (NOTICE_OPERATION, 0, 0xBB), (operation, request_id, code)
        assert detail.startswith("node busy: connection limit (2 connections from 127.0.0.1 have not logged in"), (
            detail
        )
        # The newer ones are served.
        for conn in (second, third):
            conn.sendall(frame(NODE_INFO, 4))
            assert response_code(read_frame(conn)[2])[0] == 0
    finally:
        for conn in (first, second, third):
            conn.close()


# ---------------------------------------------------------------------------- memory


@pytest.fixture(scope="module")
def roomy_node(tmp_path_factory, bin_dir):
    """Room for 700 unauthenticated connections from one address, with long deadlines, so
    that 600 half-sent frames are all held at once."""
    n = start_node(
        tmp_path_factory, bin_dir,
        "--max-connections 1024 --max-unauthenticated 700 --max-unauthenticated-per-source 700 "
        "--handshake-timeout-ms 120000 --frame-timeout-ms 120000 --login-timeout-ms 120000",
    )
    yield n
    stop_node(n)


def test_buffers_grow_with_bytes_received_not_with_claimed_lengths(roomy_node):
    """600 connections each send a header claiming 1 MiB and 10 bytes of it: the node
    holds them all, and its memory grows by far less than the 600 MiB they claim."""
    raise_descriptor_limit()
    pid = roomy_node.pid(0)
    roomy_node.kmu(["getHSMInfo"])  # warm: one login, one connection served
    time.sleep(0.5)
    before = rss_kb(pid)
    conns = []
    try:
        for _ in range(600):
            conns.append(tls_connect(roomy_node, timeout=30))
        time.sleep(1)
        idle = rss_kb(pid)
        for conn in conns:
            conn.sendall(b"HS\x01" + bytes([NODE_INFO]) + struct.pack(">II", 1, ONE_MIB) + b"0123456789")
        time.sleep(2)
        after = rss_kb(pid)
        # Every connection is still held: the node waits for the rest of each frame.
        ready = readable_now(conns, 0)
        assert ready == [], f"{len(ready)} connections were closed or answered"
        assert open_descriptors(pid) >= 600
    finally:
        for conn in conns:
            conn.close()
    growth_mb = (after - before) / 1024
    print(
        f"RSS: {before / 1024:.0f} MB before, {idle / 1024:.0f} MB with 600 idle TLS connections, "
        f"{after / 1024:.0f} MB after each sent a header claiming 1 MiB (+{growth_mb:.0f} MB in all, "
        f"+{(after - idle) / 1024:.0f} MB for the headers)"
    )
    assert growth_mb < 150, growth_mb
    wait_until(lambda: open_descriptors(pid) < 100, 30, "the node to close the 600 connections")


# ---------------------------------------------------------------------------- the log


def test_log_file_is_0640_and_reopens_on_sighup(node):
    pid = node.pid(0)
    log = node.dir / "node0.log"
    assert oct(log.stat().st_mode & 0o777) == "0o640"
    rotated = node.dir / "node0.log.1"
    log.rename(rotated)
    os.kill(pid, signal.SIGHUP)
    # hsmd creates the new file itself, under the umask 000 this node was started with.
    wait_until(log.exists, 10, "hsmd to reopen node0.log")
    assert oct(log.stat().st_mode & 0o777) == "0o640"
    node.kmu(["getHSMInfo"])
    wait_until(lambda: "logged in" in log.read_text(), 10, "a new line in the reopened log")
    assert "SIGHUP: log file reopened" in log.read_text()
    assert "hsmd node 0 listening" in rotated.read_text() and "hsmd node 0 listening" not in log.read_text()
    assert process_alive(pid)


def test_a_flood_of_unauthenticated_connections_costs_a_few_log_lines(node):
    log = node.dir / "node0.log"
    offset = log.stat().st_size
    for i in range(1000):
        with socket.create_connection(("127.0.0.1", node.port)) as s:
            if i % 2:
                s.send(bytes.fromhex("16030100dc0100"))  # half a ClientHello, then gone
    for _ in range(20):  # and some that finish the handshake first
        tls_connect(node).close()
    time.sleep(1)
    burst = log.read_text()[offset:].splitlines()
    assert len(burst) < 40, "\n".join(burst)

    def accounted():
        """Each failed handshake is a line of its own or counted in a summary line."""
        text = log.read_text()[offset:]
        singles = len(re.findall(
            r"^hsmd: connection from 127\.0\.0\.1:\d+: (TLS handshake failed|closed during the TLS handshake|"
            r"no TLS handshake)", text, re.M))
        summaries = re.findall(
            r"^hsmd: \.\.\. and \d+ more failed TLS handshakes in the last 10 s \(from [^\n]*?127\.0\.0\.1: (\d+)",
            text, re.M)
        counted = singles + sum(int(n) for n in summaries)
        return counted >= 1000 and (singles, summaries)

    singles, summaries = wait_until(accounted, 25, "summary lines accounting for the 1000 connections")
    print(f"1000 unauthenticated connections: {len(burst)} log lines at once ({singles} about single "
          f"handshakes), then summaries counting {', '.join(summaries)}")
