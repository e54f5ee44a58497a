"""EC keys through the tools, against real nodes: genECCKeyPair on P-256, P-384 and P-521
(token, session, -nex) and the other AWS curve ids refused by name; importPrivateKey of
EC keys (SEC1 PEM, PKCS#8 DER) through the walkthrough's wrap steps; getCaviumPrivKey's
fake PEM; sign with every ECDSA mechanism, verified by plain openssl against exportPubKey's
output; findKey -t 3, getAttribute, replication to every node, ownership, deleteKey and
getHSMInfo's ECDSA counters."""

from __future__ import annotations

import hashlib
import re
import subprocess

import pytest

from helpers import (
    KmuSession,
    command_output,
    der_children,
    der_read,
    found_keys,
    keypair_handles,
    parse_hsm_info,
    pem_body,
    returned,
    status_codes,
    sym_handle,
    unwrapped_handle,
    wait_until,
)

NODES = 3
CATCH_UP = 30  # seconds: sync runs every 2 s; generous for a loaded machine
# AWS's genECCKeyPair -i ids, and what plain OpenSSL calls each curve.
CURVES = {2: ("prime256v1", "P-256", 256), 14: ("secp384r1", "P-384", 384), 15: ("secp521r1", "P-521", 521)}
# key_mgmt_util's sign -m for ECDSA (AWS's numbers), and the digest each hashes with.
ECDSA = {15: "sha1", 16: "sha224", 17: "sha256", 18: "sha384", 19: "sha512"}
PLAIN = {"OPENSSL_CONF": "/dev/null"}


def plain_openssl(*args, cwd, check=True, input=None) -> subprocess.CompletedProcess:
    """openssl without any provider configuration: what anyone can check the output with."""
    import os

    env = dict(os.environ, **PLAIN)
    proc = subprocess.run(["openssl", *args], cwd=cwd, env=env, capture_output=True, input=input)
    if check and proc.returncode != 0:
        raise AssertionError(f"openssl {' '.join(args)} failed:\n{proc.stdout.decode()}{proc.stderr.decode()}")
    return proc


def curve_of(cluster, pem_file: str) -> str:
    """The curve plain OpenSSL reads from a public key file."""
    text = plain_openssl("pkey", "-pubin", "-in", pem_file, "-text", "-noout", cwd=cluster.work).stdout.decode()
    m = re.search(r"^ASN1 OID: (\S+)$", text, re.M)
    assert m, text
    return m.group(1)


def verify(cluster, public_pem: str, digest: str, signature: str, message: str) -> bool:
    proc = plain_openssl("dgst", f"-{digest}", "-verify", public_pem, "-signature", signature, message,
                         cwd=cluster.work, check=False)
    return proc.returncode == 0 and b"Verified OK" in proc.stdout


def attributes(cluster, path: str) -> dict[str, str]:
    lines = (cluster.work / path).read_text().splitlines()
    return dict(zip(lines[0::2], lines[1::2]))


def ecdsa_counts(info) -> dict[int, tuple[int, int]]:
    """Per node: (RSA signatures, ECDSA signatures) from getHSMInfo's operations line."""
    out = {}
    for node, item in info.items():
        line = item.fields["Private key operations"]
        m = re.fullmatch(r"(\d+) \(sign (\d+), decrypt (\d+), ECDSA sign (\d+)\)", line)
        assert m, f"node {node}: {line!r}"
        total, rsa, decrypt, ecdsa = map(int, m.groups())
        assert total == rsa + decrypt + ecdsa, line
        out[node] = (rsa, ecdsa)
    return out


