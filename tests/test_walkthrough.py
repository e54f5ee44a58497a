"""AWS's import walkthrough, as written, against a real local cluster; then what a crypto
user does with the keys: sign, generate, find, inspect, export, delete."""

from __future__ import annotations

import re
import subprocess

import pytest

from helpers import (
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
)

NODES = 3
# key_mgmt_util's sign -m: 0-4 PKCS#1 v1.5, 5-9 PSS; SHA1, SHA256, SHA384, SHA512, SHA224.
MECHANISMS = {
    0: ("pkcs1", "sha1"), 1: ("pkcs1", "sha256"), 2: ("pkcs1", "sha384"), 3: ("pkcs1", "sha512"),
    4: ("pkcs1", "sha224"), 5: ("pss", "sha1"), 6: ("pss", "sha256"), 7: ("pss", "sha384"),
    8: ("pss", "sha512"), 9: ("pss", "sha224"),
}


@pytest.fixture(scope="module")
def imported(cluster, openssl):
    """Steps 3 to 7 of the walkthrough in one key_mgmt_util session."""
    w = cluster.work
    openssl("genrsa", "-out", "web_server_existing.key", "2048", cwd=w)
    openssl("rsa", "-in", "web_server_existing.key", "-traditional", "-out", "web_server_pkcs1.key", cwd=w)
    openssl("pkey", "-in", "web_server_existing.key", "-pubout", "-out", "existing_pub.pem", cwd=w)
    openssl("pkey", "-in", "web_server_existing.key", "-pubout", "-outform", "DER", "-out", "existing_pub.der", cwd=w)
    s = cluster.session(login=False)
    try:
        s.send(cluster.login_line())
        s.expect(r"^Cfm3LoginHSM returned:")
        s.send("genSymKey -t 31 -s 16 -sess -l wrapping_key_for_import")
        wrap = int(s.expect(r"^Symmetric Key Created\.  Key Handle: (\d+)$").group(1))
        s.send(f"importPrivateKey -f web_server_existing.key -l web_server_imported_key -w {wrap}")
        key = int(s.expect(r"^Private Key Unwrapped\.  Key Handle: (\d+)$").group(1))
        s.send(f"importPrivateKey -f web_server_pkcs1.key -l web_server_pkcs1_key -w {wrap}")
        key_pkcs1 = int(s.expect(r"^Private Key Unwrapped\.  Key Handle: (\d+)$").group(1))
        transcript = s.finish([f"getCaviumPrivKey -k {key} -out web_server_fake_PEM.key", "exit"])
    finally:
        s.close()
    return {"wrap": wrap, "key": key, "key_pkcs1": key_pkcs1, "transcript": transcript}


def test_login_succeeds_on_every_node(imported):
    out = command_output(imported["transcript"], "loginHSM")
    assert "Cfm3LoginHSM returned: 0x00 : HSM Return: SUCCESS" in out
    assert "Cluster Error Status" in out
    assert status_codes(out) == {n: 0 for n in range(NODES)}, out
    assert len(re.findall(r"^Node id \d+ and err state 0x00000000 : HSM Return: SUCCESS$", out, re.M)) == NODES


def test_gensymkey_prints_the_handle(imported):
    out = command_output(imported["transcript"], "genSymKey")
    assert "Cfm3GenerateSymmetricKey returned: 0x00 : HSM Return: SUCCESS" in out
    assert sym_handle(out) == imported["wrap"]
    assert "Cluster Error Status" in out


def test_import_private_key_output(imported):
    out = command_output(imported["transcript"], "importPrivateKey -f web_server_existing.key")
    ber = int(re.search(r"^BER encoded key length is (\d+)$", out, re.M).group(1))
    assert 1150 <= ber <= 1250, f"a 2048-bit PKCS#8 key is about 1190-1220 bytes, got {ber}"
    for fn in ("Cfm3WrapHostKey", "Cfm3CreateUnwrapTemplate", "Cfm3UnWrapKey"):
        assert f"{fn} returned: 0x00 : HSM Return: SUCCESS" in out, out
    assert unwrapped_handle(out) == imported["key"]
    assert imported["key"] != imported["wrap"]


