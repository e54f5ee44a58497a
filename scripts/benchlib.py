"""What the benchmark scripts share: free loopback ports, running a command that must
succeed, the walkthrough's key import and the nodes' private-key counters."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
from pathlib import Path


def free_ports(count: int) -> list[int]:
    """Ports the kernel says are free right now, all different."""
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def run(argv, env=None, input=None, check=True, cwd=None) -> str:
    """Runs argv; exits the benchmark with its output when it fails and check is set."""
    proc = subprocess.run(argv, env=env, input=input, capture_output=True, text=True, cwd=cwd, timeout=900)
    if check and proc.returncode != 0:
        sys.exit(f"bench: {' '.join(map(str, argv))} failed ({proc.returncode}):\n{proc.stdout}{proc.stderr}")
    return proc.stdout + proc.stderr


def kmu_import(env: dict, work: Path, key: str = "plain.key", fake: str = "fake.pem", label: str = "bench_key") -> Path:
    """The walkthrough's import of work/<key> (RSA or EC): a session wrapping key,
    importPrivateKey, getCaviumPrivKey. Returns the fake PEM, work/<fake>."""
    kmu = subprocess.Popen(["key_mgmt_util"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True, env=env, cwd=work, bufsize=1)

    def ask(line: str, pattern: str) -> re.Match:
        kmu.stdin.write(line + "\n")
        kmu.stdin.flush()
        seen = []
        for out in kmu.stdout:
            seen.append(out)
            if m := re.search(pattern, out):
                return m
            if "HSM Error" in out or out.startswith("Error:"):
                break
        sys.exit("bench: key_mgmt_util: " + "".join(seen))

    user, password = env["n3fips_password"].split(":", 1)
    ask(f"loginHSM -u CU -s {user} -p {password}", r"Cfm3LoginHSM returned: 0x00")
    wrap = ask("genSymKey -t 31 -s 16 -sess -l bench_wrap", r"Key Handle: (\d+)").group(1)
    handle = ask(f"importPrivateKey -f {key} -l {label} -w {wrap}",
                 r"Private Key Unwrapped.  Key Handle: (\d+)").group(1)
    ask(f"getCaviumPrivKey -k {handle} -out {fake}", r"getCaviumPrivKey returned: 0x00")
    kmu.stdin.write("exit\n")
    kmu.stdin.close()
    kmu.wait(timeout=60)
    return work / fake


def node_operations(env: dict) -> dict[int, int]:
    """Each node's private-key operations so far (getHSMInfo; nodes show their counters to
    logged-in sessions only)."""
    user, password = env["n3fips_password"].split(":", 1)
    out = run(["key_mgmt_util"], env=env, input=f"loginHSM -u CU -s {user} -p {password}\ngetHSMInfo\nexit\n")
    ops = {}
    node = None
    for line in out.splitlines():
        if m := re.match(r"^Node id (\d+):", line):
            node = int(m.group(1))
        elif (m := re.match(r"^\s+Private key operations: (\d+)", line)) and node is not None:
            ops[node] = int(m.group(1))
    return ops
