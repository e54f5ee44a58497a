// The metrics listener of `hsmd run --metrics-listen`: plain HTTP, GET (or HEAD)
// /metrics only, answered from NodeMetrics in Prometheus' text format.
//
// It listens on a port, so it expects hostile clients: a request head must arrive whole
// within two seconds and fit in 8 KiB, an answer must be taken within five, each
// connection is closed after one answer, and at most four are served at once (a fifth
// hears 503 at once). Blocking sockets on a few threads of its own: the node's other
// threads never wait for it, and it needs no event loop (docs/architecture.md,
// "Metrics", says why not NIO).

import Foundation
import OpenSSLKit
import Prometheus
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

public final class MetricsServer: @unchecked Sendable {
    // Everything is set once in init; `active` is atomic.
    static let maxRequestBytes = 8192
    static let requestTimeoutMilliseconds = 2000
    static let writeTimeoutMilliseconds = 5000
    static let maxConnections = 4

    /// The bound port (the one the kernel picked when asked for port 0).
    public var port: UInt16 { listener.port }
    private let listener: TCPListener
    private let metrics: NodeMetrics
    private let active = Atomic<Int>(0)

    public init(host: String, port: UInt16, metrics: NodeMetrics) throws {
        self.listener = try TCPListener(host: host, port: port, backlog: 64)
        self.metrics = metrics
        for status in HTTPStatus.allCases { _ = requestCounter(status) }
    }

    /// Accepts connections on a thread of its own until `stop()`.
    public func start() {
        let thread = Thread { [self] in
            while true {
                let socket: TCPSocket
                do {
                    socket = try listener.accept()
                } catch {
                    return  // closed for shutdown
                }
                guard active.add(1, ordering: .relaxed).newValue <= Self.maxConnections else {
                    active.subtract(1, ordering: .relaxed)
                    // One try, without waiting: a client that does not read loses the answer.
                    let connection = MetricsConnection(socket)
                    connection.sendOnce(HTTPResponse(status: .busy).bytes(includingBody: true))
                    requestCounter(.busy).increment()
                    connection.close(lingeringMilliseconds: 0)
                    continue
                }
                let worker = Thread { [self] in
                    serve(MetricsConnection(socket))
                    active.subtract(1, ordering: .relaxed)
                }
                worker.stackSize = 256 << 10
                worker.start()
            }
        }
        thread.name = "hsm-metrics"
        thread.start()
    }

    public func stop() {
        listener.close()
    }

    private func serve(_ connection: MetricsConnection) {
        defer { connection.close() }
        let deadline = Deadline.after(milliseconds: Self.requestTimeoutMilliseconds)
        var received: [UInt8] = []
        var verdict: MetricsRequest.Verdict? = nil
        while verdict == nil {
            guard let chunk = connection.read(atMost: Self.maxRequestBytes - received.count, until: deadline) else {
                verdict = .failed(.timedOut)
                break
            }
            if chunk.isEmpty { return }  // the client went away
            received += chunk
            verdict = MetricsRequest.examine(received, limit: Self.maxRequestBytes)
        }
        let response: HTTPResponse
        var includingBody = true
        switch verdict! {
        case .metrics(let isHead):
            response = HTTPResponse(status: .ok, body: metrics.exposition())
            includingBody = !isHead
        case .failed(let status):
            response = HTTPResponse(status: status)
        }
        requestCounter(response.status).increment()
        connection.write(
            response.bytes(includingBody: includingBody),
            until: .after(milliseconds: Self.writeTimeoutMilliseconds))
    }

    private func requestCounter(_ status: HTTPStatus) -> Counter {
        metrics.registry.makeCounter(
            descriptor: MetricNameDescriptor(
                metricName: "hsmd_metrics_http_requests_total", unitName: "",
                helpText: "Requests to this metrics listener, by HTTP status answered"),
            labels: [("code", String(status.rawValue))])
    }
}