def test_get_cavium_priv_key_message(imported):
    out = command_output(imported["transcript"], "getCaviumPrivKey")
    assert "Private Key Handle is written to web_server_fake_PEM.key in fake PEM format" in out


def test_fake_pem_is_a_key_reference(cluster, imported):
    text = (cluster.work / "web_server_fake_PEM.key").read_text()
    assert text.startswith("-----BEGIN CLOUDHSM KEY REFERENCE-----\n"), text
    assert text.rstrip().endswith("-----END CLOUDHSM KEY REFERENCE-----")
    assert "PRIVATE KEY" not in text
    der = pem_body(text, "CLOUDHSM KEY REFERENCE")
    tag, value, _, end = der_read(der)
    assert tag == 0x30 and end == len(der), "one SEQUENCE and nothing after it"
    fields = der_children(value)
    assert [f[0] for f in fields[:4]] == [0x02, 0x0C, 0x02, 0x30], fields
    assert int.from_bytes(fields[0][1], "big") == 1, "version 1"
    assert fields[1][1].decode() == "local-dev", "cluster id"
    assert int.from_bytes(fields[2][1], "big") == imported["key"], "handle"
    spki = (cluster.work / "existing_pub.der").read_bytes()
    assert fields[3][2] == spki, "SubjectPublicKeyInfo must be the imported key's public key"
    if len(fields) > 4:
        assert len(fields) == 5 and fields[4][0] == 0x0C, fields
        assert fields[4][1].decode() == "web_server_imported_key"


def test_fake_pem_is_not_a_software_key(cluster, imported):
    proc = subprocess.run(
        ["openssl", "pkey", "-in", "web_server_fake_PEM.key"], cwd=cluster.work, capture_output=True, text=True
    )
    assert proc.returncode != 0, f"openssl loaded the fake PEM without the provider:\n{proc.stdout}"
    assert "PRIVATE KEY" not in proc.stdout


def test_pkcs1_key_imports_too(cluster, imported, openssl):
    out = command_output(imported["transcript"], "importPrivateKey -f web_server_pkcs1.key")
    assert "Cfm3UnWrapKey returned: 0x00 : HSM Return: SUCCESS" in out
    out = cluster.kmu([f"exportPubKey -k {imported['key_pkcs1']} -out pkcs1_pub.pem"])
    assert (cluster.work / "pkcs1_pub.pem").read_text() == (cluster.work / "existing_pub.pem").read_text(), out


@pytest.fixture(scope="module")
def signatures(cluster, imported):
    """The imported key signs one message with every mechanism, in one session."""
    msg = cluster.work / "msg.txt"
    msg.write_bytes(b"The quick brown fox signs on the HSM.\n" * 3)
    lines = [f"sign -f msg.txt -k {imported['key']} -m {m} -out sig{m}.bin" for m in MECHANISMS]
    return cluster.kmu(lines)


@pytest.mark.parametrize("mech", sorted(MECHANISMS))
def test_sign_on_the_hsm_verifies_in_software(cluster, imported, signatures, mech):
    padding, digest = MECHANISMS[mech]
    out = command_output(signatures, f"sign -f msg.txt -k {imported['key']} -m {mech} ")
    assert f"signature is written to file sig{mech}.bin" in out, out
    assert returned(out, "Cfm3Sign") == 0, out
    sig = cluster.work / f"sig{mech}.bin"
    assert sig.stat().st_size == 256
    args = ["openssl", "dgst", f"-{digest}", "-verify", "existing_pub.pem", "-signature", sig.name]
    if padding == "pss":
        args += ["-sigopt", "rsa_padding_mode:pss", "-sigopt", "rsa_pss_saltlen:digest"]
    proc = subprocess.run(args + ["msg.txt"], cwd=cluster.work, capture_output=True, text=True)
    assert proc.returncode == 0 and "Verified OK" in proc.stdout, proc.stdout + proc.stderr


