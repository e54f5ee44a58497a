"""ECDSA certificates whose keys are in the HSMs, served by real nginx (2 workers): TLS 1.3
with a P-256 key (ecdsa_secp256r1_sha256), a P-384 key (ecdsa_secp384r1_sha384) and a
P-521 key (ecdsa_secp521r1_sha512), and TLS 1.2 ECDHE-ECDSA, each verified by curl, openssl s_client and Python's ssl; then one
server block with an RSA and an ECDSA certificate (both keys fake PEMs), where a client
that offers only RSA signature algorithms gets the RSA certificate and one that prefers
ECDSA gets the ECDSA one. The nodes' counters (RSA and ECDSA signatures apart) show that
every full handshake signed in the HSMs, with the key of the certificate served."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import pem_body
from test_provider import provider_module  # noqa: F401  (fixture)
from test_tls_offload import MODES, Nginx, curl, python_get, s_client, tls  # noqa: F401  (fixture)

HSM = ["-propquery", "provider=cloudhsm"]
# What TLS 1.3 signs with for each curve (the sigalg names the curve and the digest).
CURVES = {"P-256": ("ecdsa_secp256r1_sha256", "SHA256"), "P-384": ("ecdsa_secp384r1_sha384", "SHA384"),
          "P-521": ("ecdsa_secp521r1_sha512", "SHA512")}
EC_MODES = {
    "tls1.3": MODES["tls1.3"],
    "tls1.2-ecdhe-ecdsa": {
        "curl": ["--tlsv1.2", "--tls-max", "1.2", "--ciphers", "ECDHE-ECDSA-AES128-GCM-SHA256"],
        "s_client": ["-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-GCM-SHA256"],
        "python": (MODES["tls1.2-ecdhe"]["python"][0], "ECDHE-ECDSA-AES128-GCM-SHA256"),
    },
}
EC_CIPHERS = "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256"
HELLO = "hello from nginx\n"


def signatures(cluster) -> tuple[int, int]:
    """RSA and ECDSA signatures made by all nodes so far (getHSMInfo counts them apart)."""
    info = cluster.node_info().values()
    return sum(n.signs for n in info), sum(n.ecdsa_signs for n in info)


def served_certificate(text: str) -> bytes:
    """The DER of the first certificate in a client's output (s_client, curl -w %{certs})."""
    return pem_body(text, "CERTIFICATE")


@pytest.fixture(scope="module")
def certificates(tls) -> dict[str, tuple[str, str]]:
    """(certificate, fake PEM) per name: an EC key per curve made in the HSMs, and the RSA
    key of test_tls_offload's fixture; each certificate signed by the test CA from a CSR
    the HSM signed, subject O=<name>, CN=localhost (SAN localhost, 127.0.0.1)."""
    pairs = {}
    for name in (*CURVES, "RSA"):
        if name == "RSA":
            key = tls.path("server_fake_PEM.key")
        else:
            key = tls.path(f"ec_{name}_fake_PEM.key")
            tls.run("genpkey", *HSM, "-algorithm", "EC", "-pkeyopt", f"ec_paramgen_curve:{name}", "-out", key)
            assert Path(key).read_text().startswith("-----BEGIN CLOUDHSM KEY REFERENCE-----")
        tls.run("req", "-new", "-key", key, "-subj", f"/O={name}/CN=localhost",
                "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1", "-out", tls.path(f"{name}.csr"))
        cert = tls.path(f"{name}.crt")
        tls.plain("x509", "-req", "-in", tls.path(f"{name}.csr"), "-CA", tls.path("ca.crt"), "-CAkey",
                  tls.path("ca.key"), "-CAcreateserial", "-copy_extensions", "copy", "-days", "2", "-out", cert)
        pairs[name] = (cert, key)
    return pairs


def der_of(cert: str) -> bytes:
    return pem_body(Path(cert).read_text(), "CERTIFICATE")


