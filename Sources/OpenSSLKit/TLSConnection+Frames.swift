// Reading and writing protocol frames on a TLS connection.

import CloudHSMCore

extension TLSConnection {
    /// Reads one whole frame. Throws `TLSError.closed` on a clean close between frames and
    /// `WireError` on a header that can never be valid.
    public func readFrame() throws -> Frame {
        let header = try Frame.parseHeader(try read(exactly: Frame.headerLength))
        let payload = header.payloadLength == 0 ? [] : try read(exactly: header.payloadLength)
        return Frame(operation: header.operation, requestID: header.requestID, payload: payload)
    }

    public func writeFrame(_ frame: Frame) throws {
        try write(frame.encoded())
    }
}
