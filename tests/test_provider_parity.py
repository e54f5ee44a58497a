"""Parameter parity with OpenSSL 3.0's default provider, one parameter at a time, for RSA:
signatures (dgst, pkeyutl -sign/-verify/-verifyrecover), the asymmetric cipher (pkeyutl
-decrypt/-encrypt) and key management (genpkey, genrsa, key parameters, export, check);
for EC: ECDSA (dgst, pkeyutl -sign, ecdsa_sig.c's digest, properties, digest-size and kat)
and key management (genpkey and ecparam with ec_kmgmt.c's generation settings, key
parameters read and set, `openssl ec`); and the parameter tables of both, name for name.

Each case runs the real openssl binary twice with the same options: once with a software
key and the default provider alone, once with a fake PEM and the cloudhsm provider. Where
both can do it, both succeed and what ours made verifies with plain OpenSSL; where only
the HSMs cannot, the default provider succeeds and ours refuses, naming the problem; where
OpenSSL refuses, ours refuses too. The few settings the default provider silently ignores
(an unknown padding word, OAEP for a signature, a salt length that is not a number) are
refused by ours by name. docs/architecture.md has the table."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from helpers import REPO
from test_provider import (  # noqa: F401  (fixtures)
    OpenSSL,
    generated,
    ossl,
    private_operations,
    provider_module,
)

SAME = "same"  # both succeed with the same meaning
REFUSED = "refused"  # the default provider does it; the HSMs cannot, and ours says so
BOTH_FAIL = "both fail"  # OpenSSL refuses it; ours refuses too
STRICTER = "stricter"  # the default provider ignores it silently; ours refuses by name


def text_of(proc: subprocess.CompletedProcess) -> str:
    return proc.stdout.decode(errors="replace") + proc.stderr.decode(errors="replace")


def case_id(value):
    if isinstance(value, list):
        return ",".join(value) or "none"
    return str(value)


@pytest.fixture(scope="module")
def keys(ossl, generated) -> dict:
    """A software key (default provider) and the public halves of both keys."""
    soft = ossl.path("parity_soft.key")
    ossl.plain("genrsa", "-out", soft, "2048")
    ossl.plain("pkey", "-in", soft, "-pubout", "-out", ossl.path("parity_soft.pub"))
    ossl.run("pkey", "-in", generated, "-pubout", "-out", ossl.path("parity_fake.pub"))
    Path(ossl.path("parity_message.txt")).write_bytes(os.urandom(3000))
    return {"soft": soft, "soft_pub": ossl.path("parity_soft.pub"), "fake": generated,
            "fake_pub": ossl.path("parity_fake.pub"), "message": ossl.path("parity_message.txt")}


@pytest.fixture(scope="module")
def probe(tmp_path_factory) -> str:
    out = tmp_path_factory.mktemp("probe") / "param_probe"
    subprocess.run(["cc", "-Wall", "-o", str(out), str(REPO / "tests" / "c" / "param_probe.c"), "-lcrypto"],
                   check=True)
    return str(out)


def probe_run(ossl, probe, *args, plain=False) -> subprocess.CompletedProcess:
    """param_probe with the provider (a fake PEM) or, plain, with the default provider alone."""
    env = {**ossl.env, "OPENSSL_CONF": "/dev/null"} if plain else ossl.env
    return subprocess.run([probe, *args], env=env, capture_output=True, text=True, timeout=60)


def probe_lines(proc: subprocess.CompletedProcess) -> list[str]:
    """param_probe's answers without the error queue's lines, which name each provider's
    own source files (both say FAILED for the same names)."""
    return [line for line in proc.stdout.splitlines() if not re.match(r"^[0-9A-F]+:error:", line)]


def both(ossl, keys, make_args, outcome, text):
    """Runs `make_args(key)` with the software key (default provider only) and with the
    fake PEM (cloudhsm), and checks the outcome. Answers ours."""
    default = ossl.plain(*make_args(keys["soft"]), check=False)
    ours = ossl.run(*make_args(keys["fake"]), check=False)
    if outcome == SAME:
        assert default.returncode == 0, f"the default provider refused it:\n{text_of(default)}"
        assert ours.returncode == 0, f"ours refused what the default provider does:\n{text_of(ours)}"
    elif outcome in (REFUSED, STRICTER):
        assert default.returncode == 0, f"the default provider refused it:\n{text_of(default)}"
        assert ours.returncode != 0, f"ours did it:\n{text_of(ours)}"
    else:
        assert default.returncode != 0, f"the default provider did it:\n{text_of(default)}"
        assert ours.returncode != 0, f"ours did it:\n{text_of(ours)}"
    if text is not None:
        assert text in text_of(ours), f"ours does not say '{text}':\n{text_of(ours)}"
    return ours


def sigopts(flag, opts):
    return [x for o in opts for x in (flag, o)]


# ------------------------------------------------------------------ digest-sign (dgst, req, x509, libssl)

DGST_CASES = [
    ("sha256", [], SAME, None),
    ("sha1", [], SAME, None),
    ("sha224", [], SAME, None),
    ("sha384", [], SAME, None),
    ("sha512", [], SAME, None),
    ("md5-sha1", [], SAME, None),
    ("sha256", ["rsa_padding_mode:pkcs1"], SAME, None),
    ("sha256", ["rsa_padding_mode:pss"], SAME, None),
    ("sha256", ["rsa_padding_mode:pss", "rsa_pss_saltlen:digest"], SAME, None),
    ("sha256", ["rsa_padding_mode:pss", "rsa_pss_saltlen:max"], SAME, None),
    ("sha256", ["rsa_padding_mode:pss", "rsa_pss_saltlen:auto"], SAME, None),
    ("sha256", ["rsa_padding_mode:pss", "rsa_pss_saltlen:20"], SAME, None),
    ("sha256", ["rsa_padding_mode:pss", "rsa_pss_saltlen:0"], SAME, None),
    ("sha256", ["rsa_padding_mode:pss", "rsa_pss_saltlen:-1"], SAME, None),
    ("sha256", ["rsa_padding_mode:pss", "rsa_pss_saltlen:-2"], SAME, None),
    ("sha256", ["rsa_padding_mode:pss", "rsa_pss_saltlen:-3"], SAME, None),
    ("sha384", ["rsa_padding_mode:pss", "rsa_mgf1_md:sha256"], SAME, None),
    ("sha512", ["rsa_padding_mode:pss", "rsa_mgf1_md:sha1", "rsa_pss_saltlen:max"], SAME, None),
    ("sha256", ["pad-mode:pss", "saltlen:32", "mgf1-digest:SHA2-224"], SAME, None),
    ("sha256", ["pad-mode:pss", "mgf1-properties:provider=default"], SAME, None),
    ("sha3-256", [], REFUSED, "digest SHA3-256 for signing: the HSMs take SHA-1, SHA-224, SHA-256, SHA-384"),
    ("sha512-256", [], REFUSED, "digest SHA2-512/256 for signing"),
    ("md5", [], REFUSED, "digest MD5 for signing"),
    ("sha256", ["rsa_padding_mode:x931"], REFUSED, "RSA padding mode x931: the HSMs sign with pkcs1, pss or none"),
    ("sha256", ["rsa_padding_mode:pss", "rsa_mgf1_md:sha3-256"], REFUSED, "digest SHA3-256 for MGF1"),
    ("md5-sha1", ["rsa_padding_mode:pss"], REFUSED, "PSS with MD5-SHA1"),
    ("sha256", ["rsa_padding_mode:none"], BOTH_FAIL, "RSA padding mode none signs a raw block and takes no digest"),
    ("sha256", ["rsa_pss_saltlen:20"], BOTH_FAIL,
     "PSS saltlen can only be specified if PSS padding has been specified first"),
    ("sha256", ["rsa_mgf1_md:sha256"], BOTH_FAIL, "mgf1-digest can only be specified with PSS padding"),
    ("sha256", ["rsa_padding_mode:pss", "rsa_pss_saltlen:-4"], BOTH_FAIL, "PSS salt length -4 is invalid"),
    ("sha256", ["rsa_padding_mode:pss", "rsa_pss_saltlen:1000"], BOTH_FAIL,
     "PSS salt length 1000 does not fit a 2048-bit key"),
    ("sha256", ["rsa_padding_mode:oaep"], STRICTER, "OAEP padding is for encryption, not RSA signatures"),
    ("sha256", ["rsa_padding_mode:pkcs1v15"], STRICTER, "RSA padding mode 'pkcs1v15' is unknown"),
    ("sha256", ["rsa_padding_mode:pss", "rsa_pss_saltlen:abc"], STRICTER,
     "PSS salt length 'abc' is neither a number nor digest, max or auto"),
]


@pytest.mark.parametrize("digest,opts,outcome,text", DGST_CASES, ids=case_id)
def test_dgst_sign(ossl, keys, digest, opts, outcome, text):
    out = ossl.path("parity.sig")
    both(ossl, keys, lambda key: ("dgst", f"-{digest}", "-sign", key, *sigopts("-sigopt", opts), "-out", out,
                                  keys["message"]), outcome, text)
    if outcome == SAME:
        verified = ossl.plain("dgst", f"-{digest}", "-verify", keys["fake_pub"], *sigopts("-sigopt", opts),
                              "-signature", out, keys["message"])
        assert b"Verified OK" in verified.stdout


# ------------------------------------------------------------------ pre-hashed sign (pkeyutl -sign)

PKEYUTL_SIGN_CASES = [
    (32, ["digest:sha256"], SAME, None),
    (32, ["digest:sha256", "rsa_padding_mode:pss", "rsa_pss_saltlen:digest"], SAME, None),
    (48, ["digest:sha384", "rsa_padding_mode:pss", "rsa_pss_saltlen:max", "rsa_mgf1_md:sha512"], SAME, None),
    (20, ["rsa_padding_mode:pss"], SAME, None),  # PSS with no digest set uses SHA-1
    (36, ["digest:md5-sha1"], SAME, None),
    (32, [], SAME, None),  # PKCS#1 v1.5 over the bytes as given, no DigestInfo
    (32, ["digest:sha256", "properties:provider=default"], SAME, None),
    (32, ["digest:sha3-256"], REFUSED, "digest SHA3-256 for RSA signatures"),
    (32, ["digest:sha256", "rsa_padding_mode:x931"], REFUSED, "not X9.31"),
    (32, ["digest:sha256", "rsa_padding_mode:none"], BOTH_FAIL, "takes no digest"),
    (32, ["digest:foo"], BOTH_FAIL, "digest 'foo' could not be fetched"),
    # Both read properties with a digest set in the same call only; -pkeyopt sets one at a time.
    (32, ["digest:sha256", "properties:provider=nowhere"], SAME, None),
    (32, ["digest:sha256", "rsa_pss_saltlen:20", "rsa_padding_mode:pss"], BOTH_FAIL,
     "PSS saltlen can only be specified if PSS padding has been specified first"),
    (32, ["digest:sha256"] * 1 + ["rsa_padding_mode:pss", "rsa_mgf1_md:foo"], BOTH_FAIL, "could not be fetched"),
    (20, ["digest:sha256"], BOTH_FAIL, "input is 20 bytes, not a SHA2-256 digest"),
]


def pkeyutl_sign_both(ossl, keys, stem, length, opts, outcome, text):
    """pkeyutl -sign of `length` random bytes with both providers; a signature both make is
    verified by plain OpenSSL with the same options."""
    tbs = ossl.path(f"{stem}.tbs")
    Path(tbs).write_bytes(os.urandom(length))
    out = ossl.path(f"{stem}.sig")
    both(ossl, keys, lambda key: ("pkeyutl", "-sign", "-inkey", key, *sigopts("-pkeyopt", opts), "-in", tbs,
                                  "-out", out), outcome, text)
    if outcome == SAME:
        verified = ossl.plain("pkeyutl", "-verify", "-pubin", "-inkey", keys["fake_pub"],
                              *sigopts("-pkeyopt", [o for o in opts if not o.startswith("properties")]),
                              "-in", tbs, "-sigfile", out)
        assert b"Signature Verified Successfully" in verified.stdout


@pytest.mark.parametrize("length,opts,outcome,text", PKEYUTL_SIGN_CASES, ids=case_id)
def test_pkeyutl_sign(ossl, keys, length, opts, outcome, text):
    pkeyutl_sign_both(ossl, keys, "parity", length, opts, outcome, text)


def test_pkeyutl_sign_raw_block(ossl, keys):
    """Padding none: a modulus-sized block below the modulus, signed as it is."""
    block = ossl.path("parity.block")
    Path(block).write_bytes(b"\x00" + os.urandom(255))
    out = ossl.path("parity.raw")
    # pkeyutl of OpenSSL 3.0 refuses input this long itself ("looks too long to be a hash").
    ossl.run("rsautl", "-sign", "-raw", "-inkey", keys["fake"], "-in", block, "-out", out)
    recovered = ossl.plain("pkeyutl", "-verifyrecover", "-pubin", "-inkey", keys["fake_pub"], "-pkeyopt",
                           "rsa_padding_mode:none", "-in", out).stdout
    assert recovered == Path(block).read_bytes()


# ------------------------------------------------------------------ verification by the provider

VERIFY_CASES = [
    ("sha256", []),
    ("sha3-256", []),
    ("sha256", ["rsa_padding_mode:x931"]),
    ("sha512", ["rsa_padding_mode:pss", "rsa_pss_saltlen:auto"]),
    ("sha256", ["rsa_padding_mode:pss", "rsa_pss_saltlen:digest", "rsa_mgf1_md:sha512-256"]),
]


@pytest.mark.parametrize("digest,opts", VERIFY_CASES, ids=case_id)
def test_verification_through_the_provider_takes_what_the_default_provider_takes(ossl, keys, digest, opts):
    """With ?provider=cloudhsm preferred, ours verifies software keys' signatures too:
    every setting the default provider verifies with, ours does (it runs the default
    provider on the public key), including those the HSMs could not sign with."""
    sig = ossl.path("parity_soft.sig")
    ossl.plain("dgst", f"-{digest}", "-sign", keys["soft"], *sigopts("-sigopt", opts), "-out", sig, keys["message"])
    env = dict(ossl.env)
    env["CLOUDHSM_PROVIDER_TRACE"] = "1"
    proc = ossl.run("dgst", f"-{digest}", "-verify", keys["soft_pub"], *sigopts("-sigopt", opts), "-signature", sig,
                    keys["message"], env=env)
    assert b"Verified OK" in proc.stdout
    assert b"verification with a RSA public key, run by the default provider" in proc.stderr, "ours did not verify"
    Path(ossl.path("parity_tampered.txt")).write_bytes(Path(keys["message"]).read_bytes() + b"!")
    bad = ossl.run("dgst", f"-{digest}", "-verify", keys["soft_pub"], *sigopts("-sigopt", opts), "-signature", sig,
                   ossl.path("parity_tampered.txt"), check=False)
    assert bad.returncode != 0 and "signature does not verify" in text_of(bad), text_of(bad)


def test_verify_and_recover_with_the_fake_pem(ossl, keys):
    tbs = ossl.path("parity.tbs")
    Path(tbs).write_bytes(os.urandom(32))
    sig = ossl.path("parity.sig")
    ossl.run("pkeyutl", "-sign", "-inkey", keys["fake"], "-pkeyopt", "digest:sha256", "-in", tbs, "-out", sig)
    out = ossl.run("pkeyutl", "-verify", "-inkey", keys["fake"], "-pkeyopt", "digest:sha256", "-in", tbs,
                   "-sigfile", sig).stdout
    assert b"Signature Verified Successfully" in out
    # Recovery is a public-key operation, so ours gives what the default provider gives.
    ours = ossl.run("pkeyutl", "-verifyrecover", "-inkey", keys["fake"], "-pkeyopt", "digest:sha256", "-in", sig).stdout
    plain = ossl.plain("pkeyutl", "-verifyrecover", "-pubin", "-inkey", keys["fake_pub"], "-pkeyopt", "digest:sha256",
                       "-in", sig).stdout
    assert ours == plain == Path(tbs).read_bytes()


# ------------------------------------------------------------------ operation parameters answered back

SIGN_PROBES = [
    ("SHA256", []),
    ("-", []),
    ("sha384", ["rsa_padding_mode:pss", "rsa_mgf1_md:sha512", "rsa_pss_saltlen:30"]),
    ("SHA256", ["rsa_padding_mode:pss", "rsa_pss_saltlen:max"]),
    ("SHA256", ["rsa_padding_mode:pss", "rsa_pss_saltlen:-1"]),
    ("SHA1", ["pad-mode:pss", "saltlen:auto", "mgf1-digest:SHA2-224"]),
    ("SHA512", ["rsa_padding_mode:pss", "rsa_pss_saltlen:digest"]),
]


@pytest.mark.parametrize("digest,opts", SIGN_PROBES, ids=case_id)
def test_signature_parameters_are_answered_as_the_default_provider_answers_them(ossl, keys, probe, digest, opts):
    """pad-mode, digest, mgf1-digest, saltlen and the AlgorithmIdentifier (what X509_sign
    embeds) read back the same from both providers."""
    default = probe_run(ossl, probe, "sign", keys["soft"], digest, *opts, plain=True)
    ours = probe_run(ossl, probe, "sign", keys["fake"], digest, *opts)
    assert default.returncode == 0 and ours.returncode == 0, default.stdout + ours.stdout
    assert "FAILED" not in default.stdout + ours.stdout
    assert ours.stdout == default.stdout


PREHASH_PROBES = [
    [],
    ["digest:sha256"],
    ["digest:sha384", "rsa_padding_mode:pss", "rsa_pss_saltlen:digest"],
    ["rsa_padding_mode:pss"],
    ["digest:md5-sha1"],
]


@pytest.mark.parametrize("opts", PREHASH_PROBES, ids=case_id)
def test_prehash_signature_parameters_are_answered_as_the_default_provider_answers_them(ossl, keys, probe, opts):
    """The same for a pre-hashed sign (EVP_PKEY_sign_init, pkeyutl -sign)."""
    default = probe_run(ossl, probe, "prehash", keys["soft"], *opts, plain=True)
    ours = probe_run(ossl, probe, "prehash", keys["fake"], *opts)
    assert default.returncode == 0 and ours.returncode == 0, default.stdout + ours.stdout
    assert probe_lines(ours) == probe_lines(default), f"default:\n{default.stdout}\nours:\n{ours.stdout}"


DECRYPT_PROBES = [
    [],
    ["rsa_padding_mode:oaep"],
    ["rsa_padding_mode:oeap"],
    ["rsa_padding_mode:oaep", "rsa_oaep_md:sha512", "rsa_oaep_label:aabb", "tls-client-version:771",
     "tls-negotiated-version:770"],
    ["rsa_oaep_md:sha3-256"],
    ["rsa_padding_mode:none"],
    ["pad-mode:pkcs1", "mgf1-digest:sha256"],
]


@pytest.mark.parametrize("opts", DECRYPT_PROBES, ids=case_id)
def test_cipher_parameters_are_answered_as_the_default_provider_answers_them(ossl, keys, probe, opts):
    default = probe_run(ossl, probe, "decrypt", keys["soft"], *opts, plain=True)
    ours = probe_run(ossl, probe, "decrypt", keys["fake"], *opts)
    assert "FAILED" not in default.stdout + ours.stdout, default.stdout + ours.stdout
    assert ours.stdout == default.stdout


# ------------------------------------------------------------------ decryption (pkeyutl -decrypt)

DECRYPT_CASES = [
    ([], SAME, None),
    (["rsa_padding_mode:pkcs1"], SAME, None),
    (["rsa_padding_mode:oaep"], SAME, None),
    (["rsa_padding_mode:oeap"], SAME, None),
    (["rsa_padding_mode:oaep", "rsa_oaep_md:sha256", "rsa_mgf1_md:sha256"], SAME, None),
    (["rsa_padding_mode:oaep", "rsa_oaep_md:sha512", "rsa_mgf1_md:sha1", "rsa_oaep_label:0011aabb"], SAME, None),
    (["rsa_padding_mode:oaep", "rsa_oaep_md:sha224"], SAME, None),
    (["rsa_padding_mode:oaep", "digest:SHA2-384", "digest-props:provider=default"], SAME, None),
    (["rsa_oaep_md:sha3-256"], SAME, None),  # unused with PKCS#1 padding, by both
    (["rsa_padding_mode:oaep", "rsa_oaep_md:sha3-256"], REFUSED, "digest SHA3-256 for OAEP decryption"),
    (["rsa_padding_mode:oaep", "rsa_mgf1_md:sha512-256"], REFUSED, "digest SHA2-512/256 for MGF1 in OAEP"),
    (["rsa_padding_mode:x931"], BOTH_FAIL, "RSA padding mode x931: the HSMs decrypt with pkcs1, oaep or none"),
    (["rsa_padding_mode:pss"], BOTH_FAIL, "PSS padding is for signatures, not RSA decryption"),
    (["rsa_padding_mode:oaep", "rsa_oaep_md:foo"], BOTH_FAIL, "digest 'foo' could not be fetched"),
    (["rsa_padding_mode:pkcs1v15"], BOTH_FAIL, "RSA padding mode 'pkcs1v15' is unknown"),
]


@pytest.mark.parametrize("opts,outcome,text", DECRYPT_CASES, ids=case_id)
def test_pkeyutl_decrypt(cluster, ossl, keys, opts, outcome, text):
    secret = os.urandom(24)
    Path(ossl.path("parity.secret")).write_bytes(secret)
    encrypt_opts = [o for o in opts if o not in ("rsa_padding_mode:x931", "rsa_padding_mode:pss")
                    and not o.endswith(":foo") and not o.endswith("pkcs1v15")]
    for which in ("soft", "fake"):
        ossl.plain("pkeyutl", "-encrypt", "-pubin", "-inkey", keys[f"{which}_pub"], *sigopts("-pkeyopt", encrypt_opts),
                   "-in", ossl.path("parity.secret"), "-out", ossl.path(f"parity_{which}.enc"))
    default = ossl.plain("pkeyutl", "-decrypt", "-inkey", keys["soft"], *sigopts("-pkeyopt", opts),
                         "-in", ossl.path("parity_soft.enc"), check=False)
    before = private_operations(cluster)
    ours = ossl.run("pkeyutl", "-decrypt", "-inkey", keys["fake"], *sigopts("-pkeyopt", opts),
                    "-in", ossl.path("parity_fake.enc"), check=False)
    if outcome == SAME:
        assert default.returncode == 0 and default.stdout == secret, text_of(default)
        assert ours.returncode == 0 and ours.stdout == secret, text_of(ours)
        assert private_operations(cluster) > before, "the decryption did not run on the HSMs"
    elif outcome == REFUSED:
        assert default.returncode == 0 and default.stdout == secret, text_of(default)
        assert ours.returncode != 0 and text in text_of(ours), text_of(ours)
    else:
        assert default.returncode != 0, text_of(default)
        assert ours.returncode != 0 and text in text_of(ours), text_of(ours)


ENCRYPT_CASES = [
    [],
    ["rsa_padding_mode:oaep"],
    ["rsa_padding_mode:oaep", "rsa_oaep_md:sha3-256", "rsa_mgf1_md:sha512-256", "rsa_oaep_label:0011aabb"],
]


@pytest.mark.parametrize("opts", ENCRYPT_CASES, ids=case_id)
def test_encryption_through_the_provider_takes_what_the_default_provider_takes(ossl, keys, opts):
    """Encryption is a public-key operation: ours (preferred for the software key's public
    half) encrypts with every setting the default provider does, and the software key
    decrypts it."""
    secret = os.urandom(24)
    Path(ossl.path("parity.secret")).write_bytes(secret)
    env = dict(ossl.env)
    env["CLOUDHSM_PROVIDER_TRACE"] = "1"
    proc = ossl.run("pkeyutl", "-encrypt", "-pubin", "-inkey", keys["soft_pub"], *sigopts("-pkeyopt", opts),
                    "-in", ossl.path("parity.secret"), "-out", ossl.path("parity_ours.enc"), env=env)
    assert b"encryption with a RSA public key, run by the default provider" in proc.stderr, "ours did not encrypt"
    out = ossl.plain("pkeyutl", "-decrypt", "-inkey", keys["soft"], *sigopts("-pkeyopt", opts),
                     "-in", ossl.path("parity_ours.enc")).stdout
    assert out == secret


# ------------------------------------------------------------------ key generation (genpkey, genrsa)

GEN_CASES = [
    ([], SAME, None),
    (["rsa_keygen_bits:3072"], SAME, None),
    (["rsa_keygen_pubexp:3"], SAME, None),
    (["rsa_keygen_pubexp:17", "rsa_keygen_primes:2"], SAME, None),
    (["bits:2048", "e:65537", "primes:2"], SAME, None),
    (["rsa_keygen_bits:1024"], REFUSED, "the HSMs make RSA keys of 2048, 3072 or 4096 bits, not 1024"),
    (["rsa_keygen_bits:2560"], REFUSED, "not 2560"),
    (["rsa_keygen_primes:3"], REFUSED, "the HSMs make two-prime RSA keys only, not 3-prime ones"),
    (["rsa_keygen_pubexp:4294967297"], REFUSED,
     "public exponent that is an odd number from 3 to 4294967295 (65537 is usual), not 4294967297"),
    (["rsa_keygen_bits:256"], BOTH_FAIL, "not 256"),
    (["rsa_keygen_pubexp:4"], BOTH_FAIL, "an odd number from 3 to 4294967295"),
    (["rsa_pss_keygen_md:sha256"], BOTH_FAIL, "command not supported"),
    (["digest:sha256"], BOTH_FAIL, "command not supported"),
]


def genpkey_both(ossl, algorithm, opts, outcome, text, ours_args=()) -> tuple[str, str]:
    """genpkey with the default provider alone and with ours (`ours_args` first), and the
    outcome checked; answers the two key files. A refusal leaves no key file behind."""
    out, soft = ossl.path("parity_gen.key"), ossl.path("parity_soft_gen.key")
    for path in (out, soft):
        if os.path.exists(path):
            os.remove(path)
    default = ossl.plain("genpkey", "-algorithm", algorithm, *sigopts("-pkeyopt", opts), "-out", soft, check=False)
    ours = ossl.run("genpkey", *ours_args, "-algorithm", algorithm, *sigopts("-pkeyopt", opts), "-out", out,
                    check=False)
    if outcome == SAME:
        assert default.returncode == 0, text_of(default)
        assert ours.returncode == 0, text_of(ours)
        assert Path(out).read_text().startswith("-----BEGIN CLOUDHSM KEY REFERENCE-----")
    else:
        if outcome == REFUSED:
            assert default.returncode == 0, text_of(default)
        else:
            assert default.returncode != 0, text_of(default)
        assert ours.returncode != 0 and text in text_of(ours), text_of(ours)
        assert not os.path.exists(out) or os.path.getsize(out) == 0
    return soft, out


@pytest.mark.parametrize("opts,outcome,text", GEN_CASES, ids=case_id)
def test_genpkey(cluster, ossl, opts, outcome, text):
    soft, out = genpkey_both(ossl, "RSA", opts, outcome, text)
    if outcome == SAME:
        shown = ossl.run("pkey", "-in", out, "-text", "-noout").stdout.decode()
        soft = ossl.plain("pkey", "-in", soft, "-text", "-noout").stdout.decode()
        bits = soft.split("(", 1)[1].split(" bit", 1)[0]
        exponent = [line for line in soft.splitlines() if line.startswith("publicExponent")][0].split(":")[1].strip()
        assert f"({bits} bit)" in shown and f"Exponent: {exponent}" in shown, shown + soft


@pytest.mark.parametrize("args,outcome,text", [
    (["-3", "2048"], SAME, "Exponent: 3 (0x3)"),
    (["-F4", "2048"], SAME, "Exponent: 65537 (0x10001)"),
    (["-primes", "2", "3072"], SAME, "(3072 bit)"),
    (["-primes", "3", "2048"], REFUSED, "two-prime RSA keys only"),
    (["1024"], REFUSED, "not 1024"),
], ids=case_id)
def test_genrsa(ossl, args, outcome, text):
    out = ossl.path("parity_genrsa.key")
    default = ossl.plain("genrsa", *args[:-1], "-out", ossl.path("parity_soft_genrsa.key"), args[-1], check=False)
    ours = ossl.run("genrsa", *args[:-1], "-out", out, args[-1], check=False)
    assert default.returncode == 0, text_of(default)
    if outcome == SAME:
        assert ours.returncode == 0, text_of(ours)
        assert text in ossl.run("pkey", "-in", out, "-text", "-noout").stdout.decode()
    else:
        assert ours.returncode != 0 and text in text_of(ours), text_of(ours)


# ------------------------------------------------------------------ key parameters, export, check

def test_public_key_parameters_are_the_default_providers(ossl, keys, probe):
    names = ["bits", "security-bits", "max-size", "default-digest", "n", "e"]
    ours = probe_run(ossl, probe, "key", keys["fake"], *names)
    default = probe_run(ossl, probe, "key", keys["fake_pub"], *names, plain=True)
    assert "FAILED" not in ours.stdout + default.stdout, ours.stdout + default.stdout
    assert ours.stdout == default.stdout
    assert "default-digest: SHA256" in ours.stdout


@pytest.mark.parametrize("kind,name", [("rsa", "d"), ("rsa", "rsa-factor1"), ("rsa", "rsa-factor2"),
                                       ("rsa", "rsa-exponent1"), ("rsa", "rsa-coefficient1"), ("ec", "priv")])
def test_private_key_parameters_are_refused_by_name(ossl, keys, ec_keys, probe, kind, name):
    pair = keys if kind == "rsa" else ec_keys
    default = probe_run(ossl, probe, "key", pair["soft"], name, plain=True)
    assert default.returncode == 0 and "FAILED" not in default.stdout, default.stdout
    ours = probe_run(ossl, probe, "key", pair["fake"], name)
    assert f"{name}: FAILED" in ours.stdout, ours.stdout
    assert f"key parameter '{name}' is part of the private key, which stays in the HSMs" in ours.stdout, ours.stdout


def test_export_gives_the_public_key_and_refuses_the_private_half(ossl, keys):
    ours = ossl.run("pkey", "-in", keys["fake"], "-pubout", "-outform", "DER").stdout
    plain = ossl.plain("pkey", "-pubin", "-in", keys["fake_pub"], "-outform", "DER").stdout
    assert ours == plain
    refused = ossl.run("pkey", "-in", keys["fake"], "-outform", "DER", "-out", ossl.path("parity_private.der"),
                       check=False)
    assert refused.returncode != 0
    assert "export of the private half of RSA key handle" in text_of(refused), text_of(refused)
    assert "the private half of an HSM key never leaves the HSMs" in text_of(refused)


def test_check_and_pubcheck(cluster, ossl, keys):
    """`pkey -check` of a fake PEM signs in the HSMs and verifies with the key file's
    public key: the pair is checked, not assumed."""
    before = private_operations(cluster)
    assert b"Key is valid" in ossl.run("pkey", "-in", keys["fake"], "-check", "-noout").stdout
    assert private_operations(cluster) == before + 1
    assert b"Key is valid" in ossl.run("pkey", "-in", keys["fake"], "-pubcheck", "-noout").stdout
    assert private_operations(cluster) == before + 1


# ------------------------------------------------------------------ the parameter tables themselves

def listed_parameters(text: str, heading: str) -> dict[str, set[str]]:
    """From `openssl list -verbose`, the parameter names under each kind of table of the
    implementation whose heading line starts with `heading` (key managers head their
    block with a Name line, an IDs line below it)."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip().startswith(heading))
    base = len(lines[start]) - len(lines[start].lstrip()) - (2 if heading.startswith("IDs:") else 0)
    tables: dict[str, set[str]] = {}
    kind, kind_depth = None, 0
    for line in lines[start + 1:]:
        depth = len(line) - len(line.lstrip())
        if line.strip() and depth <= base:
            break
        if line.strip().endswith("parameters:"):
            kind, kind_depth = line.strip(), depth
            tables[kind] = set()
        elif kind and depth > kind_depth and ":" in line:
            tables[kind].add(line.strip().split(":", 1)[0])
        elif depth <= kind_depth:
            kind = None
    return tables


