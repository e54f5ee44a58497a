// The commands of key_mgmt_util, with AWS's flags and output lines. Every request goes
// through ClusterClient: `create` for new keys (home node), `perform` for existing keys
// (the node that holds them), `broadcast` for cluster-wide questions.

import CloudHSMCore
import HSMClient
import OpenSSLKit

extension KeyManagementShell {
    static let allCommands: [Command] = [
        Command(
            name: "help", summary: "lists the commands", usage: "Usage: help", valued: [], switches: [],
            needsLogin: false, run: { shell, _ in shell.help() }),
        Command(
            name: "loginHSM", summary: "logs in on every HSM of the cluster",
            usage: "Usage: loginHSM -u <CU|CO> -s <user name> -p <password>", valued: ["-u", "-s", "-p"],
            switches: [], needsLogin: false, run: { try $0.loginHSM($1) }),
        Command(
            name: "logoutHSM", summary: "logs out of every HSM", usage: "Usage: logoutHSM", valued: [], switches: [],
            needsLogin: true, run: { shell, _ in shell.logoutHSM() }),
        Command(
            name: "getHSMInfo", summary: "shows every HSM's cluster id, version and counters",
            usage: "Usage: getHSMInfo", valued: [], switches: [], needsLogin: false,
            run: { shell, _ in shell.getHSMInfo() }),
        Command(
            name: "genSymKey", summary: "generates a symmetric key",
            usage: "Usage: genSymKey -t <key type: 16 GENERIC_SECRET, 31 AES> -s <key size in bytes> -l <label> "
                + "[-sess] [-nex]",
            valued: ["-t", "-s", "-l"], switches: ["-sess", "-nex"], needsLogin: true, run: { try $0.genSymKey($1) }),
        Command(
            name: "genRSAKeyPair", summary: "generates an RSA key pair",
            usage: "Usage: genRSAKeyPair -m <modulus length in bits> -e <public exponent> -l <label> [-sess] [-nex]",
            valued: ["-m", "-e", "-l"], switches: ["-sess", "-nex"], needsLogin: true,
            run: { try $0.genRSAKeyPair($1) }),
        Command(
            name: "genECCKeyPair", summary: "generates an EC key pair (P-256, P-384, P-521)",
            usage: "Usage: genECCKeyPair -i <curve id: 2 P-256 (prime256v1), 14 P-384 (secp384r1), "
                + "15 P-521 (secp521r1)> -l <label> [-sess] [-nex]",
            valued: ["-i", "-l"], switches: ["-sess", "-nex"], needsLogin: true,
            run: { try $0.genECCKeyPair($1) }),
        Command(
            name: "importPrivateKey", summary: "imports an RSA or EC private key file, wrapped on its way in",
            usage: "Usage: importPrivateKey -f <key file> -l <label> -w <wrapping key handle> [-sess] [-nex]",
            valued: ["-f", "-l", "-w"], switches: ["-sess", "-nex"], needsLogin: true,
            run: { try $0.importPrivateKey($1) }),
        Command(
            name: "getCaviumPrivKey", summary: "writes a private key reference (fake PEM) file",
            usage: "Usage: getCaviumPrivKey -k <private key handle> -out <file>", valued: ["-k", "-out"],
            switches: [], needsLogin: true, run: { try $0.getCaviumPrivKey($1) }),
        Command(
            name: "findKey", summary: "finds keys by class, type, label and session",
            usage: "Usage: findKey [-c <class: 2 public, 3 private, 4 secret>] [-t <type: 0 RSA, 3 EC, "
                + "16 GENERIC_SECRET, 31 AES>] [-l <label>] [-sess <0 token keys | 1 session keys>]",
            valued: ["-c", "-t", "-l", "-sess"], switches: [], needsLogin: true, run: { try $0.findKey($1) }),
        Command(
            name: "getAttribute", summary: "writes a key's attributes to a file",
            usage: "Usage: getAttribute -o <key handle> -a <attribute id, 512 for all> -out <file>",
            valued: ["-o", "-a", "-out"], switches: [], needsLogin: true, run: { try $0.getAttribute($1) }),
        Command(
            name: "getKeyInfo", summary: "shows which user owns a key", usage: "Usage: getKeyInfo -k <key handle>",
            valued: ["-k"], switches: [], needsLogin: true, run: { try $0.getKeyInfo($1) }),
        Command(
            name: "deleteKey", summary: "deletes a key", usage: "Usage: deleteKey -k <key handle>", valued: ["-k"],
            switches: [], needsLogin: true, run: { try $0.deleteKey($1) }),
        Command(
            name: "exportPubKey", summary: "writes an RSA or EC key's public key as PEM",
            usage: "Usage: exportPubKey -k <key handle> -out <file>", valued: ["-k", "-out"], switches: [],
            needsLogin: true, run: { try $0.exportPubKey($1) }),
        Command(
            name: "sign", summary: "signs a file with an RSA or EC private key",
            usage: "Usage: sign -f <file> -k <private key handle> -m <mechanism> -out <signature file>\n"
                + "       mechanisms: 0 SHA1_RSA_PKCS, 1 SHA256_RSA_PKCS, 2 SHA384_RSA_PKCS, 3 SHA512_RSA_PKCS, "
                + "4 SHA224_RSA_PKCS,\n"
                + "                   5 SHA1_RSA_PKCS_PSS, 6 SHA256_RSA_PKCS_PSS, 7 SHA384_RSA_PKCS_PSS, "
                + "8 SHA512_RSA_PKCS_PSS, 9 SHA224_RSA_PKCS_PSS,\n"
                + "                   15 ECDSA_SHA1, 16 ECDSA_SHA224, 17 ECDSA_SHA256, 18 ECDSA_SHA384, "
                + "19 ECDSA_SHA512",
            valued: ["-f", "-k", "-m", "-out"], switches: [], needsLogin: true, run: { try $0.sign($1) }),
        Command(
            name: "wrapKey", summary: "exports an extractable private key wrapped under a key",
            usage: "Usage: wrapKey -k <key handle> -w <wrapping key handle> -out <file>",
            valued: ["-k", "-w", "-out"], switches: [], needsLogin: true, run: { try $0.wrapKey($1) }),
        Command(
            name: "unWrapKey", summary: "imports a wrapped RSA or EC private key",
            usage: "Usage: unWrapKey -f <wrapped key file> -w <wrapping key handle> -l <label> [-sess] [-nex]",
            valued: ["-f", "-w", "-l"], switches: ["-sess", "-nex"], needsLogin: true,
            run: { try $0.unWrapKey($1) }),
    ]