@pytest.fixture(scope="module")
def generated(cluster):
    """A token key pair on every curve, and a non-extractable P-256 pair, in one run."""
    lines = [f"genECCKeyPair -i {curve} -l ec_gen_{curve}" for curve in CURVES]
    lines.append("genECCKeyPair -i 2 -l ec_gen_nex -nex")
    out = cluster.kmu(lines)
    assert cluster.last_returncode == 0, out
    pairs = {}
    for curve in CURVES:
        pairs[curve] = keypair_handles(command_output(out, f"genECCKeyPair -i {curve} -l ec_gen_{curve}"))
    pairs["nex"] = keypair_handles(command_output(out, "genECCKeyPair -i 2 -l ec_gen_nex"))
    export = [f"exportPubKey -k {pairs[c][0]} -out ec_pub_{c}.pem" for c in CURVES]
    out = cluster.kmu(export)
    assert out.count("Cfm3ExportPubKey returned: 0x00 : HSM Return: SUCCESS") == len(CURVES), out
    return {"pairs": pairs, "transcript": out}


# ------------------------------------------------------------------------------ generation


def test_gen_ecc_key_pair_prints_aws_lines(cluster):
    out = cluster.kmu(["genECCKeyPair -i 14 -l ec_lines"])
    block = command_output(out, "genECCKeyPair")
    assert "Cfm3GenerateKeyPair returned: 0x00 : HSM Return: SUCCESS" in block, block
    assert re.search(r"^Cfm3GenerateKeyPair:    public key handle: \d+    private key handle: \d+$", block, re.M)
    assert "Cluster Error Status" in block
    # As genRSAKeyPair: the status of the node that made the key (it replicated it).
    codes = status_codes(block)
    assert codes and set(codes.values()) == {0}, block
    public, private = keypair_handles(block)
    assert public != private


@pytest.mark.parametrize("curve", sorted(CURVES))
def test_each_curve_makes_a_key_of_that_curve(cluster, generated, curve):
    name, _, bits = CURVES[curve]
    assert curve_of(cluster, f"ec_pub_{curve}.pem") == name
    text = plain_openssl("pkey", "-pubin", "-in", f"ec_pub_{curve}.pem", "-text", "-noout",
                         cwd=cluster.work).stdout.decode()
    assert f"Public-Key: ({bits} bit)" in text, text


@pytest.mark.parametrize("curve,name", [(16, "secp256k1"), (1, "prime192v1"), (13, "secp224r1"), (99, None)])
def test_other_curve_ids_are_refused_by_name(cluster, curve, name):
    out = cluster.kmu([f"genECCKeyPair -i {curve} -l ec_refused_{curve}", f"findKey -l ec_refused_{curve}"])
    expected = f"{name} (curve id {curve})" if name else f"curve id {curve}"
    assert (f"Error: genECCKeyPair: -i {curve}: curve not supported: {expected}; "
            "use 2 (P-256), 14 (P-384) or 15 (P-521)") in out, out
    assert "Cfm3GenerateKeyPair" not in out, "nothing is sent for a curve the HSMs do not hold"
    assert found_keys(command_output(out, "findKey")) == (0, [])
    assert cluster.last_returncode == 1


def test_help_lists_gen_ecc_key_pair(cluster):
    out = cluster.kmu(["help", "genECCKeyPair -h"], login=False)
    assert re.search(r"^   genECCKeyPair\s+generates an EC key pair", out, re.M), out
    assert "Usage: genECCKeyPair -i <curve id: 2 P-256 (prime256v1), 14 P-384 (secp384r1), 15 P-521 (secp521r1)>" in out


