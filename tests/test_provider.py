"""cloudhsm.so against real nodes and the real openssl binary: generate a key in the
HSMs, make a CSR and certificates, sign and decrypt, all verified by the default provider
alone; libssl's key checks and a fork test in small C programs; bad input each with a
clear error."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from helpers import REPO, assert_no_crash, der_children, der_read, pem_body

MODULE_CANDIDATES = [
    os.environ.get("CLOUDHSM_MODULE", ""),
    str(REPO / "build" / "ossl-modules" / "cloudhsm.so"),
]


@pytest.fixture(scope="session")
def provider_module() -> Path:
    for candidate in MODULE_CANDIDATES:
        if candidate and Path(candidate).exists():
            return Path(candidate).resolve()
    pytest.fail("cloudhsm.so not found: run `make build` (it builds build/ossl-modules/cloudhsm.so)")


@pytest.fixture(scope="session")
def c_programs(tmp_path_factory) -> Path:
    """The C test programs in tests/c, compiled against the system's libssl."""
    out = tmp_path_factory.mktemp("cprog")
    for name in ("check_private_key", "fork_sign"):
        subprocess.run(
            ["cc", "-Wall", "-o", str(out / name), str(REPO / "tests" / "c" / f"{name}.c"), "-lssl", "-lcrypto"],
            check=True,
        )
    return out


class OpenSSL:
    """Runs the real openssl binary with the provider configured through OPENSSL_CONF."""

    def __init__(self, cluster, module: Path):
        self.cluster = cluster
        self.module = module
        self.dir = cluster.work / "provider"
        self.dir.mkdir(exist_ok=True)
        self.conf = self.dir / "provider.cnf"
        text = (REPO / "provider.cnf").read_text()
        text = re.sub(r"^# module = .*$", f"module = {module}", text, flags=re.M)
        text = re.sub(r"^cluster_config = .*$", f"cluster_config = {cluster.config}", text, flags=re.M)
        self.conf.write_text(text)
        self.env = dict(cluster.env)
        self.env["OPENSSL_CONF"] = str(self.conf)
        self.env.pop("CLOUDHSM_PROVIDER_TRACE", None)

    def run(self, *args, env=None, check=True, input=None) -> subprocess.CompletedProcess:
        proc = subprocess.run(
            ["openssl", *args], cwd=self.dir, env=env or self.env, capture_output=True, input=input, timeout=120
        )
        text = proc.stdout.decode(errors="replace") + proc.stderr.decode(errors="replace")
        assert_no_crash(proc.returncode, text)
        if check and proc.returncode != 0:
            raise AssertionError(f"openssl {' '.join(args)} failed ({proc.returncode}):\n{text}")
        return proc

    def plain(self, *args, check=True, input=None) -> subprocess.CompletedProcess:
        """openssl with no configuration at all: the default provider only."""
        env = dict(self.env)
        env["OPENSSL_CONF"] = "/dev/null"
        return self.run(*args, env=env, check=check, input=input)

    def path(self, name: str) -> str:
        return str(self.dir / name)


@pytest.fixture(scope="module")
def ossl(cluster, provider_module) -> OpenSSL:
    return OpenSSL(cluster, provider_module)


def private_operations(cluster) -> int:
    info = cluster.node_info()
    total = 0
    for node in info.values():
        m = re.match(r"(\d+)", node.fields["Private key operations"])
        total += int(m.group(1))
    return total


def assert_fake_pem(path: str):
    text = Path(path).read_text()
    assert text.startswith("-----BEGIN CLOUDHSM KEY REFERENCE-----"), text
    assert "PRIVATE KEY" not in text, text
    seq = der_read(pem_body(text, "CLOUDHSM KEY REFERENCE"))[1]
    fields = der_children(seq)
    assert fields[0][1] == b"\x01" and fields[1][1] == b"local-dev", fields


@pytest.fixture(scope="module")
def generated(ossl) -> str:
    """A key generated in the HSMs by `openssl genrsa` with provider.cnf in effect."""
    ossl.run("genrsa", "-out", ossl.path("web_server_fake_PEM.key"), "2048")
    return ossl.path("web_server_fake_PEM.key")