    func help() {
        print("Help Commands Available:")
        print("")
        print("Syntax: <command> -h")
        print("")
        print("   Command               Description")
        print("   =======               ===========")
        for command in commands {
            print("   \(command.name.padding(to: 20))  \(command.summary)")
        }
        print("   \("exit".padding(to: 20))  exits this application")
    }

    // MARK: Sessions

    func loginHSM(_ flags: Flags) throws {
        let roleName = try flags.required("-u")
        guard let role = UserRole(shortName: roleName) else {
            throw UsageError("-u must be CU or CO, found '\(roleName)'")
        }
        let user = try flags.required("-s")
        if let problem = UserName.problem(user) { throw UsageError("-s: \(problem)") }
        let password = try flags.required("-p")
        let results = client.login(role: role, user: user, password: password)
        let first = Self.firstCode(results)
        printReturned("Cfm3LoginHSM", first.code, detail: first.detail)
        printStatus(results)
    }

    func logoutHSM() {
        let results = client.logout()
        let first = Self.firstCode(results)
        printReturned("Cfm3LogoutHSM", first.code, detail: first.detail)
        printStatus(results)
    }

    func getHSMInfo() {
        var firstFailure: HSMError?
        for node in client.nodes {
            print("Node id \(node.id): \(node)")
            switch client.send(.nodeInfo, to: node.id).map(\.body) {
            case .success(.nodeInfo(let info)):
                print("        Cluster id: \(info.clusterId)")
                print("        Version: \(info.version)")
                guard info.includesCounters else {
                    // A node shows its counters to logged-in sessions only.
                    print("        Counters: shown after loginHSM")
                    continue
                }
                print("        Token keys: \(info.tokenKeyCount)")
                print("        Session keys: \(info.sessionKeyCount)")
                // "sign" and "decrypt" are RSA's; scripts read the figures in this order.
                print(
                    "        Private key operations: \(info.privateKeyOperations) "
                        + "(sign \(info.signOperations), decrypt \(info.decryptOperations), "
                        + "ECDSA sign \(info.ecdsaSignOperations))")
                print("        Users: \(info.userCount)")
            case .success:
                let error = HSMError(.internalError, "unexpected answer to nodeInfo")
                print("        Error: \(error.code.description) - \(error.detail)")
                firstFailure = firstFailure ?? error
            case .failure(let error):
                print("        Error: \(error.code.description)" + (error.detail.isEmpty ? "" : " - \(error.detail)"))
                firstFailure = firstFailure ?? error
            }
        }
        print("")
        printReturned("Cfm3GetHSMInfo", firstFailure?.code ?? .success)
    }