def test_session_keys_live_with_their_session(cluster):
    (cluster.work / "ec_sess_msg.txt").write_text("signed with a session key\n")
    s = KmuSession([cluster.kmu_path], cluster.env, cluster.work)
    try:
        s.send(cluster.login_line())
        s.expect(r"^Cfm3LoginHSM returned: 0x00")
        s.send("genECCKeyPair -i 15 -l ec_session -sess")
        m = s.expect(r"^Cfm3GenerateKeyPair:    public key handle: (\d+)    private key handle: (\d+)$")
        public, private = int(m.group(1)), int(m.group(2))
        s.send(f"exportPubKey -k {public} -out ec_sess_pub.pem")
        s.expect(r"^Cfm3ExportPubKey returned: 0x00")
        s.send(f"sign -f ec_sess_msg.txt -k {private} -m 19 -out ec_sess.sig")
        s.expect(r"^Cfm3Sign returned: 0x00")
        s.send("findKey -sess 1 -t 3")
        s.expect(r"^Total number of keys present: 2$")
        # Another client does not see the session's keys.
        out = cluster.kmu([f"getAttribute -o {private} -a 512 -out ec_sess_attr.txt", "findKey -l ec_session"])
        assert returned(command_output(out, "getAttribute"), "Cfm3GetAttribute") == 0xA8, out
        assert found_keys(command_output(out, "findKey")) == (0, [])
    finally:
        transcript = s.finish(["exit"])
    assert verify(cluster, "ec_sess_pub.pem", "sha512", "ec_sess.sig", "ec_sess_msg.txt"), transcript
    assert curve_of(cluster, "ec_sess_pub.pem") == "secp521r1"
    out = cluster.kmu([f"getAttribute -o {private} -a 512 -out ec_sess_gone.txt"])
    assert returned(command_output(out, "getAttribute"), "Cfm3GetAttribute") == 0xA8, "gone with its session"


def test_non_extractable_keys_stay_in_and_extractable_ones_leave_only_wrapped(cluster, generated, openssl):
    nex = generated["pairs"]["nex"][1]
    extractable = generated["pairs"][2][1]
    out = cluster.kmu([
        "genSymKey -t 31 -s 32 -l ec_wrap_kek",
    ])
    kek = sym_handle(out)
    out = cluster.kmu([
        f"wrapKey -k {nex} -w {kek} -out ec_nex.wrapped",
        f"wrapKey -k {extractable} -w {kek} -out ec_ext.wrapped",
        f"unWrapKey -f ec_ext.wrapped -w {kek} -l ec_rewrapped",
    ])
    assert "Cfm3WrapKey returned: 0xaa : HSM Error: Key is not extractable" in command_output(
        out, f"wrapKey -k {nex}"), out
    assert "Key Wrapped." in command_output(out, f"wrapKey -k {extractable}"), out
    assert not (cluster.work / "ec_nex.wrapped").exists()
    # What left the HSM is no plaintext key: plain OpenSSL cannot read it.
    wrapped = (cluster.work / "ec_ext.wrapped").read_bytes()
    proc = plain_openssl("pkey", "-inform", "DER", "-in", "ec_ext.wrapped", "-noout", cwd=cluster.work, check=False)
    assert proc.returncode != 0 and len(wrapped) > 100
    # Unwrapped again, it is the same key.
    again = unwrapped_handle(command_output(out, "unWrapKey"))
    out = cluster.kmu([f"exportPubKey -k {again} -out ec_rewrapped_pub.pem"])
    assert (cluster.work / "ec_rewrapped_pub.pem").read_text() == (cluster.work / "ec_pub_2.pem").read_text(), out


# ------------------------------------------------------------------------------ import


@pytest.fixture(scope="module")
def imported(cluster):
    """The walkthrough's import steps with EC keys: SEC1 PEM, PKCS#8 DER, and the file
    `openssl ecparam -genkey` writes (parameters block first)."""
    w = cluster.work
    plain_openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", "ec_sec1.pem", cwd=w)
    plain_openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-384", "-outform", "DER",
                  "-out", "ec_pkcs8.der", cwd=w)
    plain_openssl("ecparam", "-name", "secp521r1", "-genkey", "-out", "ec_params.pem", cwd=w)
    plain_openssl("ecparam", "-name", "secp256k1", "-genkey", "-noout", "-out", "ec_k1.pem", cwd=w)
    for name, form in (("ec_sec1.pem", "PEM"), ("ec_pkcs8.der", "DER"), ("ec_params.pem", "PEM")):
        stem = name.split(".")[0]
        plain_openssl("pkey", "-inform", form, "-in", name, "-pubout", "-out", f"{stem}_pub.pem", cwd=w)
        plain_openssl("pkey", "-inform", form, "-in", name, "-pubout", "-outform", "DER", "-out", f"{stem}_pub.der",
                      cwd=w)
    s = cluster.session()
    try:
        s.send("genSymKey -t 31 -s 16 -sess -l wrapping_key_for_import")
        wrap = int(s.expect(r"^Symmetric Key Created\.  Key Handle: (\d+)$").group(1))
        keys = {}
        for name in ("ec_sec1.pem", "ec_pkcs8.der", "ec_params.pem"):
            s.send(f"importPrivateKey -f {name} -l imported_{name.split('.')[0]} -w {wrap}")
            keys[name] = int(s.expect(r"^Private Key Unwrapped\.  Key Handle: (\d+)$").group(1))
        s.send(f"getCaviumPrivKey -k {keys['ec_sec1.pem']} -out ec_fake_PEM.key")
        s.expect(r"^getCaviumPrivKey returned: 0x00")
        transcript = s.finish([f"importPrivateKey -f ec_k1.pem -l imported_k1 -w {wrap}", "exit"])
    finally:
        s.close()
    return {"wrap": wrap, "keys": keys, "transcript": transcript, "returncode": s.returncode}


