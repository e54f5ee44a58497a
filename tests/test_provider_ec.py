"""cloudhsm.so with EC keys against real nodes and the real openssl binary: keys made in
the HSMs by genpkey (P-256, P-384, P-521) and ecparam, and imported with key_mgmt_util;
CSRs, certificates, dgst, pkeyutl and cms signatures made in the HSMs and verified by the
default provider alone (OPENSSL_CONF=/dev/null); `pkey -text`; ECDH refused by name; the
fork test and libssl's key checks with an EC key. Where the default property query sends
EC generation (software, so that TLS key shares stay there) is tested too."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from helpers import der_children, der_read, found_keys, pem_body
from test_provider import (  # noqa: F401  (fixtures)
    PUBLIC_TEXT_FORMS,
    OpenSSL,
    assert_fake_pem,
    assert_public_text_is_the_default_providers,
    c_programs,
    ossl,
    provider_module,
)

# Curve name for -pkeyopt, what plain OpenSSL calls it, key bits, a digest that fits it.
CURVES = {"P-256": ("prime256v1", 256, "sha256"), "P-384": ("secp384r1", 384, "sha384"),
          "P-521": ("secp521r1", 521, "sha512")}
HSM = ["-propquery", "provider=cloudhsm"]


def text_of(proc: subprocess.CompletedProcess) -> str:
    return proc.stdout.decode(errors="replace") + proc.stderr.decode(errors="replace")


def ecdsa_signs(cluster) -> int:
    return sum(node.ecdsa_signs for node in cluster.node_info().values())


def ec_private_keys(cluster) -> list[int]:
    return found_keys(cluster.kmu(["findKey -t 3 -c 3"]))[1]


def handle_of(ossl, key: str) -> int:
    text = ossl.run("pkey", "-in", key, "-text", "-noout").stdout.decode()
    return int(re.search(r"^handle: (\d+)$", text, re.M).group(1))


@pytest.fixture(scope="module")
def ec_keys(ossl) -> dict[str, str]:
    """One key per curve, made in the HSMs by `openssl genpkey`, and its public half."""
    keys = {}
    for curve in CURVES:
        path = ossl.path(f"ec_{curve}_fake_PEM.key")
        ossl.run("genpkey", *HSM, "-algorithm", "EC", "-pkeyopt", f"ec_paramgen_curve:{curve}", "-out", path)
        ossl.run("pkey", "-in", path, "-pubout", "-out", ossl.path(f"ec_{curve}.pub"))
        keys[curve] = path
    return keys


# ------------------------------------------------------------------------------ generation


@pytest.mark.parametrize("curve", list(CURVES))
def test_genpkey_makes_ec_keys_in_the_hsms(cluster, ossl, ec_keys, curve):
    name, bits, _ = CURVES[curve]
    assert_fake_pem(ec_keys[curve])
    # The handle is one of the cluster's EC private keys, and the pair is checked by a
    # signature made there.
    assert handle_of(ossl, ec_keys[curve]) in ec_private_keys(cluster)
    assert b"Key is valid" in ossl.run("pkey", "-in", ec_keys[curve], "-check", "-noout").stdout
    text = ossl.plain("pkey", "-pubin", "-in", ossl.path(f"ec_{curve}.pub"), "-text", "-noout").stdout.decode()
    assert f"ASN1 OID: {name}" in text and f"({bits} bit)" in text, text


def test_pkey_text_says_what_the_key_is(ossl, ec_keys):
    text = ossl.run("pkey", "-in", ec_keys["P-384"], "-text", "-noout").stdout.decode()
    assert "CloudHSM EC private key reference: (384 bit, curve P-384 (secp384r1))" in text, text
    assert "cluster: local-dev" in text and re.search(r"^handle: \d+$", text, re.M), text
    assert "(the private key stays in the HSM cluster)" in text
    assert "ASN1 OID: secp384r1" in text and "NIST CURVE: P-384" in text, text
    # The point shown is the public key's.
    plain = ossl.plain("pkey", "-pubin", "-in", ossl.path("ec_P-384.pub"), "-text", "-noout").stdout.decode()
    point = plain.split("pub:")[1].split("ASN1 OID")[0]
    assert point in text, text + plain


@pytest.mark.parametrize("form", PUBLIC_TEXT_FORMS, ids=" ".join)
def test_pkey_public_text_is_the_default_providers(ossl, ec_keys, form):
    assert_public_text_is_the_default_providers(ossl, ec_keys["P-256"], form)
    out = ossl.run("pkey", "-in", ec_keys["P-256"], *form).stdout.decode()
    assert "Public-Key: (256 bit)\npub:\n    04:" in out and "ASN1 OID: prime256v1\nNIST CURVE: P-256\n" in out, out


def test_without_the_propquery_genpkey_makes_a_software_key(cluster, ossl):
    """provider.cnf's query leaves EC key management to the default provider (libssl makes
    TLS key shares through it): plain genpkey writes a software key and the HSMs make none."""
    before = ec_private_keys(cluster)
    out = ossl.path("ec_software.key")
    ossl.run("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", out)
    assert Path(out).read_text().startswith("-----BEGIN PRIVATE KEY-----")
    assert ec_private_keys(cluster) == before


def test_ecparam_genkey_makes_one_key_in_the_hsms(cluster, ossl):
    """ecparam generates a whole key to carry the curve, then the real key from it; the
    HSMs make a key when one is used, so one key, and none for parameters alone."""
    before = set(ec_private_keys(cluster))
    out = ossl.path("ec_ecparam.key")
    ossl.run("ecparam", *HSM, "-genkey", "-name", "prime256v1", "-out", out)
    text = Path(out).read_text()
    assert "-----BEGIN EC PARAMETERS-----" in text and "-----BEGIN CLOUDHSM KEY REFERENCE-----" in text, text
    made = set(ec_private_keys(cluster)) - before
    assert made == {handle_of(ossl, out)}, made
    # The file, with its parameters block first, loads and signs.
    Path(ossl.path("ecparam.txt")).write_bytes(b"ecparam")
    ossl.run("dgst", "-sha256", "-sign", out, "-out", ossl.path("ecparam.sig"), ossl.path("ecparam.txt"))
    ossl.run("pkey", "-in", out, "-pubout", "-out", ossl.path("ecparam.pub"))
    assert b"Verified OK" in ossl.plain("dgst", "-sha256", "-verify", ossl.path("ecparam.pub"), "-signature",
                                        ossl.path("ecparam.sig"), ossl.path("ecparam.txt")).stdout
    # Parameters alone: written, and no key made.
    before = set(ec_private_keys(cluster))
    ossl.run("ecparam", *HSM, "-name", "secp384r1", "-out", ossl.path("ec_p384.params"))
    assert Path(ossl.path("ec_p384.params")).read_text().startswith("-----BEGIN EC PARAMETERS-----")
    assert set(ec_private_keys(cluster)) == before
    # Without the propquery ecparam stays in software, as genpkey does.
    ossl.run("ecparam", "-genkey", "-name", "prime256v1", "-out", ossl.path("ec_ecparam_soft.key"))
    assert "-----BEGIN EC PRIVATE KEY-----" in Path(ossl.path("ec_ecparam_soft.key")).read_text()
    assert set(ec_private_keys(cluster)) == before


def test_genparam_writes_parameters_and_no_key(cluster, ossl):
    before = ec_private_keys(cluster)
    out = ossl.path("ec_genparam.pem")
    ossl.run("genpkey", *HSM, "-genparam", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-521", "-out", out)
    assert Path(out).read_text().startswith("-----BEGIN EC PARAMETERS-----")
    text = ossl.plain("ecparam", "-in", out, "-text", "-noout").stdout.decode()
    assert "secp521r1" in text, text
    assert ec_private_keys(cluster) == before


@pytest.mark.parametrize("opts,text", [
    (["ec_paramgen_curve:secp256k1"], "EC curve secp256k1: the HSMs make EC keys on P-256 (prime256v1)"),
    (["ec_paramgen_curve:brainpoolP256r1"], "EC curve brainpoolP256r1: the HSMs make EC keys on P-256"),
    (["ec_paramgen_curve:no-such-curve"], "EC curve 'no-such-curve' is unknown to OpenSSL"),
    ([], "no curve set for the EC key"),
])
def test_curves_the_hsms_do_not_hold_are_refused_by_name(cluster, ossl, opts, text):
    before = ec_private_keys(cluster)
    out = ossl.path("ec_refused.key")
    if os.path.exists(out):
        os.remove(out)
    proc = ossl.run("genpkey", *HSM, "-algorithm", "EC", *[x for o in opts for x in ("-pkeyopt", o)], "-out", out,
                    check=False)
    assert proc.returncode != 0 and text in text_of(proc), text_of(proc)
    assert not os.path.exists(out) or os.path.getsize(out) == 0
    assert ec_private_keys(cluster) == before


# ------------------------------------------------------------------------------ signatures


@pytest.mark.parametrize("curve", list(CURVES))
def test_csr_and_certificates_verify_without_the_provider(cluster, ossl, ec_keys, curve):
    key, digest = ec_keys[curve], CURVES[curve][2]
    before = ecdsa_signs(cluster)
    ossl.run("req", "-new", "-key", key, f"-{digest}", "-subj", f"/CN=ec-{curve}", "-out", ossl.path("ec.csr"))
    ossl.run("req", "-new", "-x509", "-days", "30", "-key", key, f"-{digest}", "-subj", f"/CN=ec-{curve}",
             "-out", ossl.path(f"ec_{curve}.crt"))
    ossl.run("x509", "-req", "-in", ossl.path("ec.csr"), "-signkey", key, f"-{digest}", "-days", "30",
             "-out", ossl.path("ec_signkey.crt"))
    assert ecdsa_signs(cluster) - before == 3
    out = ossl.plain("req", "-in", ossl.path("ec.csr"), "-verify", "-noout")
    assert b"verify OK" in out.stdout + out.stderr
    for cert in (f"ec_{curve}.crt", "ec_signkey.crt"):
        assert b": OK" in ossl.plain("verify", "-CAfile", ossl.path(cert), ossl.path(cert)).stdout
        text = ossl.plain("x509", "-in", ossl.path(cert), "-noout", "-text").stdout.decode()
        assert f"ecdsa-with-{digest.upper()}" in text and CURVES[curve][0] in text, text
    pub_cert = ossl.plain("x509", "-in", ossl.path(f"ec_{curve}.crt"), "-pubkey", "-noout").stdout
    assert pub_cert == Path(ossl.path(f"ec_{curve}.pub")).read_bytes()


@pytest.mark.parametrize("digest", ["sha1", "sha224", "sha256", "sha384", "sha512"])
def test_dgst_signs_der_ecdsa_sig_values(cluster, ossl, ec_keys, digest):
    message = ossl.path("ec_message.bin")
    Path(message).write_bytes(os.urandom(2000))
    before = ecdsa_signs(cluster)
    for curve, key in ec_keys.items():
        sig = ossl.path(f"ec_{curve}.sig")
        ossl.run("dgst", f"-{digest}", "-sign", key, "-out", sig, message)
        out = ossl.plain("dgst", f"-{digest}", "-verify", ossl.path(f"ec_{curve}.pub"), "-signature", sig, message)
        assert b"Verified OK" in out.stdout
        # ECDSA-Sig-Value ::= SEQUENCE { r INTEGER, s INTEGER }, DER, nothing after it.
        raw = Path(sig).read_bytes()
        tag, body, _, end = der_read(raw)
        parts = der_children(body)
        assert tag == 0x30 and end == len(raw) and [p[0] for p in parts] == [0x02, 0x02], raw.hex()
    assert ecdsa_signs(cluster) - before == len(ec_keys)


@pytest.mark.parametrize("length,opts", [(32, ["digest:sha256"]), (48, ["digest:sha384"]), (20, []), (64, [])])
def test_pkeyutl_signs_a_digest(ossl, ec_keys, length, opts):
    tbs = ossl.path("ec.tbs")
    Path(tbs).write_bytes(os.urandom(length))
    pkeyopts = [x for o in opts for x in ("-pkeyopt", o)]
    for curve, key in ec_keys.items():
        ossl.run("pkeyutl", "-sign", "-inkey", key, *pkeyopts, "-in", tbs, "-out", ossl.path("ec_pk.sig"))
        out = ossl.plain("pkeyutl", "-verify", "-pubin", "-inkey", ossl.path(f"ec_{curve}.pub"), *pkeyopts,
                         "-in", tbs, "-sigfile", ossl.path("ec_pk.sig"))
        assert b"Signature Verified Successfully" in out.stdout


def test_cms_sign_verifies_without_the_provider(ossl, ec_keys):
    key = ec_keys["P-256"]
    ossl.run("req", "-new", "-x509", "-key", key, "-subj", "/CN=cms-ec", "-out", ossl.path("cms_ec.crt"))
    Path(ossl.path("cms.txt")).write_text("signed with an EC key in the HSMs\n")
    ossl.run("cms", "-sign", "-signer", ossl.path("cms_ec.crt"), "-inkey", key, "-in", ossl.path("cms.txt"),
             "-out", ossl.path("cms_ec.p7m"))
    out = ossl.plain("cms", "-verify", "-in", ossl.path("cms_ec.p7m"), "-CAfile", ossl.path("cms_ec.crt"))
    assert out.stdout.decode().replace("\r\n", "\n") == "signed with an EC key in the HSMs\n"  # S/MIME: CRLF
    assert b"Verification successful" in out.stderr


def test_check_signs_in_the_hsms_and_pubcheck_does_not(cluster, ossl, ec_keys):
    before = ecdsa_signs(cluster)
    assert b"Key is valid" in ossl.run("pkey", "-in", ec_keys["P-521"], "-check", "-noout").stdout
    assert ecdsa_signs(cluster) == before + 1
    assert b"Key is valid" in ossl.run("pkey", "-in", ec_keys["P-521"], "-pubcheck", "-noout").stdout
    assert ecdsa_signs(cluster) == before + 1


def test_export_gives_the_public_key_and_refuses_the_private_half(ossl, ec_keys):
    ours = ossl.run("pkey", "-in", ec_keys["P-256"], "-pubout", "-outform", "DER").stdout
    assert ours == ossl.plain("pkey", "-pubin", "-in", ossl.path("ec_P-256.pub"), "-outform", "DER").stdout
    refused = ossl.run("pkey", "-in", ec_keys["P-256"], "-outform", "DER", "-out", ossl.path("ec_private.der"),
                       check=False)
    assert refused.returncode != 0
    assert "export of the private half of EC key handle" in text_of(refused), text_of(refused)


def test_ecdh_with_an_hsm_key_is_refused_by_name(ossl, ec_keys):
    ossl.plain("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", ossl.path("ecdh_peer.key"))
    ossl.plain("pkey", "-in", ossl.path("ecdh_peer.key"), "-pubout", "-out", ossl.path("ecdh_peer.pub"))
    handle = handle_of(ossl, ec_keys["P-256"])
    proc = ossl.run("pkeyutl", "-derive", "-inkey", ec_keys["P-256"], "-peerkey", ossl.path("ecdh_peer.pub"),
                    "-out", ossl.path("ecdh.secret"), check=False)
    assert proc.returncode != 0, text_of(proc)
    assert (f"ECDH with EC key handle {handle} refused: the HSMs hold EC keys for ECDSA signatures only"
            in text_of(proc)), text_of(proc)
    # A software key derives with our key's public half as its peer, as with any public key.
    ossl.run("pkeyutl", "-derive", "-inkey", ossl.path("ecdh_peer.key"), "-peerkey", ossl.path("ec_P-256.pub"),
             "-out", ossl.path("ecdh.secret"))
    assert len(Path(ossl.path("ecdh.secret")).read_bytes()) == 32


def test_without_the_provider_an_ec_fake_pem_is_no_key(ossl, ec_keys):
    proc = ossl.plain("pkey", "-in", ec_keys["P-256"], "-noout", check=False)
    assert proc.returncode != 0
    proc = ossl.plain("dgst", "-sha256", "-sign", ec_keys["P-256"], input=b"data", check=False)
    assert proc.returncode != 0 and proc.stdout == b"", "signed without the provider"


def test_imported_ec_key_works_with_the_provider(cluster, ossl):
    """importPrivateKey and getCaviumPrivKey, as the walkthrough does for RSA keys."""
    ossl.plain("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-384", "-out",
               ossl.path("ec_existing.key"))
    session = cluster.session(cwd=ossl.dir)
    wrap = session.make_wrapping_key()
    handle = session.import_private_key("ec_existing.key", "ec_imported_key", wrap)
    session.write_fake_pem(handle, "ec_imported_fake_PEM.key")
    session.finish()
    fake = ossl.path("ec_imported_fake_PEM.key")
    assert_fake_pem(fake)
    ossl.run("req", "-new", "-x509", "-key", fake, "-subj", "/CN=ec-imported", "-out", ossl.path("ec_imported.crt"))
    cert_pub = ossl.plain("x509", "-in", ossl.path("ec_imported.crt"), "-pubkey", "-noout").stdout
    assert cert_pub == ossl.plain("pkey", "-in", ossl.path("ec_existing.key"), "-pubout").stdout
    ossl.plain("verify", "-CAfile", ossl.path("ec_imported.crt"), ossl.path("ec_imported.crt"))


# ------------------------------------------------------------------------------ libssl programs


def test_libssl_key_and_certificate_checks_with_an_ec_key(ossl, ec_keys, c_programs):
    key = ec_keys["P-256"]
    ossl.run("req", "-new", "-x509", "-key", key, "-subj", "/CN=check-ec", "-out", ossl.path("check_ec.crt"))
    proc = subprocess.run([str(c_programs / "check_private_key"), key, ossl.path("check_ec.crt")],
                          env=ossl.env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count(": ok") == 9, proc.stdout
    # Another key's certificate, same curve: no match.
    ossl.plain("req", "-new", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
               "-keyout", ossl.path("other_ec.key"), "-subj", "/CN=other", "-out", ossl.path("other_ec.crt"))
    proc = subprocess.run([str(c_programs / "check_private_key"), key, ossl.path("other_ec.crt")],
                          env=ossl.env, capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0 and "X509_check_private_key: FAILED" in proc.stdout, proc.stdout
    # A P-384 key's certificate against a P-256 key.
    proc = subprocess.run([str(c_programs / "check_private_key"), ec_keys["P-384"], ossl.path("check_ec.crt")],
                          env=ossl.env, capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0 and "X509_check_private_key: FAILED" in proc.stdout, proc.stdout


def test_fork_after_loading_an_ec_key_signs_in_parent_and_children(cluster, ossl, ec_keys, c_programs):
    before = ecdsa_signs(cluster)
    proc = subprocess.run([str(c_programs / "fork_sign"), ec_keys["P-256"], "4", "5"], env=ossl.env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "fork_sign: 0 failures" in proc.stdout
    assert "threads after loading the key: 1" in proc.stdout, proc.stdout
    assert "threads after signing: 1" in proc.stdout, proc.stdout
    assert proc.stdout.count("5 of 5 signatures ok") == 4, proc.stdout
    assert ecdsa_signs(cluster) - before >= 35


def test_deleted_ec_handle_is_reported_as_not_found(cluster, ossl):
    out = ossl.path("ec_doomed.key")
    ossl.run("genpkey", *HSM, "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", out)
    handle = handle_of(ossl, out)
    assert "Cfm3DeleteKey returned: 0x00" in cluster.kmu([f"deleteKey -k {handle}"])
    proc = ossl.run("dgst", "-sha256", "-sign", out, "-out", ossl.path("doomed.sig"), out, check=False)
    assert proc.returncode != 0
    assert "key not found on the HSM cluster" in text_of(proc) and str(handle) in text_of(proc), text_of(proc)


def test_a_key_file_naming_an_rsa_handle_with_an_ec_public_key_is_refused(cluster, ossl, ec_keys):
    """The once-per-process check compares the key type as well as the public key."""
    ossl.run("genrsa", "-out", ossl.path("ec_vs_rsa.key"), "2048")
    rsa_handle = handle_of(ossl, ossl.path("ec_vs_rsa.key"))
    text = Path(ec_keys["P-256"]).read_text()
    seq = der_read(pem_body(text, "CLOUDHSM KEY REFERENCE"))[1]
    fields = der_children(seq)
    handle_der = rsa_handle.to_bytes((rsa_handle.bit_length() + 8) // 8, "big")
    body = fields[0][2] + fields[1][2] + bytes([0x02, len(handle_der)]) + handle_der + b"".join(f[2] for f in fields[3:])
    der = b"\x30" + (bytes([len(body)]) if len(body) < 128 else
                     bytes([0x81, len(body)]) if len(body) < 256 else b"\x82" + len(body).to_bytes(2, "big")) + body
    import base64
    Path(ossl.path("ec_on_rsa_handle.key")).write_text(
        "-----BEGIN CLOUDHSM KEY REFERENCE-----\n" + base64.encodebytes(der).decode()
        + "-----END CLOUDHSM KEY REFERENCE-----\n")
    proc = ossl.run("dgst", "-sha256", "-sign", ossl.path("ec_on_rsa_handle.key"), "-out", ossl.path("x.sig"),
                    ossl.path("ec_vs_rsa.key"), check=False)
    assert proc.returncode != 0
    assert f"key handle {rsa_handle} on cluster 'local-dev' is a private RSA key, not an EC private key" in \
        text_of(proc), text_of(proc)


def test_cloudhsm_check_says_what_an_ec_key_is_and_signs_with_it(cluster, ossl, ec_keys):
    before = ecdsa_signs(cluster)
    proc = subprocess.run([str(cluster.bin_dir / "cloudhsm_check"), ec_keys["P-384"]], env=ossl.env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "EC 384 bit key (secp384r1) held by the HSM cluster" in proc.stdout, proc.stdout
    assert "signed a test message on the HSM cluster (ECDSA, SHA-256)" in proc.stdout, proc.stdout
    assert "signature verified by the default provider" in proc.stdout, proc.stdout
    assert ecdsa_signs(cluster) == before + 1
