"""HAProxy 2.6 (Debian's package) terminating TLS with a fake PEM made by `openssl
genrsa`, run as the test's own processes from examples/haproxy/haproxy.cfg with only its
paths and ports replaced: master-worker (as Debian's unit runs it), the worker chrooted
to an empty directory as user haproxy, every file the provider reads inside the test's
root-only temporary directory, so the worker could read none of them after the drop.
curl and openssl s_client complete TLS 1.3, TLS 1.2 ECDHE-RSA and TLS 1.2 RSA key
exchange through HAProxy to a backend, each full handshake counted on the nodes (a
signature or a decryption); a master-worker reload (SIGUSR2) and an -sf reload keep
serving; the ssl-provider keywords work instead of OPENSSL_CONF; without the provider
the configuration check names the key."""

from __future__ import annotations

import os
import pwd
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import REPO, free_ports, process_alive, wait_until
from test_provider import OpenSSL, provider_module  # noqa: F401  (fixture)
from test_tls_offload import MODES, curl, s_client, tls  # noqa: F401  (fixture)

HAPROXY = "/usr/sbin/haproxy"
EXAMPLE = REPO / "examples" / "haproxy" / "haproxy.cfg"
BODY = "hello from the backend\n"
AS_ROOT = os.geteuid() == 0


def connectable(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def replace_once(text: str, old: str, new: str, source: Path) -> str:
    """One edit of an example; a line that moved or changed fails here, not later."""
    assert text.count(old) == 1, f"{source} should contain {old!r} exactly once"
    return text.replace(old, new)


def operation_counts(cluster) -> tuple[int, int]:
    """Signatures and decryptions served by all nodes together."""
    info = cluster.node_info().values()
    return sum(n.signs for n in info), sum(n.decrypts for n in info)


def assert_every_mode_counted(cluster, tls: OpenSSL, port: int, body: str):
    """curl and s_client in each mode; each full handshake adds exactly one private-key
    operation on the nodes: a signature (TLS 1.3, ECDHE-RSA) or a decryption (RSA key
    exchange). Session caches play no part: every client is a new process."""
    for mode in MODES:
        expected = (0, 1) if mode == "tls1.2-rsa" else (1, 0)
        for client in ("curl", "s_client"):
            before = operation_counts(cluster)
            if client == "curl":
                assert curl(tls, port, mode) == body
            else:
                out = s_client(tls, port, mode)
                assert "Verify return code: 0 (ok)" in out and body in out, out
                if mode == "tls1.3":
                    assert "New, TLSv1.3" in out and "Peer signature type: RSA-PSS" in out, out
                else:
                    assert re.search(r"Protocol *: TLSv1.2", out), out
                    assert re.search(rf"Cipher *: {MODES[mode]['s_client'][-1]}$", out, re.M), out
            after = operation_counts(cluster)
            assert (after[0] - before[0], after[1] - before[1]) == expected, (
                f"{client} {mode}: (signs, decrypts) went from {before} to {after}, expected +{expected}")


def children(pid: int) -> set[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return {int(p) for p in out.split()}


@pytest.fixture(scope="module")
def backend(tmp_path_factory):
    """The application behind HAProxy: Python's http.server on a free port."""
    root = tmp_path_factory.mktemp("backend")
    (root / "index.html").write_text(BODY)
    port = free_ports(1)[0]
    proc = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1",
                             "--directory", str(root)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: connectable(port), 20, "the backend to listen")
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=20)


