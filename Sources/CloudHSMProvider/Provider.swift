// The provider's entry point and its provider-level functions: parameters, the
// algorithm query, reason strings and teardown. OSSL_provider_init only reads
// configuration; connections to the HSMs open on the first private-key operation in each
// process (DESIGN.md, hard rule 1: nginx forks after loading us).

import COpenSSL
import CloudHSMCore
import Glibc
import HSMClient

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

private let providerDispatch: UnsafePointer<OSSL_DISPATCH> = {
    var table = DispatchTable()
    table.add(ProviderSlot.teardown, providerTeardown)
    table.add(ProviderSlot.gettableParams, providerGettableParams)
    table.add(ProviderSlot.getParams, providerGetParams)
    table.add(ProviderSlot.queryOperation, providerQueryOperation)
    table.add(ProviderSlot.getReasonStrings, providerGetReasonStrings)
    return table.finished()
}()

/// Teardown runs in every process that exits (nginx's master, each worker, `nginx -t`):
/// it touches nothing shared with other processes. Connections close with the process.
private func providerTeardown(_ provider: UnsafeMutableRawPointer?) {}

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

private func providerGettableParams(_ provider: UnsafeMutableRawPointer?) -> UnsafePointer<OSSL_PARAM>? {
    providerParams
}

private func providerGetParams(_ provider: UnsafeMutableRawPointer?, _ params: UnsafeMutablePointer<OSSL_PARAM>?)
    -> Int32
{
    reportingStatus("answering provider parameters") {
        let writer = ParamWriter(params)
        try writer.set("name", staticString: providerName)
        try writer.set("version", staticString: providerVersion)
        try writer.set("buildinfo", staticString: providerBuildInfo)
        try writer.set("status", int: 1)
        try writer.set("cloudhsm-cluster-config", string: runtime.configuration.path)
        try writer.set("cloudhsm-cluster-config-source", string: runtime.configuration.source.rawValue)
        try writer.set("cloudhsm-cluster-config-overridden", string: runtime.configuration.overridden ?? "")
    }
}

private func providerQueryOperation(
    _ provider: UnsafeMutableRawPointer?, _ operation: Int32, _ noCache: UnsafeMutablePointer<Int32>?
) -> UnsafePointer<OSSL_ALGORITHM>? {
    noCache?.pointee = 0
    return Algorithms.table(for: operation)
}

private func providerGetReasonStrings(_ provider: UnsafeMutableRawPointer?) -> UnsafePointer<OSSL_ITEM>? {
    reasonStrings
}