@pytest.mark.parametrize("what,default,ours", [
    ("-key-managers", "IDs: { 1.2.840.10045.2.1, EC, id-ecPublicKey } @ default",
     "IDs: { 1.2.840.10045.2.1, EC, id-ecPublicKey } @ cloudhsm"),
    ("-key-managers", "IDs: { 1.2.840.113549.1.1.1, 2.5.8.1.1, RSA, rsaEncryption } @ default",
     "IDs: { 1.2.840.113549.1.1.1, 2.5.8.1.1, RSA, rsaEncryption } @ cloudhsm"),
    ("-signature-algorithms", "ECDSA @ default", "ECDSA @ cloudhsm"),
    ("-signature-algorithms", "{ 1.2.840.113549.1.1.1, 2.5.8.1.1, RSA, rsaEncryption } @ default",
     "{ 1.2.840.113549.1.1.1, 2.5.8.1.1, RSA, rsaEncryption } @ cloudhsm"),
], ids=["EC keymgmt", "RSA keymgmt", "ECDSA", "RSA signature"])
def test_parameter_tables_list_the_default_providers_names(ossl, what, default, ours):
    """Every name the default provider's tables list, ours list (so -pkeyopt and -sigopt
    reach ours with every one of them), and no other."""
    text = ossl.run("list", what, "-verbose").stdout.decode()
    theirs, mine = listed_parameters(text, default), listed_parameters(text, ours)
    assert theirs and mine == theirs, f"default: {theirs}\nours: {mine}"


