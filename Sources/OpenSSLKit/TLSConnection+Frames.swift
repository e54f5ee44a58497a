// Reading and writing protocol frames on a TLS connection, with two bounds: how long to
// wait for a frame to begin, and how long a begun frame may take to arrive whole.

import CloudHSMCore

/// A frame that began but did not arrive whole in time.
public struct IncompleteFrame: Error, CustomStringConvertible, Sendable {
    /// Bytes of the frame (header included) that arrived.
    public let received: Int
    /// The frame's length as far as known: the header's 12 bytes until the header is
    /// whole, then header and payload.
    public let expected: Int
    public let timeoutMilliseconds: Int

    public var description: String {
        "the frame did not arrive whole within \(timeoutMilliseconds) ms (\(received) of \(expected) bytes)"
    }
}

extension TLSConnection {
    /// Reads one whole frame within the `setTimeout` bound. Throws `TLSError.closed` on a
    /// clean close between frames, `TLSError.timedOut` when the bound passes and
    /// `WireError` on a header that can never be valid.
    public func readFrame() throws -> Frame {
        do {
            return try readFrame(startingBy: callDeadline, wholeWithinMilliseconds: nil)
        } catch is IncompleteFrame {
            throw TLSError.timedOut
        }
    }

    /// Reads one whole frame: its first byte must arrive by `start`, the rest within
    /// `frameTimeoutMilliseconds` of that byte (nil: by `start` as well).
    ///
    /// The payload buffer grows with the bytes that arrive, not with the length the header
    /// claims, so a peer that announces 1 MiB and sends one byte holds 16 KiB, not 1 MiB.
    ///
    /// - Throws: `TLSError.timedOut` when nothing arrived by `start`; `IncompleteFrame` when
    ///   the frame began but did not complete in time; `TLSError.closed` on a clean close
    ///   between frames; `WireError` for a header that can never be valid.
    public func readFrame(startingBy start: Deadline, wholeWithinMilliseconds frameTimeoutMilliseconds: Int?) throws
        -> Frame
    {
        guard try waitForInput(until: start) else { throw TLSError.timedOut }
        let deadline = frameTimeoutMilliseconds.map { Deadline.after(milliseconds: $0) } ?? start
        var bytes: [UInt8] = []
        var expected = Frame.headerLength
        func incomplete() -> IncompleteFrame {
            IncompleteFrame(
                received: bytes.count, expected: expected,
                timeoutMilliseconds: frameTimeoutMilliseconds ?? 0)
        }
        do {
            try read(Frame.headerLength, appendingTo: &bytes, deadline: deadline)
        } catch TLSError.timedOut {
            throw incomplete()
        }
        let header = try Frame.parseHeader(bytes)
        expected += header.payloadLength
        var payload: [UInt8] = []
        do {
            try read(header.payloadLength, appendingTo: &payload, deadline: deadline)
        } catch TLSError.timedOut {
            bytes += payload
            throw incomplete()
        } catch TLSError.closed {
            throw TLSError.io("connection closed in the middle of a message")
        }
        return Frame(operation: header.operation, requestID: header.requestID, payload: payload)
    }

    /// Writes one frame within the `setTimeout` bound.
    public func writeFrame(_ frame: Frame) throws {
        try write(frame.encoded())
    }

    /// Writes one frame by `deadline`.
    public func writeFrame(_ frame: Frame, deadline: Deadline) throws {
        try write(frame.encoded(), deadline: deadline)
    }
}
