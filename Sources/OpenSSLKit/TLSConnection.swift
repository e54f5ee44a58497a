// A TLS connection over a TCP socket: the node's accepted connections and the client's
// connections to nodes. No threads, no event loop: the caller's thread does the I/O,
// which is what a forking host process like nginx needs. The socket is non-blocking and
// every step waits with poll() until an absolute deadline, so a handshake or a frame
// has a bound that a peer sending one byte at a time cannot stretch.

import COpenSSL

#if canImport(Glibc)
    import Glibc
#endif

public enum TLSError: Error, CustomStringConvertible, Sendable {
    case connectionRefused(String)
    case certificateNotTrusted(String)
    case handshakeFailed(String)
    case timedOut
    case closed
    case io(String)

    public var description: String {
        switch self {
        case .connectionRefused(let what): return what
        case .certificateNotTrusted(let why): return "the peer's certificate is not trusted: \(why)"
        case .handshakeFailed(let why): return "TLS handshake failed: \(why)"
        case .timedOut: return "timed out"
        case .closed: return "connection closed by peer"
        case .io(let why): return why
        }
    }
}

public final class TLSConnection {
    private let ssl: OpaquePointer
    private let socket: TCPSocket
    private var isClosed = false
    /// The bound for each call that takes no deadline of its own; 0 for none.
    private var timeoutMilliseconds = 0

    private init(ssl: OpaquePointer, socket: TCPSocket) {
        self.ssl = ssl
        self.socket = socket
    }

    deinit {
        close()
        SSL_free(ssl)
    }

    /// Connects and completes a handshake, verifying that the peer's certificate chains to
    /// the context's trust anchor and names `host` (an IP address or a DNS name).
    public static func connect(host: String, port: UInt16, context: TLSContext, timeoutMilliseconds: Int) throws
        -> TLSConnection
    {
        let socket: TCPSocket
        do {
            socket = try TCPSocket.connect(host: host, port: port, timeoutMilliseconds: timeoutMilliseconds)
        } catch SocketError.connectionRefused(let what) {
            throw TLSError.connectionRefused(what)
        } catch SocketError.timedOut(let what) {
            throw TLSError.io("\(what): timed out")
        } catch {
            throw TLSError.io("\(error)")
        }
        let connection = try make(socket: socket, context: context)
        try connection.expectPeer(named: host)
        try connection.handshake(isServer: false, deadline: .after(milliseconds: timeoutMilliseconds))
        return connection
    }

    /// Completes the server side of a handshake on an accepted socket within
    /// `timeoutMilliseconds` in all.
    public static func accept(_ socket: TCPSocket, context: TLSContext, timeoutMilliseconds: Int) throws
        -> TLSConnection
    {
        try accept(socket, context: context, deadline: .after(milliseconds: timeoutMilliseconds))
    }

    /// Completes the server side of a handshake on an accepted socket by `deadline`;
    /// throws `TLSError.timedOut` when it passes first.
    public static func accept(_ socket: TCPSocket, context: TLSContext, deadline: Deadline) throws -> TLSConnection {
        let connection = try make(socket: socket, context: context)
        // A node holds many idle connections: their record buffers go back to the heap
        // between records instead of staying allocated (about 34 KiB each).
        _ = SSL_ctrl(connection.ssl, SSL_CTRL_MODE, Int(SSL_MODE_RELEASE_BUFFERS), nil)
        try connection.handshake(isServer: true, deadline: deadline)
        return connection
    }

    private static func make(socket: TCPSocket, context: TLSContext) throws -> TLSConnection {
        guard let ssl = SSL_new(context.pointer) else { throw TLSError.io("\(OpenSSLError.capture("SSL_new"))") }
        guard let bio = SocketBIO.make(descriptor: socket.descriptor) else {
            SSL_free(ssl)
            throw TLSError.io("\(OpenSSLError.capture("BIO_new"))")
        }
        // One reference serves as both the read and the write BIO, as SSL_set_fd does.
        SSL_set_bio(ssl, bio, bio)
        socket.setNonBlocking()
        // A write that must wait is retried from a new Swift buffer address.
        _ = SSL_ctrl(ssl, SSL_CTRL_MODE, Int(SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER), nil)
        return TLSConnection(ssl: ssl, socket: socket)
    }