# ------------------------------------------------------------------ EC keys and ECDSA

HSM = ["-propquery", "provider=cloudhsm"]


@pytest.fixture(scope="module")
def ec_keys(ossl) -> dict:
    """A P-256 software key (default provider), one made in the HSMs, their public halves."""
    soft, fake = ossl.path("parity_ec_soft.key"), ossl.path("parity_ec_fake.key")
    ossl.plain("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", soft)
    ossl.plain("pkey", "-in", soft, "-pubout", "-out", ossl.path("parity_ec_soft.pub"))
    ossl.run("genpkey", *HSM, "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", fake)
    ossl.run("pkey", "-in", fake, "-pubout", "-out", ossl.path("parity_ec_fake.pub"))
    Path(ossl.path("parity_ec_message.txt")).write_bytes(os.urandom(3000))
    return {"soft": soft, "soft_pub": ossl.path("parity_ec_soft.pub"), "fake": fake,
            "fake_pub": ossl.path("parity_ec_fake.pub"), "message": ossl.path("parity_ec_message.txt")}


# ecdsa_sig.c of OpenSSL 3.0 takes digest, properties, digest-size and kat (nonce-type
# arrived in 3.2); during a digest-sign only kat is settable.
EC_DGST_CASES = [
    ("sha256", [], SAME, None),
    ("sha1", [], SAME, None),
    ("sha224", [], SAME, None),
    ("sha384", [], SAME, None),
    ("sha512", [], SAME, None),
    ("sha256", ["kat:0"], SAME, None),
    ("sha3-256", [], REFUSED, "digest SHA3-256 for signing: the HSMs take SHA-1, SHA-224, SHA-256, SHA-384"),
    ("sha512-256", [], REFUSED, "digest SHA2-512/256 for signing"),
    ("md5", [], REFUSED, "digest MD5 for signing"),
    ("md5-sha1", [], REFUSED, "digest MD5-SHA1 is not one ECDSA signs with"),
    ("sha256", ["kat:1"], REFUSED, "ECDSA known-answer test mode (kat 1)"),
    ("sha256", ["digest-size:32"], BOTH_FAIL, "command not supported"),
    ("sha256", ["digest:sha384"], BOTH_FAIL, "command not supported"),
    ("sha256", ["nonce-type:1"], BOTH_FAIL, "command not supported"),
    ("sha256", ["rsa_padding_mode:pss"], BOTH_FAIL, None),
]


