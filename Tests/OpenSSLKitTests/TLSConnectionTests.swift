// TLS between a real listener and a real client on loopback: frames cross intact, an
// untrusted or misnamed certificate is refused, a refused port is reported as such.

import CloudHSMCore
import Foundation
import Synchronization
import XCTest

@testable import OpenSSLKit

final class TLSConnectionTests: XCTestCase {
    private var directory: URL!

    override func setUpWithError() throws {
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("tls-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        try makeCertificateAuthority(named: "ca")
        try makeCertificateAuthority(named: "otherca")
        try makeLeaf(named: "node", signedBy: "ca", subjectAltName: "IP:127.0.0.1,DNS:localhost")
        try makeLeaf(named: "elsewhere", signedBy: "ca", subjectAltName: "IP:127.0.0.2,DNS:elsewhere.example")
    }

    override func tearDownWithError() throws {
        try? FileManager.default.removeItem(at: directory)
    }

    func testFramesRoundTripOverTLS13() throws {
        let context = try CryptoContext()
        let server = try serverContext(context)
        let listener = try TCPListener(host: "127.0.0.1", port: 0)
        let echo = Thread {
            guard let socket = try? listener.accept(),
                let connection = try? TLSConnection.accept(socket, context: server, timeoutMilliseconds: 5000)
            else { return }
            while let frame = try? connection.readFrame() {
                var reply = frame
                reply.operation |= Frame.responseBit
                try? connection.writeFrame(reply)
            }
            connection.close()
        }
        echo.start()
        let client = try TLSContext.client(trustAnchorPath: path("ca.crt"), context: context)
        let connection = try TLSConnection.connect(
            host: "127.0.0.1", port: listener.port, context: client, timeoutMilliseconds: 5000)
        for size in [0, 1, 1000, 100_000] {
            let payload = (0..<size).map { UInt8(truncatingIfNeeded: $0) }
            try connection.writeFrame(Frame(operation: 0x0c, requestID: UInt32(size), payload: payload))
            let reply = try connection.readFrame()
            XCTAssertEqual(reply, Frame(operation: 0x8c, requestID: UInt32(size), payload: payload))
        }
        connection.close()
        listener.close()
    }

    func testClientRefusesCertificateFromAnotherAuthority() throws {
        let context = try CryptoContext()
        let listener = try TCPListener(host: "127.0.0.1", port: 0)
        let done = try serveOneHandshake(listener, context: context, certificate: "node")
        let client = try TLSContext.client(trustAnchorPath: path("otherca.crt"), context: context)
        XCTAssertThrowsError(
            try TLSConnection.connect(
                host: "127.0.0.1", port: listener.port, context: client, timeoutMilliseconds: 5000)
        ) { error in
            guard case TLSError.certificateNotTrusted = error else { return XCTFail("got \(error)") }
        }
        done.wait()
    }

    func testClientRefusesCertificateForAnotherName() throws {
        let context = try CryptoContext()
        let listener = try TCPListener(host: "127.0.0.1", port: 0)
        let done = try serveOneHandshake(listener, context: context, certificate: "elsewhere")
        let client = try TLSContext.client(trustAnchorPath: path("ca.crt"), context: context)
        // The certificate chains to the trusted CA but names 127.0.0.2, not 127.0.0.1.
        XCTAssertThrowsError(
            try TLSConnection.connect(
                host: "127.0.0.1", port: listener.port, context: client, timeoutMilliseconds: 5000)
        ) { error in
            guard case TLSError.certificateNotTrusted = error else { return XCTFail("got \(error)") }
        }
        done.wait()
    }

    func testRefusedPortIsReportedAsRefused() throws {
        let context = try CryptoContext()
        let listener = try TCPListener(host: "127.0.0.1", port: 0)
        let port = listener.port
        listener.close()
        let client = try TLSContext.client(trustAnchorPath: path("ca.crt"), context: context)
        XCTAssertThrowsError(
            try TLSConnection.connect(host: "127.0.0.1", port: port, context: client, timeoutMilliseconds: 2000)
        ) { error in
            guard case TLSError.connectionRefused = error else { return XCTFail("got \(error)") }
        }
    }

    func testReadAfterPeerCloseReportsClosed() throws {
        let context = try CryptoContext()
        let server = try serverContext(context)
        let listener = try TCPListener(host: "127.0.0.1", port: 0)
        let closer = Thread {
            guard let socket = try? listener.accept(),
                let connection = try? TLSConnection.accept(socket, context: server, timeoutMilliseconds: 5000)
            else { return }
            connection.close()
        }
        closer.start()
        let client = try TLSContext.client(trustAnchorPath: path("ca.crt"), context: context)
        let connection = try TLSConnection.connect(
            host: "127.0.0.1", port: listener.port, context: client, timeoutMilliseconds: 5000)
        XCTAssertThrowsError(try connection.readFrame()) { error in
            guard case TLSError.closed = error else { return XCTFail("got \(error)") }
        }
    }

    /// Writing to a peer that has gone fails with an error instead of raising SIGPIPE, with
    /// the signal at its default action (which kills the process, as in a host that did
    /// not ignore it): the socket BIO sends with MSG_NOSIGNAL.
    func testWritingToAPeerThatHasGoneRaisesNoSIGPIPE() throws {
        let previous = signal(SIGPIPE, SIG_DFL)
        defer { signal(SIGPIPE, previous) }
        let context = try CryptoContext()
        let server = try serverContext(context)
        let listener = try TCPListener(host: "127.0.0.1", port: 0)
        let accepted = DispatchSemaphore(value: 0)
        let closer = Thread {
            if let socket = try? listener.accept(),
                let connection = try? TLSConnection.accept(socket, context: server, timeoutMilliseconds: 5000)
            {
                connection.abandon()
            }
            accepted.signal()
        }
        closer.start()
        let client = try TLSContext.client(trustAnchorPath: path("ca.crt"), context: context)
        let connection = try TLSConnection.connect(
            host: "127.0.0.1", port: listener.port, context: client, timeoutMilliseconds: 5000)
        accepted.wait()
        // The first writes may still be taken by the kernel; the peer's reset makes a
        // later one fail with EPIPE or ECONNRESET.
        var failure: Error?
        for _ in 0..<50 where failure == nil {
            do {
                try connection.write([UInt8](repeating: 1, count: 1000), deadline: .after(milliseconds: 2000))
                usleep(10_000)
            } catch {
                failure = error
            }
        }
        guard let failure else { return XCTFail("writing to a closed peer never failed") }
        switch failure {
        case TLSError.closed, TLSError.io: break
        default: XCTFail("got \(failure)")
        }
        connection.close()
        listener.close()
    }

    // MARK: - Deadlines

    func testHandshakeDeadlineHoldsAgainstAPeerThatSendsNothing() throws {
        let context = try CryptoContext()
        let server = try serverContext(context)
        let listener = try TCPListener(host: "127.0.0.1", port: 0)
        let silent = try TCPSocket.connect(host: "127.0.0.1", port: listener.port, timeoutMilliseconds: 2000)
        defer { silent.close() }
        let accepted = try listener.accept()
        let started = Deadline.now
        XCTAssertThrowsError(try TLSConnection.accept(accepted, context: server, deadline: .after(milliseconds: 300))) {
            guard case TLSError.timedOut = $0 else { return XCTFail("got \($0)") }
        }
        let took = monotonicMilliseconds() - started.milliseconds
        XCTAssertGreaterThanOrEqual(took, 300)
        XCTAssertLessThan(took, 3000)
    }

    func testFrameDeadlineCountsFromTheFirstByteHoweverBytesTrickle() throws {
        let context = try CryptoContext()
        let server = try serverContext(context)
        let listener = try TCPListener(host: "127.0.0.1", port: 0)
        let outcome = Mutex<(error: Error?, took: Int)?>(nil)
        let done = DispatchSemaphore(value: 0)
        let reader = Thread {
            defer { done.signal() }
            guard let socket = try? listener.accept(),
                let connection = try? TLSConnection.accept(socket, context: server, timeoutMilliseconds: 5000)
            else { return }
            // The first frame arrives whole: the frame bound is not a connection bound.
            _ = try? connection.readFrame(startingBy: .after(milliseconds: 5000), wholeWithinMilliseconds: 400)
            var started = 0
            do {
                guard try connection.waitForInput(until: .after(milliseconds: 5000)) else { return }
                started = monotonicMilliseconds()
                _ = try connection.readFrame(startingBy: .after(milliseconds: 5000), wholeWithinMilliseconds: 400)
                outcome.withLock { $0 = (nil, monotonicMilliseconds() - started) }
            } catch {
                outcome.withLock { $0 = (error, monotonicMilliseconds() - started) }
            }
        }
        reader.start()
        let client = try TLSContext.client(trustAnchorPath: path("ca.crt"), context: context)
        let connection = try TLSConnection.connect(
            host: "127.0.0.1", port: listener.port, context: client, timeoutMilliseconds: 5000)
        try connection.writeFrame(Frame(operation: 1, requestID: 1, payload: [1, 2, 3]))
        // A header claiming 1000 bytes, then one byte every 100 ms.
        var header = Frame(operation: 1, requestID: 2, payload: []).encoded()
        header[8...] = [0, 0, 0x03, 0xe8]
        try connection.write(header)
        for _ in 0..<15 {
            try? connection.write([0x42])
            usleep(100_000)
        }
        done.wait()
        let result = try XCTUnwrap(outcome.withLock { $0 })
        guard let incomplete = result.error as? IncompleteFrame else {
            return XCTFail("got \(String(describing: result.error))")
        }
        XCTAssertEqual(incomplete.expected, 1012)
        XCTAssertGreaterThan(incomplete.received, 12)
        XCTAssertLessThan(incomplete.received, 30)
        XCTAssertGreaterThanOrEqual(result.took, 390)
        XCTAssertLessThan(result.took, 1300)
    }

    func testNothingByTheStartDeadlineIsATimeoutNotAnIncompleteFrame() throws {
        let context = try CryptoContext()
        let server = try serverContext(context)
        let listener = try TCPListener(host: "127.0.0.1", port: 0)
        let outcome = Mutex<Error?>(nil)
        let done = DispatchSemaphore(value: 0)
        let reader = Thread {
            defer { done.signal() }
            guard let socket = try? listener.accept(),
                let connection = try? TLSConnection.accept(socket, context: server, timeoutMilliseconds: 5000)
            else { return }
            do {
                _ = try connection.readFrame(startingBy: .after(milliseconds: 200), wholeWithinMilliseconds: 5000)
            } catch {
                outcome.withLock { $0 = error }
            }
        }
        reader.start()
        let client = try TLSContext.client(trustAnchorPath: path("ca.crt"), context: context)
        let connection = try TLSConnection.connect(
            host: "127.0.0.1", port: listener.port, context: client, timeoutMilliseconds: 5000)
        done.wait()
        connection.close()
        let error = try XCTUnwrap(outcome.withLock { $0 })
        guard case TLSError.timedOut = error else { return XCTFail("got \(error)") }
    }

    // MARK: - Helpers

    private func serverContext(_ context: CryptoContext, certificate: String = "node") throws -> TLSContext {
        try TLSContext.server(
            certificatePath: path("\(certificate).crt"), privateKeyPath: path("\(certificate).key"),
            trustAnchorPath: nil, requireClientCertificate: false, context: context)
    }

    /// Accepts one connection and attempts a handshake; the semaphore signals when done.
    private func serveOneHandshake(_ listener: TCPListener, context: CryptoContext, certificate: String) throws
        -> DispatchSemaphore
    {
        let server = try serverContext(context, certificate: certificate)
        let done = DispatchSemaphore(value: 0)
        let thread = Thread {
            defer { done.signal() }
            guard let socket = try? listener.accept() else { return }
            let connection = try? TLSConnection.accept(socket, context: server, timeoutMilliseconds: 5000)
            connection?.close()
        }
        thread.start()
        return done
    }

    private func path(_ name: String) -> String { directory.appendingPathComponent(name).path }

    private func makeCertificateAuthority(named name: String) throws {
        try openssl([
            "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "2",
            "-subj", "/CN=\(name)", "-keyout", path("\(name).key"), "-out", path("\(name).crt"),
        ])
    }

    private func makeLeaf(named name: String, signedBy ca: String, subjectAltName: String) throws {
        try openssl([
            "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-subj", "/CN=\(name)",
            "-keyout", path("\(name).key"), "-out", path("\(name).csr"),
        ])
        try "subjectAltName=\(subjectAltName)\n".write(toFile: path("\(name).ext"), atomically: true, encoding: .utf8)
        try openssl([
            "x509", "-req", "-in", path("\(name).csr"), "-CA", path("\(ca).crt"), "-CAkey", path("\(ca).key"),
            "-CAcreateserial", "-days", "2", "-extfile", path("\(name).ext"), "-out", path("\(name).crt"),
        ])
    }

    private func openssl(_ arguments: [String]) throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/openssl")
        process.arguments = arguments
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        process.waitUntilExit()
        XCTAssertEqual(process.terminationStatus, 0, "openssl \(arguments.joined(separator: " "))")
    }
}