def test_list_providers_shows_cloudhsm(ossl):
    out = ossl.run("list", "-providers", "-verbose").stdout.decode()
    assert "cloudhsm" in out and "CloudHSM Provider" in out and "status: active" in out, out


def test_genrsa_writes_a_fake_pem_made_in_the_hsms(cluster, ossl, generated):
    assert_fake_pem(generated)
    before = cluster.kmu(["findKey -c 3"])
    handle = int(re.search(r"handle: (\d+)", ossl.run("pkey", "-in", generated, "-text", "-noout").stdout.decode()).group(1))
    assert re.search(rf"\b{handle}\b", before), f"handle {handle} not among the CU's private keys:\n{before}"


def test_genrsa_with_provider_flags_and_as_the_only_provider(cluster, ossl, provider_module):
    ossl.run("genrsa", "-provider", "cloudhsm", "-provider", "default", "-out", ossl.path("flags.key"), "2048")
    assert_fake_pem(ossl.path("flags.key"))
    # No configuration at all: cloudhsm is the only provider, found through -provider-path,
    # and the cluster through CLOUDHSM_CONFIG.
    env = dict(ossl.env)
    env["OPENSSL_CONF"] = "/dev/null"
    path_dir = ossl.dir / "modules"
    path_dir.mkdir(exist_ok=True)
    link = path_dir / "cloudhsm.so"
    if not link.exists():
        link.symlink_to(provider_module)
    ossl.run("genrsa", "-provider-path", str(path_dir), "-provider", "cloudhsm", "-out", ossl.path("only.key"), "3072",
             env=env)
    assert_fake_pem(ossl.path("only.key"))
    text = ossl.run("pkey", "-in", ossl.path("only.key"), "-text", "-noout").stdout.decode()
    assert "(3072 bit)" in text, text


# The forms of `openssl pkey` that ask for the public key alone (EVP_PKEY_print_public).
PUBLIC_TEXT_FORMS = [("-pubout", "-text"), ("-pubout", "-text", "-noout"), ("-text_pub", "-noout")]


def assert_public_text_is_the_default_providers(ossl, fake: str, form: tuple[str, ...]):
    """`pkey -in FAKE <form>` prints what the default provider alone prints for the public
    key inside the fake PEM, byte for byte, and no word of the key reference."""
    seq = der_read(pem_body(Path(fake).read_text(), "CLOUDHSM KEY REFERENCE"))[1]
    public = Path(fake).with_suffix(".spki.der")
    public.write_bytes(der_children(seq)[3][2])
    ours = ossl.run("pkey", "-in", fake, *form).stdout.decode()
    plain = ossl.plain("pkey", "-pubin", "-inform", "DER", "-in", str(public), *form).stdout.decode()
    assert ours == plain, f"ours:\n{ours}\ndefault provider:\n{plain}"
    assert ours.count("Public-Key: (") == 1 and "reference" not in ours, ours
    # The private key's text still says what the key is.
    text = ossl.run("pkey", "-in", fake, "-text", "-noout").stdout.decode()
    assert "private key reference: (" in text and "(the private key stays in the HSM cluster)" in text, text


@pytest.mark.parametrize("form", PUBLIC_TEXT_FORMS, ids=" ".join)
def test_pkey_public_text_is_the_default_providers(ossl, generated, form):
    assert_public_text_is_the_default_providers(ossl, generated, form)
    out = ossl.run("pkey", "-in", generated, *form).stdout.decode()
    assert "Public-Key: (2048 bit)\nModulus:\n" in out and "Exponent: 65537 (0x10001)\n" in out, out


def test_without_the_provider_a_fake_pem_is_no_key(ossl, generated):
    proc = ossl.plain("pkey", "-in", generated, "-noout", check=False)
    assert proc.returncode != 0
    proc = ossl.plain("dgst", "-sha256", "-sign", generated, input=b"data", check=False)
    assert proc.returncode != 0 and proc.stdout == b"", "signed without the provider"


