"""TLS offload end to end: real nginx (2 workers), the C example server and openssl
s_server serve TLS with a fake PEM; curl, openssl s_client and Python's ssl module
complete TLS 1.3 and TLS 1.2 (ECDHE-RSA and RSA key exchange) handshakes, verify the
certificate against its CA, and the nodes' counters show the HSMs did the private-key
work. Bad keys, credentials and an unreachable cluster are named in nginx's messages."""

from __future__ import annotations

import os
import re
import signal
import socket
import ssl
import subprocess
import threading
import time
from pathlib import Path

import pytest

from helpers import REPO, free_ports, wait_until
from test_provider import OpenSSL, private_operations, provider_module  # noqa: F401  (fixture)

NGINX = "/usr/sbin/nginx"
MODES = {
    "tls1.3": {"curl": ["--tlsv1.3"], "s_client": ["-tls1_3"], "python": (ssl.TLSVersion.TLSv1_3, None)},
    "tls1.2-ecdhe": {
        "curl": ["--tlsv1.2", "--tls-max", "1.2", "--ciphers", "ECDHE-RSA-AES128-GCM-SHA256"],
        "s_client": ["-tls1_2", "-cipher", "ECDHE-RSA-AES128-GCM-SHA256"],
        "python": (ssl.TLSVersion.TLSv1_2, "ECDHE-RSA-AES128-GCM-SHA256"),
    },
    "tls1.2-rsa": {
        "curl": ["--tlsv1.2", "--tls-max", "1.2", "--ciphers", "AES128-GCM-SHA256"],
        "s_client": ["-tls1_2", "-cipher", "AES128-GCM-SHA256"],
        "python": (ssl.TLSVersion.TLSv1_2, "AES128-GCM-SHA256"),
    },
}


@pytest.fixture(scope="module")
def tls(cluster, provider_module):  # noqa: F811
    """A software CA, an HSM key made by `openssl genrsa`, and its certificate (SAN
    localhost and 127.0.0.1) signed by the CA from a CSR the HSM signed."""
    if not Path(NGINX).exists():
        pytest.fail("nginx is not installed: `make deps` installs it")
    o = OpenSSL(cluster, provider_module)
    o.plain("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", o.path("ca.key"), "-subj", "/CN=Test CA",
            "-days", "2", "-out", o.path("ca.crt"))
    o.run("genrsa", "-out", o.path("server_fake_PEM.key"), "2048")
    o.run("req", "-new", "-key", o.path("server_fake_PEM.key"), "-subj", "/CN=localhost",
          "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1", "-out", o.path("server.csr"))
    o.plain("x509", "-req", "-in", o.path("server.csr"), "-CA", o.path("ca.crt"), "-CAkey", o.path("ca.key"),
            "-CAcreateserial", "-copy_extensions", "copy", "-days", "2", "-out", o.path("server.crt"))
    return o


