// A blocking TLS connection over a TCP socket: the node's accepted connections and the
// client's connections to nodes. No threads, no event loop: the caller's thread does the
// I/O, which is what a forking host process like nginx needs.

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
        socket.setTimeout(milliseconds: timeoutMilliseconds)
        let connection = try make(socket: socket, context: context)
        try connection.expectPeer(named: host)
        try connection.handshake(isServer: false)
        return connection
    }

    /// Completes the server side of a handshake on an accepted socket.
    public static func accept(_ socket: TCPSocket, context: TLSContext, timeoutMilliseconds: Int) throws
        -> TLSConnection
    {
        socket.setTimeout(milliseconds: timeoutMilliseconds)
        let connection = try make(socket: socket, context: context)
        try connection.handshake(isServer: true)
        return connection
    }

    private static func make(socket: TCPSocket, context: TLSContext) throws -> TLSConnection {
        guard let ssl = SSL_new(context.pointer) else { throw TLSError.io("\(OpenSSLError.capture("SSL_new"))") }
        guard SSL_set_fd(ssl, socket.descriptor) == 1 else {
            SSL_free(ssl)
            throw TLSError.io("\(OpenSSLError.capture("SSL_set_fd"))")
        }
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

    private func handshake(isServer: Bool) throws {
        ERR_set_mark()
        defer { ERR_pop_to_mark() }
        let result = withSIGPIPEBlocked { isServer ? SSL_accept(ssl) : SSL_connect(ssl) }
        guard result != 1 else { return }
        let verify = SSL_get_verify_result(ssl)
        if verify != X509_V_OK {
            throw TLSError.certificateNotTrusted(String(cString: X509_verify_cert_error_string(verify)))
        }
        if let error = ioError(result), case .timedOut = error { throw error }
        throw TLSError.handshakeFailed(lastErrorText() ?? "the peer closed the connection")
    }

    /// Writes all of `bytes`.
    public func write(_ bytes: [UInt8]) throws {
        guard !isClosed else { throw TLSError.closed }
        var offset = 0
        while offset < bytes.count {
            ERR_set_mark()
            defer { ERR_pop_to_mark() }
            let written = withSIGPIPEBlocked {
                bytes.withUnsafeBytes { raw in
                    SSL_write(ssl, raw.baseAddress! + offset, Int32(clamping: bytes.count - offset))
                }
            }
            if written > 0 {
                offset += Int(written)
            } else {
                throw ioError(written) ?? TLSError.io("write failed")
            }
        }
    }

    /// Reads exactly `count` bytes. A close before the first byte throws `.closed`.
    public func read(exactly count: Int) throws -> [UInt8] {
        guard !isClosed else { throw TLSError.closed }
        var buffer = [UInt8](repeating: 0, count: count)
        var offset = 0
        while offset < count {
            ERR_set_mark()
            defer { ERR_pop_to_mark() }
            // SSL_read writes too (an alert, for one), so it needs the same guard as writes.
            let got = withSIGPIPEBlocked {
                buffer.withUnsafeMutableBytes { raw in
                    SSL_read(ssl, raw.baseAddress! + offset, Int32(clamping: count - offset))
                }
            }
            if got > 0 {
                offset += Int(got)
            } else {
                let error = ioError(got) ?? TLSError.io("read failed")
                if case .closed = error, offset > 0 {
                    throw TLSError.io("connection closed in the middle of a message")
                }
                throw error
            }
        }
        return buffer
    }

    /// Sets the read and write timeout; 0 waits forever.
    public func setTimeout(milliseconds: Int) { socket.setTimeout(milliseconds: milliseconds) }

    /// Sends close_notify if the connection is healthy, then closes the socket.
    public func close() {
        guard !isClosed else { return }
        isClosed = true
        ERR_set_mark()
        _ = withSIGPIPEBlocked { SSL_shutdown(ssl) }
        ERR_pop_to_mark()
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

    private func ioError(_ result: Int32) -> TLSError? {
        let code = SSL_get_error(ssl, result)
        switch code {
        case SSL_ERROR_ZERO_RETURN:
            return .closed
        case SSL_ERROR_WANT_READ, SSL_ERROR_WANT_WRITE:
            return .timedOut
        case SSL_ERROR_SYSCALL:
            let number = errno
            if number == EAGAIN || number == EWOULDBLOCK { return .timedOut }
            if number == 0 || number == ECONNRESET || number == EPIPE { return .closed }
            return .io(String(cString: strerror(number)))
        default:
            return .io(lastErrorText() ?? "TLS error \(code)")
        }
    }

    private func lastErrorText() -> String? {
        let code = ERR_peek_last_error()
        guard code != 0 else { return nil }
        var buffer = [CChar](repeating: 0, count: 256)
        ERR_error_string_n(code, &buffer, buffer.count)
        return String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}

/// Runs `body` with SIGPIPE blocked on this thread and swallows a SIGPIPE it raised, so
/// writing to a closed peer fails with EPIPE instead of killing the host process.
func withSIGPIPEBlocked<T>(_ body: () -> T) -> T {
    var block = sigset_t()
    var previous = sigset_t()
    sigemptyset(&block)
    sigaddset(&block, SIGPIPE)
    var pendingBefore = sigset_t()
    sigpending(&pendingBefore)
    let wasPending = sigismember(&pendingBefore, SIGPIPE) == 1
    pthread_sigmask(SIG_BLOCK, &block, &previous)
    let result = body()
    var pendingAfter = sigset_t()
    sigpending(&pendingAfter)
    if !wasPending, sigismember(&pendingAfter, SIGPIPE) == 1 {
        var zero = timespec()
        _ = sigtimedwait(&block, nil, &zero)
    }
    pthread_sigmask(SIG_SETMASK, &previous, nil)
    return result
}