def test_csr_and_self_signed_certificate_verify_without_the_provider(cluster, ossl, generated):
    before = private_operations(cluster)
    ossl.run("req", "-new", "-key", generated, "-subj", "/CN=web.example", "-out", ossl.path("web_server.csr"))
    ossl.run("req", "-new", "-x509", "-days", "365", "-key", generated, "-subj", "/CN=web.example",
             "-out", ossl.path("web_server.crt"))
    after = private_operations(cluster)
    assert after - before >= 2, f"the nodes served {after - before} private operations for a CSR and a certificate"
    out = ossl.plain("req", "-in", ossl.path("web_server.csr"), "-verify", "-noout")
    assert b"verify OK" in out.stdout + out.stderr
    out = ossl.plain("verify", "-CAfile", ossl.path("web_server.crt"), ossl.path("web_server.crt"))
    assert b"OK" in out.stdout
    # The certificate carries the HSM key's public key.
    pub_cert = ossl.plain("x509", "-in", ossl.path("web_server.crt"), "-pubkey", "-noout").stdout
    pub_key = ossl.run("pkey", "-in", generated, "-pubout").stdout
    assert pub_cert == pub_key


def test_req_prompts_for_fields_like_openssl_does(ossl, generated):
    answers = b"US\nWashington\nSeattle\nExample\nWeb\nwww.example.com\nadmin@example.com\n\n\n"
    ossl.run("req", "-new", "-key", generated, "-out", ossl.path("prompted.csr"), input=answers)
    subject = ossl.plain("req", "-in", ossl.path("prompted.csr"), "-noout", "-subject").stdout.decode()
    assert "CN = www.example.com" in subject, subject


def test_x509_signkey_and_pss_certificate(ossl, generated):
    ossl.run("req", "-new", "-key", generated, "-subj", "/CN=pss.example", "-out", ossl.path("pss.csr"))
    ossl.run("x509", "-req", "-in", ossl.path("pss.csr"), "-signkey", generated, "-days", "30",
             "-out", ossl.path("signkey.crt"))
    ossl.plain("verify", "-CAfile", ossl.path("signkey.crt"), ossl.path("signkey.crt"))
    ossl.run("req", "-new", "-x509", "-key", generated, "-subj", "/CN=pss.example", "-sha384",
             "-sigopt", "rsa_padding_mode:pss", "-sigopt", "rsa_pss_saltlen:digest", "-out", ossl.path("pss.crt"))
    text = ossl.plain("x509", "-in", ossl.path("pss.crt"), "-noout", "-text").stdout.decode()
    assert "rsassaPss" in text and "sha384" in text, text
    ossl.plain("verify", "-CAfile", ossl.path("pss.crt"), ossl.path("pss.crt"))


@pytest.mark.parametrize(
    "digest,opts",
    [
        ("sha256", []),
        ("sha1", []),
        ("sha512", []),
        ("sha256", ["rsa_padding_mode:pss", "rsa_pss_saltlen:digest"]),
        ("sha384", ["rsa_padding_mode:pss", "rsa_pss_saltlen:max"]),
        ("sha224", ["rsa_padding_mode:pss", "rsa_pss_saltlen:20"]),
    ],
)
def test_dgst_sign_verifies_with_the_default_provider(ossl, generated, digest, opts):
    message = ossl.path("message.txt")
    Path(message).write_bytes(os.urandom(1000))
    ossl.run("pkey", "-in", generated, "-pubout", "-out", ossl.path("pub.pem"))
    sigopts = [x for o in opts for x in ("-sigopt", o)]
    ossl.run("dgst", f"-{digest}", "-sign", generated, *sigopts, "-out", ossl.path("sig.bin"), message)
    out = ossl.plain("dgst", f"-{digest}", "-verify", ossl.path("pub.pem"), *sigopts,
                     "-signature", ossl.path("sig.bin"), message)
    assert b"Verified OK" in out.stdout


@pytest.mark.parametrize("padding", ["pkcs1", "pss"])
def test_pkeyutl_sign_prehashed(ossl, generated, padding):
    digest = os.urandom(32)
    Path(ossl.path("digest.bin")).write_bytes(digest)
    ossl.run("pkey", "-in", generated, "-pubout", "-out", ossl.path("pub.pem"))
    opts = ["-pkeyopt", "digest:sha256", "-pkeyopt", f"rsa_padding_mode:{padding}"]
    if padding == "pss":
        opts += ["-pkeyopt", "rsa_pss_saltlen:digest"]
    ossl.run("pkeyutl", "-sign", "-inkey", generated, *opts, "-in", ossl.path("digest.bin"), "-out", ossl.path("s.bin"))
    out = ossl.plain("pkeyutl", "-verify", "-pubin", "-inkey", ossl.path("pub.pem"), *opts,
                     "-in", ossl.path("digest.bin"), "-sigfile", ossl.path("s.bin"))
    assert b"Signature Verified Successfully" in out.stdout


