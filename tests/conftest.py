"""Integration fixtures: a real 3-node cluster started by scripts/cluster.sh on ports
picked at run time, the real tools, the real openssl binary. Nothing is built here:
`make build` (or `make test`) builds first; BIN_DIR may name the binaries' directory."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from helpers import (
    CLUSTER_SH,
    REPO,
    TOOL_TIMEOUT,
    KmuSession,
    assert_no_crash,
    find_bin_dir,
    free_ports,
    kill_pid,
    parse_hsm_info,
    process_alive,
    status_codes,
    wait_until,
)

NODES = 3

# A shell that sourced .cluster/env points OPENSSL_CONF at the dev cluster's provider;
# these tests run plain openssl unless a test sets OPENSSL_CONF itself.
os.environ.pop("OPENSSL_CONF", None)
# `make test CLUSTER_HOSTS=...` must not move every test's cluster off 127.0.0.1.
os.environ.pop("CLUSTER_HOSTS", None)


class Cluster:
    def __init__(self, directory: Path, ports: list[int], bin_dir: Path, hosts: list[str] | None = None):
        self.dir = directory
        self.ports = ports
        # CLUSTER_HOSTS for scripts/cluster.sh; None: every node on 127.0.0.1.
        self.hosts = hosts
        self.bin_dir = bin_dir
        self.kmu_path = str(bin_dir / "key_mgmt_util")
        self.cmu_path = str(bin_dir / "cloudhsm_mgmt_util")
        self.config = directory / "cluster.cfg"
        self.ca = directory / "customerCA.crt"
        self.work = directory / "work"
        self.work.mkdir(parents=True, exist_ok=True)

    # ---------------------------------------------------------------- the script

    def script(self, command: str, check: bool = True) -> subprocess.CompletedProcess:
        env = dict(os.environ)
        env.update(
            CLUSTER_DIR=str(self.dir),
            CLUSTER_PORTS=" ".join(map(str, self.ports)),
            CLUSTER_HOSTS=" ".join(self.hosts or []),
            BIN_DIR=str(self.bin_dir),
        )
        proc = subprocess.run(
            [str(CLUSTER_SH), command], env=env, capture_output=True, text=True, timeout=300, cwd=REPO
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"scripts/cluster.sh {command} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
            )
        return proc

    def start(self):
        out = self.script("start")
        self.load_env()
        return out

    def stop(self):
        return self.script("stop", check=False)

    def load_env(self):
        text = (self.dir / "env").read_text()
        self.cu_user = re.search(r"^export CLOUDHSM_CU_USER=(\S+)$", text, re.M).group(1)
        self.cu_password = re.search(r"^export CLOUDHSM_CU_PASSWORD=(\S+)$", text, re.M).group(1)
        self.co_password = (self.dir / "co_password").read_text().strip()
        self.env = dict(os.environ)
        self.env.update(
            PATH=f"{self.bin_dir}:{os.environ.get('PATH', '')}",
            CLOUDHSM_CONFIG=str(self.config),
            n3fips_password=f"{self.cu_user}:{self.cu_password}",
        )

    # ---------------------------------------------------------------- nodes

    def pid(self, node: int) -> int | None:
        f = self.dir / f"node{node}.pid"
        if not f.exists():
            return None
        pid = int(f.read_text().strip())
        return pid if process_alive(pid) else None

    def kill(self, node: int):
        """kill -9 one node and wait until it is gone."""
        pid = self.pid(node)
        assert pid, f"node {node} is not running"
        kill_pid(pid)
        wait_until(lambda: not process_alive(pid), 10, f"node {node} (pid {pid}) to die")

    def restart(self):
        """scripts/cluster.sh start: restarts only the nodes that are not running."""
        return self.start()

    def log(self, node: int) -> str:
        return (self.dir / f"node{node}.log").read_text(errors="replace")

    # ---------------------------------------------------------------- tools

    def login_line(self, user: str | None = None, password: str | None = None) -> str:
        return f"loginHSM -u CU -s {user or self.cu_user} -p {password or self.cu_password}"

    def kmu(self, lines: list[str], login: bool = True, env: dict | None = None, cwd: Path | None = None,
            timeout: float = TOOL_TIMEOUT) -> str:
        """Runs key_mgmt_util with the commands on stdin (a login first, `exit` last);
        returns everything it printed."""
        script = ([self.login_line()] if login else []) + list(lines)
        if not script or script[-1] != "exit":
            script.append("exit")
        proc = subprocess.run(
            [self.kmu_path], input="\n".join(script) + "\n", capture_output=True, text=True,
            env=env or self.env, cwd=cwd or self.work, timeout=timeout,
        )
        out = proc.stdout + proc.stderr
        assert_no_crash(proc.returncode, out)
        self.last_returncode = proc.returncode
        return out

    def session(self, login: bool = True, env: dict | None = None, cwd: Path | None = None) -> KmuSession:
        s = KmuSession([self.kmu_path], env or self.env, cwd or self.work)
        if login:
            s.send(self.login_line())
            s.expect(r"^Cfm3LoginHSM returned: 0x00 : HSM Return: SUCCESS")
        return s

    def cmu(self, lines: list[str], login_co: bool = True, timeout: float = TOOL_TIMEOUT) -> str:
        script = ([f"loginHSM CO admin {self.co_password}"] if login_co else []) + list(lines)
        if login_co:
            script.append("logoutHSM")
        script.append("quit")
        proc = subprocess.run(
            [self.cmu_path], input="\n".join(script) + "\n", capture_output=True, text=True,
            env=self.env, cwd=self.work, timeout=timeout,
        )
        out = proc.stdout + proc.stderr
        assert_no_crash(proc.returncode, out)
        return out

    def create_cu(self, name: str, password: str):
        out = self.cmu([f"createUser CU {name} {password}"])
        assert f"Creating User {name}(CU) on {NODES} nodes" in out, out
        assert out.count("createUser success on server") == NODES, out

    def node_info(self) -> dict:
        """getHSMInfo through key_mgmt_util, parsed per node id."""
        out = self.kmu(["getHSMInfo"])
        return parse_hsm_info(out)

    def assert_serves(self, nodes=range(NODES)):
        """Every node answers getHSMInfo (after a login that succeeded on all of them)."""
        out = self.kmu(["getHSMInfo"])
        codes = status_codes(out.split("Command:  getHSMInfo")[0])
        for n in nodes:
            assert codes.get(n) == 0, f"node {n} did not accept the login:\n{out}"
        info = parse_hsm_info(out)
        for n in nodes:
            assert n in info and info[n].fields.get("Cluster id") == "local-dev", (
                f"node {n} missing from getHSMInfo:\n{out}"
            )
            assert self.pid(n), f"node {n} process is gone; log:\n{self.log(n)}"
        return info

    def node_env(self, node: int) -> dict:
        """The tools' environment with a cluster.cfg that names only `node`, so every
        request (and key_mgmt_util's findKey) asks that one node."""
        cfg = self.dir / f"only_node{node}.cfg"
        if not cfg.exists():
            lines = [
                line for line in self.config.read_text().splitlines()
                if not re.match(r"\s*node\s*=", line) or re.match(rf"\s*node\s*=\s*{node}\s", line)
            ]
            cfg.write_text("\n".join(lines) + "\n")
        env = dict(self.env)
        env["CLOUDHSM_CONFIG"] = str(cfg)
        return env

    def kmu_on(self, node: int, lines: list[str], login: bool = True, timeout: float = TOOL_TIMEOUT) -> str:
        """key_mgmt_util against one node only."""
        return self.kmu(lines, login=login, env=self.node_env(node), timeout=timeout)

    def wait_all_up(self, timeout: float = 60):
        """Polls until a login succeeds on every node."""
        def ok():
            out = self.kmu(["getHSMInfo"])
            codes = status_codes(out.split("Command:  getHSMInfo")[0])
            return all(codes.get(n) == 0 for n in range(NODES)) and out
        return wait_until(ok, timeout, "every node to accept a login", interval=0.5)


def _openssl(*args, cwd=None, check=True, input=None) -> subprocess.CompletedProcess:
    proc = subprocess.run(["openssl", *args], capture_output=True, cwd=cwd, input=input)
    if check and proc.returncode != 0:
        raise AssertionError(f"openssl {' '.join(args)} failed:\n{proc.stderr.decode(errors='replace')}")
    return proc


@pytest.fixture(scope="session")
def bin_dir() -> Path:
    d = find_bin_dir()
    for name in ("hsmd", "key_mgmt_util", "cloudhsm_mgmt_util"):
        if not (d / name).exists():
            pytest.fail(f"{d / name} not found: run `make build` first (or set BIN_DIR)")
    return d


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, bin_dir):
    """A fresh 3-node cluster per test module, stopped at the end whatever happens."""
    directory = tmp_path_factory.mktemp("cluster")
    c = Cluster(directory, free_ports(NODES), bin_dir)
    try:
        c.start()
        yield c
    finally:
        out = c.stop()
        for n in range(NODES):
            pid_file = directory / f"node{n}.pid"
            assert not pid_file.exists(), f"cluster.sh stop left {pid_file}:\n{out.stdout}{out.stderr}"


@pytest.fixture(scope="session")
def openssl():
    return _openssl


def crash_excerpt(log: str) -> str:
    """The crash line and the crashed thread's frames of a Swift backtrace, else the tail."""
    lines = log.splitlines()
    out = [l for l in lines if "crashed:" in l and "***" in l][-1:]
    for i, line in enumerate(lines):
        if re.match(r"^Thread \d+ crashed:", line):
            out = out + lines[i : i + 14]
    return "\n".join(out) if out else "\n".join(lines[-40:])


@pytest.fixture(autouse=True)
def _nodes_survive(request):
    """After each test that uses a cluster: every node must still run. A node that died
    is restarted (so the next test starts clean) and this test is reported as the one
    that killed it, with the end of the node's log."""
    yield
    if "cluster" not in request.fixturenames:
        return
    c = request.getfixturevalue("cluster")
    dead = [n for n in range(NODES) if c.pid(n) is None]
    if not dead:
        return
    logs = "\n".join(f"--- node {n} log:\n{crash_excerpt(c.log(n))}" for n in dead)
    try:
        c.restart()
    except AssertionError as e:
        logs += f"\nrestart failed too: {e}"
    pytest.fail(f"node(s) {dead} died during this test (tests that kill nodes restart them)\n{logs}")
