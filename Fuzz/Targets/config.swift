// Fuzz target `config`: the client's cluster configuration parser on any text (the file a
// careless operator writes, or the inline text a provider configuration carries). What
// parses must satisfy the documented ranges and parse again, unchanged, once written
// back out; what fails must name this source and a line that exists.

@testable import HSMClient

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzConfig(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    // load(path:) refuses a file that is not UTF-8 before parsing.
    guard let text = String(validating: fuzzInput(data, size), as: UTF8.self) else { return 0 }
    let config: ClusterConfiguration
    do {
        config = try ClusterConfiguration(text: text, baseDirectory: "/etc/cloudhsm", source: "fuzz.cfg")
    } catch let error as ConfigurationError {
        expect(error.source == "fuzz.cfg", "error names \(error.source)")
        expect(!error.reason.isEmpty, "an error without a reason")
        if let line = error.line {
            let lines = text.split(omittingEmptySubsequences: false, whereSeparator: { $0 == "\n" || $0 == "\r\n" })
            expect(line >= 1 && line <= lines.count, "error on line \(line) of \(lines.count)")
        }
        _ = error.description
        return 0
    } catch {
        unexpected(error)
    }
    expect(!config.clusterID.isEmpty && !config.trustAnchorPath.isEmpty, "empty required setting")
    expect(!config.nodes.isEmpty, "no nodes")
    expect(Set(config.nodes.map(\.id)).count == config.nodes.count, "repeated node id")
    for node in config.nodes {
        expect((0...15).contains(node.id) && node.port > 0 && !node.host.isEmpty, "bad node \(node)")
        expect(config.node(id: node.id) == node, "node(id:) misses \(node)")
    }
    expect((1...3_600_000).contains(config.connectTimeoutMilliseconds), "connect timeout out of range")
    expect((1...3_600_000).contains(config.operationTimeoutMilliseconds), "operation timeout out of range")
    expect((1...256).contains(config.maxConnectionsPerNode), "pool bound out of range")
    expect(config.clientKeyPath == nil || config.clientCertificatePath != nil, "key without certificate")
    expect(config.trustAnchorPath.hasPrefix("/"), "a relative path was not resolved")

    let rendered = render(config)
    do {
        let again = try ClusterConfiguration(text: rendered, baseDirectory: "/elsewhere", source: "fuzz.cfg")
        expect(again == config, "written back out, the configuration reads as \(again)")
    } catch {
        fail("written back out as\n\(rendered)\nthe configuration is refused: \(error)")
    }
    return 0
}

/// The configuration in the documented file format.
private func render(_ config: ClusterConfiguration) -> String {
    var lines = ["cluster_id = \(config.clusterID)", "trust_anchor = \(config.trustAnchorPath)"]
    lines += config.nodes.map { "node = \($0.id) \($0)" }
    lines.append("connect_timeout_ms = \(config.connectTimeoutMilliseconds)")
    lines.append("operation_timeout_ms = \(config.operationTimeoutMilliseconds)")
    lines.append("max_connections_per_node = \(config.maxConnectionsPerNode)")
    if let path = config.clientCertificatePath { lines.append("client_certificate = \(path)") }
    if let path = config.clientKeyPath { lines.append("client_key = \(path)") }
    return lines.joined(separator: "\n")
}