class Nginx:
    """nginx (2 workers) serving one certificate with `key`, or every (certificate, key)
    pair in `certificates` from one server block."""

    def __init__(self, tls: OpenSSL, name: str, key: str | None = None, session_cache: bool = False,
                 env: dict | None = None, certificates: list[tuple[str, str]] | None = None,
                 ciphers: str = "ECDHE-RSA-AES128-GCM-SHA256:AES128-GCM-SHA256"):
        self.tls = tls
        self.dir = tls.dir / f"nginx-{name}"
        (self.dir / "logs").mkdir(parents=True, exist_ok=True)
        self.port = free_ports(1)[0]
        self.env = env or tls.env
        cache = "ssl_session_cache shared:SSL:1m; ssl_session_tickets on;" if session_cache else \
            "ssl_session_cache off; ssl_session_tickets off;"
        pairs = certificates or [(tls.path("server.crt"), key)]
        certs = "\n        ".join(f"ssl_certificate {cert}; ssl_certificate_key {k};" for cert, k in pairs)
        self.conf = self.dir / "nginx.conf"
        self.conf.write_text(f"""
worker_processes 2;
pid {self.dir}/nginx.pid;
error_log {self.dir}/logs/error.log info;
env n3fips_password;
env CLOUDHSM_PIN;
env CLOUDHSM_CONFIG;
events {{ worker_connections 512; }}
http {{
    access_log off;
    keepalive_timeout 0;
    client_body_temp_path {self.dir}/tmp;
    proxy_temp_path {self.dir}/tmp;
    fastcgi_temp_path {self.dir}/tmp;
    uwsgi_temp_path {self.dir}/tmp;
    scgi_temp_path {self.dir}/tmp;
    server {{
        listen 127.0.0.1:{self.port} ssl;
        {certs}
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_ciphers {ciphers};
        {cache}
        location / {{ return 200 "hello from nginx\\n"; }}
    }}
}}
""")

    def command(self, *args, check=True) -> subprocess.CompletedProcess:
        proc = subprocess.run([NGINX, "-c", str(self.conf), "-p", str(self.dir), *args], env=self.env,
                              capture_output=True, text=True, timeout=60)
        if check and proc.returncode != 0:
            raise AssertionError(f"nginx {' '.join(args)} failed:\n{proc.stdout}{proc.stderr}\n{self.error_log()}")
        return proc

    def start(self):
        self.command()
        wait_until(lambda: (self.dir / "nginx.pid").exists(), 10, "nginx to write its pid file")
        wait_until(self._listening, 10, "nginx to listen")
        return self

    def _listening(self) -> bool:
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
            return True
        except OSError:
            return False

    def stop(self):
        pid_file = self.dir / "nginx.pid"
        if pid_file.exists():
            try:
                os.kill(int(pid_file.read_text().strip()), signal.SIGQUIT)
            except (ProcessLookupError, ValueError):
                pass
            wait_until(lambda: not pid_file.exists(), 20, "nginx to stop")

    def error_log(self) -> str:
        f = self.dir / "logs" / "error.log"
        return f.read_text(errors="replace") if f.exists() else ""

    def worker_pids(self) -> list[int]:
        master = int((self.dir / "nginx.pid").read_text().strip())
        out = subprocess.run(["pgrep", "-P", str(master)], capture_output=True, text=True).stdout
        return [int(p) for p in out.split()]


@pytest.fixture(scope="module")
def nginx(tls):
    server = Nginx(tls, "main", tls.path("server_fake_PEM.key")).start()
    yield server
    server.stop()


def curl(tls: OpenSSL, port: int, mode: str, extra=(), modes: dict = MODES, env: dict | None = None) -> str:
    proc = subprocess.run(["curl", "-sS", "--cacert", tls.path("ca.crt"), *modes[mode]["curl"], *extra,
                           f"https://localhost:{port}/"], capture_output=True, text=True, timeout=30, env=env)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def s_client(tls: OpenSSL, port: int, mode: str, extra=(), modes: dict = MODES) -> str:
    proc = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-servername", "localhost",
                           "-CAfile", tls.path("ca.crt"), "-verify_return_error", "-verify_hostname", "localhost", "-ign_eof",
                           *modes[mode]["s_client"], *extra],
                          input="GET / HTTP/1.0\r\nHost: localhost\r\n\r\n", capture_output=True, text=True,
                          timeout=30, env={**os.environ, "OPENSSL_CONF": "/dev/null"})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def python_get(tls: OpenSSL, port: int, mode: str, modes: dict = MODES) -> tuple[str, str, str, bytes]:
    """The page, the protocol version, the cipher and the server's certificate (DER)."""
    version, ciphers = modes[mode]["python"]
    context = ssl.create_default_context(cafile=tls.path("ca.crt"))
    context.minimum_version = version
    context.maximum_version = version
    if ciphers:
        context.set_ciphers(ciphers)
    with socket.create_connection(("127.0.0.1", port), timeout=30) as raw:
        with context.wrap_socket(raw, server_hostname="localhost") as s:
            s.sendall(b"GET / HTTP/1.0\r\nHost: localhost\r\n\r\n")
            data = b""
            while chunk := s.recv(4096):
                data += chunk
            return data.decode(errors="replace"), s.version(), s.cipher()[0], s.getpeercert(binary_form=True)


@pytest.mark.parametrize("mode", list(MODES))
def test_nginx_serves_every_client_in_every_mode(cluster, tls, nginx, mode):
    before = private_operations(cluster)
    assert curl(tls, nginx.port, mode) == "hello from nginx\n"
    out = s_client(tls, nginx.port, mode)
    assert "Verify return code: 0 (ok)" in out and "hello from nginx" in out, out
    if mode == "tls1.3":
        assert "TLSv1.3" in out and "Peer signature type: RSA-PSS" in out, out
    else:
        assert re.search(r"Protocol *: TLSv1.2", out) and MODES[mode]["s_client"][-1] in out, out
    body, version, cipher, _ = python_get(tls, nginx.port, mode)
    assert "hello from nginx" in body
    assert version == ("TLSv1.3" if mode == "tls1.3" else "TLSv1.2")
    if mode != "tls1.3":
        assert cipher == MODES[mode]["python"][1]
    # Three full handshakes (session caches and tickets are off): at least one private
    # operation each on the HSMs.
    assert private_operations(cluster) - before >= 3


def test_tls12_rsa_key_exchange_decrypts_on_the_hsm(cluster, tls, nginx):
    def decrypts():
        return sum(int(re.search(r"decrypt (\d+)", n.fields["Private key operations"]).group(1))
                   for n in cluster.node_info().values())
    before = decrypts()
    for _ in range(3):
        curl(tls, nginx.port, "tls1.2-rsa")
    assert decrypts() - before == 3


def test_resumed_handshakes_need_no_hsm_operation(cluster, tls):
    server = Nginx(tls, "resume", tls.path("server_fake_PEM.key"), session_cache=True).start()
    try:
        for mode in ("tls1.3", "tls1.2-ecdhe"):
            session = tls.path(f"session-{mode}.pem")
            before = private_operations(cluster)
            out = s_client(tls, server.port, mode, extra=["-sess_out", session])
            assert "New, " in out, out
            for _ in range(5):
                out = s_client(tls, server.port, mode, extra=["-sess_in", session])
                assert "Reused, " in out and "hello from nginx" in out, out
            # One full handshake; the five that follow resume without the HSM.
            assert private_operations(cluster) - before == 1
    finally:
        server.stop()


def test_workers_use_their_own_connections_and_reload_keeps_working(cluster, tls, nginx):
    for _ in range(8):
        assert curl(tls, nginx.port, "tls1.3") == "hello from nginx\n"
    old_workers = set(nginx.worker_pids())
    nginx.command("-s", "reload")
    wait_until(lambda: set(nginx.worker_pids()).isdisjoint(old_workers) and len(nginx.worker_pids()) == 2, 20,
               "nginx to replace its workers after reload")
    for mode in MODES:
        assert curl(tls, nginx.port, mode) == "hello from nginx\n"
    assert "[crit]" not in nginx.error_log() and "[alert]" not in nginx.error_log(), nginx.error_log()


def test_c_example_server_and_s_server(cluster, tls, tmp_path):
    program = tmp_path / "tls_server"
    subprocess.run(["cc", "-Wall", "-o", str(program), str(REPO / "examples" / "tls_server.c"), "-lssl", "-lcrypto"],
                   check=True)
    for argv in (
        [str(program), "{port}", tls.path("server.crt"), tls.path("server_fake_PEM.key")],
        ["openssl", "s_server", "-accept", "127.0.0.1:{port}", "-cert", tls.path("server.crt"),
         "-key", tls.path("server_fake_PEM.key"), "-www", "-no_cache"],
    ):
        port = free_ports(1)[0]
        server = subprocess.Popen([a.replace("{port}", str(port)) for a in argv], env=tls.env,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            wait_until(lambda: _connectable(port), 20, f"{argv[0]} to listen")
            for mode in MODES:
                before = private_operations(cluster)
                body, version, _, _ = python_get(tls, port, mode)
                assert "200" in body.splitlines()[0], body
                out = s_client(tls, port, mode)
                assert "Verify return code: 0 (ok)" in out
                assert private_operations(cluster) - before >= 2
        finally:
            server.terminate()
            server.wait(timeout=20)


def _connectable(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def test_handshakes_continue_while_a_node_is_killed(cluster, tls, nginx):
    """200 full handshakes against nginx (2 workers) while one of the three nodes dies."""
    results: list[str] = []
    lock = threading.Lock()

    def client(count: int):
        for i in range(count):
            mode = list(MODES)[i % 3]
            try:
                body, _, _, _ = python_get(tls, nginx.port, mode)
                outcome = "ok" if "hello from nginx" in body else f"bad body {body!r}"
            except Exception as error:  # noqa: BLE001 - every failure counts
                outcome = f"{mode}: {error}"
            with lock:
                results.append(outcome)

    threads = [threading.Thread(target=client, args=(50,)) for _ in range(4)]
    for t in threads:
        t.start()
    wait_until(lambda: len(results) >= 40, 60, "the first handshakes")
    # Kill the node that has served the most private operations: the one doing the work.
    info = cluster.node_info()
    busiest = max(info, key=lambda n: int(re.match(r"(\d+)", info[n].fields["Private key operations"]).group(1)))
    cluster.kill(busiest)
    for t in threads:
        t.join(timeout=300)
    cluster.restart()
    failures = [r for r in results if r != "ok"]
    assert len(results) == 200 and not failures, f"{len(failures)} failed handshakes: {failures[:5]}"


def test_corrupt_fake_pem_stops_nginx_with_a_clear_message(tls):
    Path(tls.path("corrupt.key")).write_text(
        "-----BEGIN CLOUDHSM KEY REFERENCE-----\nMAMCAQI=\n-----END CLOUDHSM KEY REFERENCE-----\n")
    server = Nginx(tls, "corrupt", tls.path("corrupt.key"))
    proc = server.command("-t", check=False)
    assert proc.returncode != 0
    assert "malformed CloudHSM key reference" in proc.stderr, proc.stderr


def test_wrong_credentials_are_named_in_the_error_log(tls):
    env = dict(tls.env)
    env["n3fips_password"] = env["n3fips_password"].split(":")[0] + ":not-the-password"
    server = Nginx(tls, "wrongpw", tls.path("server_fake_PEM.key"), env=env).start()
    try:
        with pytest.raises((ssl.SSLError, OSError)):
            python_get(tls, server.port, "tls1.3")
        wait_until(lambda: "HSM login failed" in server.error_log(), 10, "nginx to log the login failure")
    finally:
        server.stop()


def test_unreachable_cluster_is_named_in_the_error_log(tls, tmp_path):
    ports = free_ports(3)
    cfg = tmp_path / "down.cfg"
    cfg.write_text(f"cluster_id = local-dev\ntrust_anchor = {tls.cluster.ca}\n"
                   + "".join(f"node = {i} 127.0.0.1:{p}\n" for i, p in enumerate(ports))
                   + "connect_timeout_ms = 500\n")
    conf = tmp_path / "down.cnf"
    conf.write_text(tls.conf.read_text().replace(str(tls.cluster.config), str(cfg)))
    env = dict(tls.env)
    env["OPENSSL_CONF"] = str(conf)
    # CLOUDHSM_CONFIG would win over cluster_config (test_client_hardening.py).
    env.pop("CLOUDHSM_CONFIG")
    server = Nginx(tls, "down", tls.path("server_fake_PEM.key"), env=env).start()
    try:
        with pytest.raises((ssl.SSLError, OSError)):
            python_get(tls, server.port, "tls1.3")
        wait_until(lambda: "no HSM node reachable" in server.error_log(), 10, "nginx to log the unreachable cluster")
    finally:
        server.stop()