@pytest.mark.parametrize("digest,opts,outcome,text", EC_DGST_CASES, ids=case_id)
def test_ec_dgst_sign(ossl, ec_keys, digest, opts, outcome, text):
    out = ossl.path("parity_ec.sig")
    both(ossl, ec_keys, lambda key: ("dgst", f"-{digest}", "-sign", key, *sigopts("-sigopt", opts), "-out", out,
                                     ec_keys["message"]), outcome, text)
    if outcome == SAME:
        # Made over that digest: plain OpenSSL verifies it with that digest, and ours too.
        verified = ossl.plain("dgst", f"-{digest}", "-verify", ec_keys["fake_pub"], "-signature", out,
                              ec_keys["message"])
        assert b"Verified OK" in verified.stdout
        verified = ossl.run("dgst", f"-{digest}", "-prverify", ec_keys["fake"], "-signature", out, ec_keys["message"])
        assert b"Verified OK" in verified.stdout
        other = "sha384" if digest != "sha384" else "sha256"
        wrong = ossl.plain("dgst", f"-{other}", "-verify", ec_keys["fake_pub"], "-signature", out, ec_keys["message"],
                           check=False)
        assert b"Verification failure" in wrong.stdout + wrong.stderr, text_of(wrong)


EC_PKEYUTL_SIGN_CASES = [
    (32, ["digest:sha256"], SAME, None),
    (48, ["digest:sha384"], SAME, None),
    (20, ["digest:sha1"], SAME, None),
    (64, ["digest:SHA2-512", "digest-size:64"], SAME, None),
    (28, [], SAME, None),  # no digest: the bytes as given
    (48, ["digest-size:48"], SAME, None),
    (32, ["digest:sha256", "properties:provider=default"], SAME, None),
    # Both read properties with a digest set in the same call only; -pkeyopt sets one at a time.
    (32, ["digest:sha256", "properties:provider=nowhere"], SAME, None),
    (32, ["kat:0"], SAME, None),
    (32, ["digest:sha3-256"], REFUSED, "digest SHA3-256 for ECDSA signatures"),
    (16, [], REFUSED, "ECDSA input is 16 bytes; it must be a SHA-1, SHA-224, SHA-256, SHA-384 or SHA-512 digest"),
    (36, ["digest:md5-sha1"], REFUSED, "digest MD5-SHA1 is not one ECDSA signs with"),
    (32, ["kat:1"], REFUSED, "ECDSA known-answer test mode (kat 1)"),
    (32, ["digest:foo"], BOTH_FAIL, "digest 'foo' could not be fetched"),
    (20, ["digest:sha256"], BOTH_FAIL, "ECDSA input is 20 bytes"),
    (32, ["digest-size:20"], BOTH_FAIL, "input is 32 bytes, not the digest size set (20)"),
    (32, ["nonce-type:1"], BOTH_FAIL, "command not supported"),
]