    // MARK: Key creation

    func genSymKey(_ flags: Flags) throws {
        let typeNumber = try flags.number("-t", what: "16 (GENERIC_SECRET) or 31 (AES)")
        guard let keyType = KeyType(rawValue: UInt32(truncatingIfNeeded: typeNumber)),
            keyType == .aes || keyType == .genericSecret, typeNumber <= UInt32.max
        else { throw UsageError("-t must be 16 (GENERIC_SECRET) or 31 (AES), found \(typeNumber)") }
        let size = try flags.number("-s", what: "a key size in bytes")
        guard size > 0, size <= 4096 else { throw UsageError("-s must be a key size in bytes, found \(size)") }
        let label = try flags.required("-l")
        let outcome = client.create(
            .generateSymmetricKey(
                keyType: keyType, byteCount: UInt32(size), label: label, isSession: flags.has("-sess"),
                isExtractable: !flags.has("-nex")))
        print("")
        printReturned("Cfm3GenerateSymmetricKey", outcome)
        if case .success(.handle(let handle)) = outcome.result.map(\.body) {
            print("")
            print("Symmetric Key Created.  Key Handle: \(handle)")
        }
        printStatus(outcome.attempts)
    }

    func genRSAKeyPair(_ flags: Flags) throws {
        let bits = try flags.number("-m", what: "a modulus length in bits")
        guard bits >= 1024, bits <= 16384 else {
            throw UsageError("-m must be a modulus length in bits, found \(bits)")
        }
        let exponent = try flags.number("-e", what: "a public exponent such as 65537")
        guard RSAPublicExponent.isAllowed(exponent) else {
            throw UsageError("-e must be \(RSAPublicExponent.allowedDescription), found \(exponent)")
        }
        let label = try flags.required("-l")
        let outcome = client.create(
            .generateRSAKeyPair(
                modulusBits: UInt32(bits), publicExponent: exponent, label: label, isSession: flags.has("-sess"),
                isExtractable: !flags.has("-nex")))
        print("")
        printReturned("Cfm3GenerateKeyPair", outcome)
        if case .success(.keyPair(let publicKey, let privateKey)) = outcome.result.map(\.body) {
            print("")
            print("Cfm3GenerateKeyPair:    public key handle: \(publicKey)    private key handle: \(privateKey)")
        }
        printStatus(outcome.attempts)
    }

    func genECCKeyPair(_ flags: Flags) throws {
        let number = try flags.number("-i", what: "a curve id: \(ECCurve.supportedDescription)")
        // Refused here, by name, before anything is sent (the node would refuse it too).
        guard number <= UInt32.max, ECCurve(rawValue: UInt32(number)).isSupported else {
            let curve = ECCurve(rawValue: UInt32(truncatingIfNeeded: number))
            throw UsageError(
                "-i \(number): curve not supported: "
                    + (number <= UInt32.max ? curve.name : "curve id \(number)")
                    + "; use \(ECCurve.supportedDescription)")
        }
        let label = try flags.required("-l")
        let outcome = client.create(
            .generateECKeyPair(
                curve: ECCurve(rawValue: UInt32(number)), label: label, isSession: flags.has("-sess"),
                isExtractable: !flags.has("-nex")))
        print("")
        printReturned("Cfm3GenerateKeyPair", outcome)
        if case .success(.keyPair(let publicKey, let privateKey)) = outcome.result.map(\.body) {
            print("")
            print("Cfm3GenerateKeyPair:    public key handle: \(publicKey)    private key handle: \(privateKey)")
        }
        printStatus(outcome.attempts)
    }

    func importPrivateKey(_ flags: Flags) throws {
        let path = try flags.required("-f")
        let label = try flags.required("-l")
        let wrappingKey = try flags.number("-w", what: "a key handle")
        let contents = try Files.read(path)
        let keyData: [UInt8]
        do {
            keyData = try PrivateKey.parse(fileContents: contents, context: crypto).pkcs8DER()
        } catch {
            // The reason may quote the file (a PEM label): no control character is printed.
            print(
                "Error: \(path) is not an RSA or EC private key the HSMs accept (PEM or DER; PKCS#1, SEC1 or "
                    + "PKCS#8): " + "\(error)".escapingControlCharacters)
            markFailed()
            return
        }
        print("BER encoded key length is \(keyData.count)")
        print("")
        // The plaintext key crosses only the TLS channel, into the HSM's wrap operation;
        // what comes back is wrapped under the session's wrapping key.
        let wrapped = client.perform(.wrapHostKey(wrappingKey: wrappingKey, keyData: keyData), key: wrappingKey)
        printReturned("Cfm3WrapHostKey", wrapped)
        guard case .success(.bytes(let wrappedKey)) = wrapped.result.map(\.body) else {
            printStatus(wrapped.attempts)
            return
        }
        print("")
        print("Cfm3CreateUnwrapTemplate returned: \(HSMReturnCode.success.description)")
        print("")
        unwrap(wrappedKey, under: wrappingKey, label: label, flags)
    }

    func unWrapKey(_ flags: Flags) throws {
        let path = try flags.required("-f")
        let wrappingKey = try flags.number("-w", what: "a key handle")
        let label = try flags.required("-l")
        unwrap(try Files.read(path), under: wrappingKey, label: label, flags)
    }

    /// The unwrap step importPrivateKey and unWrapKey share, with its AWS-style report.
    private func unwrap(_ wrappedKey: [UInt8], under wrappingKey: KeyHandle, label: String, _ flags: Flags) {
        let outcome = client.perform(
            .unwrapKey(
                wrappingKey: wrappingKey, wrappedKey: wrappedKey, label: label, isSession: flags.has("-sess"),
                isExtractable: !flags.has("-nex")), key: wrappingKey)
        printReturned("Cfm3UnWrapKey", outcome)
        if case .success(.handle(let handle)) = outcome.result.map(\.body) {
            print("")
            print("Private Key Unwrapped.  Key Handle: \(handle)")
        }
        printStatus(outcome.attempts)
    }

    // MARK: Existing keys

    func getCaviumPrivKey(_ flags: Flags) throws {
        let handle = try flags.number("-k", what: "a key handle")
        let path = try flags.required("-out")
        let outcome = client.perform(.getAttributes(handle), key: handle)
        guard case .success(.attributes(let attributes)) = outcome.result.map(\.body) else {
            printReturned("getCaviumPrivKey", outcome)
            printStatus(outcome.attempts)
            return
        }
        guard attributes.keyClass == .privateKey, attributes.keyType == .rsa || attributes.keyType == .ec,
            !attributes.publicKeyInfo.isEmpty
        else {
            printReturned(
                "getCaviumPrivKey", .invalidKeyType,
                detail: "key \(handle) is a \(attributes.keyClass.name) \(attributes.keyType.name) key, "
                    + "not an RSA or EC private key")
            return
        }
        // The node's own cluster id is authoritative; the configuration's is the fallback.
        var clusterID = client.configuration.clusterID
        if let node = outcome.node, case .success(.nodeInfo(let info)) = client.send(.nodeInfo, to: node.id).map(\.body)
        {
            clusterID = info.clusterId
        }
        let reference = KeyReference(
            clusterID: clusterID, handle: handle, publicKeyInfo: attributes.publicKeyInfo,
            label: attributes.label.isEmpty ? nil : attributes.label)
        try Files.write(reference.pemEncoded(), to: path, mode: 0o600)
        print("Private Key Handle is written to \(path) in fake PEM format")
        print("")
        printReturned("getCaviumPrivKey", .success)
    }