def test_a_wrong_signature_does_not_verify(cluster, signatures):
    """Guards the test above: openssl really checks (PSS signature checked as PKCS#1)."""
    proc = subprocess.run(
        ["openssl", "dgst", "-sha256", "-verify", "existing_pub.pem", "-signature", "sig6.bin", "msg.txt"],
        cwd=cluster.work, capture_output=True, text=True,
    )
    assert proc.returncode != 0


def test_private_key_operations_are_counted(cluster, imported):
    before = cluster.node_info()
    assert set(before) == set(range(NODES)), before
    (cluster.work / "count.txt").write_text("count me\n")
    out = cluster.kmu([f"sign -f count.txt -k {imported['key']} -m 1 -out c{i}.bin" for i in range(3)] + ["getHSMInfo"])
    after = parse_hsm_info(command_output(out, "getHSMInfo"))
    assert set(after) == set(range(NODES)), out
    for n in range(NODES):
        assert after[n].fields["Cluster id"] == "local-dev"
        for name in ("Version", "Token keys", "Session keys", "Private key operations", "Users"):
            assert name in after[n].fields, f"getHSMInfo lacks {name!r} for node {n}:\n{out}"
    ops = sum(i.signs for i in after.values()) - sum(i.signs for i in before.values())
    assert ops >= 3, f"3 signs, private key operations rose by {ops}:\n{out}"
    total = sum(after[n].int("Private key operations") for n in after)
    assert total >= sum(after[n].signs for n in after)


def test_generate_find_inspect_export_delete(cluster, openssl):
    out = cluster.kmu(["genRSAKeyPair -m 2048 -e 65537 -l generated_pair"])
    pub, priv = keypair_handles(out)
    assert pub != priv

    out = cluster.kmu([
        "findKey -l generated_pair",
        f"getAttribute -o {priv} -a 512 -out priv_attrs.txt",
        f"exportPubKey -k {pub} -out generated_pub.pem",
    ])
    count, handles = found_keys(command_output(out, "findKey"))
    assert {pub, priv} <= set(handles) and count == len(handles), out
    assert returned(command_output(out, "findKey"), "Cfm3FindKey") == 0

    assert "Attributes dumped into priv_attrs.txt file" in out, out
    lines = (cluster.work / "priv_attrs.txt").read_text().splitlines()
    attrs = dict(zip(lines[0::2], lines[1::2]))
    assert int(attrs["OBJ_ATTR_CLASS"], 16) == 3, attrs
    assert int(attrs["OBJ_ATTR_KEY_TYPE"], 16) == 0, attrs

    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    key = load_pem_public_key((cluster.work / "generated_pub.pem").read_bytes())
    assert key.key_size == 2048 and key.public_numbers().e == 65537

    (cluster.work / "gen_msg.txt").write_text("generated in the HSM\n")
    out = cluster.kmu([f"sign -f gen_msg.txt -k {priv} -m 1 -out gen_sig.bin"])
    assert returned(out, "Cfm3Sign") == 0, out
    openssl("dgst", "-sha256", "-verify", "generated_pub.pem", "-signature", "gen_sig.bin", "gen_msg.txt",
            cwd=cluster.work)

    out = cluster.kmu([f"deleteKey -k {priv}"])
    assert "Cfm3DeleteKey returned: 0x00 : HSM Return: SUCCESS" in out, out
    out = cluster.kmu([
        f"getAttribute -o {priv} -a 512 -out gone.txt",
        f"sign -f gen_msg.txt -k {priv} -m 1 -out gone_sig.bin",
        f"deleteKey -k {priv}",
        "findKey -l generated_pair",
    ])
    assert "0xa8 : HSM Error: Invalid key handle" in command_output(out, "getAttribute"), out
    assert returned(command_output(out, "sign"), "Cfm3Sign") == 0xA8, out
    assert "Cfm3DeleteKey returned: 0xa8 : HSM Error: Invalid key handle" in out
    count, handles = found_keys(command_output(out, "findKey"))
    assert priv not in handles and pub in handles, out