@pytest.mark.parametrize("length,opts,outcome,text", EC_PKEYUTL_SIGN_CASES, ids=case_id)
def test_ec_pkeyutl_sign(ossl, ec_keys, length, opts, outcome, text):
    pkeyutl_sign_both(ossl, ec_keys, "parity_ec", length, opts, outcome, text)


EC_SIGN_PROBES = [
    ("sign", "SHA256"),
    ("sign", "-"),  # the key's default digest
    ("sign", "sha384"),
    ("sign", "SHA1"),
    ("sign", "SHA2-224", "kat:0"),
    ("sign", "sha512"),
    ("prehash",),
    ("prehash", "digest:sha384"),
    ("prehash", "digest:sha256", "digest-size:32"),
    ("prehash", "digest-size:48"),
    ("prehash", "digest:SHA1", "properties:provider=default"),
    ("prehash", "kat:0"),
]


@pytest.mark.parametrize("args", EC_SIGN_PROBES, ids=case_id)
def test_ecdsa_parameters_are_answered_as_the_default_provider_answers_them(ossl, ec_keys, probe, args):
    """digest, digest-size and algorithm-id (what X509_sign embeds) read back the same, for
    a digest-sign and for a pre-hashed sign."""
    mode, rest = args[0], args[1:]
    default = probe_run(ossl, probe, mode, ec_keys["soft"], *rest, plain=True)
    ours = probe_run(ossl, probe, mode, ec_keys["fake"], *rest)
    assert default.returncode == 0 and ours.returncode == 0, default.stdout + ours.stdout
    assert probe_lines(ours) == probe_lines(default), f"default:\n{default.stdout}\nours:\n{ours.stdout}"