/// What the listener answers besides 200.
enum HTTPStatus: Int, CaseIterable {
    case ok = 200
    case badRequest = 400
    case notFound = 404
    case methodNotAllowed = 405
    case timedOut = 408
    case headTooLarge = 431
    case busy = 503
    case versionNotSupported = 505

    var reason: String {
        switch self {
        case .ok: return "OK"
        case .badRequest: return "Bad Request"
        case .notFound: return "Not Found"
        case .methodNotAllowed: return "Method Not Allowed"
        case .timedOut: return "Request Timeout"
        case .headTooLarge: return "Request Header Fields Too Large"
        case .busy: return "Service Unavailable"
        case .versionNotSupported: return "HTTP Version Not Supported"
        }
    }

    /// The body of an error answer: what was wrong, in words.
    var explanation: String {
        switch self {
        case .ok: return ""
        case .badRequest: return "malformed HTTP request line"
        case .notFound: return "not found: the metrics are at /metrics"
        case .methodNotAllowed: return "only GET and HEAD are served"
        case .timedOut: return "the request did not arrive within \(MetricsServer.requestTimeoutMilliseconds) ms"
        case .headTooLarge: return "the request head is over \(MetricsServer.maxRequestBytes) bytes"
        case .busy: return "\(MetricsServer.maxConnections) metrics requests are being answered; try again"
        case .versionNotSupported: return "only HTTP/1.0 and HTTP/1.1 are served"
        }
    }
}

struct HTTPResponse {
    var status: HTTPStatus
    var body: [UInt8]

    init(status: HTTPStatus, body: [UInt8]? = nil) {
        self.status = status
        self.body = body ?? Array((status.explanation + "\n").utf8)
    }

    func bytes(includingBody: Bool) -> [UInt8] {
        let type = status == .ok ? "text/plain; version=0.0.4; charset=utf-8" : "text/plain; charset=utf-8"
        var head = "HTTP/1.1 \(status.rawValue) \(status.reason)\r\nContent-Type: \(type)\r\n"
        head += "Content-Length: \(body.count)\r\nConnection: close\r\n"
        if status == .methodNotAllowed { head += "Allow: GET, HEAD\r\n" }
        head += "\r\n"
        return Array(head.utf8) + (includingBody ? body : [])
    }
}

/// Reads a request head: pure, so every rule is unit-tested.
enum MetricsRequest {
    enum Verdict: Equatable {
        /// Serve the metrics (without a body for HEAD).
        case metrics(isHead: Bool)
        case failed(HTTPStatus)
    }

    /// The answer to what arrived so far, or nil while the head is incomplete and under
    /// `limit` bytes. Only the request line matters; header fields are skipped.
    static func examine(_ bytes: [UInt8], limit: Int) -> Verdict? {
        guard let end = headEnd(bytes) else {
            if let line = firstLine(bytes), case .failed(let status) = verdict(line) {
                return .failed(status)  // no need to wait for the rest
            }
            return bytes.count >= limit ? .failed(.headTooLarge) : nil
        }
        guard let line = firstLine(Array(bytes[..<end])) else { return .failed(.badRequest) }
        return verdict(line)
    }