    private func expectPeer(named host: String) throws {
        var probe = in6_addr()
        let isAddress = inet_pton(AF_INET, host, &probe) == 1 || inet_pton(AF_INET6, host, &probe) == 1
        let ok: Int32
        if isAddress {
            ok = X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), host)
        } else {
            _ = cshim_SSL_set_tlsext_host_name(ssl, host)
            ok = SSL_set1_host(ssl, host)
        }
        guard ok == 1 else { throw TLSError.handshakeFailed("cannot check the peer name \(host)") }
    }

    private func handshake(isServer: Bool, deadline: Deadline) throws {
        do {
            _ = try perform(until: deadline) { isServer ? SSL_accept(ssl) : SSL_connect(ssl) }
        } catch let error as TLSError {
            let verify = SSL_get_verify_result(ssl)
            if verify != X509_V_OK {
                throw TLSError.certificateNotTrusted(String(cString: X509_verify_cert_error_string(verify)))
            }
            // A close is reported as one (not as a failed handshake) so that a client can
            // tell a node that refused the connection from a certificate problem.
            if case .io(let why) = error { throw TLSError.handshakeFailed(why) }
            throw error
        }
    }

    /// Runs one OpenSSL I/O step until it succeeds, waiting with poll() for the socket
    /// whenever OpenSSL wants to read or write, but never past `deadline`.
    ///
    /// - Returns: the step's positive result.
    /// - Throws: `TLSError.timedOut` when the deadline passes; `.closed` at end of stream.
    private func perform(until deadline: Deadline, _ step: () -> Int32) throws -> Int32 {
        while true {
            ERR_set_mark()
            defer { ERR_pop_to_mark() }
            // No SIGPIPE to guard against: the socket BIO sends with MSG_NOSIGNAL.
            let result = step()
            let number = errno
            if result > 0 { return result }
            let code = SSL_get_error(ssl, result)
            let forWriting: Bool
            switch code {
            case SSL_ERROR_WANT_READ: forWriting = false
            case SSL_ERROR_WANT_WRITE: forWriting = true
            case SSL_ERROR_ZERO_RETURN: throw TLSError.closed
            case SSL_ERROR_SYSCALL:
                if number == EAGAIN || number == EWOULDBLOCK || number == EINTR {
                    forWriting = false
                } else if number == 0 || number == ECONNRESET || number == EPIPE {
                    throw TLSError.closed
                } else {
                    throw TLSError.io(String(cString: strerror(number)))
                }
            default:
                throw TLSError.io(lastErrorText() ?? "TLS error \(code)")
            }
            do {
                guard try socket.wait(forWriting: forWriting, until: deadline) else { throw TLSError.timedOut }
            } catch let error as SocketError {
                throw TLSError.io("\(error)")
            }
        }
    }

    /// The deadline of a call that was given none: `setTimeout` from now.
    var callDeadline: Deadline {
        timeoutMilliseconds > 0 ? .after(milliseconds: timeoutMilliseconds) : .never
    }

    /// Writes all of `bytes` within the `setTimeout` bound.
    public func write(_ bytes: [UInt8]) throws {
        try write(bytes, deadline: callDeadline)
    }

    /// Writes all of `bytes` by `deadline`.
    public func write(_ bytes: [UInt8], deadline: Deadline) throws {
        guard !isClosed else { throw TLSError.closed }
        var offset = 0
        while offset < bytes.count {
            let written = try perform(until: deadline) {
                bytes.withUnsafeBytes { raw in
                    SSL_write(ssl, raw.baseAddress! + offset, Int32(clamping: bytes.count - offset))
                }
            }
            offset += Int(written)
        }
    }

    /// Reads exactly `count` bytes within the `setTimeout` bound. A close before the
    /// first byte throws `.closed`.
    public func read(exactly count: Int) throws -> [UInt8] {
        var buffer: [UInt8] = []
        try read(count, appendingTo: &buffer, deadline: callDeadline)
        return buffer
    }

    /// Reads `count` bytes onto the end of `buffer` by `deadline`. The buffer grows with
    /// the bytes that arrive, a TLS record (16 KiB) at a time, never by `count` at once:
    /// a length a peer claims costs nothing until the peer sends it.
    ///
    /// - Throws: `.closed` for an end of stream before the first byte, `.timedOut` when
    ///   the deadline passes (`buffer` then holds what did arrive).
    func read(_ count: Int, appendingTo buffer: inout [UInt8], deadline: Deadline) throws {
        guard !isClosed else { throw TLSError.closed }
        let chunk = 16 * 1024
        var remaining = count
        // Each read lands in scratch space and is appended as one contiguous copy, instead
        // of growing the array with `repeatElement` first and trimming it after: that went
        // through the generic `append(contentsOf:)` an element at a time where the caller
        // is not specialized (the debug builds the tests run).
        try withUnsafeTemporaryAllocation(of: UInt8.self, capacity: min(count, chunk)) { scratch in
            while remaining > 0 {
                let wanted = min(remaining, scratch.count)
                let got: Int32
                do {
                    got = try perform(until: deadline) { SSL_read(ssl, scratch.baseAddress!, Int32(wanted)) }
                } catch {
                    if case TLSError.closed = error, remaining < count {
                        throw TLSError.io("connection closed in the middle of a message")
                    }
                    throw error
                }
                buffer.append(contentsOf: UnsafeBufferPointer(start: scratch.baseAddress, count: Int(got)))
                remaining -= Int(got)
            }
        }
    }

    /// Waits until a byte can be read (or the peer closed) by `deadline`.
    ///
    /// - Returns: false when the deadline passed first.
    func waitForInput(until deadline: Deadline) throws -> Bool {
        guard !isClosed else { throw TLSError.closed }
        if SSL_has_pending(ssl) == 1 { return true }
        do {
            return try socket.wait(forWriting: false, until: deadline)
        } catch {
            throw TLSError.io("\(error)")
        }
    }

    /// Bounds each later call that takes no deadline of its own (`read`, `write`,
    /// `readFrame`, `writeFrame`) to `milliseconds` from its start; 0 for no bound.
    public func setTimeout(milliseconds: Int) { timeoutMilliseconds = max(0, milliseconds) }

    /// Sends close_notify if the connection is healthy (without waiting for room to
    /// send it), then closes the socket.
    public func close() {
        guard !isClosed else { return }
        isClosed = true
        ERR_set_mark()
        _ = SSL_shutdown(ssl)
        ERR_pop_to_mark()
        socket.close()
    }

    /// Sends close_notify, ends the sending side and drops what the peer still sends for
    /// up to `lingeringMilliseconds` before closing: for a close right after a last frame
    /// the peer must be able to read (closing with unread input would send a reset).
    public func closeAfterLastFrame(lingeringMilliseconds: Int) {
        guard !isClosed else { return }
        isClosed = true
        ERR_set_mark()
        _ = SSL_shutdown(ssl)
        ERR_pop_to_mark()
        socket.finishSending(lingeringMilliseconds: lingeringMilliseconds)
        socket.close()
    }

    /// Closes the socket without a TLS goodbye; for a child process that must not write
    /// on its parent's connection (the bytes would corrupt the parent's stream).
    public func abandon() {
        guard !isClosed else { return }
        isClosed = true
        SSL_set_quiet_shutdown(ssl, 1)
        socket.close()
    }

    /// The subject of the peer's certificate, one line, or nil.
    public var peerSubject: String? {
        guard let certificate = SSL_get1_peer_certificate(ssl) else { return nil }
        defer { X509_free(certificate) }
        guard let line = X509_NAME_oneline(X509_get_subject_name(certificate), nil, 0) else { return nil }
        defer { CRYPTO_free(line, #file, #line) }
        return String(cString: line)
    }

    private func lastErrorText() -> String? {
        let code = ERR_peek_last_error()
        guard code != 0 else { return nil }
        var buffer = [CChar](repeating: 0, count: 256)
        ERR_error_string_n(code, &buffer, buffer.count)
        return String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}