    func findKey(_ flags: Flags) throws {
        var filter = KeyFilter()
        if let number = try flags.optionalNumber("-c", what: "2 (public), 3 (private) or 4 (secret)") {
            guard number <= UInt32.max, let keyClass = KeyClass(rawValue: UInt32(number)) else {
                throw UsageError("-c must be 2 (public), 3 (private) or 4 (secret), found \(number)")
            }
            filter.keyClass = keyClass
        }
        if let number = try flags.optionalNumber("-t", what: "0 (RSA), 3 (EC), 16 (GENERIC_SECRET) or 31 (AES)") {
            guard number <= UInt32.max, let keyType = KeyType(rawValue: UInt32(number)) else {
                throw UsageError("-t must be 0 (RSA), 3 (EC), 16 (GENERIC_SECRET) or 31 (AES), found \(number)")
            }
            filter.keyType = keyType
        }
        filter.label = flags.optional("-l")
        if let session = flags.optional("-sess") {
            guard session == "0" || session == "1" else { throw UsageError("-sess must be 0 or 1, found '\(session)'") }
            filter.isSession = session == "1"
        }
        let results = client.broadcast(.findKeys(filter))
        // Token keys may exist on several nodes under one handle; list each once.
        var handles = Set<KeyHandle>()
        for case .success(let response) in results.map(\.result) {
            if case .handles(let found) = response.body { handles.formUnion(found) }
        }
        let sorted = handles.sorted()
        print("Total number of keys present: \(sorted.count)")
        if !sorted.isEmpty {
            print("")
            print(" number of keys matched from start index 0::\(sorted.count - 1)")
            print(sorted.map(String.init).joined(separator: ", "))
        }
        printStatus(results)
        print("")
        // Like AWS: the call succeeds when a node answered; the status lines show the rest.
        if results.contains(where: \.isSuccess) {
            printReturned("Cfm3FindKey", .success)
        } else {
            let first = Self.firstCode(results)
            printReturned("Cfm3FindKey", first.code, detail: first.detail)
        }
    }

    func getAttribute(_ flags: Flags) throws {
        let handle = try flags.number("-o", what: "a key handle")
        let attributeNumber = try flags.number("-a", what: "an attribute id (512 for all)")
        let path = try flags.required("-out")
        let wanted: KeyAttributeID?
        if attributeNumber == 512 {
            wanted = nil
        } else {
            guard let id = KeyAttributeID(rawValue: attributeNumber) else {
                throw UsageError(
                    "-a must be 512 or one of "
                        + KeyAttributeID.allCases.map { "\($0.rawValue) (\($0.name))" }.joined(separator: ", "))
            }
            wanted = id
        }
        let outcome = client.perform(.getAttributes(handle), key: handle)
        guard case .success(.attributes(let attributes)) = outcome.result.map(\.body) else {
            printReturned("Cfm3GetAttribute", outcome)
            printStatus(outcome.attempts)
            return
        }
        let dump = AttributeDump(attributes, context: crypto)
        let entries: [AttributeDump.Entry]
        if let wanted {
            guard let entry = dump.entries.first(where: { $0.id == wanted }) else {
                printReturned(
                    "Cfm3GetAttribute", .invalidArgument,
                    detail:
                        "\(wanted.name) does not apply to a \(attributes.keyClass.name) \(attributes.keyType.name) key")
                return
            }
            entries = [entry]
        } else {
            entries = dump.entries
        }
        try Files.write(entries.map { "\($0.id.name)\n\($0.text)\n" }.joined(), to: path)
        let size = entries.reduce(0) { $0 + $1.size }
        if wanted == nil {
            print("got all attributes of size \(size) attr count \(entries.count)")
        } else {
            print("got attribute of size \(size) attr count \(entries.count)")
        }
        print("Attributes dumped into \(path) file")
        print("")
        printReturned("Cfm3GetAttribute", .success)
    }

    func deleteKey(_ flags: Flags) throws {
        let handle = try flags.number("-k", what: "a key handle")
        let outcome = client.perform(.deleteKey(handle), key: handle)
        printReturned("Cfm3DeleteKey", outcome)
        printStatus(outcome.attempts)
    }

    func exportPubKey(_ flags: Flags) throws {
        let handle = try flags.number("-k", what: "a key handle")
        let path = try flags.required("-out")
        let outcome = client.perform(.exportPublicKey(handle), key: handle)
        guard case .success(.bytes(let publicKeyInfo)) = outcome.result.map(\.body) else {
            printReturned("Cfm3ExportPubKey", outcome)
            printStatus(outcome.attempts)
            return
        }
        try Files.write(pem(label: "PUBLIC KEY", der: publicKeyInfo), to: path)
        print("PEM formatted public key is written to \(path)")
        print("")
        printReturned("Cfm3ExportPubKey", .success)
    }