    private static func verdict(_ line: [UInt8]) -> Verdict {
        let parts = line.split(separator: UInt8(ascii: " "), omittingEmptySubsequences: false)
        guard parts.count == 3, parts.allSatisfy({ !$0.isEmpty }),
            line.allSatisfy({ $0 > 0x20 && $0 < 0x7f || $0 == UInt8(ascii: " ") })
        else { return .failed(.badRequest) }
        let method = String(decoding: parts[0], as: UTF8.self)
        let target = String(decoding: parts[1], as: UTF8.self)
        let version = String(decoding: parts[2], as: UTF8.self)
        guard version.hasPrefix("HTTP/") else { return .failed(.badRequest) }
        guard version == "HTTP/1.1" || version == "HTTP/1.0" else { return .failed(.versionNotSupported) }
        guard method == "GET" || method == "HEAD" else { return .failed(.methodNotAllowed) }
        let path = target.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false).first ?? ""
        guard path == "/metrics" else { return .failed(.notFound) }
        return .metrics(isHead: method == "HEAD")
    }

    /// The request line without its line end, once it ended.
    private static func firstLine(_ bytes: [UInt8]) -> [UInt8]? {
        guard let newline = bytes.firstIndex(of: UInt8(ascii: "\n")) else { return nil }
        var line = bytes[..<newline]
        if line.last == UInt8(ascii: "\r") { line = line.dropLast() }
        return Array(line)
    }

    /// Where the head ends (the empty line), if it did.
    private static func headEnd(_ bytes: [UInt8]) -> Int? {
        var index = 0
        while let newline = bytes[index...].firstIndex(of: UInt8(ascii: "\n")) {
            let next = newline + 1
            if next < bytes.count, bytes[next] == UInt8(ascii: "\n") { return next + 1 }
            if next + 1 < bytes.count, bytes[next] == UInt8(ascii: "\r"), bytes[next + 1] == UInt8(ascii: "\n") {
                return next + 2
            }
            index = next
            if index >= bytes.count { break }
        }
        return nil
    }
}

/// One accepted metrics connection: non-blocking reads and writes against deadlines.
private final class MetricsConnection {
    private let socket: TCPSocket

    init(_ socket: TCPSocket) {
        self.socket = socket
        let flags = fcntl(socket.descriptor, F_GETFL)
        if flags >= 0 { _ = fcntl(socket.descriptor, F_SETFL, flags | O_NONBLOCK) }
    }

    /// Up to `count` bytes; empty at end of stream or on an error; nil when `deadline`
    /// passed first.
    func read(atMost count: Int, until deadline: Deadline) -> [UInt8]? {
        var buffer = [UInt8](repeating: 0, count: max(1, count))
        while true {
            let got = buffer.withUnsafeMutableBytes { recv(socket.descriptor, $0.baseAddress!, $0.count, 0) }
            if got > 0 { return Array(buffer[..<got]) }
            if got == 0 { return [] }
            guard errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR else { return [] }
            guard wait(for: Int16(POLLIN), until: deadline) else { return nil }
        }
    }

    /// Writes `bytes` unless the client stops reading past `deadline`.
    func write(_ bytes: [UInt8], until deadline: Deadline) {
        var offset = 0
        while offset < bytes.count {
            let sent = bytes[offset...].withUnsafeBytes {
                send(socket.descriptor, $0.baseAddress!, $0.count, Int32(MSG_NOSIGNAL))
            }
            if sent > 0 {
                offset += sent
                continue
            }
            guard sent < 0, errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR else { return }
            guard wait(for: Int16(POLLOUT), until: deadline) else { return }
        }
    }

    /// One non-blocking send: what fits in the socket buffer now.
    func sendOnce(_ bytes: [UInt8]) {
        _ = bytes.withUnsafeBytes { send(socket.descriptor, $0.baseAddress!, $0.count, Int32(MSG_NOSIGNAL)) }
    }

    /// Ends the answer with a FIN, drops what the client still sends for a moment (so the
    /// close does not become a reset that destroys the answer), then closes.
    func close(lingeringMilliseconds: Int = 200) {
        shutdown(socket.descriptor, Int32(SHUT_WR))
        let deadline = Deadline.after(milliseconds: lingeringMilliseconds)
        var dropped = 0
        while lingeringMilliseconds > 0, dropped < 64 << 10, let chunk = read(atMost: 4096, until: deadline),
            !chunk.isEmpty
        {
            dropped += chunk.count
        }
        socket.close()
    }

    private func wait(for events: Int16, until deadline: Deadline) -> Bool {
        var descriptor = pollfd(fd: socket.descriptor, events: events, revents: 0)
        while true {
            let timeout = Int32(clamping: deadline.remainingMilliseconds ?? -1)
            let ready = poll(&descriptor, 1, timeout)
            if ready > 0 { return true }
            if ready == 0 {
                if deadline.hasPassed { return false }
                continue
            }
            if errno != EINTR { return false }
        }
    }
}