@pytest.mark.parametrize("name", ["ec_sec1.pem", "ec_pkcs8.der", "ec_params.pem"])
def test_import_private_key_takes_ec_files(cluster, imported, name):
    out = command_output(imported["transcript"], f"importPrivateKey -f {name}")
    assert re.search(r"^BER encoded key length is \d+$", out, re.M), out
    for fn in ("Cfm3WrapHostKey", "Cfm3CreateUnwrapTemplate", "Cfm3UnWrapKey"):
        assert f"{fn} returned: 0x00 : HSM Return: SUCCESS" in out, out
    handle = imported["keys"][name]
    stem = name.split(".")[0]
    out = cluster.kmu([f"exportPubKey -k {handle} -out {stem}_hsm_pub.pem"])
    assert (cluster.work / f"{stem}_hsm_pub.pem").read_text() == (cluster.work / f"{stem}_pub.pem").read_text(), out


def test_import_of_an_unsupported_curve_is_refused_by_name(imported):
    out = command_output(imported["transcript"], "importPrivateKey -f ec_k1.pem")
    assert "Error: ec_k1.pem is not an RSA or EC private key the HSMs accept" in out, out
    assert "curve not supported: secp256k1" in out, out
    assert "Cfm3WrapHostKey" not in out, "nothing is sent"
    assert imported["returncode"] == 1


def test_fake_pem_names_the_curve_and_the_public_key(cluster, imported):
    text = (cluster.work / "ec_fake_PEM.key").read_text()
    assert text.startswith("-----BEGIN CLOUDHSM KEY REFERENCE-----\n"), text
    assert "PRIVATE KEY" not in text
    assert "Private Key Handle is written to ec_fake_PEM.key in fake PEM format" in imported["transcript"]
    tag, value, _, end = der_read(pem_body(text, "CLOUDHSM KEY REFERENCE"))
    assert tag == 0x30 and end == len(pem_body(text, "CLOUDHSM KEY REFERENCE"))
    fields = der_children(value)
    assert [f[0] for f in fields[:4]] == [0x02, 0x0C, 0x02, 0x30], fields
    assert int.from_bytes(fields[2][1], "big") == imported["keys"]["ec_sec1.pem"]
    spki = fields[3][2]
    assert spki == (cluster.work / "ec_sec1_pub.der").read_bytes(), "the imported key's public key"
    # Plain OpenSSL reads the SubjectPublicKeyInfo as an EC key on P-256.
    (cluster.work / "ec_fake_spki.der").write_bytes(spki)
    out = plain_openssl("pkey", "-pubin", "-inform", "DER", "-in", "ec_fake_spki.der", "-text", "-noout",
                        cwd=cluster.work).stdout.decode()
    assert "ASN1 OID: prime256v1" in out and "NIST CURVE: P-256" in out, out
    # ...and never the fake PEM itself as a key.
    proc = plain_openssl("pkey", "-in", "ec_fake_PEM.key", "-noout", cwd=cluster.work, check=False)
    assert proc.returncode != 0


