"""Helpers for the integration tests: running the tools, parsing their output, DER."""

from __future__ import annotations

import os
import queue
import random
import re
import signal
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CLUSTER_SH = REPO / "scripts" / "cluster.sh"

# How long one tool invocation may take before the test fails (logins hash slowly).
TOOL_TIMEOUT = float(os.environ.get("TOOL_TIMEOUT", "120"))

STATUS_LINE = re.compile(
    r"^Node id (\d+) and err state 0x([0-9a-fA-F]{8}) : HSM (?:Return: SUCCESS|Error: .*)$", re.M
)


def find_bin_dir() -> Path:
    """BIN_DIR, else build/bin (make build links it), else `swift build --show-bin-path`."""
    if os.environ.get("BIN_DIR"):
        return Path(os.environ["BIN_DIR"]).resolve()
    link = REPO / "build" / "bin"
    if (link / "hsmd").exists():
        return link.resolve()
    env = dict(os.environ)
    env["PATH"] = env.get("PATH", "") + ":/opt/swift/usr/bin"
    out = subprocess.run(
        ["swift", "build", "--show-bin-path"], cwd=REPO, env=env, capture_output=True, text=True, check=True
    )
    return Path(out.stdout.strip())


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """Ports free on host right now, all different, chosen below the kernel's ephemeral
    range: a port the kernel hands out (bind to 0) is also what it gives the next outgoing
    connection, so a node restarted on it could find it taken by a client or a peer."""
    low, high = _ephemeral_range()
    top = low - 1 if low > 11024 else 65535
    bottom = 10000 if low > 11024 else high + 1
    rng = random.SystemRandom()
    socks, ports = [], []
    try:
        while len(ports) < count:
            port = rng.randint(bottom, top)
            if port in ports:
                continue
            s = socket.socket()
            try:
                s.bind((host, port))
            except OSError:
                s.close()
                continue
            socks.append(s)
            ports.append(port)
    finally:
        for s in socks:
            s.close()
    return ports


def wait_until(predicate, timeout: float, what: str, interval: float = 0.1):
    """Polls predicate until it returns something truthy; fails after timeout seconds."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


# ------------------------------------------------------------------------------ output


def status_codes(text: str) -> dict[int, int]:
    """The "Node id N and err state 0x..." lines of the last status block in text."""
    codes: dict[int, int] = {}
    for m in STATUS_LINE.finditer(text):
        codes[int(m.group(1))] = int(m.group(2), 16)
    return codes


def command_output(transcript: str, command_prefix: str, occurrence: int = 0) -> str:
    """The part of a key_mgmt_util transcript that follows `Command:  <command_prefix...>`
    up to the next `Command:` echo."""
    parts = re.split(r"^Command:  ", transcript, flags=re.M)
    found = [p for p in parts[1:] if p.startswith(command_prefix)]
    assert len(found) > occurrence, (
        f"no output for command {command_prefix!r} (occurrence {occurrence}) in transcript:\n{transcript}"
    )
    block = found[occurrence]
    return block.split("\n", 1)[1] if "\n" in block else ""


def cmu_output(transcript: str, command_prefix: str, occurrence: int = 0) -> str:
    parts = re.split(r"^aws-cloudhsm> ", transcript, flags=re.M)
    found = [p for p in parts[1:] if p.startswith(command_prefix)]
    assert len(found) > occurrence, f"no output for {command_prefix!r} in transcript:\n{transcript}"
    block = found[occurrence]
    return block.split("\n", 1)[1] if "\n" in block else ""


def one_int(pattern: str, text: str) -> int:
    m = re.search(pattern, text, re.M)
    assert m, f"/{pattern}/ not found in:\n{text}"
    return int(m.group(1))


def sym_handle(text: str) -> int:
    return one_int(r"Symmetric Key Created\.  Key Handle: (\d+)", text)


def keypair_handles(text: str) -> tuple[int, int]:
    m = re.search(r"Cfm3GenerateKeyPair:\s+public key handle: (\d+)\s+private key handle: (\d+)", text)
    assert m, f"no Cfm3GenerateKeyPair handles in:\n{text}"
    return int(m.group(1)), int(m.group(2))


def unwrapped_handle(text: str) -> int:
    return one_int(r"Private Key Unwrapped\.  Key Handle: (\d+)", text)


def returned(text: str, function: str) -> int:
    """The code of `<function> returned: 0x.. : ...`."""
    m = re.search(rf"{function} returned: 0x([0-9a-fA-F]+) : HSM (?:Return|Error)", text)
    assert m, f"no '{function} returned:' line in:\n{text}"
    return int(m.group(1), 16)


def found_keys(text: str) -> tuple[int, list[int]]:
    """findKey's count and handles (the comma-separated line after the count)."""
    m = re.search(r"Total number of keys present: (\d+)\n", text)
    assert m, f"no findKey result in:\n{text}"
    count = int(m.group(1))
    handles: list[int] = []
    for line in text[m.end():].splitlines():
        if line.startswith(("Cfm3FindKey", "Cluster Error Status", "Command:")):
            break
        if re.fullmatch(r"\s*\d+(\s*,\s*\d+)*\s*,?\s*", line):
            handles = [int(h) for h in re.findall(r"\d+", line)]
            break
    return count, handles


