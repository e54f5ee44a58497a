// cloudhsm_check: loads the provider the way applications do (through OPENSSL_CONF),
// loads a fake PEM key, signs a test message on the HSMs and verifies the signature
// with the default provider alone. OpenSSL 3.0 hides provider load failures, so this
// says plainly which step fails and why, with advice for that failure only.
// `--stats` is the other mode: the client pool's view of each node (PoolStatistics.swift).

import COpenSSL
import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// One entry of OpenSSL's error queue: its packed code and its printed line.
struct QueuedError {
    let code: UInt
    let text: String

    /// The provider's reason number (ProviderReason in CloudHSMProvider), when the
    /// cloudhsm provider raised it.
    var cloudHSMReason: Int32? {
        guard let library = ERR_lib_error_string(code), String(cString: library) == "cloudhsm" else { return nil }
        return ERR_GET_REASON(code)
    }
}

func drainErrors() -> [QueuedError] {
    var errors: [QueuedError] = []
    while true {
        var file: UnsafePointer<CChar>?
        var line: Int32 = 0
        var data: UnsafePointer<CChar>?
        var flags: Int32 = 0
        let code = ERR_get_error_all(&file, &line, nil, &data, &flags)
        if code == 0 { break }
        var buffer = [CChar](repeating: 0, count: 256)
        ERR_error_string_n(code, &buffer, buffer.count)
        var text = String(cString: buffer)
        if let data, flags & ERR_TXT_STRING != 0, data.pointee != 0 { text += ": " + String(cString: data) }
        errors.append(QueuedError(code: code, text: text))
    }
    return errors
}

func format(_ errors: [QueuedError]) -> String {
    errors.isEmpty ? "    (OpenSSL gave no reason)" : errors.map { "    " + $0.text }.joined(separator: "\n")
}

func fail(_ step: String, _ advice: String) -> Never {
    fail(step, errors: drainErrors(), advice: advice.isEmpty ? [] : [advice])
}

func fail(_ step: String, errors: [QueuedError], advice: [String]) -> Never {
    print("FAIL  \(step)")
    print(format(errors))
    for line in advice { print("      \(line)") }
    exit(1)
}

func warn(_ text: String) { print("WARN  \(text)") }

/// What to do about a failed signature, from the provider's reason: only the advice that
/// fits (a key that does not match needs no password check).
func signingAdvice(_ errors: [QueuedError], configuration: String) -> [String] {
    let reasons = Set(errors.compactMap(\.cloudHSMReason))
    let text = errors.map(\.text).joined(separator: "\n")
    var advice: [String] = []
    // The numbers are CloudHSMProvider's ProviderReason cases.
    if reasons.contains(1) {
        advice.append("set n3fips_password (or CLOUDHSM_PIN) to user:password of a crypto user (CU)")
    }
    if reasons.contains(2) {
        if text.contains("0x23") {
            advice.append(
                "the user is locked after too many failed logins: a crypto officer must set a new password "
                    + "(cloudhsm_mgmt_util: changePswd CU <user> <password>)")
        } else {
            advice.append(
                "check the credentials: n3fips_password (or CLOUDHSM_PIN) must be user:password of a crypto user "
                    + "of this cluster")
        }
    }
    if reasons.contains(3) {
        advice.append(
            "the key file names a key handle this user does not have on the cluster (deleted, owned by another "
                + "crypto user, or the cluster was made anew): generate or export the key again")
    }
    if reasons.contains(4) {
        advice.append(
            "the key file was made on another cluster: use that cluster's configuration (CLOUDHSM_CONFIG or "
                + "cluster_config), or make the key on this cluster")
    }
    if reasons.contains(5) {
        advice.append(
            "the key file does not match the key the HSMs hold under its handle: export it again "
                + "(key_mgmt_util getCaviumPrivKey)")
    }
    if text.contains("0xe5 :") {
        advice.append(
            "the nodes belong to another cluster than the cluster_id of \(configuration): check its node lines "
                + "and cluster_id")
    } else if reasons.contains(6) {
        if text.contains("not trusted") {
            advice.append(
                "the nodes' certificates are not signed by the trust_anchor of \(configuration): use that "
                    + "cluster's customerCA.crt")
        } else {
            advice.append(
                "check that the cluster is running and reachable at the node lines of \(configuration) "
                    + "(make status, or scripts/cluster.sh status)")
        }
    }
    if reasons.contains(10) {
        advice.append("fix the cluster configuration named above (CLOUDHSM_CONFIG or cluster_config)")
    }
    return advice
}