EC_KEY_NAMES = ["bits", "security-bits", "max-size", "default-digest", "group", "encoded-pub-key", "pub", "qx", "qy",
                "encoding", "point-format", "field-type", "p", "a", "b", "order", "cofactor", "generator", "seed",
                "decoded-from-explicit", "use-cofactor-flag", "include-public", "mandatory-digest"]


def test_ec_public_key_parameters_are_the_default_providers(ossl, ec_keys, probe):
    ours = probe_run(ossl, probe, "key", ec_keys["fake"], *EC_KEY_NAMES)
    default = probe_run(ossl, probe, "key", ec_keys["fake_pub"], *EC_KEY_NAMES, plain=True)
    assert probe_lines(ours) == probe_lines(default), f"default:\n{default.stdout}\nours:\n{ours.stdout}"
    for line in ("bits: 256", "security-bits: 128", "max-size: 72", "default-digest: SHA256", "group: prime256v1",
                 "point-format: uncompressed", "encoding: named_curve"):
        assert line in ours.stdout.splitlines(), ours.stdout
    assert f"encoded-pub-key: {own_point(ossl, ec_keys['fake_pub'])}" in ours.stdout, ours.stdout


def own_point(ossl, path: str) -> str:
    """The uncompressed P-256 point of a public key file: the last 65 bytes of its SPKI."""
    return ossl.plain("pkey", "-pubin", "-in", path, "-outform", "DER").stdout[-65:].hex()