@dataclass
class NodeInfo:
    node_id: int
    address: str
    fields: dict[str, str] = field(default_factory=dict)

    def int(self, name: str) -> int:
        return int(re.match(r"\d+", self.fields[name]).group(0))

    @property
    def signs(self) -> int:
        m = re.search(r"sign (\d+)", self.fields.get("Private key operations", ""))
        assert m, f"no sign count in {self.fields}"
        return int(m.group(1))

    @property
    def ecdsa_signs(self) -> int:
        m = re.search(r"ECDSA sign (\d+)", self.fields.get("Private key operations", ""))
        assert m, f"no ECDSA sign count in {self.fields}"
        return int(m.group(1))

    @property
    def decrypts(self) -> int:
        m = re.search(r"decrypt (\d+)", self.fields.get("Private key operations", ""))
        assert m, f"no decrypt count in {self.fields}"
        return int(m.group(1))


def parse_hsm_info(text: str) -> dict[int, NodeInfo]:
    nodes: dict[int, NodeInfo] = {}
    current = None
    for line in text.splitlines():
        m = re.match(r"^Node id (\d+): (\S+)\s*$", line)
        if m:
            current = NodeInfo(int(m.group(1)), m.group(2))
            nodes[current.node_id] = current
            continue
        m = re.match(r"^\s+([A-Za-z ]+):\s*(.*)$", line)
        if m and current is not None:
            current.fields[m.group(1).strip()] = m.group(2).strip()
        elif line.strip() == "" or line.startswith("Command:"):
            current = None
    return nodes


# ------------------------------------------------------------------------------ DER


def der_read(data: bytes, pos: int = 0) -> tuple[int, bytes, int, int]:
    """One TLV at pos: (tag, value, start of the whole TLV, end)."""
    assert pos + 2 <= len(data), "truncated DER"
    tag = data[pos]
    length = data[pos + 1]
    off = pos + 2
    if length & 0x80:
        n = length & 0x7F
        assert 1 <= n <= 4 and off + n <= len(data), "bad DER length"
        length = int.from_bytes(data[off : off + n], "big")
        off += n
    assert off + length <= len(data), "DER value runs past the end"
    return tag, data[off : off + length], pos, off + length


def der_children(value: bytes) -> list[tuple[int, bytes, bytes]]:
    """The TLVs inside a constructed value: (tag, value, whole encoding)."""
    out, pos = [], 0
    while pos < len(value):
        tag, inner, start, end = der_read(value, pos)
        out.append((tag, inner, value[start:end]))
        pos = end
    return out