@pytest.mark.parametrize(
    "opts",
    [
        [],
        ["-pkeyopt", "rsa_padding_mode:oaep"],
        ["-pkeyopt", "rsa_padding_mode:oaep", "-pkeyopt", "rsa_oaep_md:sha256", "-pkeyopt", "rsa_mgf1_md:sha256"],
    ],
)
def test_pkeyutl_decrypt_on_the_hsm(cluster, ossl, generated, opts):
    secret = os.urandom(32)
    Path(ossl.path("secret.bin")).write_bytes(secret)
    ossl.run("pkey", "-in", generated, "-pubout", "-out", ossl.path("pub.pem"))
    ossl.plain("pkeyutl", "-encrypt", "-pubin", "-inkey", ossl.path("pub.pem"), *opts,
               "-in", ossl.path("secret.bin"), "-out", ossl.path("secret.enc"))
    before = private_operations(cluster)
    out = ossl.run("pkeyutl", "-decrypt", "-inkey", generated, *opts, "-in", ossl.path("secret.enc")).stdout
    assert out == secret
    assert private_operations(cluster) > before


def test_each_signature_is_one_private_operation_on_the_nodes(cluster, ossl, generated):
    Path(ossl.path("m.txt")).write_bytes(b"count me")
    before = private_operations(cluster)
    for _ in range(5):
        ossl.run("dgst", "-sha256", "-sign", generated, "-out", ossl.path("m.sig"), ossl.path("m.txt"))
    assert private_operations(cluster) - before == 5


def test_ordinary_software_keys_still_work_next_to_the_provider(ossl):
    """default_properties = ?provider=cloudhsm must not break ordinary keys: the
    provider refuses private software keys (default signs) and verifies public ones
    correctly."""
    ossl.plain("genrsa", "-out", ossl.path("soft.key"), "2048")
    Path(ossl.path("soft.txt")).write_bytes(b"software key")
    ossl.run("dgst", "-sha256", "-sign", ossl.path("soft.key"), "-out", ossl.path("soft.sig"), ossl.path("soft.txt"))
    ossl.plain("pkey", "-in", ossl.path("soft.key"), "-pubout", "-out", ossl.path("soft.pub"))
    out = ossl.run("dgst", "-sha256", "-verify", ossl.path("soft.pub"), "-signature", ossl.path("soft.sig"),
                   ossl.path("soft.txt"))
    assert b"Verified OK" in out.stdout
    Path(ossl.path("soft.bad")).write_bytes(b"tampered")
    bad = ossl.run("dgst", "-sha256", "-verify", ossl.path("soft.pub"), "-signature", ossl.path("soft.sig"),
                   ossl.path("soft.bad"), check=False)
    assert bad.returncode != 0 and b"Verification failure" in bad.stdout + bad.stderr
    ossl.run("req", "-new", "-x509", "-key", ossl.path("soft.key"), "-subj", "/CN=soft", "-out", ossl.path("soft.crt"))
    ossl.run("verify", "-CAfile", ossl.path("soft.crt"), ossl.path("soft.crt"))


def test_imported_key_from_key_mgmt_util_works_with_the_provider(cluster, ossl):
    """The import walkthrough's fake PEM (getCaviumPrivKey) works like a generated one."""
    ossl.plain("genrsa", "-out", ossl.path("existing.key"), "2048")
    session = cluster.session(cwd=ossl.dir)
    wrap = session.make_wrapping_key()
    handle = session.import_private_key("existing.key", "web_server_imported_key", wrap)
    session.write_fake_pem(handle, "imported_fake_PEM.key")
    session.finish()
    fake = ossl.path("imported_fake_PEM.key")
    assert_fake_pem(fake)
    ossl.run("req", "-new", "-x509", "-key", fake, "-subj", "/CN=imported", "-out", ossl.path("imported.crt"))
    cert_pub = ossl.plain("x509", "-in", ossl.path("imported.crt"), "-pubkey", "-noout").stdout
    soft_pub = ossl.plain("pkey", "-in", ossl.path("existing.key"), "-pubout").stdout
    assert cert_pub == soft_pub
    ossl.plain("verify", "-CAfile", ossl.path("imported.crt"), ossl.path("imported.crt"))


