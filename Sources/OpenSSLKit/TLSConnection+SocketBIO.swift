// The BIO libssl reads and writes a connection's socket through: OpenSSL's socket BIO,
// except that it sends with MSG_NOSIGNAL. Writing to a peer that has gone raises SIGPIPE,
// which kills a host process (nginx, an openssl command) that did not ignore it; with
// OpenSSL's own BIO every I/O step had to block the signal and look for a pending one
// around the call, four system calls per step and twelve per signature. Here the send
// itself never raises it, and fails with EPIPE instead.

import COpenSSL

#if canImport(Glibc)
    import Glibc
#endif

enum SocketBIO {
    /// Made once; BIO methods live as long as the process (cloudhsm.so is never
    /// unloaded: it is linked with -z nodelete).
    private static let method: OpaquePointer? = {
        let type = BIO_get_new_index() | BIO_TYPE_SOURCE_SINK | BIO_TYPE_DESCRIPTOR
        guard let method = BIO_meth_new(type, "cloudhsm socket") else { return nil }
        _ = BIO_meth_set_write(method, write)
        _ = BIO_meth_set_read(method, read)
        _ = BIO_meth_set_ctrl(method, control)
        _ = BIO_meth_set_create(method, { _ in 1 })
        _ = BIO_meth_set_destroy(method, { _ in 1 })
        return method
    }()

    /// A BIO over `descriptor`, which stays owned by its `TCPSocket` (freeing the BIO
    /// does not close it); nil when OpenSSL cannot allocate one.
    static func make(descriptor: Int32) -> OpaquePointer? {
        guard let method, let bio = BIO_new(method) else { return nil }
        // The descriptor rides in the data pointer, one up so that descriptor 0 is not nil.
        BIO_set_data(bio, UnsafeMutableRawPointer(bitPattern: Int(descriptor) + 1))
        BIO_set_init(bio, 1)
        return bio
    }

    private static func descriptor(_ bio: OpaquePointer?) -> Int32 {
        Int32(truncatingIfNeeded: Int(bitPattern: BIO_get_data(bio)) - 1)
    }

    /// BIO_FLAGS_RWS | BIO_FLAGS_SHOULD_RETRY (a macro Swift does not import).
    private static let retryFlags = BIO_FLAGS_READ | BIO_FLAGS_WRITE | BIO_FLAGS_IO_SPECIAL | BIO_FLAGS_SHOULD_RETRY

    /// Whether a failed send or recv may succeed later (as OpenSSL's BIO_sock_should_retry).
    private static func shouldRetry(_ code: Int32) -> Bool {
        code == EAGAIN || code == EWOULDBLOCK || code == EINTR || code == EINPROGRESS || code == EALREADY
            || code == ENOTCONN || code == EPROTO
    }

    private static let write: @convention(c) (OpaquePointer?, UnsafePointer<CChar>?, Int32) -> Int32 = {
        bio, bytes, length in
        BIO_clear_flags(bio, retryFlags)
        guard let bytes, length > 0 else { return 0 }
        let sent = send(descriptor(bio), bytes, Int(length), Int32(MSG_NOSIGNAL))
        if sent < 0, shouldRetry(errno) { BIO_set_flags(bio, BIO_FLAGS_WRITE | BIO_FLAGS_SHOULD_RETRY) }
        return Int32(truncatingIfNeeded: sent)
    }

    private static let read: @convention(c) (OpaquePointer?, UnsafeMutablePointer<CChar>?, Int32) -> Int32 = {
        bio, buffer, length in
        BIO_clear_flags(bio, retryFlags)
        guard let buffer, length > 0 else { return 0 }
        let received = recv(descriptor(bio), buffer, Int(length), 0)
        if received < 0, shouldRetry(errno) {
            BIO_set_flags(bio, BIO_FLAGS_READ | BIO_FLAGS_SHOULD_RETRY)
        } else if received == 0 {
            // libssl asks BIO_eof to tell a clean end of stream from an error.
            BIO_set_flags(bio, BIO_FLAGS_IN_EOF)
        }
        return Int32(truncatingIfNeeded: received)
    }

    private static let control: @convention(c) (OpaquePointer?, Int32, Int, UnsafeMutableRawPointer?) -> Int = {
        bio, command, _, pointer in
        switch command {
        case BIO_CTRL_EOF: return BIO_test_flags(bio, BIO_FLAGS_IN_EOF) != 0 ? 1 : 0
        case BIO_C_GET_FD:
            let fd = descriptor(bio)
            pointer?.assumingMemoryBound(to: Int32.self).pointee = fd
            return Int(fd)
        case BIO_CTRL_FLUSH, BIO_CTRL_DUP: return 1
        default: return 0
        }
    }
}