@pytest.fixture(scope="module")
def servers(tls, certificates):
    """nginx with each curve's certificate, and with the RSA and the P-256 ones both."""
    started = {}
    try:
        for name, pairs in (*((curve, [certificates[curve]]) for curve in CURVES),
                            ("dual", [certificates["RSA"], certificates["P-256"]])):
            started[name] = Nginx(tls, f"ec-{name}", certificates=pairs, ciphers=EC_CIPHERS).start()
        yield started
    finally:
        for server in started.values():
            server.stop()


# ------------------------------------------------------------------------------ ECDSA only


@pytest.mark.parametrize("mode", list(EC_MODES))
@pytest.mark.parametrize("curve", list(CURVES))
def test_ecdsa_certificate_serves_every_client(cluster, tls, certificates, servers, curve, mode):
    port, cert = servers[curve].port, der_of(certificates[curve][0])
    sigalg, digest = CURVES[curve]
    rsa_before, ecdsa_before = signatures(cluster)

    out = curl(tls, port, mode, extra=["-w", "%{certs}"], modes=EC_MODES)
    assert out.startswith(HELLO) and served_certificate(out) == cert, out

    # TLS 1.3 binds the curve to the signature algorithm: the client offers only the one
    # that fits the key, so the server must know the key's group to pick it.
    extra = ["-sigalgs", sigalg] if mode == "tls1.3" else []
    out = s_client(tls, port, mode, extra=extra, modes=EC_MODES)
    assert "Verify return code: 0 (ok)" in out and "hello from nginx" in out, out
    assert served_certificate(out) == cert, out
    assert "Peer signature type: ECDSA" in out, out
    if mode == "tls1.3":
        assert re.search(r"New, TLSv1.3, Cipher is", out) and f"Peer signing digest: {digest}" in out, out
    else:
        assert re.search(r"Protocol *: TLSv1.2", out) and "ECDHE-ECDSA-AES128-GCM-SHA256" in out, out

    body, version, cipher, peer = python_get(tls, port, mode, modes=EC_MODES)
    assert HELLO.strip() in body and peer == cert
    assert version == ("TLSv1.3" if mode == "tls1.3" else "TLSv1.2")
    if mode != "tls1.3":
        assert cipher == "ECDHE-ECDSA-AES128-GCM-SHA256"

    # Three full handshakes (no session cache, no tickets): three ECDSA signatures in the
    # HSMs, and no RSA one.
    rsa_after, ecdsa_after = signatures(cluster)
    assert (rsa_after - rsa_before, ecdsa_after - ecdsa_before) == (0, 3)


def test_tls13_client_without_the_keys_sigalg_is_refused(cluster, tls, servers):
    """A P-384 key cannot sign ecdsa_secp256r1_sha256 in TLS 1.3: the handshake fails
    (nothing is signed) instead of the server signing with a sigalg that does not fit."""
    before = signatures(cluster)
    with pytest.raises(AssertionError, match="no suitable signature algorithm|handshake failure"):
        s_client(tls, servers["P-384"].port, "tls1.3", extra=["-sigalgs", "ecdsa_secp256r1_sha256"])
    assert signatures(cluster) == before


# ------------------------------------------------------------------------------ RSA and ECDSA

# A client configuration that offers RSA signature algorithms only (OpenSSL reads it in
# curl and Python, which have no option for it).
RSA_ONLY_CONF = """openssl_conf = openssl_init
[openssl_init]
ssl_conf = ssl_sect
[ssl_sect]
system_default = system_default_sect
[system_default_sect]
SignatureAlgorithms = rsa_pss_rsae_sha256:rsa_pss_rsae_sha384:rsa_pss_rsae_sha512:RSA+SHA256:RSA+SHA384
"""

# Python's ssl in a process of its own, so that it reads RSA_ONLY_CONF at start-up.
PYTHON_CLIENT = r"""
import json, socket, ssl, sys
port, cafile, version, ciphers = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
context = ssl.create_default_context(cafile=cafile)
context.minimum_version = context.maximum_version = ssl.TLSVersion[version]
if ciphers:
    context.set_ciphers(ciphers)
with socket.create_connection(("127.0.0.1", port), timeout=30) as raw:
    with context.wrap_socket(raw, server_hostname="localhost") as s:
        s.sendall(b"GET / HTTP/1.0\r\nHost: localhost\r\n\r\n")
        data = b""
        while chunk := s.recv(4096):
            data += chunk
        print(json.dumps({"body": data.decode(errors="replace"), "version": s.version(),
                          "cert": s.getpeercert(binary_form=True).hex()}))
"""