@pytest.mark.parametrize("setting,outcome,text", [
    ("point-format:uncompressed", SAME, None),
    ("encoding:named_curve", SAME, None),
    ("use-cofactor-flag:0", SAME, None),
    ("use-cofactor-flag:-1", SAME, None),
    ("include-public:1", SAME, None),
    ("group-check:named-nist", SAME, None),
    ("encoded-pub-key:<own>", SAME, None),
    ("point-format:compressed", REFUSED, "EC point format 'compressed': the HSMs hand out uncompressed points"),
    ("point-format:hybrid", REFUSED, "EC point format 'hybrid'"),
    ("encoding:explicit", REFUSED, "EC parameter encoding 'explicit': keys of the HSMs name their curve"),
    ("use-cofactor-flag:1", REFUSED, "use-cofactor-flag 1: cofactor ECDH is for key exchange"),
    ("include-public:0", REFUSED, "include-public 0 shapes how the private key is encoded"),
    ("hexseed:00", REFUSED, "EC parameter 'seed' describes an explicit curve"),
    ("encoded-pub-key:<other>", REFUSED, "encoded-pub-key: the public half of an HSM key is the HSMs'"),
    ("point-format:foo", BOTH_FAIL, "EC point format 'foo' is unknown (uncompressed, compressed or hybrid)"),
    ("encoding:foo", BOTH_FAIL, "EC parameter encoding 'foo' is unknown"),
    ("use-cofactor-flag:2", BOTH_FAIL, "use-cofactor-flag 2 is invalid"),
    ("group-check:foo", BOTH_FAIL, "EC group check type 'foo' is unknown"),
], ids=case_id)
def test_ec_key_settings(ossl, ec_keys, probe, setting, outcome, text):
    """EVP_PKEY_set_params on the key: what leaves a key of ours as it is is taken and reads
    back as the default provider's does; what would change it is refused by name."""
    name = setting.split(":")[0]
    # Bytes go in as hex, which OSSL_PARAM_allocate_from_text reads from a "hex" prefix.
    if setting == "encoded-pub-key:<own>":
        soft_setting, fake_setting = (f"hex{name}:{own_point(ossl, ec_keys[k])}" for k in ("soft_pub", "fake_pub"))
    elif setting == "encoded-pub-key:<other>":
        soft_setting, fake_setting = (f"hex{name}:{own_point(ossl, ec_keys[k])}" for k in ("fake_pub", "soft_pub"))
    else:
        soft_setting = fake_setting = setting
    default = probe_run(ossl, probe, "setkey", ec_keys["soft"], soft_setting, plain=True)
    ours = probe_run(ossl, probe, "setkey", ec_keys["fake"], fake_setting)
    if outcome == BOTH_FAIL:
        assert f"{soft_setting}: FAILED" in default.stdout or "not settable" in default.stdout, default.stdout
    else:
        assert f"set {soft_setting}: ok" in default.stdout, default.stdout
    if outcome == SAME:
        assert f"set {fake_setting}: ok" in ours.stdout, ours.stdout
        if name == "encoded-pub-key":
            assert f"{name}: {own_point(ossl, ec_keys['fake_pub'])}" in ours.stdout.splitlines(), ours.stdout
        else:
            answered = [line for line in probe_lines(default) if line.startswith(f"{name}:")]
            assert answered == [line for line in probe_lines(ours) if line.startswith(f"{name}:")], ours.stdout
    else:
        assert f"{fake_setting}: FAILED" in ours.stdout and text in ours.stdout, ours.stdout


