// swift-tools-version:6.0
// The CloudHSM SSL/TLS offload package: HSM nodes, their tools, the cluster client and
// the OpenSSL provider. TLS, crypto and storage come from the system's OpenSSL 3 and
// SQLite through the two C shim targets. The one package dependency, swift-prometheus
// (with swift-metrics and swift-atomics under it), is for the nodes' metrics: only
// HSMNode uses it; the modules loaded into host processes never do.
import PackageDescription

// Modules loaded into host processes (nginx forks after loading the provider) must not
// use Swift concurrency; without its implicit import they cannot, and the provider does
// not link the concurrency runtime at all.
let hostLoaded: [SwiftSetting] = [.unsafeFlags(["-Xfrontend", "-disable-implicit-concurrency-module-import"])]

let package = Package(
    name: "cloudhsm-offload",
    products: [
        .executable(name: "hsmd", targets: ["hsmd"]),
        .executable(name: "key_mgmt_util", targets: ["key_mgmt_util"]),
        .executable(name: "cloudhsm_mgmt_util", targets: ["cloudhsm_mgmt_util"]),
        // The OpenSSL provider, installed as cloudhsm.so.
        .library(name: "cloudhsm", type: .dynamic, targets: ["CloudHSMProvider"]),
        .executable(name: "cloudhsm_check", targets: ["cloudhsm_check"]),
        .executable(name: "pkpspeed", targets: ["pkpspeed"]),
    ],
    dependencies: [
        .package(url: "https://github.com/swift-server/swift-prometheus", exact: "2.4.1")
    ],
    targets: [
        .systemLibrary(name: "COpenSSL", pkgConfig: "openssl"),
        .systemLibrary(name: "CSQLite", pkgConfig: "sqlite3"),
        // Shared vocabulary: return codes, key attributes, wire protocol, fake PEM codec.
        .target(name: "CloudHSMCore", swiftSettings: hostLoaded),
        // Safe Swift over libcrypto/libssl: every OpenSSL pointer lives here.
        .target(name: "OpenSSLKit", dependencies: ["COpenSSL", "CloudHSMCore"], swiftSettings: hostLoaded),
        // One emulated HSM: store, users, crypto, request handling, server.
        .target(
            name: "HSMNode",
            dependencies: [
                "CloudHSMCore", "OpenSSLKit", "CSQLite", .product(name: "Prometheus", package: "swift-prometheus"),
            ]),
        .executableTarget(name: "hsmd", dependencies: ["HSMNode"]),
        // The cluster client: synchronous, fork-aware, no Dispatch or Swift concurrency.
        .target(name: "HSMClient", dependencies: ["CloudHSMCore", "OpenSSLKit"], swiftSettings: hostLoaded),
        .executableTarget(name: "key_mgmt_util", dependencies: ["HSMClient"]),
        .executableTarget(name: "cloudhsm_mgmt_util", dependencies: ["HSMClient"]),
        // The OpenSSL 3 provider: keymgmt, signature, asym cipher, decoder, encoder.
        .target(
            name: "CloudHSMProvider", dependencies: ["HSMClient", "OpenSSLKit", "CloudHSMCore", "COpenSSL"],
            swiftSettings: hostLoaded),
        // Checks that applications can load the provider and sign with a fake PEM; --stats
        // shows the client pool's view of each node.
        .executableTarget(
            name: "cloudhsm_check", dependencies: ["COpenSSL", "HSMClient", "OpenSSLKit", "CloudHSMCore"]),
        // pkpspeed: N threads sign or decrypt through one shared client; ops/s, latency, node shares.
        .executableTarget(name: "pkpspeed", dependencies: ["HSMClient", "OpenSSLKit", "CloudHSMCore"]),
        .testTarget(name: "CloudHSMCoreTests", dependencies: ["CloudHSMCore"]),
        .testTarget(name: "OpenSSLKitTests", dependencies: ["OpenSSLKit"]),
        .testTarget(name: "HSMNodeTests", dependencies: ["HSMNode"]),
        .testTarget(name: "HSMClientTests", dependencies: ["HSMClient"]),
        .testTarget(name: "CloudHSMProviderTests", dependencies: ["CloudHSMProvider", "OpenSSLKit", "COpenSSL"]),
    ],
    swiftLanguageModes: [.v5]
)