def pem_body(text: str, label: str) -> bytes:
    import base64

    m = re.search(rf"-----BEGIN {label}-----\n(.*?)-----END {label}-----", text, re.S)
    assert m, f"no {label} PEM block in:\n{text}"
    return base64.b64decode("".join(m.group(1).split()))


# ------------------------------------------------------------------------------ sessions


class KmuSession:
    """key_mgmt_util as a live process: send a command, wait for a line, read on."""

    def __init__(self, argv: list[str], env: dict, cwd: Path):
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=cwd,
            text=True,
            bufsize=1,
        )
        self.lines: list[str] = []
        self.pos = 0
        self._q: queue.Queue = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        for line in self.proc.stdout:
            self._q.put(line.rstrip("\n"))
        self._q.put(None)

    @property
    def transcript(self) -> str:
        return "\n".join(self.lines) + "\n"

    def send(self, line: str):
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def expect(self, pattern: str, timeout: float = TOOL_TIMEOUT,
               fail_on: str | None = r"HSM Error: |^Error: ") -> re.Match:
        """Waits for a line (after the last expected one) matching pattern; a line
        matching fail_on first fails at once."""
        rx = re.compile(pattern)
        bad = re.compile(fail_on) if fail_on else None
        deadline = time.monotonic() + timeout
        while True:
            while self.pos < len(self.lines):
                line = self.lines[self.pos]
                self.pos += 1
                m = rx.search(line)
                if m:
                    return m
                if bad and bad.search(line):
                    raise AssertionError(f"/{line}/ before /{pattern}/; transcript:\n{self.transcript}")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no line matching /{pattern}/ within {timeout}s; transcript:\n{self.transcript}")
            try:
                item = self._q.get(timeout=remaining)
            except queue.Empty:
                continue
            if item is None:
                raise AssertionError(
                    f"key_mgmt_util exited (status {self.proc.wait()}) before /{pattern}/; transcript:\n{self.transcript}"
                )
            self.lines.append(item)

    def make_wrapping_key(self) -> int:
        """The walkthrough's session AES key for importPrivateKey; its handle."""
        self.send("genSymKey -t 31 -s 16 -sess -l wrapping_key_for_import")
        return int(self.expect(r"^Symmetric Key Created\.  Key Handle: (\d+)$").group(1))

    def import_private_key(self, file: str, label: str, wrap: int) -> int:
        """importPrivateKey of a key file in the session's directory; the new key's handle."""
        self.send(f"importPrivateKey -f {file} -l {label} -w {wrap}")
        return int(self.expect(r"^Private Key Unwrapped\.  Key Handle: (\d+)$").group(1))

    def write_fake_pem(self, handle: int, out: str):
        """getCaviumPrivKey: the key's fake PEM, written to out in the session's directory."""
        self.send(f"getCaviumPrivKey -k {handle} -out {out}")
        self.expect(r"^getCaviumPrivKey returned: 0x00")

    def finish(self, lines: list[str] = (), timeout: float = TOOL_TIMEOUT) -> str:
        """Sends the last commands, closes stdin and returns the whole transcript."""
        for line in lines:
            self.send(line)
        self.proc.stdin.close()
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise AssertionError(f"key_mgmt_util did not exit within {timeout}s; transcript:\n{self.transcript}")
        self._reader.join(timeout=10)
        while True:
            try:
                item = self._q.get_nowait()
            except queue.Empty:
                break
            if item is not None:
                self.lines.append(item)
        self.returncode = self.proc.returncode
        return self.transcript

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def assert_no_crash(returncode: int, transcript: str):
    assert returncode is not None and returncode >= 0 and returncode not in (134, 139), (
        f"the tool died (status {returncode}); transcript:\n{transcript}"
    )


def process_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
        return state not in ("Z", "X")
    except FileNotFoundError:
        return False


def kill_pid(pid: int, sig=signal.SIGKILL):
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass
