"""Apache httpd 2.4 (Debian's apache2) terminating TLS with the fake PEM of a key
imported with key_mgmt_util, as an operator sets it up on Debian: a copy of
/etc/apache2 as this instance's APACHE_CONFDIR, `a2enmod ssl`, the site from
examples/apache/cloudhsm-ssl.conf, examples/apache/envvars appended to its envvars, and
apache2ctl to start it and to restart it gracefully. The test's own environment holds no
OPENSSL_CONF, CLOUDHSM_CONFIG or password: only envvars brings them to httpd. The
children run as www-data and every file the provider reads is in the test's root-only
temporary directory. curl and openssl s_client complete TLS 1.3, TLS 1.2 ECDHE-RSA and
TLS 1.2 RSA key exchange, each full handshake counted on the nodes; without the provider
httpd refuses to start and says which key."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from helpers import REPO, free_ports, wait_until
from test_haproxy import assert_every_mode_counted, children, connectable, replace_once
from test_provider import OpenSSL, provider_module  # noqa: F401  (fixture)
from test_tls_offload import MODES, curl, s_client, tls  # noqa: F401  (fixture)

APACHE2CTL = "/usr/sbin/apache2ctl"
SITE = REPO / "examples" / "apache" / "cloudhsm-ssl.conf"
ENVVARS = REPO / "examples" / "apache" / "envvars"
BODY = "hello from apache\n"
PROVIDER_ENV = ("OPENSSL_CONF", "CLOUDHSM_CONFIG", "n3fips_password", "CLOUDHSM_PIN")

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="apache2ctl and the www-data children need root "
                                "(CI runs as root)")


@pytest.fixture(scope="module")
def imported_key(cluster, tls):
    """The walkthrough's import path: a software key wrapped into the HSMs with
    key_mgmt_util, its fake PEM from getCaviumPrivKey, a certificate from the test CA
    for a CSR the HSM signed."""
    tls.plain("genrsa", "-out", tls.path("apache_existing.key"), "2048")
    s = cluster.session(env=cluster.env, cwd=tls.dir)
    try:
        wrap = s.make_wrapping_key()
        key = s.import_private_key("apache_existing.key", "apache_imported_key", wrap)
        s.finish([f"getCaviumPrivKey -k {key} -out apache_fake_PEM.key", "exit"])
    finally:
        s.close()
    assert Path(tls.path("apache_fake_PEM.key")).read_text().startswith("-----BEGIN CLOUDHSM KEY REFERENCE-----")
    tls.run("req", "-new", "-key", tls.path("apache_fake_PEM.key"), "-subj", "/CN=localhost",
            "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1", "-out", tls.path("apache.csr"))
    tls.plain("x509", "-req", "-in", tls.path("apache.csr"), "-CA", tls.path("ca.crt"), "-CAkey", tls.path("ca.key"),
              "-CAcreateserial", "-copy_extensions", "copy", "-days", "2", "-out", tls.path("apache.crt"))
    # The same public key in the certificate and in the software key that was imported.
    assert tls.plain("x509", "-in", tls.path("apache.crt"), "-noout", "-pubkey").stdout == \
        tls.plain("pkey", "-in", tls.path("apache_existing.key"), "-pubout").stdout
    return tls.path("apache_fake_PEM.key")


@pytest.fixture(scope="module")
def docroot():
    """www-data must read the page: a directory outside the root-only test tree."""
    directory = Path(tempfile.mkdtemp(prefix="cloudhsm-apache-www-"))
    try:
        directory.chmod(0o755)
        (directory / "index.html").write_text(BODY)
        (directory / "index.html").chmod(0o644)
        yield directory
    finally:
        shutil.rmtree(directory)


class Apache:
    """One Debian apache2 instance in its own APACHE_CONFDIR, run by apache2ctl."""

    def __init__(self, tls: OpenSSL, name: str, key: str, docroot: Path, provider: bool = True):
        if not Path(APACHE2CTL).exists():
            pytest.fail("apache2 is not installed: `make deps` installs it")
        self.tls = tls
        self.dir = tls.dir / f"apache-{name}"
        self.confdir = self.dir / "apache2"
        shutil.copytree("/etc/apache2", self.confdir, symlinks=True)
        for d in ("run", "lock", "log", "state"):
            (self.dir / d).mkdir()
        self.port = free_ports(1)[0]
        # Only this instance's listener and site: Debian's port 80 site goes.
        (self.confdir / "ports.conf").write_text(f"Listen 127.0.0.1:{self.port}\n")
        for link in (self.confdir / "sites-enabled").iterdir():
            link.unlink()
        (self.confdir / "conf-enabled" / "test-docroot.conf").write_text(
            f"<Directory {docroot}>\n    Require all granted\n</Directory>\n")
        site = SITE.read_text()
        for old, new in [
            ("<VirtualHost *:443>", f"<VirtualHost 127.0.0.1:{self.port}>"),
            ("ServerName www.example.com", "ServerName localhost"),
            ("DocumentRoot /var/www/html", f"DocumentRoot {docroot}"),
            ("/etc/ssl/certs/web_server.crt", tls.path("apache.crt")),
            ("/etc/ssl/private/web_server_fake_PEM.key", key),
        ]:
            site = replace_once(site, old, new, SITE)
        (self.confdir / "sites-available" / "cloudhsm-ssl.conf").write_text(site)
        # The credentials file of the example, root-only, in this test's directory.
        credentials = self.dir / "credentials"
        credentials.write_text(f"n3fips_password={tls.env['n3fips_password']}\n")
        credentials.chmod(0o600)
        snippet = ENVVARS.read_text()
        for old, new in [
            ("/etc/cloudhsm/provider.cnf", str(tls.conf)),
            ("/etc/cloudhsm/cluster.cfg", str(tls.cluster.config)),
        ]:
            snippet = replace_once(snippet, old, new, ENVVARS)
        snippet = snippet.replace("/etc/cloudhsm/credentials", str(credentials))
        if not provider:
            snippet = replace_once(snippet, "export OPENSSL_CONF=", "# export OPENSSL_CONF=", ENVVARS)
        with (self.confdir / "envvars").open("a") as f:
            f.write(f"""
# This test's instance: its own run, lock and log directories.
export APACHE_PID_FILE={self.dir}/run/apache2.pid
export APACHE_RUN_DIR={self.dir}/run
export APACHE_LOCK_DIR={self.dir}/lock
export APACHE_LOG_DIR={self.dir}/log
""")
            f.write(snippet)
        self.env = {k: v for k, v in os.environ.items() if k not in PROVIDER_ENV}
        self.env.update(
            APACHE_CONFDIR=str(self.confdir),
            APACHE_STATE_DIRECTORY=str(self.dir / "state"),  # a2enmod's bookkeeping stays here
            # apache2ctl hands `start` to systemctl when PID 1 is systemd; this instance is
            # not a service.
            APACHE_STARTED_BY_SYSTEMD="true",
        )
        self.run(["/usr/sbin/a2enmod", "-q", "ssl"])
        self.run(["/usr/sbin/a2ensite", "-q", "cloudhsm-ssl"])

    def run(self, argv: list[str], check: bool = True) -> subprocess.CompletedProcess:
        proc = subprocess.run(argv, env=self.env, capture_output=True, text=True, timeout=120)
        if check and proc.returncode != 0:
            raise AssertionError(f"{' '.join(argv)} failed ({proc.returncode}):\n{proc.stdout}{proc.stderr}\n"
                                 f"{self.error_log()}")
        return proc

    def ctl(self, command: str, check: bool = True) -> subprocess.CompletedProcess:
        return self.run([APACHE2CTL, command], check=check)

    def start(self):
        self.ctl("start")
        # The detached parent writes its pid file a moment after apache2ctl returns.
        wait_until(lambda: (self.dir / "run" / "apache2.pid").exists(), 30, "apache's pid file")
        wait_until(lambda: connectable(self.port), 30, "apache to listen")
        wait_until(lambda: len(self.children()) >= 1, 20, "apache's children")
        return self

    @property
    def parent(self) -> int:
        return int((self.dir / "run" / "apache2.pid").read_text().strip())

    def children(self) -> set[int]:
        return children(self.parent)

    def stop(self):
        pid_file = self.dir / "run" / "apache2.pid"
        if pid_file.exists():
            self.ctl("stop", check=False)
            wait_until(lambda: not pid_file.exists(), 30, "apache to stop")

    def error_log(self) -> str:
        logs = sorted((self.dir / "log").glob("*error.log"))
        return "".join(f"--- {p.name}:\n{p.read_text(errors='replace')}" for p in logs)


@pytest.fixture(scope="module")
def apache(tls, imported_key, docroot):
    server = Apache(tls, "main", imported_key, docroot)
    try:
        yield server.start()
    finally:
        server.stop()


def test_every_mode_is_served_with_the_imported_key(cluster, tls, apache):
    assert_every_mode_counted(cluster, tls, apache.port, BODY)
    assert "[ssl:error]" not in apache.error_log() and "[ssl:emerg]" not in apache.error_log(), apache.error_log()


def test_the_environment_came_from_envvars_and_children_run_as_www_data(tls, apache):
    # The parent (root) has the provider's environment from envvars alone: the test's
    # own environment has none of it.
    environ = Path(f"/proc/{apache.parent}/environ").read_bytes().split(b"\0")
    assert f"OPENSSL_CONF={tls.conf}".encode() in environ
    assert f"CLOUDHSM_CONFIG={tls.cluster.config}".encode() in environ
    assert any(e.startswith(b"n3fips_password=") for e in environ)
    assert not any(k in apache.env for k in PROVIDER_ENV)
    uid = int(subprocess.run(["id", "-u", "www-data"], capture_output=True, text=True, check=True).stdout)
    for child in apache.children():
        status = Path(f"/proc/{child}/status").read_text()
        assert re.search(rf"^Uid:\s+{uid}\s+{uid}\s+{uid}\s+{uid}$", status, re.M), status
    # What the provider reads is out of www-data's reach: the parent read it before the fork.
    for path in (Path(tls.path("apache_fake_PEM.key")), tls.cluster.config, tls.cluster.ca, tls.conf,
                 apache.dir / "credentials"):
        proc = subprocess.run(["setpriv", "--reuid", "www-data", "--regid", "www-data", "--clear-groups",
                               "cat", str(path)], capture_output=True, text=True)
        assert proc.returncode != 0 and "Permission denied" in proc.stderr, f"www-data can read {path}"


def test_graceful_restart_keeps_serving(cluster, tls, apache):
    parent, first = apache.parent, apache.children()
    apache.ctl("graceful")
    wait_until(lambda: apache.children() and apache.children().isdisjoint(first), 30,
               "apache to replace its children")
    assert apache.parent == parent
    assert_every_mode_counted(cluster, tls, apache.port, BODY)
    assert "AH00493: SIGUSR1 received.  Doing graceful restart" in apache.error_log()


def test_without_the_provider_apache_refuses_to_start_and_names_the_key(tls, imported_key, docroot):
    server = Apache(tls, "noprovider", imported_key, docroot, provider=False)
    # The trap: the configuration test does not load keys.
    assert "Syntax OK" in server.ctl("configtest").stderr
    proc = server.ctl("start", check=False)
    assert proc.returncode != 0
    log = server.error_log()
    assert re.search(rf"AH02564: Failed to configure encrypted \(\?\) private key localhost:\d+:0, check "
                     rf"{re.escape(imported_key)}$", log, re.M), log
    assert "No supported data to decode" in log, log
    assert not (server.dir / "run" / "apache2.pid").exists()
