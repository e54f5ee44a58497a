// The provider's way to the HSMs: private-key operations and key generation through the
// cluster client, and the per-process check that a key file still names the key it
// claims. The OpenSSL-facing files call this and never see connections or frames.

import CloudHSMCore
import Glibc
import HSMClient
import OpenSSLKit
import Synchronization

final class KeyService: Sendable {
    private let configurationPath: String?
    /// Read from the environment at provider init, so that a process that forks after
    /// loading us (nginx's master) hands them to its workers even if their environment
    /// is cleared; nil when the variables were not set then.
    private let initialCredentials: Credentials?
    /// Made on first use, never at provider init: init must only read configuration.
    private let client = Mutex<ClusterClient?>(nil)

    init(configurationPath: String?) {
        self.configurationPath = configurationPath
        self.initialCredentials = try? Credentials.fromEnvironment()
    }

    /// Signs `input` (a digest, or a raw block) with the HSM key.
    func sign(_ key: ProviderKey, mechanism: SignMechanism, input: [UInt8]) throws -> [UInt8] {
        try privateOperation(key, "signing") { .sign(key: $0, mechanism: mechanism, data: input) }
    }

    func decrypt(_ key: ProviderKey, mechanism: DecryptMechanism, input: [UInt8]) throws -> [UInt8] {
        try privateOperation(key, "decrypting") { .decrypt(key: $0, mechanism: mechanism, data: input) }
    }

    /// One round trip to whichever node the pool picks, after the once-per-process check.
    private func privateOperation(_ key: ProviderKey, _ what: String, _ request: (KeyHandle) -> HSMRequest) throws
        -> [UInt8]
    {
        let reference = try hsmReference(of: key)
        let client = try loggedInClient()
        try confirm(key, reference: reference, with: client)
        let handle = reference.handle
        return try bytes(
            client.perform(request(handle), key: handle).result, doing: "\(what) with key handle \(handle)")
    }

    /// Makes a token key pair in the cluster with `request` and answers the reference to
    /// its private key, read back from the cluster.
    ///
    /// - Parameter what: what is made, for messages ("an RSA key of 2048 bits").
    func generateKeyPair(_ request: HSMRequest, label: String, what: String) throws -> KeyReference {
        let client = try loggedInClient()
        guard
            case .keyPair(_, let privateHandle) = try body(
                client.create(request).result, doing: "generating \(what)")
        else { throw ProviderError(.hsmOperationFailed, "generating \(what): unexpected answer") }
        guard
            case .attributes(let attributes) = try body(
                client.perform(.getAttributes(privateHandle), key: privateHandle).result,
                doing: "reading the new key \(privateHandle)")
        else { throw ProviderError(.hsmOperationFailed, "reading the new key: unexpected answer") }
        return KeyReference(
            clusterID: client.configuration.clusterID, handle: privateHandle, publicKeyInfo: attributes.publicKeyInfo,
            label: label)
    }

    // MARK: - Internals

    private func hsmReference(of key: ProviderKey) throws -> KeyReference {
        guard let reference = key.reference else {
            throw ProviderError(
                .unsupported, "this \(key.type.displayName) key is public only: its private half is in no HSM")
        }
        return reference
    }

    /// The first private operation with a key in each process checks that the handle on
    /// the cluster is still this key: a stale or edited file must not sign with another key.
    private func confirm(_ key: ProviderKey, reference: KeyReference, with client: ClusterClient) throws {
        // The fork generation, not getpid(): no system call on every signature.
        let process = ForkGeneration.current &+ 1
        guard key.confirmedInProcess.load(ordering: .acquiring) != process else { return }
        // The cluster id and label come from the key file: shown escaped and cut short,
        // so the rest of the message survives whatever the file holds.
        let cluster = Self.shown(reference.clusterID)
        guard reference.clusterID == client.configuration.clusterID else {
            throw ProviderError(
                .keyFromAnotherCluster,
                "the key file names cluster '\(cluster)', but this client is configured for "
                    + "'\(Self.shown(client.configuration.clusterID))' (\(client.configuration.source))")
        }
        let result = client.perform(.getAttributes(reference.handle), key: reference.handle).result
        if case .failure(let error) = result, error.code == .invalidHandle || error.code == .keyAccessDenied {
            throw ProviderError(
                .keyNotFound,
                "key handle \(reference.handle)\(reference.label.map { " (\(Self.shown($0)))" } ?? "") "
                    + "is not on cluster '\(cluster)' for this user: \(error.code.meaning)")
        }
        guard case .attributes(let attributes) = try body(result, doing: "looking up key handle \(reference.handle)")
        else {
            throw ProviderError(.hsmOperationFailed, "looking up key handle \(reference.handle): unexpected answer")
        }
        guard attributes.keyClass == .privateKey, attributes.keyType == key.type.hsmKeyType else {
            var message =
                "key handle \(reference.handle) on cluster '\(cluster)' is \(attributes.kindDescription), "
                + "not an \(key.type.displayName) private key"
            if attributes.keyClass == .publicKey, attributes.keyType == key.type.hsmKeyType,
                let privateHandle = privateKeyHandle(pairedWith: attributes, near: reference.handle, client: client)
            {
                message += "; the private key of this pair is handle \(privateHandle)"
            }
            throw ProviderError(.keyNotFound, message)
        }
        guard attributes.publicKeyInfo == reference.publicKeyInfo else {
            throw ProviderError(
                .publicKeyMismatch,
                "key handle \(reference.handle) on cluster '\(cluster)' holds a different key than the "
                    + "key file says")
        }
        key.confirmedInProcess.store(process, ordering: .releasing)
    }

