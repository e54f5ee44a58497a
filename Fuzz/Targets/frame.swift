// Fuzz target `frame`: the 12-byte header and whole-frame decoder, the first code that sees
// a client's or a peer's bytes. Checks the decoder against the format's own rules.

@testable import CloudHSMCore

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzFrame(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    let bytes = fuzzInput(data, size)
    if bytes.count >= Frame.headerLength { checkHeader(Array(bytes.prefix(Frame.headerLength))) }

    // A buffer may hold several frames back to back, as a connection's read buffer does.
    // The first few are enough; hundreds of empty frames would only slow the search.
    var rest = bytes
    for _ in 0..<8 {
        let decoded: (frame: Frame, consumed: Int)?
        do {
            decoded = try Frame.decode(rest)
        } catch {
            guard let error = error as? WireError else { unexpected(error) }
            _ = error.description
            expect(rest.count >= 1, "an empty buffer was refused")
            if rest.count < Frame.headerLength {
                let badMagic = rest[0] != Frame.magic.0 || (rest.count >= 2 && rest[1] != Frame.magic.1)
                expect(badMagic && error == .badMagic, "a partial header was refused with \(error)")
            }
            break
        }
        guard let decoded else {
            let claimed = rest.count >= Frame.headerLength ? claimedLength(rest) : 0
            expect(
                rest.count < Frame.headerLength + claimed, "\(rest.count) bytes hold a whole frame, yet more was asked")
            break
        }
        let (frame, consumed) = decoded
        expect(consumed == Frame.headerLength + frame.payload.count, "consumed \(consumed) bytes")
        expect(frame.payload.count <= Frame.maximumPayloadLength, "payload over the limit accepted")
        expect(Array(rest[..<consumed]) == frame.encoded(), "the frame does not re-encode to its bytes")
        // Every shorter prefix of a frame asks for more bytes; none is refused or taken as a frame.
        for cut in [0, 1, 2, Frame.headerLength - 1, Frame.headerLength, consumed - 1] where cut < consumed {
            let partial = Result { try Frame.decode(Array(rest[..<cut])) }
            guard case .success(nil) = partial else {
                fail("a \(cut)-byte prefix of a \(consumed)-byte frame gave \(partial)")
            }
        }
        rest.removeFirst(consumed)
    }
    return 0
}

private func claimedLength(_ bytes: [UInt8]) -> Int {
    bytes[8..<12].reduce(0) { $0 << 8 | Int($1) }
}

/// `parseHeader` against the header's definition: magic, then version, then the size limit.
private func checkHeader(_ header: [UInt8]) {
    let claimed = claimedLength(header)
    let requestID = header[4..<8].reduce(UInt32(0)) { $0 << 8 | UInt32($1) }
    do {
        let parsed = try Frame.parseHeader(header)
        expect(header[0] == Frame.magic.0 && header[1] == Frame.magic.1, "bad magic accepted")
        expect(header[2] == Frame.version, "version \(header[2]) accepted")
        expect(claimed <= Frame.maximumPayloadLength, "a \(claimed)-byte payload accepted")
        expect(
            parsed == Frame.Header(operation: header[3], requestID: requestID, payloadLength: claimed),
            "header fields misread: \(parsed)")
    } catch let error as WireError {
        if header[0] != Frame.magic.0 || header[1] != Frame.magic.1 {
            expect(error == .badMagic, "bad magic refused as \(error)")
        } else if header[2] != Frame.version {
            expect(error == .unsupportedVersion(header[2]), "bad version refused as \(error)")
        } else {
            expect(error == .frameTooLarge(claimed) && claimed > Frame.maximumPayloadLength, "refused as \(error)")
        }
    } catch {
        unexpected(error)
    }
}
