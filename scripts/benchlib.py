"""What the benchmark scripts share: free loopback ports and running a command that must
succeed."""

from __future__ import annotations

import socket
import subprocess
import sys


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
