// TCP sockets for the node server and the cluster client: connect with a timeout,
// TCP_NODELAY on both ends (Nagle plus delayed ACKs would add tens of milliseconds to
// every small request/response), close-on-exec, EINTR retried. TLSConnection turns them
// non-blocking and waits with poll() until an absolute `Deadline`, so a peer that sends
// one byte at a time cannot stretch a bound (SO_RCVTIMEO restarts with every byte).

#if canImport(Glibc)
    import Glibc
#endif

public enum SocketError: Error, CustomStringConvertible, Sendable {
    case addressNotResolved(String)
    case connectionRefused(String)
    case timedOut(String)
    case system(String, errno: Int32)

    public var description: String {
        switch self {
        case .addressNotResolved(let what): return "cannot resolve \(what)"
        case .connectionRefused(let what): return "\(what): Connection refused"
        case .timedOut(let what): return "\(what): timed out"
        case .system(let what, let code): return "\(what): \(String(cString: strerror(code)))"
        }
    }
}

/// An open TCP socket; closed on `close()` or when released.
public final class TCPSocket {
    public let descriptor: Int32
    private var isClosed = false

    init(descriptor: Int32) {
        self.descriptor = descriptor
    }

    deinit { close() }

    /// Connects to `host:port`, trying each resolved address, within `timeoutMilliseconds`.
    public static func connect(host: String, port: UInt16, timeoutMilliseconds: Int) throws -> TCPSocket {
        let target = "connect to \(host):\(port)"
        var lastError: SocketError = .addressNotResolved("\(host):\(port)")
        for address in try resolve(host: host, port: port, passive: false) {
            let fd = socket(address.family, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
            guard fd >= 0 else {
                lastError = .system("socket", errno: errno)
                continue
            }
            let socket = TCPSocket(descriptor: fd)
            do {
                try socket.connect(to: address, timeoutMilliseconds: timeoutMilliseconds, describedAs: target)
                socket.setNoDelay()
                return socket
            } catch let error as SocketError {
                lastError = error
            }
        }
        throw lastError
    }

    private func connect(to address: ResolvedAddress, timeoutMilliseconds: Int, describedAs target: String) throws {
        let flags = fcntl(descriptor, F_GETFL)
        _ = fcntl(descriptor, F_SETFL, flags | O_NONBLOCK)
        defer { _ = fcntl(descriptor, F_SETFL, flags) }
        let result = address.storage.withUnsafeBytes { raw in
            Glibc.connect(descriptor, raw.baseAddress!.assumingMemoryBound(to: sockaddr.self), address.length)
        }
        if result == 0 { return }
        let code = errno
        guard code == EINPROGRESS || code == EINTR else { throw Self.connectError(code, target) }
        var pollDescriptor = pollfd(fd: descriptor, events: Int16(POLLOUT), revents: 0)
        var remaining = timeoutMilliseconds
        while true {
            let started = monotonicMilliseconds()
            let ready = poll(&pollDescriptor, 1, Int32(clamping: remaining))
            if ready > 0 { break }
            if ready == 0 { throw SocketError.timedOut(target) }
            guard errno == EINTR else { throw SocketError.system(target, errno: errno) }
            remaining -= monotonicMilliseconds() - started
            if remaining <= 0 { throw SocketError.timedOut(target) }
        }
        var socketError: Int32 = 0
        var length = socklen_t(MemoryLayout<Int32>.size)
        getsockopt(descriptor, SOL_SOCKET, SO_ERROR, &socketError, &length)
        if socketError != 0 { throw Self.connectError(socketError, target) }
    }

    private static func connectError(_ code: Int32, _ target: String) -> SocketError {
        code == ECONNREFUSED ? .connectionRefused(target) : .system(target, errno: code)
    }

    func setNoDelay() {
        var one: Int32 = 1
        setsockopt(descriptor, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
    }

    /// The peer's numeric address and port ("127.0.0.1:54321"), for logs; "unknown" if
    /// the kernel cannot say.
    public var peerDescription: String {
        var storage = [UInt8](repeating: 0, count: MemoryLayout<sockaddr_storage>.size)
        var length = socklen_t(storage.count)
        var host = [CChar](repeating: 0, count: Int(NI_MAXHOST))
        var service = [CChar](repeating: 0, count: Int(NI_MAXSERV))
        let result = storage.withUnsafeMutableBytes { raw -> Int32 in
            let address = raw.baseAddress!.assumingMemoryBound(to: sockaddr.self)
            guard getpeername(descriptor, address, &length) == 0 else { return -1 }
            return getnameinfo(
                address, length, &host, socklen_t(host.count), &service, socklen_t(service.count),
                NI_NUMERICHOST | NI_NUMERICSERV)
        }
        guard result == 0 else { return "unknown" }
        return String(cString: host) + ":" + String(cString: service)
    }

    /// Lets the kernel notice a peer that vanished without closing (a half-open connection).
    public func setKeepAlive() {
        var one: Int32 = 1
        setsockopt(descriptor, SOL_SOCKET, SO_KEEPALIVE, &one, socklen_t(MemoryLayout<Int32>.size))
    }

    /// The peer's numeric address without the port ("127.0.0.1", "::1"), or "unknown".
    public var peerAddress: String {
        let description = peerDescription
        guard description != "unknown", let colon = description.lastIndex(of: ":") else { return description }
        return String(description[..<colon])
    }

    /// The key per-source limits count under: an IPv4 address, or the /64 network of an
    /// IPv6 address (one host usually holds a whole /64, so counting single IPv6
    /// addresses would give it 2^64 shares). IPv4-mapped addresses count as IPv4.
    public var sourceKey: String {
        let address = peerAddress
        guard address.contains(":") else { return address }
        var bytes = in6_addr()
        guard inet_pton(AF_INET6, address, &bytes) == 1 else { return address }
        let octets = withUnsafeBytes(of: &bytes) { Array($0) }
        if octets[0..<10].allSatisfy({ $0 == 0 }), octets[10] == 0xff, octets[11] == 0xff {
            return octets[12...].map(String.init).joined(separator: ".")
        }
        let groups = stride(from: 0, to: 8, by: 2).map {
            String(UInt16(octets[$0]) << 8 | UInt16(octets[$0 + 1]), radix: 16)
        }
        return groups.joined(separator: ":") + "::/64"
    }

    /// Puts the socket in non-blocking mode: reads and writes then return EAGAIN instead
    /// of waiting, and `wait(forWriting:until:)` does the waiting, against a deadline.
    func setNonBlocking() {
        let flags = fcntl(descriptor, F_GETFL)
        if flags >= 0, flags & O_NONBLOCK == 0 { _ = fcntl(descriptor, F_SETFL, flags | O_NONBLOCK) }
    }

    /// Waits until the socket is readable (data, end of stream or an error) or writable.
    ///
    /// - Returns: false when `deadline` passed first.
    func wait(forWriting: Bool, until deadline: Deadline) throws -> Bool {
        var pollDescriptor = pollfd(fd: descriptor, events: Int16(forWriting ? POLLOUT : POLLIN), revents: 0)
        while true {
            let timeout = deadline.remainingMilliseconds.map { Int32(clamping: $0) } ?? -1
            let ready = poll(&pollDescriptor, 1, timeout)
            if ready > 0 { return true }
            if ready == 0 {
                if deadline.hasPassed { return false }
                continue  // poll rounds down; the deadline is a few microseconds away
            }
            guard errno == EINTR else { throw SocketError.system("poll", errno: errno) }
        }
    }

    /// Makes a read blocked on this socket in another thread return end-of-stream (the
    /// node's accepting thread evicts a connection this way). Writing still works.
    public func interruptReads() {
        guard !isClosed else { return }
        shutdown(descriptor, Int32(SHUT_RD))
    }

    /// Ends the sending side (FIN after what was written), then reads and drops what the
    /// peer still sends for up to `milliseconds`, so closing does not turn into a reset
    /// that could destroy the last answer before the peer read it.
    func finishSending(lingeringMilliseconds milliseconds: Int) {
        guard !isClosed else { return }
        shutdown(descriptor, Int32(SHUT_WR))
        let deadline = Deadline.after(milliseconds: milliseconds)
        var scratch = [UInt8](repeating: 0, count: 4096)
        var dropped = 0
        while dropped < 1 << 20, (try? wait(forWriting: false, until: deadline)) == true {
            let got = scratch.withUnsafeMutableBytes { recv(descriptor, $0.baseAddress!, $0.count, 0) }
            if got > 0 {
                dropped += got
            } else if got == 0 || (errno != EINTR && errno != EAGAIN) {
                return
            }
        }
    }

    public func close() {
        guard !isClosed else { return }
        isClosed = true
        _ = Glibc.close(descriptor)
    }
}

/// A listening TCP socket.
public final class TCPListener {
    public let descriptor: Int32
    /// The bound port (the one the kernel picked when asked for port 0).
    public let port: UInt16
    private var isClosed = false

    /// - Parameter backlog: connections the kernel completes before `accept` takes them
    ///   (capped by net.core.somaxconn); a burst of connections waits here, not refused.
    public init(host: String, port: UInt16, backlog: Int32 = 1024) throws {
        let what = "listen on \(host):\(port)"
        guard let address = try resolve(host: host, port: port, passive: true).first else {
            throw SocketError.addressNotResolved(host)
        }
        let fd = socket(address.family, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw SocketError.system(what, errno: errno) }
        var one: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        let bound = address.storage.withUnsafeBytes { raw in
            bind(fd, raw.baseAddress!.assumingMemoryBound(to: sockaddr.self), address.length)
        }
        guard bound == 0, listen(fd, backlog) == 0 else {
            let code = errno
            _ = Glibc.close(fd)
            throw SocketError.system(what, errno: code)
        }
        var storage = sockaddr_storage()
        var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
        withUnsafeMutableBytes(of: &storage) { raw in
            _ = getsockname(fd, raw.baseAddress!.assumingMemoryBound(to: sockaddr.self), &length)
        }
        self.descriptor = fd
        self.port = withUnsafeBytes(of: storage) { raw in
            // sin_port and sin6_port sit at the same offset, in network byte order.
            UInt16(bigEndian: raw.load(fromByteOffset: 2, as: UInt16.self))
        }
    }

    deinit { close() }

    /// Waits for the next connection; retries on EINTR.
    public func accept() throws -> TCPSocket {
        while true {
            let fd = Glibc.accept(descriptor, nil, nil)
            if fd >= 0 {
                _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
                let socket = TCPSocket(descriptor: fd)
                socket.setNoDelay()
                return socket
            }
            if errno == EINTR || errno == ECONNABORTED { continue }
            throw SocketError.system("accept", errno: errno)
        }
    }

    public func close() {
        guard !isClosed else { return }
        isClosed = true
        shutdown(descriptor, Int32(SHUT_RDWR))
        _ = Glibc.close(descriptor)
    }
}

struct ResolvedAddress {
    var family: Int32
    var storage: [UInt8]
    var length: socklen_t
}

func resolve(host: String, port: UInt16, passive: Bool) throws -> [ResolvedAddress] {
    var hints = addrinfo()
    hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
    hints.ai_family = AF_UNSPEC
    if passive { hints.ai_flags = AI_PASSIVE }
    var list: UnsafeMutablePointer<addrinfo>?
    let status = getaddrinfo(host, String(port), &hints, &list)
    guard status == 0, let first = list else {
        throw SocketError.addressNotResolved("\(host):\(port) (\(String(cString: gai_strerror(status))))")
    }
    defer { freeaddrinfo(list) }
    var addresses: [ResolvedAddress] = []
    var entry: UnsafeMutablePointer<addrinfo>? = first
    while let current = entry {
        if let address = current.pointee.ai_addr {
            let bytes = UnsafeRawBufferPointer(start: address, count: Int(current.pointee.ai_addrlen))
            addresses.append(
                ResolvedAddress(
                    family: current.pointee.ai_family, storage: Array(bytes), length: current.pointee.ai_addrlen))
        }
        entry = current.pointee.ai_next
    }
    return addresses
}

/// A moment on the monotonic clock by which some I/O must be done, however the bytes
/// trickle in.
public struct Deadline: Comparable, Sendable, CustomStringConvertible {
    /// Monotonic milliseconds; `Int.max` for never.
    let milliseconds: Int

    public static let never = Deadline(milliseconds: .max)

    public static var now: Deadline { Deadline(milliseconds: monotonicMilliseconds()) }

    /// `milliseconds` from now.
    public static func after(milliseconds: Int) -> Deadline {
        Deadline(milliseconds: monotonicMilliseconds() &+ max(0, milliseconds))
    }

    public var hasPassed: Bool { self != .never && monotonicMilliseconds() >= milliseconds }

    /// What is left, at least 0; nil for never.
    public var remainingMilliseconds: Int? {
        self == .never ? nil : max(0, milliseconds - monotonicMilliseconds())
    }

    public static func < (lhs: Deadline, rhs: Deadline) -> Bool { lhs.milliseconds < rhs.milliseconds }

    public var description: String {
        remainingMilliseconds.map { "in \($0) ms" } ?? "never"
    }
}

func monotonicMilliseconds() -> Int {
    var now = timespec()
    clock_gettime(CLOCK_MONOTONIC, &now)
    return now.tv_sec * 1000 + now.tv_nsec / 1_000_000
}