    func sign(_ flags: Flags) throws {
        let path = try flags.required("-f")
        let handle = try flags.number("-k", what: "a key handle")
        let mechanisms = "0 to 9 (RSA) or 15 to 19 (ECDSA)"
        let number = try flags.number("-m", what: "a mechanism, \(mechanisms)")
        let output = try flags.required("-out")
        // AWS's numbering: RSA's digests in the order SHA-1, 256, 384, 512, 224; ECDSA's by size.
        let rsaDigests: [DigestAlgorithm] = [.sha1, .sha256, .sha384, .sha512, .sha224]
        let ecdsaDigests: [DigestAlgorithm] = [.sha1, .sha224, .sha256, .sha384, .sha512]
        let digest: DigestAlgorithm
        let mechanism: SignMechanism
        switch number {
        case 0...9:
            digest = rsaDigests[Int(number % 5)]
            mechanism =
                number < 5
                ? .pkcs1(digest: digest)
                : .pss(digest: digest, mgf1Digest: digest, saltLength: UInt32(digest.outputLength))
        case 15...19:
            digest = ecdsaDigests[Int(number - 15)]
            mechanism = .ecdsa(digest: digest)
        default:
            throw UsageError("-m must be a mechanism, \(mechanisms), found \(number)")
        }
        let hash = try Digest.hash(try Files.read(path, limit: 1 << 30), algorithm: digest, context: crypto)
        let outcome = client.perform(.sign(key: handle, mechanism: mechanism, data: hash), key: handle)
        if case .success(.bytes(let signature)) = outcome.result.map(\.body) {
            try Files.write(signature, to: output)
            print("signature is written to file \(output)")
            print("")
        }
        printReturned("Cfm3Sign", outcome)
        printStatus(outcome.attempts)
    }

    func wrapKey(_ flags: Flags) throws {
        let handle = try flags.number("-k", what: "a key handle")
        let wrappingKey = try flags.number("-w", what: "a key handle")
        let path = try flags.required("-out")
        let outcome = client.perform(.wrapKey(key: handle, wrappingKey: wrappingKey), key: handle)
        printReturned("Cfm3WrapKey", outcome)
        if case .success(.bytes(let wrapped)) = outcome.result.map(\.body) {
            try Files.write(wrapped, to: path, mode: 0o600)
            print("")
            print("Key Wrapped.  Wrapped key written to file \"\(path)\" length \(wrapped.count)")
        }
        printStatus(outcome.attempts)
    }

    private func pem(label: String, der: [UInt8]) -> String {
        let base64 = base64Encode(der)
        var lines: [Substring] = []
        var rest = Substring(base64)
        while !rest.isEmpty {
            lines.append(rest.prefix(64))
            rest = rest.dropFirst(64)
        }
        return "-----BEGIN \(label)-----\n" + lines.joined(separator: "\n") + "\n-----END \(label)-----\n"
    }
}

func base64Encode(_ bytes: [UInt8]) -> String {
    let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/".utf8)
    var out: [UInt8] = []
    var index = 0
    while index < bytes.count {
        let chunk = bytes[index..<min(index + 3, bytes.count)]
        var n: UInt32 = 0
        for (position, byte) in chunk.enumerated() { n |= UInt32(byte) << UInt32(16 - 8 * position) }
        for position in 0..<4 {
            out.append(position <= chunk.count ? alphabet[Int(n >> UInt32(18 - 6 * position) & 63)] : UInt8(ascii: "="))
        }
        index += 3
    }
    return String(decoding: out, as: UTF8.self)
}

extension String {
    func padding(to width: Int) -> String {
        count >= width ? self : self + String(repeating: " ", count: width - count)
    }
}

extension KeyClass {
    var name: String {
        switch self {
        case .publicKey: return "public"
        case .privateKey: return "private"
        case .secretKey: return "secret"
        }
    }
}

extension KeyType {
    var name: String {
        switch self {
        case .rsa: return "RSA"
        case .ec: return "EC"
        case .genericSecret: return "GENERIC_SECRET"
        case .aes: return "AES"
        }
    }
}