def test_get_cavium_priv_key_refuses_a_public_key(cluster, generated):
    public = generated["pairs"][14][0]
    out = cluster.kmu([f"getCaviumPrivKey -k {public} -out ec_not_private.key"])
    assert "getCaviumPrivKey returned: 0xa9" in out and "not an RSA or EC private key" in out, out
    assert not (cluster.work / "ec_not_private.key").exists()


# ------------------------------------------------------------------------------ sign


@pytest.fixture(scope="module")
def ecdsa_signatures(cluster, generated):
    msg = cluster.work / "ec_msg.txt"
    msg.write_bytes(b"The quick brown fox signs with ECDSA.\n" * 3)
    lines = []
    for curve in CURVES:
        private = generated["pairs"][curve][1]
        lines += [f"sign -f ec_msg.txt -k {private} -m {m} -out ec_sig_{curve}_{m}.bin" for m in ECDSA]
    return cluster.kmu(lines)


@pytest.mark.parametrize("curve", sorted(CURVES))
@pytest.mark.parametrize("mech", sorted(ECDSA))
def test_ecdsa_sign_verifies_with_plain_openssl(cluster, generated, ecdsa_signatures, curve, mech):
    private = generated["pairs"][curve][1]
    out = command_output(ecdsa_signatures, f"sign -f ec_msg.txt -k {private} -m {mech} ")
    assert returned(out, "Cfm3Sign") == 0, out
    sig = f"ec_sig_{curve}_{mech}.bin"
    assert f"signature is written to file {sig}" in out
    digest = ECDSA[mech]
    assert verify(cluster, f"ec_pub_{curve}.pem", digest, sig, "ec_msg.txt")
    # pkeyutl over the digest itself: the signature is a DER ECDSA-Sig-Value of it.
    digest_file = cluster.work / f"ec_digest_{curve}_{mech}.bin"
    digest_file.write_bytes(hashlib.new(digest, (cluster.work / "ec_msg.txt").read_bytes()).digest())
    proc = plain_openssl("pkeyutl", "-verify", "-pubin", "-inkey", f"ec_pub_{curve}.pem", "-in", digest_file.name,
                         "-sigfile", sig, cwd=cluster.work, check=False)
    assert b"Signature Verified Successfully" in proc.stdout, proc.stdout + proc.stderr
    tag, value, _, end = der_read((cluster.work / sig).read_bytes())
    assert tag == 0x30 and [t for t, _, _ in der_children(value)] == [0x02, 0x02]


def test_a_wrong_message_or_key_does_not_verify(cluster, generated, ecdsa_signatures):
    """Guards the test above: openssl really checks."""
    (cluster.work / "ec_other_msg.txt").write_text("another message\n")
    assert not verify(cluster, "ec_pub_2.pem", "sha256", "ec_sig_2_17.bin", "ec_other_msg.txt")
    assert not verify(cluster, "ec_pub_14.pem", "sha256", "ec_sig_2_17.bin", "ec_msg.txt")


def test_mechanisms_and_key_kinds_must_match(cluster, generated):
    (cluster.work / "ec_kind_msg.txt").write_text("kinds\n")
    out = cluster.kmu(["genRSAKeyPair -m 2048 -e 65537 -l ec_kind_rsa"])
    _, rsa = keypair_handles(out)
    ec = generated["pairs"][2][1]
    out = cluster.kmu([
        f"sign -f ec_kind_msg.txt -k {ec} -m 1 -out ec_kind_a.bin",
        f"sign -f ec_kind_msg.txt -k {rsa} -m 17 -out ec_kind_b.bin",
        f"sign -f ec_kind_msg.txt -k {ec} -m 12 -out ec_kind_c.bin",
    ])
    first = command_output(out, f"sign -f ec_kind_msg.txt -k {ec} -m 1 ")
    assert returned(first, "Cfm3Sign") == 0xA9 and "is an EC private key" in first, first
    second = command_output(out, f"sign -f ec_kind_msg.txt -k {rsa} -m 17 ")
    assert returned(second, "Cfm3Sign") == 0xA9 and "is not an EC private key" in second, second
    third = command_output(out, f"sign -f ec_kind_msg.txt -k {ec} -m 12 ")
    assert "-m must be a mechanism, 0 to 9 (RSA) or 15 to 19 (ECDSA), found 12" in third, third
    assert not any((cluster.work / f"ec_kind_{x}.bin").exists() for x in "abc")