def python_in_own_process(tls, port: int, version: str, ciphers: str, env: dict) -> tuple[str, str, bytes]:
    proc = subprocess.run([sys.executable, "-c", PYTHON_CLIENT, str(port), tls.path("ca.crt"), version, ciphers],
                          capture_output=True, text=True, timeout=60, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    reply = json.loads(proc.stdout)
    return reply["body"], reply["version"], bytes.fromhex(reply["cert"])


DUAL_CLIENTS = {
    # protocol, wanted kind -> what each client is told
    ("tls1.3", "RSA"): {"mode": "tls1.3", "rsa_only_conf": True,
                        "s_client": ["-sigalgs", "rsa_pss_rsae_sha256:rsa_pss_rsae_sha384"], "cipher": ""},
    ("tls1.3", "ECDSA"): {"mode": "tls1.3", "rsa_only_conf": False, "s_client": [], "cipher": ""},
    ("tls1.2", "RSA"): {"mode": "tls1.2-ecdhe", "rsa_only_conf": False, "s_client": [],
                        "cipher": "ECDHE-RSA-AES128-GCM-SHA256"},
    ("tls1.2", "ECDSA"): {"mode": "tls1.2-ecdhe-ecdsa", "rsa_only_conf": False, "s_client": [],
                          "cipher": "ECDHE-ECDSA-AES128-GCM-SHA256"},
}


@pytest.mark.parametrize("protocol,kind", list(DUAL_CLIENTS))
def test_one_server_block_serves_the_certificate_the_client_can_verify(cluster, tls, certificates, servers,
                                                                       protocol, kind):
    spec = DUAL_CLIENTS[(protocol, kind)]
    modes = {**MODES, **EC_MODES}
    port = servers["dual"].port
    cert = der_of(certificates["RSA" if kind == "RSA" else "P-256"][0])
    env = dict(os.environ)
    env.pop("OPENSSL_CONF", None)
    if spec["rsa_only_conf"]:
        conf = tls.dir / "rsa_only_client.cnf"
        conf.write_text(RSA_ONLY_CONF)
        env["OPENSSL_CONF"] = str(conf)
    rsa_before, ecdsa_before = signatures(cluster)

    out = curl(tls, port, spec["mode"], extra=["-w", "%{certs}"], modes=modes, env=env)
    assert out.startswith(HELLO) and served_certificate(out) == cert, out

    out = s_client(tls, port, spec["mode"], extra=spec["s_client"], modes=modes)
    assert "Verify return code: 0 (ok)" in out and "hello from nginx" in out, out
    assert served_certificate(out) == cert, out
    assert f"Peer signature type: {'RSA-PSS' if kind == 'RSA' and protocol == 'tls1.3' else kind}" in out, out
    assert f"subject=O = {'RSA' if kind == 'RSA' else 'P-256'}, CN = localhost" in out, out

    version = "TLSv1_3" if protocol == "tls1.3" else "TLSv1_2"
    body, negotiated, peer = python_in_own_process(tls, port, version, spec["cipher"], env)
    assert HELLO.strip() in body and negotiated == version.replace("_", ".") and peer == cert

    # Three full handshakes, each signed in the HSMs by the key of the certificate served.
    rsa_after, ecdsa_after = signatures(cluster)
    assert (rsa_after - rsa_before, ecdsa_after - ecdsa_before) == ((3, 0) if kind == "RSA" else (0, 3))


def test_nginx_logged_no_error(servers):
    for name, server in servers.items():
        log = server.error_log()
        assert not re.search(r"\[(crit|alert|emerg|error)\]", log), f"nginx {name}:\n{log}"
