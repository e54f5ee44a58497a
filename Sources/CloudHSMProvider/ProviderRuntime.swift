// Everything the provider's callbacks share, one per process: the configuration chosen
// at init, the way to the HSMs, and the private library context with the digests fetched
// from it once.

import CloudHSMCore
import HSMClient
import OpenSSLKit
import Synchronization

/// Everything the provider's callbacks share, one per process (see OSSL_provider_init).
final class ProviderRuntime: @unchecked Sendable {
    // `keys` and `configuration` are immutable after init; the library is guarded by its
    // Mutex.
    let keys: KeyService
    let configuration: ConfigurationChoice
    private let privateLibrary = Mutex<PrivateLibrary?>(nil)

    init(configuration: ConfigurationChoice) {
        self.configuration = configuration
        keys = KeyService(configurationPath: configuration.path)
    }

    /// The provider's private library context (default provider loaded), made on first use.
    func library() throws -> PrivateLibrary {
        try privateLibrary.withLock { slot in
            if let existing = slot { return existing }
            do {
                let library = try PrivateLibrary()
                slot = library
                return library
            } catch {
                throw ProviderError(.configuration, "cannot set up the provider's library context: \(error)")
            }
        }
    }
}

/// The private library context and the digests the HSMs sign, fetched from it once:
/// OpenSSL 3.0 takes a lock on every fetch, which a TLS handshake would otherwise pay
/// again and again.
final class PrivateLibrary: @unchecked Sendable {
    // Immutable after init; OpenSSL's library contexts and fetched digests are thread-safe.
    let context: CryptoContext
    private let digests: [EVPDigest]

    init() throws {
        let context = try CryptoContext()
        self.context = context
        digests = try HSMDigest.all.map { try EVPDigest(name: $0.name.description, context: context) }
    }

    /// The implementation of `digest`: the one fetched at start, unless the application
    /// asks for other properties.
    func digest(_ digest: HSMDigest, properties: String? = nil) throws -> EVPDigest {
        if let properties {
            do {
                return try EVPDigest(name: digest.name.description, properties: properties, context: context)
            } catch {
                throw ProviderError(error, doing: "fetching \(digest) with properties '\(properties)'")
            }
        }
        guard let index = HSMDigest.all.firstIndex(of: digest) else {
            throw ProviderError(.unsupported, "digest \(digest) is not one the HSMs use")
        }
        return digests[index]
    }
}

/// Which cluster configuration file the provider uses. `CLOUDHSM_CONFIG` wins over the
/// OpenSSL configuration's `cluster_config`: it is the more specific, per-process setting,
/// and the tools read it too, so one shell runs every program against one cluster. With
/// neither, /etc/cloudhsm/cluster.cfg. The choice is made once, at provider init (nginx's
/// master, before its workers' environment is cleared); a named file that cannot be read
/// fails the first private-key operation, never falls back to another file.
struct ConfigurationChoice: Equatable {
    enum Source: String {
        case environment = "CLOUDHSM_CONFIG"
        case opensslConfiguration = "cluster_config in the OpenSSL configuration"
        case defaultPath = "the default path: neither CLOUDHSM_CONFIG nor cluster_config is set"
    }

    let path: String
    let source: Source
    /// The `cluster_config` that `CLOUDHSM_CONFIG` overrode, when the two name different files.
    let overridden: String?

    init(environment: String?, opensslConfiguration: String?) {
        let environment = environment.flatMap { $0.isEmpty ? nil : $0 }
        let fromFile = opensslConfiguration.flatMap { $0.isEmpty ? nil : $0 }
        if let environment {
            path = environment
            source = .environment
            overridden = fromFile.flatMap { $0 == environment ? nil : $0 }
        } else if let fromFile {
            path = fromFile
            source = .opensslConfiguration
            overridden = nil
        } else {
            path = ClusterConfiguration.defaultPath
            source = .defaultPath
            overridden = nil
        }
    }

    /// The line the trace and `cloudhsm_check` show when both are set and differ.
    var overrideNote: String? {
        overridden.map {
            "CLOUDHSM_CONFIG=\(path) is used; cluster_config = \($0) in the OpenSSL configuration is ignored "
                + "(the environment variable wins)"
        }
    }
}
