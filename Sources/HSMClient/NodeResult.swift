// What one node answered (or why it could not be asked), and the tools' "Cluster Error
// Status" line for it.

import CloudHSMCore

public struct NodeResult: Sendable {
    public let node: NodeAddress
    /// `.success` only for a response with return code 0; a node's failure code and every
    /// client-side failure arrive as `.failure`.
    public let result: Result<HSMResponse, HSMError>

    public init(node: NodeAddress, result: Result<HSMResponse, HSMError>) {
        self.node = node
        self.result = result
    }

    public var nodeID: Int { node.id }

    public var code: HSMReturnCode {
        switch result {
        case .success(let response): return response.code
        case .failure(let error): return error.code
        }
    }

    public var isSuccess: Bool { code.isSuccess }

    public var error: HSMError? {
        if case .failure(let error) = result { return error }
        return nil
    }

    /// `Node id 0 and err state 0x00000000 : HSM Return: SUCCESS`; client-side failures
    /// add their detail (`... : HSM Error: HSM node unreachable (...) - connect to ...`), and
    /// so does a busy node, whose reason ("node busy: connection limit ...") says which
    /// limit it hit.
    public var statusLine: String {
        var line = "Node id \(node.id) and err state \(code.paddedHex) : \(code.statusText)"
        if let error, error.code.isClientSide || error.code == .throttled, !error.detail.isEmpty {
            line += " - \(error.detail)"
        }
        return line
    }
}

/// The outcome of an operation the client routed: its result and every node that took
/// part, in order (more than one once the client fails over).
public struct OperationOutcome: Sendable {
    public let result: Result<HSMResponse, HSMError>
    /// The node results behind `result`; the last gave it. Empty when no node could be
    /// chosen (for example a handle naming a node that is not configured).
    public let attempts: [NodeResult]

    public init(result: Result<HSMResponse, HSMError>, attempts: [NodeResult]) {
        self.result = result
        self.attempts = attempts
    }

    init(_ nodeResult: NodeResult) {
        self.init(result: nodeResult.result, attempts: [nodeResult])
    }

    public var code: HSMReturnCode {
        switch result {
        case .success(let response): return response.code
        case .failure(let error): return error.code
        }
    }

    /// The node that gave the final result.
    public var node: NodeAddress? { attempts.last?.node }

    /// The response body on success.
    public func get() throws -> ResponseBody { try result.get().body }
}

extension HSMReturnCode {
    /// Codes raised by the client (0xe0-0xef), never sent by a node.
    public var isClientSide: Bool { (0xe0...0xef).contains(rawValue) }

    /// `HSM Return: SUCCESS` or `HSM Error: Invalid key handle`: the description without
    /// its short code, as the "Cluster Error Status" lines print it.
    public var statusText: String { isSuccess ? "HSM Return: SUCCESS" : "HSM Error: \(meaning)" }
}

/// The status block the tools print after an operation:
///
///     (blank)
///     Cluster Error Status
///     Node id 0 and err state 0x00000000 : HSM Return: SUCCESS
public func clusterErrorStatus(_ results: [NodeResult]) -> String {
    (["", "Cluster Error Status"] + results.map(\.statusLine)).joined(separator: "\n")
}