class HAProxy:
    """HAProxy from the example configuration, in the foreground (-W: the master is this
    test's child), logging to its stderr, which goes to a file."""

    def __init__(self, tls: OpenSSL, name: str, backend_port: int, env: dict | None = None,
                 edit=lambda text: text):
        if not Path(HAPROXY).exists():
            pytest.fail("haproxy is not installed: `make deps` installs it")
        self.tls = tls
        self.dir = tls.dir / f"haproxy-{name}"
        self.dir.mkdir(exist_ok=True)
        self.chroot = self.dir / "chroot"  # empty: the worker needs nothing from disk
        self.chroot.mkdir(exist_ok=True)
        self.port = free_ports(1)[0]
        self.pem = self.dir / "web_server.pem"
        self.pem.write_text(Path(tls.path("server.crt")).read_text() + Path(tls.path("server_fake_PEM.key")).read_text())
        self.pem.chmod(0o640)
        self.pid_file = self.dir / "haproxy.pid"
        self.log_path = self.dir / "haproxy.log"
        self.env = env or tls.env
        text = EXAMPLE.read_text()
        for old, new in [
            ("    log /dev/log local0\n    log /dev/log local1 notice\n", "    log stderr format raw local0 info\n"),
            ("chroot /var/lib/haproxy", f"chroot {self.chroot}"),
            ("stats socket /run/haproxy/admin.sock", f"stats socket {self.dir}/admin.sock"),
            ("    daemon\n", ""),
            ("bind :443 ssl crt /etc/haproxy/certs/web_server.pem", f"bind 127.0.0.1:{self.port} ssl crt {self.pem}"),
            ("server app1 127.0.0.1:8080", f"server app1 127.0.0.1:{backend_port}"),
        ]:
            text = replace_once(text, old, new, EXAMPLE)
        if not AS_ROOT:
            # Only root can chroot and change users; the rest of the test still holds.
            text = re.sub(r"^    (chroot|user|group) .*\n", "", text, flags=re.M)
        self.conf = self.dir / "haproxy.cfg"
        self.conf.write_text(edit(text))
        self.proc: subprocess.Popen | None = None

    def check(self, env: dict | None = None) -> subprocess.CompletedProcess:
        return subprocess.run([HAPROXY, "-c", "-f", str(self.conf)], env=env or self.env, capture_output=True,
                              text=True, timeout=60)

    def start(self):
        self.log = self.log_path.open("a")
        self.proc = subprocess.Popen([HAPROXY, "-W", "-f", str(self.conf), "-p", str(self.pid_file)], env=self.env,
                                     stdout=self.log, stderr=subprocess.STDOUT)
        try:
            wait_until(lambda: connectable(self.port) or self.proc.poll() is not None, 30, "haproxy to listen")
            assert self.proc.poll() is None, f"haproxy exited ({self.proc.returncode}):\n{self.output()}"
            wait_until(lambda: len(self.workers()) == 1, 20, "haproxy's worker")
        except BaseException:
            self.stop()
            raise
        return self

    @property
    def master(self) -> int:
        return self.proc.pid

    def workers(self) -> set[int]:
        return children(self.master)

    def reload(self):
        """What `systemctl reload haproxy` does: SIGUSR2 to the master, which re-executes
        itself, reads everything again and forks a new worker."""
        old = self.workers()
        os.kill(self.master, signal.SIGUSR2)
        wait_until(lambda: (self.workers() - old) and not (self.workers() & old), 30,
                   "the new worker to replace the old one")
        wait_until(lambda: connectable(self.port), 20, "haproxy to listen after the reload")

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc:
            self.log.close()

    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


@pytest.fixture(scope="module")
def haproxy(tls, backend):
    server = HAProxy(tls, "main", backend).start()
    yield server
    server.stop()


def test_every_mode_is_served_with_the_hsm_key(cluster, tls, haproxy):
    assert_every_mode_counted(cluster, tls, haproxy.port, BODY)
    assert "SSL handshake failure" not in haproxy.output(), haproxy.output()


@pytest.mark.skipif(not AS_ROOT, reason="chroot and the user change need root (CI runs as root)")
def test_the_worker_runs_chrooted_as_haproxy_and_could_read_none_of_the_files(tls, haproxy):
    worker = next(iter(haproxy.workers()))
    uid = pwd.getpwnam("haproxy").pw_uid
    status = Path(f"/proc/{worker}/status").read_text()
    assert re.search(rf"^Uid:\s+{uid}\s+{uid}\s+{uid}\s+{uid}$", status, re.M), status
    assert os.readlink(f"/proc/{worker}/root") == str(haproxy.chroot)
    assert list(haproxy.chroot.iterdir()) == []
    # The key, cluster.cfg and the trust anchor are out of the haproxy user's reach even
    # without the chroot: the master read them before it forked the worker.
    for path in (haproxy.pem, tls.cluster.config, tls.cluster.ca, tls.conf):
        proc = subprocess.run(["setpriv", "--reuid", "haproxy", "--regid", "haproxy", "--clear-groups",
                               "cat", str(path)], capture_output=True, text=True)
        assert proc.returncode != 0 and "Permission denied" in proc.stderr, f"haproxy can read {path}"


def test_master_worker_reload_keeps_serving(cluster, tls, backend):
    server = HAProxy(tls, "reload", backend).start()
    try:
        first = server.workers()
        server.reload()
        assert server.workers().isdisjoint(first)
        assert_every_mode_counted(cluster, tls, server.port, BODY)
        server.reload()
        assert curl(tls, server.port, "tls1.3") == BODY
    finally:
        server.stop()
    # The one alert expected: the worker's exit when the test stops the master.
    alerts = [line for line in server.output().splitlines()
              if "[ALERT]" in line and "exited with code 143 (Terminated)" not in line]
    assert not alerts, server.output()


