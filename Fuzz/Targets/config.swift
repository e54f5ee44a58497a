// Fuzz target `config`: the client's cluster configuration parser on any text (the file a
// careless operator writes, or the inline text a provider configuration carries). What
// parses must satisfy the documented ranges and parse again, unchanged, once written
// back out in canonical form; what fails must name this source and a line that exists.

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

    // Written back out: comments, blank lines and spacing dropped, each node in the form
    // its description prints. Settings pass through by name, so new ones are covered too.
    let rendered = canonical(text, config)
    do {
        let again = try ClusterConfiguration(text: rendered, baseDirectory: "/etc/cloudhsm", source: "fuzz.cfg")
        expect(again == config, "written back out as\n\(rendered)\nthe configuration reads as \(again)")
    } catch {
        fail("written back out as\n\(rendered)\nthe configuration is refused: \(error)")
    }
    return 0
}

/// `text` as `name = value` lines, with the parser's own splitting and trimming; node
/// lines name the parsed nodes, in order, by their descriptions.
private func canonical(_ text: String, _ config: ClusterConfiguration) -> String {
    var nodes = config.nodes.makeIterator()
    var lines: [String] = []
    for rawLine in text.split(omittingEmptySubsequences: false, whereSeparator: { $0 == "\n" || $0 == "\r\n" }) {
        let line = rawLine.trimmingWhitespace()
        guard !line.isEmpty, !line.hasPrefix("#"), let equals = line.firstIndex(of: "=") else { continue }
        let name = line[..<equals].trimmingWhitespace()
        if name == "node", let node = nodes.next() {
            lines.append("node = \(node.id) \(node)")
        } else {
            lines.append("\(name) = \(line[line.index(after: equals)...].trimmingWhitespace())")
        }
    }
    expect(nodes.next() == nil, "more nodes than node lines")
    return lines.joined(separator: "\n")
}