    /// Text from a key file or configuration, as messages show it.
    static func shown(_ text: String) -> String {
        text.escapingControlCharacters.truncated(toUTF8Bytes: 120)
    }

    /// The private key with the same public key as `publicKey`, among this user's private
    /// keys of the same label (a pair shares its label): a few requests, made only on
    /// this error path; nil when there is none or it cannot be told cheaply.
    func privateKeyHandle(pairedWith publicKey: KeyAttributes, near handle: KeyHandle, client: ClusterClient)
        -> KeyHandle?
    {
        var filter = KeyFilter()
        filter.keyClass = .privateKey
        filter.keyType = publicKey.keyType
        filter.label = publicKey.label
        guard case .success(let response) = client.perform(.findKeys(filter), key: handle).result,
            case .handles(let candidates) = response.body
        else { return nil }
        for candidate in candidates.prefix(8) {
            if case .success(let answer) = client.perform(.getAttributes(candidate), key: candidate).result,
                case .attributes(let attributes) = answer.body, attributes.publicKeyInfo == publicKey.publicKeyInfo
            {
                return candidate
            }
        }
        return nil
    }

    /// Reads the cluster configuration and trust anchor into memory, without touching
    /// the network. Called when a key is loaded: nginx loads keys in its master, as root,
    /// before it forks workers that may not be allowed to read those files.
    func prepare() {
        _ = try? preparedClient()
    }

    private func preparedClient() throws -> ClusterClient {
        try client.withLock { slot in
            if let existing = slot { return existing }
            do {
                let configuration =
                    try configurationPath.map { try ClusterConfiguration.load(path: $0) }
                    ?? ClusterConfiguration.load()
                let made = try ClusterClient(configuration: configuration)
                slot = made
                return made
            } catch {
                throw ProviderError(.configuration, "\(error)")
            }
        }
    }

    func loggedInClient() throws -> ClusterClient {
        let client = try preparedClient()
        if !client.isLoggedIn {
            // Each node's connection logs in on first use; a wrong password shows up as
            // the operation's loginFailed answer.
            let credentials: Credentials
            do {
                credentials = try initialCredentials ?? Credentials.fromEnvironment()
            } catch {
                throw ProviderError(.notLoggedIn, "\(error)")
            }
            // A name no node can hold is refused here, without repeating it.
            if let problem = UserName.problem(credentials.user) {
                throw ProviderError(.notLoggedIn, "n3fips_password (or CLOUDHSM_PIN): \(problem)")
            }
            client.useCredentials(credentials)
        }
        return client
    }

    func body(_ result: Result<HSMResponse, HSMError>, doing what: String) throws -> ResponseBody {
        switch result {
        case .success(let response):
            do { return try response.get() } catch let error as HSMError {
                throw ProviderError(hsm: error, doing: what)
            }
        case .failure(let error):
            throw ProviderError(hsm: error, doing: what)
        }
    }

    private func bytes(_ result: Result<HSMResponse, HSMError>, doing what: String) throws -> [UInt8] {
        guard case .bytes(let bytes) = try body(result, doing: what) else {
            throw ProviderError(.hsmOperationFailed, "\(what): unexpected answer")
        }
        return bytes
    }
}

extension KeyAttributes {
    /// "a public RSA key", "a secret AES key": what a handle holds, for messages.
    var kindDescription: String {
        let kind: String
        switch keyClass {
        case .publicKey: kind = "a public"
        case .privateKey: kind = "a private"
        case .secretKey: kind = "a secret"
        }
        let type: String
        switch keyType {
        case .rsa: type = "RSA"
        case .ec: type = "EC"
        case .aes: type = "AES"
        case .genericSecret: type = "generic secret"
        }
        return "\(kind) \(type) key"
    }
}