@pytest.mark.parametrize("args,outcome,text", [
    ([], SAME, None),
    (["-conv_form", "uncompressed"], SAME, None),
    (["-param_enc", "named_curve"], SAME, None),
    (["-conv_form", "compressed"], REFUSED, "EC point format 'compressed'"),
    (["-param_enc", "explicit"], REFUSED, "EC parameter encoding 'explicit'"),
], ids=case_id)
def test_ec_command_writes_the_public_key_as_the_default_provider_does(ossl, ec_keys, args, outcome, text):
    out = ossl.path("parity_ec_out.pub")
    ours = ossl.run("ec", "-in", ec_keys["fake"], *args, "-pubout", "-out", out, check=False)
    default = ossl.plain("ec", "-in", ec_keys["soft"], *args, "-pubout", check=False)
    assert default.returncode == 0, text_of(default)
    if outcome == SAME:
        assert ours.returncode == 0, text_of(ours)
        assert Path(out).read_bytes() == Path(ec_keys["fake_pub"]).read_bytes()
    else:
        assert ours.returncode != 0 and text in text_of(ours), text_of(ours)


EC_GEN_CASES = [
    (["ec_paramgen_curve:P-256"], SAME, None),
    (["ec_paramgen_curve:prime256v1"], SAME, None),
    (["ec_paramgen_curve:secp384r1"], SAME, None),
    (["group:P-521"], SAME, None),
    (["ec_paramgen_curve:P-256", "ec_param_enc:named_curve"], SAME, None),
    (["group:P-384", "encoding:named_curve", "point-format:uncompressed"], SAME, None),
    (["ec_paramgen_curve:P-256", "use-cofactor-flag:0"], SAME, None),
    (["ec_paramgen_curve:P-256", "use-cofactor-flag:-1"], SAME, None),
    (["ec_paramgen_curve:P-256", "ec_param_enc:explicit"], REFUSED, "EC parameter encoding 'explicit'"),
    (["ec_paramgen_curve:P-256", "point-format:compressed"], REFUSED, "EC point format 'compressed'"),
    (["ec_paramgen_curve:P-256", "point-format:hybrid"], REFUSED, "EC point format 'hybrid'"),
    (["ec_paramgen_curve:P-256", "use-cofactor-flag:1"], REFUSED, "use-cofactor-flag 1"),
    (["ec_paramgen_curve:secp256k1"], REFUSED, "EC curve secp256k1: the HSMs make EC keys on P-256 (prime256v1)"),
    (["ec_paramgen_curve:P-256", "point-format:foo"], BOTH_FAIL, "EC point format 'foo' is unknown"),
    (["ec_paramgen_curve:P-256", "encoding:foo"], BOTH_FAIL, "EC parameter encoding 'foo' is unknown"),
    (["ec_paramgen_curve:no-such-curve"], BOTH_FAIL, "EC curve 'no-such-curve' is unknown to OpenSSL"),
    (["field-type:prime-field"], BOTH_FAIL, "EC parameter 'field-type' describes an explicit curve"),
    (["ec_paramgen_curve:P-256", "ec_point_format:compressed"], BOTH_FAIL, "command not supported"),
    (["ec_paramgen_curve:P-256", "group-check:named"], BOTH_FAIL, "command not supported"),
    (["ec_paramgen_curve:P-256", "digest:sha256"], BOTH_FAIL, "command not supported"),
]


def public_key_shape(ossl, key: str, run) -> str:
    """`pkey -text` of the public half, as plain OpenSSL shows it, with the point's bytes
    blanked: curve, size, point format and length, no key material."""
    pub = ossl.path("parity_shape.pub")
    run("pkey", "-in", key, "-pubout", "-out", pub)
    text = ossl.plain("pkey", "-pubin", "-in", pub, "-text", "-noout").stdout.decode()
    return re.sub(r"[0-9a-f]{2}", "xx", text)


@pytest.mark.parametrize("opts,outcome,text", EC_GEN_CASES, ids=case_id)
def test_ec_genpkey(cluster, ossl, opts, outcome, text):
    soft, out = genpkey_both(ossl, "EC", opts, outcome, text, ours_args=HSM)
    if outcome == SAME:
        assert public_key_shape(ossl, out, ossl.run) == public_key_shape(ossl, soft, ossl.plain)


@pytest.mark.parametrize("args,outcome,text", [
    (["-name", "prime256v1"], SAME, None),
    (["-name", "secp384r1", "-conv_form", "uncompressed", "-param_enc", "named_curve"], SAME, None),
    (["-name", "prime256v1", "-conv_form", "compressed"], REFUSED, "EC point format 'compressed'"),
    (["-name", "prime256v1", "-param_enc", "explicit"], REFUSED, "EC parameter encoding 'explicit'"),
], ids=case_id)
def test_ecparam_genkey(cluster, ossl, args, outcome, text):
    out = ossl.path("parity_ecparam.key")
    if os.path.exists(out):
        os.remove(out)
    default = ossl.plain("ecparam", "-genkey", *args, "-noout", "-out", ossl.path("parity_ecparam_soft.key"),
                         check=False)
    ours = ossl.run("ecparam", *HSM, "-genkey", *args, "-noout", "-out", out, check=False)
    assert default.returncode == 0, text_of(default)
    if outcome == SAME:
        assert ours.returncode == 0, text_of(ours)
        assert public_key_shape(ossl, out, ossl.run) == public_key_shape(
            ossl, ossl.path("parity_ecparam_soft.key"), ossl.plain)
    else:
        assert ours.returncode != 0 and text in text_of(ours), text_of(ours)
        assert not os.path.exists(out) or "CLOUDHSM KEY REFERENCE" not in Path(out).read_text()
