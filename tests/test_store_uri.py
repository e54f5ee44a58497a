"""cloudhsm: store URIs against real nodes, with the real openssl binary and a small
OSSL_STORE program: keys named by handle and by label sign, make CSRs and give their
public key without any key file; `cloudhsm:` lists the crypto user's private keys and
nothing else; a URI that names no key, several keys, a public or secret key, or that is
malformed fails with an error that says which. What is made is checked with plain
OpenSSL (no provider)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from helpers import REPO, assert_no_crash, found_keys, keypair_handles, one_int, sym_handle
from test_provider import OpenSSL, private_operations, provider_module  # noqa: F401  (fixture)

OTHER_USER = "store_other"
OTHER_PASSWORD = "store-other-pw-1"
EC_USER = "store_ec"
EC_PASSWORD = "store-ec-pw-1"


@pytest.fixture(scope="module")
def store(cluster, provider_module):  # noqa: F811
    """The walkthrough's imported key, two key pairs sharing a label, a label with a space,
    a secret key, and a second crypto user with a key of its own."""
    o = OpenSSL(cluster, provider_module)
    w = cluster.work
    o.plain("genrsa", "-out", str(w / "store_existing.key"), "2048")
    o.plain("pkey", "-in", str(w / "store_existing.key"), "-pubout", "-out", str(w / "store_existing_pub.pem"))
    s = cluster.session()
    try:
        wrap = s.make_wrapping_key()
        imported = s.import_private_key("store_existing.key", "web_server_imported_key", wrap)
        s.write_fake_pem(imported, "store_fake_PEM.key")
        s.send(f"exportPubKey -k {imported} -out store_imported_pub.pem")
        s.expect(r"^Cfm3ExportPubKey returned: 0x00")
        transcript = s.finish([
            "genRSAKeyPair -m 2048 -e 65537 -l twin",
            "genRSAKeyPair -m 2048 -e 65537 -l twin",
            'genRSAKeyPair -m 2048 -e 65537 -l "web server key"',
            "genSymKey -t 31 -s 16 -l store_secret",
            "exit",
        ])
    finally:
        s.close()
    pairs = re.findall(r"public key handle: (\d+)\s+private key handle: (\d+)", transcript)
    assert len(pairs) == 3, transcript
    twins = [tuple(map(int, p)) for p in pairs[:2]]
    spaced = tuple(map(int, pairs[2]))
    secret = sym_handle(transcript.split("genSymKey -t 31 -s 16 -l store_secret")[1])

    cluster.create_cu(OTHER_USER, OTHER_PASSWORD)
    out = cluster.kmu([cluster.login_line(OTHER_USER, OTHER_PASSWORD), "genRSAKeyPair -m 2048 -e 65537 -l other_users_key"],
                      login=False)
    _, other_private = keypair_handles(out)
    return {
        "ossl": o, "imported": imported, "twins": twins, "spaced": spaced, "secret": secret,
        "other_private": other_private, "other_env": dict(o.env, n3fips_password=f"{OTHER_USER}:{OTHER_PASSWORD}"),
    }


def run(store, *args, env=None, check=True) -> subprocess.CompletedProcess:
    return store["ossl"].run(*args, env=env, check=check)


def refused(store, *args, env=None) -> str:
    """Runs openssl, which must fail, and returns what it printed."""
    proc = run(store, *args, env=env, check=False)
    text = proc.stdout.decode(errors="replace") + proc.stderr.decode(errors="replace")
    assert proc.returncode != 0, f"openssl {' '.join(args)} succeeded:\n{text}"
    return text


def listed(text: str) -> dict[int, str]:
    """`storeutl -keys -text -noout` output: label by handle."""
    found = {}
    for block in text.split("CloudHSM ")[1:]:
        handle = one_int(r"^handle: (\d+)$", block)
        m = re.search(r"^label: (.*)$", block, re.M)
        found[handle] = m.group(1) if m else ""
    return found


# ------------------------------------------------------------------------------ keys by URI


def test_pkey_pubout_by_label_is_the_keys_public_key(cluster, store):
    out = run(store, "pkey", "-in", "cloudhsm:label=web_server_imported_key", "-pubout").stdout.decode()
    w = cluster.work
    assert out == (w / "store_existing_pub.pem").read_text(), out
    assert out == (w / "store_imported_pub.pem").read_text()
    fake = run(store, "pkey", "-in", str(w / "store_fake_PEM.key"), "-pubout").stdout.decode()
    assert out == fake


def test_req_by_handle_signs_in_the_hsms_and_verifies_without_the_provider(cluster, store):
    ossl = store["ossl"]
    csr = ossl.path("store_handle.csr")
    before = private_operations(cluster)
    run(store, "req", "-new", "-key", f"cloudhsm:handle={store['imported']}", "-subj", "/CN=store.example",
        "-out", csr)
    assert private_operations(cluster) == before + 1, "the CSR was not signed in the HSMs"
    verified = ossl.plain("req", "-in", csr, "-verify", "-noout")
    assert b"verify OK" in verified.stdout + verified.stderr
    public = ossl.plain("req", "-in", csr, "-pubkey", "-noout").stdout.decode()
    assert public == (cluster.work / "store_existing_pub.pem").read_text()


def test_dgst_sign_by_label_verifies_with_plain_openssl(cluster, store):
    ossl = store["ossl"]
    message = Path(ossl.path("store_message.txt"))
    message.write_text("signed through a cloudhsm: URI\n")
    signature = ossl.path("store_message.sig")
    run(store, "dgst", "-sha384", "-sign", "cloudhsm:label=web_server_imported_key", "-out", signature, str(message))
    pub = str(cluster.work / "store_existing_pub.pem")
    proc = ossl.plain("dgst", "-sha384", "-verify", pub, "-signature", signature, str(message))
    assert b"Verified OK" in proc.stdout
    # The public half through the same URI verifies too (a public key is expected there).
    proc = run(store, "dgst", "-sha384", "-verify", "cloudhsm:label=web_server_imported_key",
               "-signature", signature, str(message))
    assert b"Verified OK" in proc.stdout


def test_a_percent_encoded_label_and_handle_with_label(store):
    public, private = store["spaced"]
    by_label = run(store, "pkey", "-in", "cloudhsm:label=web%20server%20key", "-pubout").stdout
    by_handle = run(store, "pkey", "-in", f"cloudhsm:handle={private}", "-pubout").stdout
    assert by_label == by_handle and by_label.startswith(b"-----BEGIN PUBLIC KEY-----")
    both = run(store, "pkey", "-in", f"cloudhsm:handle={private};label=web%20server%20key", "-pubout").stdout
    assert both == by_label
    text = refused(store, "pkey", "-in", f"cloudhsm:handle={private};label=twin", "-noout")
    assert f"key handle {private} is labelled 'web server key', not 'twin'" in text, text


def test_pkey_pubin_gets_the_public_half(store):
    public, private = store["spaced"]
    out = run(store, "pkey", "-pubin", "-in", f"cloudhsm:handle={private}", "-text", "-noout").stdout.decode()
    assert "Public-Key: (2048 bit)" in out and "private key reference" not in out, out


# ------------------------------------------------------------------------------ listing


def cu_private_keys(cluster) -> set[int]:
    count, handles = found_keys(cluster.kmu(["findKey -c 3"]))
    assert count == len(handles)
    return set(handles)


def test_storeutl_lists_the_crypto_users_private_keys_with_their_labels(cluster, store):
    proc = run(store, "storeutl", "-keys", "-text", "-noout", "cloudhsm:")
    out = proc.stdout.decode()
    keys = listed(out)
    expected = cu_private_keys(cluster)
    assert set(keys) == expected, out
    assert keys[store["imported"]] == "web_server_imported_key"
    assert keys[store["spaced"][1]] == "web server key"
    assert [keys[private] for _, private in store["twins"]] == ["twin", "twin"]
    # Public halves, the secret key and the other user's key are not there.
    for absent in [p for p, _ in store["twins"]] + [store["spaced"][0], store["secret"], store["other_private"]]:
        assert absent not in keys, f"handle {absent} listed:\n{out}"
    assert f"Total found: {len(expected)}" in out
    assert out.count("(the private key stays in the HSM cluster)") == len(expected)


def test_storeutl_of_a_handle_writes_the_same_fake_pem_as_getcaviumprivkey(cluster, store):
    out = run(store, "storeutl", "-keys", f"cloudhsm:handle={store['imported']}").stdout.decode()
    block = re.search(r"-----BEGIN CLOUDHSM KEY REFERENCE-----\n.*?-----END CLOUDHSM KEY REFERENCE-----\n", out, re.S)
    assert block, out
    assert block.group(0) == (cluster.work / "store_fake_PEM.key").read_text()


def test_storeutl_alias_finds_every_key_with_the_label(store):
    out = run(store, "storeutl", "-keys", "-text", "-noout", "-alias", "twin", "cloudhsm:").stdout.decode()
    assert set(listed(out)) == {private for _, private in store["twins"]}, out


def test_another_user_sees_only_its_own_keys(cluster, store):
    env = store["other_env"]
    out = run(store, "storeutl", "-keys", "-text", "-noout", "cloudhsm:", env=env).stdout.decode()
    assert listed(out) == {store["other_private"]: "other_users_key"}, out
    text = refused(store, "pkey", "-in", f"cloudhsm:handle={store['imported']}", "-noout", env=env)
    assert f"no key with handle {store['imported']} for crypto user '{OTHER_USER}'" in text, text
    text = refused(store, "pkey", "-in", "cloudhsm:label=web_server_imported_key", "-noout", env=env)
    assert f"crypto user '{OTHER_USER}' on cluster 'local-dev' has no private key labelled" in text, text


# ------------------------------------------------------------------------------ refusals


def test_a_label_that_matches_no_key_is_a_clear_error(store):
    text = refused(store, "pkey", "-in", "cloudhsm:label=no_such_key", "-pubout")
    assert "Could not read key from cloudhsm:label=no_such_key" in text, text
    assert "key not found on the HSM cluster" in text
    assert "has no private key labelled 'no_such_key'" in text, text
    # storeutl counts it as an error (exit status 1), not as an empty store.
    text = refused(store, "storeutl", "-keys", "cloudhsm:label=no_such_key")
    assert "has no private key labelled 'no_such_key'" in text, text


def test_a_handle_that_names_no_key_is_a_clear_error(store):
    text = refused(store, "req", "-new", "-key", "cloudhsm:handle=999999999", "-subj", "/CN=x")
    assert "no key with handle 999999999 for crypto user" in text, text


def test_two_keys_with_one_label_is_a_clear_error_naming_both(store):
    (_, first), (_, second) = store["twins"]
    text = refused(store, "pkey", "-in", "cloudhsm:label=twin", "-pubout")
    low, high = sorted([first, second])
    assert f"label 'twin' names 2 private keys of crypto user" in text, text
    assert f"handles {low}, {high}; name one with cloudhsm:handle=N" in text, text
    # Each one by its handle is fine.
    run(store, "pkey", "-in", f"cloudhsm:handle={first}", "-noout")


def test_a_public_or_secret_key_is_not_a_private_key(store):
    public, private = store["twins"][0]
    text = refused(store, "pkey", "-in", f"cloudhsm:handle={public}", "-noout")
    assert f"key handle {public} is a public RSA key, not a private key; the private key of this pair is " \
           f"handle {private}" in text, text
    text = refused(store, "pkey", "-in", f"cloudhsm:handle={store['secret']}", "-noout")
    assert f"key handle {store['secret']} is a secret AES key, not a private key" in text, text
    text = refused(store, "pkey", "-in", "cloudhsm:label=store_secret", "-noout")
    assert f"(key handle {store['secret']} with that label is not a private key)" in text, text


@pytest.mark.parametrize("uri, problem", [
    ("cloudhsm:object=web", "unknown attribute 'object' (a cloudhsm: URI takes handle and label)"),
    ("cloudhsm:handle=0x20", "handle '0x20' is not a decimal number"),
    ("cloudhsm:handle=5;handle=6", "attribute 'handle' appears twice"),
    ("cloudhsm:label=50%", "'%' in the label is not a percent escape"),
    ("cloudhsm://handle=5", "a cloudhsm: URI has no '//' part"),
    ("cloudhsm:label", "attribute 'label' has no value"),
    ("cloudhsm:label=a%00b", "the label holds a NUL byte (%00), which no key label can"),
    ("cloudhsm:label=web;handle=5;label=web", "attribute 'label' appears twice"),
])
def test_a_malformed_uri_is_refused_by_name(store, uri, problem):
    text = refused(store, "pkey", "-in", uri, "-noout")
    assert f"malformed cloudhsm: URI '{uri}': {problem}" in text, text
    assert "cloudhsm:handle=N, cloudhsm:label=NAME" in text


def test_a_label_longer_than_any_key_label_is_refused_before_asking(store):
    text = refused(store, "pkey", "-in", "cloudhsm:label=" + "k" * 300, "-noout")
    assert "the label is 300 bytes long once decoded; a key label holds at most 256" in text, text
    assert "bytes in all)" in text, "the URI in the message is cut short"


def test_without_credentials_the_store_says_so(store):
    env = dict(store["ossl"].env)
    env.pop("n3fips_password", None)
    env.pop("CLOUDHSM_PIN", None)
    text = refused(store, "storeutl", "-keys", "cloudhsm:", env=env)
    assert "not logged in to the HSM cluster" in text and "set n3fips_password (or CLOUDHSM_PIN)" in text, text


# ------------------------------------------------------------------------------ an OSSL_STORE program


@pytest.fixture(scope="module")
def store_sign(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("store_prog") / "store_sign"
    subprocess.run(["cc", "-Wall", "-o", str(out), str(REPO / "tests" / "c" / "store_sign.c"), "-lcrypto"],
                   check=True)
    return out


def test_an_ossl_store_program_signs_with_a_key_named_by_uri(cluster, store, store_sign):
    ossl = store["ossl"]
    message = Path(ossl.path("store_prog.txt"))
    message.write_text("OSSL_STORE_open, then EVP_DigestSign\n")
    signature = ossl.path("store_prog.sig")
    proc = subprocess.run([str(store_sign), "cloudhsm:label=web_server_imported_key", str(message), signature],
                          env=ossl.env, capture_output=True, text=True, timeout=120)
    assert_no_crash(proc.returncode, proc.stdout + proc.stderr)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout == "key: RSA 2048\nkeys: 1\n", proc.stdout
    pub = str(cluster.work / "store_existing_pub.pem")
    assert b"Verified OK" in ossl.plain("dgst", "-sha256", "-verify", pub, "-signature", signature,
                                        str(message)).stdout

    # Listing: as many keys as the user holds; no match: the provider's reason on stderr.
    proc = subprocess.run([str(store_sign), "cloudhsm:", str(message), signature], env=ossl.env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and f"keys: {len(cu_private_keys(cluster))}\n" in proc.stdout, proc.stdout
    proc = subprocess.run([str(store_sign), "cloudhsm:label=no_such_key", str(message), signature], env=ossl.env,
                          capture_output=True, text=True, timeout=120)
    assert_no_crash(proc.returncode, proc.stdout + proc.stderr)
    assert proc.returncode == 1 and "has no private key labelled 'no_such_key'" in proc.stderr, proc.stderr


# ------------------------------------------------------------------------------ EC keys


def test_ec_keys_by_uri(cluster, store):
    """An EC key made in the HSMs, by handle and label: its public key, an ECDSA signature
    that plain OpenSSL verifies, and its row in the listing."""
    cluster.create_cu(EC_USER, EC_PASSWORD)
    login = cluster.login_line(EC_USER, EC_PASSWORD)
    out = cluster.kmu([login, "genECCKeyPair -i 2 -l store_ec_key"], login=False)
    public, private = keypair_handles(out)
    out = cluster.kmu([login, f"exportPubKey -k {public} -out store_ec_pub.pem"], login=False)
    assert "Cfm3ExportPubKey returned: 0x00" in out, out
    env = dict(store["ossl"].env, n3fips_password=f"{EC_USER}:{EC_PASSWORD}")
    proc = run(store, "pkey", "-in", f"cloudhsm:handle={private}", "-pubout", env=env, check=False)
    text = proc.stdout.decode(errors="replace") + proc.stderr.decode(errors="replace")
    assert proc.returncode == 0, text
    assert proc.stdout.decode() == (cluster.work / "store_ec_pub.pem").read_text(), text
    ossl = store["ossl"]
    message = Path(ossl.path("store_ec.txt"))
    message.write_text("ECDSA through a cloudhsm: URI\n")
    signature = ossl.path("store_ec.sig")
    run(store, "dgst", "-sha256", "-sign", "cloudhsm:label=store_ec_key", "-out", signature, str(message), env=env)
    pub = str(cluster.work / "store_ec_pub.pem")
    assert b"Verified OK" in ossl.plain("dgst", "-sha256", "-verify", pub, "-signature", signature,
                                        str(message)).stdout
    listing = run(store, "storeutl", "-keys", "-text", "-noout", "cloudhsm:", env=env).stdout.decode()
    assert listed(listing) == {private: "store_ec_key"}, listing


# ------------------------------------------------------------------------------ a node down


def test_the_store_works_with_a_node_down(cluster, store):
    """findKeys goes to every node: the ones that answer are enough."""
    expected = cu_private_keys(cluster)
    cluster.kill(2)
    try:
        out = run(store, "storeutl", "-keys", "-text", "-noout", "cloudhsm:").stdout.decode()
        assert set(listed(out)) == expected, out
        out = run(store, "pkey", "-in", "cloudhsm:label=web_server_imported_key", "-pubout").stdout.decode()
        assert out == (cluster.work / "store_existing_pub.pem").read_text()
    finally:
        cluster.restart()
        cluster.wait_all_up()