def test_libssl_key_and_certificate_checks_in_both_orders(ossl, generated, c_programs):
    ossl.run("req", "-new", "-x509", "-key", generated, "-subj", "/CN=check", "-out", ossl.path("check.crt"))
    proc = subprocess.run([str(c_programs / "check_private_key"), generated, ossl.path("check.crt")],
                          env=ossl.env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count(": ok") == 9, proc.stdout
    # A certificate for another key must not match.
    ossl.plain("req", "-new", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", ossl.path("other.key"),
               "-subj", "/CN=other", "-out", ossl.path("other.crt"))
    proc = subprocess.run([str(c_programs / "check_private_key"), generated, ossl.path("other.crt")],
                          env=ossl.env, capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0 and "X509_check_private_key: FAILED" in proc.stdout, proc.stdout


def test_fork_after_loading_the_key_signs_in_parent_and_children(cluster, ossl, generated, c_programs):
    before = private_operations(cluster)
    proc = subprocess.run([str(c_programs / "fork_sign"), generated, "4", "5"], env=ossl.env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "fork_sign: 0 failures" in proc.stdout
    # Loading the provider and the key, and signing, start no thread (hard rule 1).
    assert "threads after loading the key: 1" in proc.stdout, proc.stdout
    assert "threads after signing: 1" in proc.stdout, proc.stdout
    assert proc.stdout.count("5 of 5 signatures ok") == 4, proc.stdout
    # parent before/during/after (3 x 5) + 4 children x 5 = 35 signatures on the nodes
    assert private_operations(cluster) - before >= 35


def test_provider_links_no_swift_concurrency_or_dispatch(provider_module):
    """Nothing loaded into a host may be able to start threads behind its back."""
    needed = subprocess.run(["readelf", "-d", str(provider_module)], capture_output=True, text=True).stdout
    assert "NEEDED" in needed, needed
    for library in ("libswift_Concurrency", "libdispatch", "libFoundation"):
        assert library not in needed, needed


def test_cloudhsm_check_reports_each_step(cluster, ossl, generated):
    check = str(cluster.bin_dir / "cloudhsm_check")
    proc = subprocess.run([check, generated], env=ossl.env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "ok    provider cloudhsm is loaded" in proc.stdout
    assert "signature verified by the default provider" in proc.stdout
    env = dict(ossl.env)
    env["OPENSSL_CONF"] = "/dev/null"
    proc = subprocess.run([check, generated], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1 and "FAIL  the cloudhsm provider is not loaded" in proc.stdout, proc.stdout
    # A module line naming a file that is not there: OpenSSL loads nothing and says nothing.
    bad = ossl.dir / "badmodule.cnf"
    bad.write_text(re.sub(r"^module = .*$", "module = /nonexistent/cloudhsm.so", ossl.conf.read_text(), flags=re.M))
    env["OPENSSL_CONF"] = str(bad)
    proc = subprocess.run([check, generated], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1 and "module line names /nonexistent/cloudhsm.so" in proc.stdout, proc.stdout


# ------------------------------------------------------------------------------ bad input


def failing(ossl, *args, env=None) -> str:
    proc = ossl.run(*args, env=env, check=False)
    text = proc.stdout.decode(errors="replace") + proc.stderr.decode(errors="replace")
    assert proc.returncode != 0, f"openssl {' '.join(args)} succeeded:\n{text}"
    return text


def test_corrupt_truncated_and_foreign_files(ossl, generated):
    good = Path(generated).read_text()
    lines = good.splitlines()
    corrupt = "\n".join(lines[:2] + ["!!!!not base64!!!!"] + lines[3:]) + "\n"
    Path(ossl.path("corrupt.key")).write_text(corrupt)
    text = failing(ossl, "pkey", "-in", ossl.path("corrupt.key"), "-noout")
    assert "malformed CloudHSM key reference" in text, text
    Path(ossl.path("truncated.key")).write_text("\n".join(lines[:3]) + "\n")
    text = failing(ossl, "pkey", "-in", ossl.path("truncated.key"), "-noout")
    assert "malformed CloudHSM key reference" in text, text
    # Valid base64, wrong DER inside our label.
    Path(ossl.path("wrongder.key")).write_text(
        "-----BEGIN CLOUDHSM KEY REFERENCE-----\nMAMCAQI=\n-----END CLOUDHSM KEY REFERENCE-----\n")
    text = failing(ossl, "pkey", "-in", ossl.path("wrongder.key"), "-noout")
    assert "malformed CloudHSM key reference" in text, text
    # A certificate is not a key.
    ossl.run("req", "-new", "-x509", "-key", generated, "-subj", "/CN=x", "-out", ossl.path("foreign.crt"))
    failing(ossl, "dgst", "-sha256", "-sign", ossl.path("foreign.crt"), "-out", ossl.path("x.sig"), generated)


def test_deleted_handle_is_reported_as_not_found(cluster, ossl):
    ossl.run("genrsa", "-out", ossl.path("doomed.key"), "2048")
    handle = int(re.search(r"handle: (\d+)", ossl.run("pkey", "-in", ossl.path("doomed.key"), "-text", "-noout")
                           .stdout.decode()).group(1))
    out = cluster.kmu([f"deleteKey -k {handle}"])
    assert "Cfm3DeleteKey returned: 0x00" in out, out
    text = failing(ossl, "dgst", "-sha256", "-sign", ossl.path("doomed.key"), "-out", ossl.path("d.sig"),
                   ossl.path("doomed.key"))
    assert "key not found on the HSM cluster" in text and str(handle) in text, text


def test_wrong_or_missing_credentials(ossl, generated):
    env = dict(ossl.env)
    env["n3fips_password"] = env["n3fips_password"].split(":")[0] + ":wrong-password"
    text = failing(ossl, "dgst", "-sha256", "-sign", generated, "-out", ossl.path("w.sig"), generated, env=env)
    assert "HSM login failed" in text, text
    env.pop("n3fips_password")
    env.pop("CLOUDHSM_PIN", None)
    text = failing(ossl, "dgst", "-sha256", "-sign", generated, "-out", ossl.path("w.sig"), generated, env=env)
    assert "not logged in to the HSM cluster" in text and "n3fips_password" in text, text


def test_key_from_another_cluster(ossl, generated):
    text = Path(generated).read_text()
    seq = der_read(pem_body(text, "CLOUDHSM KEY REFERENCE"))[1]
    fields = der_children(seq)
    other = b"\x0c\x0dother-cluster"
    body = fields[0][2] + other + b"".join(f[2] for f in fields[2:])
    der = b"\x30\x82" + len(body).to_bytes(2, "big") + body
    import base64
    Path(ossl.path("other.key")).write_text(
        "-----BEGIN CLOUDHSM KEY REFERENCE-----\n" + base64.encodebytes(der).decode()
        + "-----END CLOUDHSM KEY REFERENCE-----\n")
    failed = failing(ossl, "dgst", "-sha256", "-sign", ossl.path("other.key"), "-out", ossl.path("o.sig"), generated)
    assert "key belongs to another HSM cluster" in failed and "other-cluster" in failed, failed


def test_unreachable_cluster(ossl, generated, tmp_path):
    from helpers import free_ports
    ports = free_ports(2)
    cfg = tmp_path / "dead.cfg"
    cfg.write_text(
        f"cluster_id = local-dev\ntrust_anchor = {ossl.cluster.ca}\n"
        f"node = 0 127.0.0.1:{ports[0]}\nnode = 1 127.0.0.1:{ports[1]}\nconnect_timeout_ms = 1000\n")
    conf = tmp_path / "dead.cnf"
    conf.write_text(ossl.conf.read_text().replace(str(ossl.cluster.config), str(cfg)))
    env = dict(ossl.env)
    env["OPENSSL_CONF"] = str(conf)
    # CLOUDHSM_CONFIG would win over cluster_config (test_client_hardening.py).
    env.pop("CLOUDHSM_CONFIG")
    text = failing(ossl, "dgst", "-sha256", "-sign", generated, "-out", ossl.path("u.sig"), generated, env=env)
    assert "no HSM node reachable" in text, text