/// String parameters of a loaded provider (empty for those it does not answer).
func providerStrings(_ name: String, _ keys: [String]) -> [String: String] {
    guard let provider = OSSL_PROVIDER_load(nil, name) else {
        ERR_clear_error()
        return [:]
    }
    defer { OSSL_PROVIDER_unload(provider) }
    let size = 4096
    let names = keys.map { strdup($0)! }
    let buffers = keys.map { _ in UnsafeMutablePointer<CChar>.allocate(capacity: size) }
    defer {
        for name in names { free(name) }
        for buffer in buffers { buffer.deallocate() }
    }
    for buffer in buffers { buffer.initialize(repeating: 0, count: size) }
    var params = zip(names, buffers).map { OSSL_PARAM_construct_utf8_string($0, $1, size) }
    params.append(OSSL_PARAM_construct_end())
    guard OSSL_PROVIDER_get_params(provider, &params) == 1 else {
        ERR_clear_error()
        return [:]
    }
    var values: [String: String] = [:]
    for (key, buffer) in zip(keys, buffers) { values[key] = String(cString: buffer) }
    return values
}

func ok(_ text: String) { print("ok    \(text)") }

/// The `module = ...` path of the configuration's provider sections, if one is given: OpenSSL
/// does not say which file it failed to load.
func configuredModulePath(_ path: String?) -> String? {
    guard let path, let file = fopen(path, "r") else { return nil }
    defer { fclose(file) }
    var line = [CChar](repeating: 0, count: 4096)
    while fgets(&line, Int32(line.count), file) != nil {
        let text = String(cString: line).trimmingCharacters(in: .whitespacesAndNewlines)
        let parts = text.split(separator: "=", maxSplits: 1).map { $0.trimmingCharacters(in: .whitespaces) }
        if parts.count == 2, parts[0] == "module", parts[1].contains("cloudhsm") { return parts[1] }
    }
    return nil
}

let arguments = CommandLine.arguments
if arguments.count >= 2, arguments[1] == "--stats" { runPoolStatistics(Array(arguments.dropFirst(2))) }
if arguments.count != 2 || arguments[1] == "-h" || arguments[1] == "--help" {
    print(
        """
        usage: cloudhsm_check <fake PEM key file>
               cloudhsm_check --stats [-n OPERATIONS] [-t THREADS] [--json] <fake PEM key file>

        Loads the cloudhsm provider through OPENSSL_CONF, loads the key, signs a test
        message on the HSM cluster and verifies it with the default provider.
        Needs OPENSSL_CONF (see provider.cnf), CLOUDHSM_CONFIG or the config's
        cluster_config, and n3fips_password or CLOUDHSM_PIN.

        --stats: signs OPERATIONS test digests through the cluster client (the pool the
        provider uses, without loading the provider) and prints what this process's pool
        saw of each node: up or down, requests sent and answered, failures, throttled
        answers, retries, outstanding requests, connections and latency.
        """)
    exit(arguments.count == 2 ? 0 : 2)
}
let keyPath = arguments[1]

