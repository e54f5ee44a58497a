// The provider's entry point and its provider-level functions: parameters, the
// algorithm query, reason strings and teardown. OSSL_provider_init only reads
// configuration; connections to the HSMs open on the first private-key operation in each
// process (DESIGN.md, hard rule 1: nginx forks after loading us).

import COpenSSL
import CloudHSMCore
import Glibc
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
    func library() throws -> OpaquePointer { try privateLibraryObject().context.pointer }

    /// A digest fetched once per process from the private library context.
    func digest(_ algorithm: DigestAlgorithm) throws -> OpaquePointer {
        guard let digest = try privateLibraryObject().digests[algorithm] else {
            throw ProviderError(.unsupported, "digest \(algorithm) is not available")
        }
        return digest
    }

    private func privateLibraryObject() throws -> PrivateLibrary {
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

/// The private library context and the digests fetched from it once: OpenSSL 3.0 takes
/// a lock on every fetch, which a TLS handshake would otherwise pay again and again.
final class PrivateLibrary {
    let context: CryptoContext
    let digests: [DigestAlgorithm: OpaquePointer]

    init() throws {
        context = try CryptoContext()
        var digests: [DigestAlgorithm: OpaquePointer] = [:]
        for algorithm in DigestAlgorithm.allCases {
            guard let name = algorithm.openSSLName else { continue }
            if let digest = EVP_MD_fetch(context.pointer, name, nil) { digests[algorithm] = digest }
        }
        self.digests = digests
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

nonisolated(unsafe) var runtime = ProviderRuntime(
    configuration: ConfigurationChoice(environment: nil, opensslConfiguration: nil))
/// Written only in OSSL_provider_init, which OpenSSL serialises under its provider lock.
nonisolated(unsafe) private var runtimeIsSet = false

let providerName: StaticString = "CloudHSM Provider"
let providerVersion: StaticString = "0.1.0"
let providerBuildInfo: StaticString = "cloudhsm-offload 0.1.0 (Swift, OpenSSL 3 provider API)"

@_cdecl("OSSL_provider_init")
public func OSSL_provider_init(
    _ handle: OpaquePointer?, _ inDispatch: UnsafePointer<OSSL_DISPATCH>?,
    _ outDispatch: UnsafeMutablePointer<UnsafePointer<OSSL_DISPATCH>?>?,
    _ providerContext: UnsafeMutablePointer<UnsafeMutableRawPointer?>?
) -> Int32 {
    // OpenSSL runs init once for each library context that activates the provider. The
    // first one sets up the runtime; replacing it later would pull the client and its
    // connections from under threads using them.
    if !runtimeIsSet {
        core = CoreFunctions(handle: handle, dispatch: inDispatch)
        let settings = core.configurationValues(["cluster_config"])
        let choice = ConfigurationChoice(
            environment: getenv(ClusterConfiguration.environmentVariable).map { String(cString: $0) },
            opensslConfiguration: settings["cluster_config"])
        trace("cluster configuration: \(choice.path) (\(choice.source.rawValue))")
        if let note = choice.overrideNote { trace(note) }
        runtime = ProviderRuntime(configuration: choice)
        runtimeIsSet = true
    }
    outDispatch?.pointee = providerDispatch
    // The provider context is unused by our callbacks; any non-NULL value will do.
    providerContext?.pointee = UnsafeMutableRawPointer(mutating: cString(providerName))
    return 1
}

private let providerDispatch = dispatchTable([
    DispatchEntry(OSSL_FUNC_PROVIDER_TEARDOWN, unsafeBitCast(teardown, to: GenericFunction.self)),
    DispatchEntry(OSSL_FUNC_PROVIDER_GETTABLE_PARAMS, unsafeBitCast(gettableParams, to: GenericFunction.self)),
    DispatchEntry(OSSL_FUNC_PROVIDER_GET_PARAMS, unsafeBitCast(getParams, to: GenericFunction.self)),
    DispatchEntry(OSSL_FUNC_PROVIDER_QUERY_OPERATION, unsafeBitCast(queryOperation, to: GenericFunction.self)),
    DispatchEntry(OSSL_FUNC_PROVIDER_GET_REASON_STRINGS, unsafeBitCast(getReasonStrings, to: GenericFunction.self)),
])

/// Teardown runs in every process that exits (nginx's master, each worker, `nginx -t`):
/// it touches nothing shared with other processes. Connections close with the process.
private let teardown: @convention(c) (UnsafeMutableRawPointer?) -> Void = { _ in }

private let providerParams = paramTable([
    ("name", OSSL_PARAM_UTF8_PTR),
    ("version", OSSL_PARAM_UTF8_PTR),
    ("buildinfo", OSSL_PARAM_UTF8_PTR),
    ("status", OSSL_PARAM_INTEGER),
    // For cloudhsm_check: the configuration file in use, why, and what it overrode.
    ("cloudhsm-cluster-config", OSSL_PARAM_UTF8_STRING),
    ("cloudhsm-cluster-config-source", OSSL_PARAM_UTF8_STRING),
    ("cloudhsm-cluster-config-overridden", OSSL_PARAM_UTF8_STRING),
])

private let gettableParams: @convention(c) (UnsafeMutableRawPointer?) -> UnsafePointer<OSSL_PARAM>? = { _ in
    providerParams
}

private let getParams: @convention(c) (UnsafeMutableRawPointer?, UnsafeMutablePointer<OSSL_PARAM>?) -> Int32 = {
    _, params in
    let writer = ParamWriter(params: params)
    let ok =
        writer.set("name", staticString: providerName)
        && writer.set("version", staticString: providerVersion)
        && writer.set("buildinfo", staticString: providerBuildInfo)
        && writer.set("status", int: 1)
        && writer.set("cloudhsm-cluster-config", string: runtime.configuration.path)
        && writer.set("cloudhsm-cluster-config-source", string: runtime.configuration.source.rawValue)
        && writer.set("cloudhsm-cluster-config-overridden", string: runtime.configuration.overridden ?? "")
    return ok ? 1 : 0
}

private let queryOperation:
    @convention(c) (UnsafeMutableRawPointer?, Int32, UnsafeMutablePointer<Int32>?) -> UnsafePointer<OSSL_ALGORITHM>? = {
        _, operation, noCache in
        noCache?.pointee = 0
        return Algorithms.table(for: operation)
    }

private let getReasonStrings: @convention(c) (UnsafeMutableRawPointer?) -> UnsafePointer<OSSL_ITEM>? = { _ in
    reasonStrings
}