def test_sf_reload_keeps_serving(cluster, tls, backend):
    """Without master-worker: a daemon, replaced by a new one started with -sf OLD_PID."""
    server = HAProxy(tls, "sf", backend)
    argv = [HAPROXY, "-D", "-f", str(server.conf), "-p", str(server.pid_file)]
    subprocess.run(argv, env=server.env, check=True, timeout=60, capture_output=True)
    first = int(server.pid_file.read_text().split()[0])
    try:
        wait_until(lambda: connectable(server.port), 20, "haproxy to listen")
        assert curl(tls, server.port, "tls1.3") == BODY
        proc = subprocess.run(argv + ["-sf", str(first)], env=server.env, timeout=60, capture_output=True, text=True)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        second = int(server.pid_file.read_text().split()[0])
        assert second != first
        wait_until(lambda: not process_alive(first), 30, "the old haproxy to finish")
        assert_every_mode_counted(cluster, tls, server.port, BODY)
    finally:
        for pid_text in (server.pid_file.read_text().split() if server.pid_file.exists() else []):
            try:
                os.kill(int(pid_text), signal.SIGTERM)
            except ProcessLookupError:
                pass


def test_ssl_provider_keywords_instead_of_openssl_conf(cluster, tls, backend, provider_module):  # noqa: F811
    """HAProxy 2.6 loads the providers itself (global ssl-provider-path, ssl-provider):
    no OPENSSL_CONF, the cluster from CLOUDHSM_CONFIG."""
    modules = tls.dir / "haproxy-modules"
    modules.mkdir(exist_ok=True)
    if not (modules / "cloudhsm.so").exists():
        (modules / "cloudhsm.so").symlink_to(provider_module)
    env = dict(tls.env)
    env.pop("OPENSSL_CONF")
    assert env["CLOUDHSM_CONFIG"] == str(tls.cluster.config)

    def uncomment(text: str) -> str:
        text = replace_once(text, "    #ssl-provider-path /usr/lib/x86_64-linux-gnu/ossl-modules\n",
                            f"    ssl-provider-path {modules}\n", EXAMPLE)
        text = replace_once(text, "    #ssl-provider default\n", "    ssl-provider default\n", EXAMPLE)
        return replace_once(text, "    #ssl-provider cloudhsm\n", "    ssl-provider cloudhsm\n", EXAMPLE)

    server = HAProxy(tls, "ssl-provider", backend, env=env, edit=uncomment).start()
    try:
        for mode in ("tls1.3", "tls1.2-rsa"):
            before = operation_counts(cluster)
            assert curl(tls, server.port, mode) == BODY
            after = operation_counts(cluster)
            assert sum(after) - sum(before) == 1, f"{mode}: {before} -> {after}"
    finally:
        server.stop()


def test_without_the_provider_the_check_names_the_key(tls, backend):
    """The trap: HAProxy skips the key block it cannot read and then looks for the key
    in <crt>.key, so the message names a file that does not exist."""
    server = HAProxy(tls, "noprovider", backend)
    env = dict(tls.env)
    env["OPENSSL_CONF"] = "/dev/null"
    proc = server.check(env)
    assert proc.returncode != 0
    assert f"No Private Key found in '{server.pem}.key'" in proc.stdout + proc.stderr, proc.stdout + proc.stderr
    assert server.check().returncode == 0, "with the provider the same configuration is valid"


def test_wrong_password_starts_and_logs_the_reason(tls, backend):
    """A wrong password does not stop HAProxy from starting (the key loads without the
    network); each handshake fails and the example's error-log-format names the reason."""
    env = dict(tls.env)
    env["n3fips_password"] = env["n3fips_password"].split(":")[0] + ":not-the-password"
    server = HAProxy(tls, "wrongpw", backend, env=env).start()
    try:
        proc = subprocess.run(["curl", "-sS", "--cacert", tls.path("ca.crt"), f"https://localhost:{server.port}/"],
                              capture_output=True, text=True, timeout=30)
        assert proc.returncode != 0 and "alert internal error" in proc.stderr, proc.stdout + proc.stderr
        wait_until(lambda: re.search(r"https~ SSL handshake failure error:40800002:cloudhsm::HSM login failed",
                                     server.output()), 20, "haproxy to log the failed handshake")
    finally:
        server.stop()