# ------------------------------------------------------------------------------ find, attributes


def test_find_key_by_type_3(cluster, generated):
    out = cluster.kmu(["findKey -t 3", "findKey -t 3 -c 3", "findKey -t 0", "findKey -t 3 -l ec_gen_15"])
    _, ec = found_keys(command_output(out, "findKey -t 3\n"))
    _, private = found_keys(command_output(out, "findKey -t 3 -c 3"))
    _, rsa = found_keys(command_output(out, "findKey -t 0"))
    _, labelled = found_keys(command_output(out, "findKey -t 3 -l ec_gen_15"))
    for curve, (public, priv) in generated["pairs"].items():
        assert {public, priv} <= set(ec), (curve, out)
        assert priv in private and public not in private
        assert public not in rsa and priv not in rsa
    assert sorted(labelled) == sorted(generated["pairs"][15])
    assert "Cfm3FindKey returned: 0x00 : HSM Return: SUCCESS" in out


def test_get_attribute_shows_type_3_and_the_curve(cluster, generated):
    public, private = generated["pairs"][2]
    out = cluster.kmu([
        f"getAttribute -o {private} -a 512 -out ec_priv_attrs.txt",
        f"getAttribute -o {public} -a 512 -out ec_pub_attrs.txt",
        f"getAttribute -o {private} -a 384 -out ec_params_only.txt",
        f"getAttribute -o {private} -a 289 -out ec_bits.txt",
    ])
    priv = attributes(cluster, "ec_priv_attrs.txt")
    pub = attributes(cluster, "ec_pub_attrs.txt")
    assert int(priv["OBJ_ATTR_KEY_TYPE"], 16) == 3 and int(pub["OBJ_ATTR_KEY_TYPE"], 16) == 3, priv
    assert int(priv["OBJ_ATTR_CLASS"], 16) == 3 and int(pub["OBJ_ATTR_CLASS"], 16) == 2
    # PKCS#11's EC_PARAMS (the curve's OID, DER) on both; EC_POINT (an OCTET STRING of the
    # X9.62 point) on the public key, the same point as exportPubKey's.
    assert priv["OBJ_ATTR_EC_PARAMS"] == "0x06082a8648ce3d030107" == pub["OBJ_ATTR_EC_PARAMS"]
    assert "OBJ_ATTR_EC_POINT" not in priv and "OBJ_ATTR_MODULUS" not in priv
    spki = pem_body((cluster.work / "ec_pub_2.pem").read_text(), "PUBLIC KEY")
    point = spki[-65:]
    assert point[0] == 0x04
    assert pub["OBJ_ATTR_EC_POINT"] == "0x0441" + point.hex()
    assert attributes(cluster, "ec_params_only.txt") == {"OBJ_ATTR_EC_PARAMS": "0x06082a8648ce3d030107"}
    bits = command_output(out, f"getAttribute -o {private} -a 289")
    assert "Cfm3GetAttribute returned: 0x11" in bits and "does not apply to a private EC key" in bits, bits


# ------------------------------------------------------------------------------ cluster


