// The frame of the node protocol: a fixed 12-byte header, then the payload.
//
//   magic "HS" (2) | version (1) | operation (1) | request id (4) | payload length (4)
//
// A response carries its request's operation with the high bit set and the same id.

public struct Frame: Equatable, Sendable {
    public static let magic: (UInt8, UInt8) = (0x48, 0x53)
    public static let version: UInt8 = 1
    public static let headerLength = 12
    public static let maximumPayloadLength = 1 << 20
    public static let responseBit: UInt8 = 0x80

    public var operation: UInt8
    public var requestID: UInt32
    public var payload: [UInt8]

    public init(operation: UInt8, requestID: UInt32, payload: [UInt8]) {
        self.operation = operation
        self.requestID = requestID
        self.payload = payload
    }

    public var isResponse: Bool { operation & Frame.responseBit != 0 }

    public func encoded() -> [UInt8] {
        // One allocation for header and payload: this runs for every request and answer.
        var bytes: [UInt8] = []
        bytes.reserveCapacity(Frame.headerLength + payload.count)
        bytes += [Frame.magic.0, Frame.magic.1, Frame.version, operation]
        for shift in stride(from: 24, through: 0, by: -8) {
            bytes.append(UInt8(truncatingIfNeeded: requestID >> shift))
        }
        let length = UInt32(payload.count)
        for shift in stride(from: 24, through: 0, by: -8) { bytes.append(UInt8(truncatingIfNeeded: length >> shift)) }
        bytes += payload
        return bytes
    }

    /// The parsed header: what follows and how long it is.
    public struct Header: Equatable, Sendable {
        public var operation: UInt8
        public var requestID: UInt32
        public var payloadLength: Int
    }

    /// Parses and validates a 12-byte header; rejects bad magic, versions and sizes.
    public static func parseHeader(_ bytes: [UInt8]) throws -> Header {
        var reader = WireReader(bytes)
        guard try reader.readUInt8("magic") == magic.0, try reader.readUInt8("magic") == magic.1 else {
            throw WireError.badMagic
        }
        let version = try reader.readUInt8("version")
        guard version == Frame.version else { throw WireError.unsupportedVersion(version) }
        let operation = try reader.readUInt8("operation")
        let requestID = try reader.readUInt32("request id")
        let length = Int(try reader.readUInt32("payload length"))
        guard length <= maximumPayloadLength else { throw WireError.frameTooLarge(length) }
        return Header(operation: operation, requestID: requestID, payloadLength: length)
    }

    /// Decodes one frame from the front of `bytes`.
    ///
    /// - Returns: the frame and the number of bytes it used, or nil when more bytes are needed.
    /// - Throws: `WireError` when the bytes can never become a valid frame.
    public static func decode(_ bytes: [UInt8]) throws -> (frame: Frame, consumed: Int)? {
        guard bytes.count >= headerLength else {
            // Reject garbage early even before a whole header has arrived.
            if let first = bytes.first, first != magic.0 { throw WireError.badMagic }
            if bytes.count >= 2, bytes[1] != magic.1 { throw WireError.badMagic }
            return nil
        }
        let header = try parseHeader(Array(bytes[0..<headerLength]))
        let total = headerLength + header.payloadLength
        guard bytes.count >= total else { return nil }
        let frame = Frame(
            operation: header.operation, requestID: header.requestID,
            payload: Array(bytes[headerLength..<total]))
        return (frame, total)
    }
}