let configuration = getenv("OPENSSL_CONF").map { String(cString: $0) }
guard OPENSSL_init_crypto(UInt64(OPENSSL_INIT_LOAD_CONFIG), nil) == 1 else {
    fail("reading the OpenSSL configuration \(configuration ?? "(default)")", "fix the file named by OPENSSL_CONF")
}
ok("OpenSSL configuration: \(configuration ?? "OpenSSL's default file (OPENSSL_CONF is not set)")")

guard OSSL_PROVIDER_available(nil, "cloudhsm") == 1 else {
    // OpenSSL_version answers `MODULESDIR: "/path"`.
    let modules =
        String(cString: OpenSSL_version(OPENSSL_MODULES_DIR)).split(separator: "\"").dropFirst().first
        .map(String.init) ?? "OpenSSL's modules directory"
    ERR_clear_error()
    if let module = configuredModulePath(configuration), access(module, R_OK) != 0 {
        print("FAIL  the cloudhsm provider is not loaded")
        print("    the configuration's module line names \(module): \(String(cString: strerror(errno)))")
        print("      fix the module line in \(configuration ?? "the configuration"), or remove it to use \(modules)")
        exit(1)
    }
    // Loading it here reproduces the failure the configuration swallowed.
    _ = OSSL_PROVIDER_load(nil, "cloudhsm")
    fail(
        "the cloudhsm provider is not loaded",
        "set OPENSSL_CONF to a config that activates it (provider.cnf), and check its module path or \(modules)")
}
ok("provider cloudhsm is loaded")
guard OSSL_PROVIDER_available(nil, "default") == 1 else {
    fail("the default provider is not loaded", "activate it next to cloudhsm in the config (see provider.cnf)")
}

// The cluster configuration the provider chose (CLOUDHSM_CONFIG wins over cluster_config).
let chosen = providerStrings(
    "cloudhsm", ["cloudhsm-cluster-config", "cloudhsm-cluster-config-source", "cloudhsm-cluster-config-overridden"])
let clusterConfiguration =
    chosen["cloudhsm-cluster-config"].flatMap { $0.isEmpty ? nil : $0 } ?? "the cluster configuration"
if let path = chosen["cloudhsm-cluster-config"], !path.isEmpty {
    let source = chosen["cloudhsm-cluster-config-source"] ?? "?"
    if let overridden = chosen["cloudhsm-cluster-config-overridden"], !overridden.isEmpty {
        warn(
            "CLOUDHSM_CONFIG (\(path)) and cluster_config in the OpenSSL configuration (\(overridden)) differ: "
                + "the provider uses CLOUDHSM_CONFIG's \(path)")
    }
    guard access(path, R_OK) == 0 else {
        let why = String(cString: strerror(errno))
        print("FAIL  cluster configuration \(path) (\(source)): cannot read the file: \(why)")
        print(
            "      set CLOUDHSM_CONFIG (or cluster_config in \(configuration ?? "the OpenSSL configuration")) to the cluster's cluster.cfg"
        )
        exit(1)
    }
    ok("cluster configuration: \(path) (\(source))")
}

guard let file = BIO_new_file(keyPath, "r") else { fail("opening \(keyPath)", "") }
let key = PEM_read_bio_PrivateKey(file, nil, nil, nil)
BIO_free(file)
guard let key else {
    fail("loading \(keyPath)", "is it a fake PEM (-----BEGIN CLOUDHSM KEY REFERENCE-----) written by this project?")
}
let providerName = EVP_PKEY_get0_provider(key).map { String(cString: OSSL_PROVIDER_get0_name($0)) } ?? "legacy"
guard providerName == "cloudhsm" else {
    print("FAIL  \(keyPath) is a software key held by the \(providerName) provider, not an HSM key")
    exit(1)
}
// What the key is, as the provider describes it: RSA, or EC on a named curve.
let isEC = EVP_PKEY_is_a(key, "EC") == 1
var keyKind = "RSA \(EVP_PKEY_get_bits(key)) bit key"
if isEC {
    var group = [CChar](repeating: 0, count: 80)
    let curve =
        EVP_PKEY_get_utf8_string_param(key, "group", &group, group.count, nil) == 1
        ? String(cString: group) : "unknown curve"
    keyKind = "EC \(EVP_PKEY_get_bits(key)) bit key (\(curve))"
}
ok("\(keyPath): \(keyKind) held by the HSM cluster")

let message = Array("cloudhsm_check test message".utf8)
guard let signing = EVP_MD_CTX_new() else { fail("allocating", "") }
var signature = [UInt8](repeating: 0, count: Int(EVP_PKEY_get_size(key)))
var signatureLength = signature.count
guard EVP_DigestSignInit_ex(signing, nil, "SHA256", nil, nil, key, nil) == 1,
    EVP_DigestSign(signing, &signature, &signatureLength, message, message.count) == 1
else {
    let errors = drainErrors()
    fail(
        "signing on the HSM cluster", errors: errors, advice: signingAdvice(errors, configuration: clusterConfiguration)
    )
}
EVP_MD_CTX_free(signing)
ok("signed a test message on the HSM cluster (\(isEC ? "ECDSA" : "RSA PKCS#1 v1.5"), SHA-256)")

// Verify with a copy of the public key in a library context that has only the default
// provider, so the check cannot pass through the provider under test.
guard let verifierContext = OSSL_LIB_CTX_new(), OSSL_PROVIDER_load(verifierContext, "default") != nil else {
    fail("setting up a default-only library context", "")
}
var spki: UnsafeMutablePointer<UInt8>?
let spkiLength = i2d_PUBKEY(key, &spki)
guard spkiLength > 0, let spki else { fail("exporting the public key", "") }
var cursor: UnsafePointer<UInt8>? = UnsafePointer(spki)
guard let publicKey = d2i_PUBKEY_ex(nil, &cursor, Int(spkiLength), verifierContext, nil) else {
    fail("reading the public key into the default provider", "")
}
guard let verifying = EVP_MD_CTX_new(),
    EVP_DigestVerifyInit_ex(verifying, nil, "SHA256", verifierContext, nil, publicKey, nil) == 1
else { fail("starting verification", "") }
guard EVP_DigestVerify(verifying, signature, signatureLength, message, message.count) == 1 else {
    fail("verifying the HSM's signature with the default provider", "the key file does not match the HSM's key")
}
ok("signature verified by the default provider")
print("cloudhsm_check: \(keyPath) works with the cloudhsm provider")