def test_ec_keys_replicate_and_every_node_signs(cluster):
    out = cluster.kmu(["genECCKeyPair -i 2 -l ec_repl"])
    public, private = keypair_handles(out)
    out = cluster.kmu([f"exportPubKey -k {public} -out ec_repl_pub.pem"])
    (cluster.work / "ec_repl_msg.txt").write_text("signed on every node\n")
    for node in range(NODES):
        # Asked directly: a node that has not stored the key yet fetches it from its creator.
        out = cluster.kmu_on(node, [f"sign -f ec_repl_msg.txt -k {private} -m 17 -out ec_repl_{node}.sig"])
        assert returned(command_output(out, "sign"), "Cfm3Sign") == 0, out
        assert verify(cluster, "ec_repl_pub.pem", "sha256", f"ec_repl_{node}.sig", "ec_repl_msg.txt"), node

        def holds():
            found = found_keys(command_output(cluster.kmu_on(node, ["findKey -t 3 -l ec_repl"]), "findKey"))
            return found == (2, sorted([public, private])) or None

        wait_until(holds, CATCH_UP, f"node {node} to list both halves of the EC key", interval=0.5)
    # ECDSA signatures are randomised: three nodes, three different signatures, all valid.
    assert len({(cluster.work / f"ec_repl_{n}.sig").read_bytes() for n in range(NODES)}) == NODES


def test_other_users_get_0xc6_and_the_owner_deletes(cluster, generated):
    public, private = generated["pairs"][14]
    cluster.create_cu("ec_bob", "Bob-ec-pw1")
    (cluster.work / "ec_bob_msg.txt").write_text("not bob's key\n")
    out = cluster.kmu([
        cluster.login_line("ec_bob", "Bob-ec-pw1"),
        f"sign -f ec_bob_msg.txt -k {private} -m 18 -out ec_bob.sig",
        f"getAttribute -o {private} -a 512 -out ec_bob_attrs.txt",
        f"exportPubKey -k {public} -out ec_bob_pub.pem",
        f"getCaviumPrivKey -k {private} -out ec_bob_fake.key",
        f"deleteKey -k {private}",
        "findKey -t 3",
    ], login=False)
    assert returned(command_output(out, "sign"), "Cfm3Sign") == 0xC6, out
    assert returned(command_output(out, "getAttribute"), "Cfm3GetAttribute") == 0xC6, out
    assert returned(command_output(out, "exportPubKey"), "Cfm3ExportPubKey") == 0xC6, out
    assert returned(command_output(out, "getCaviumPrivKey"), "getCaviumPrivKey") == 0xC6, out
    assert "Cfm3DeleteKey returned: 0xc6" in out, out
    assert found_keys(command_output(out, "findKey")) == (0, [])

    out = cluster.kmu([f"deleteKey -k {private}"])
    assert "Cfm3DeleteKey returned: 0x00 : HSM Return: SUCCESS" in out, out
    out = cluster.kmu([
        f"sign -f ec_bob_msg.txt -k {private} -m 18 -out ec_gone.sig",
        f"getCaviumPrivKey -k {private} -out ec_gone.key",
        f"exportPubKey -k {public} -out ec_still_pub.pem",
    ])
    assert returned(command_output(out, "sign"), "Cfm3Sign") == 0xA8, out
    assert returned(command_output(out, "getCaviumPrivKey"), "getCaviumPrivKey") == 0xA8, out
    assert returned(command_output(out, "exportPubKey"), "Cfm3ExportPubKey") == 0, "the public half stays"
    for node in range(NODES):
        out = cluster.kmu_on(node, [f"getAttribute -o {private} -a 512 -out ec_gone_{node}.txt"])
        assert returned(command_output(out, "getAttribute"), "Cfm3GetAttribute") == 0xA8, (node, out)


def test_get_hsm_info_counts_ecdsa_signatures_apart(cluster, generated):
    private = generated["pairs"][15][1]
    (cluster.work / "ec_count.txt").write_text("count me\n")
    before = ecdsa_counts(cluster.node_info())
    out = cluster.kmu([f"sign -f ec_count.txt -k {private} -m 17 -out ec_count{i}.bin" for i in range(4)]
                      + ["getHSMInfo"])
    assert out.count("Cfm3Sign returned: 0x00") == 4, out
    after = ecdsa_counts(parse_hsm_info(command_output(out, "getHSMInfo")))
    assert set(after) == set(range(NODES)), out
    assert sum(a[1] for a in after.values()) - sum(b[1] for b in before.values()) >= 4, (before, after)
    assert sum(a[0] for a in after.values()) == sum(b[0] for b in before.values()), "no RSA signature was made"
