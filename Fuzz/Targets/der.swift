// Fuzz target `der`: the DER reader on its own, walking any tree of elements and reading
// each with every accessor that fits its tag. Each element must be exactly the minimal
// encoding of what was read from it, and no read may reach outside its parent.

@testable import CloudHSMCore

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzDER(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    var reader = DERReader(fuzzInput(data, size))
    walk(&reader, depth: 0)
    return 0
}

private func walk(_ reader: inout DERReader, depth: Int) {
    while !reader.isAtEnd {
        // Read each element twice: raw, and with the accessor its tag calls for. Both must
        // agree on where it ends.
        var raw = reader
        guard let element = try? raw.readElement("element") else {
            // Whatever readElement refuses, the typed readers refuse too.
            var typed = reader
            expect((try? typed.readSequence("element")) == nil, "readSequence accepted what readElement refused")
            return
        }
        // Tag, minimal length, content: compared without copying the content again.
        let length = DER.encodeLength(element.content.count)
        expect(
            element.encoded.count == 1 + length.count + element.content.count && element.encoded[0] == element.tag
                && element.encoded[1...length.count].elementsEqual(length),
            "element \(element.encoded) is not in minimal form")
        switch element.tag {
        case DERTag.sequence.rawValue:
            if depth == 0 {
                var copy = reader
                expect((try? copy.readRawSequence("raw")) == element.encoded, "readRawSequence disagrees")
            }
            guard var inner = try? reader.readSequence("sequence") else {
                fail("readSequence refused a SEQUENCE element")
            }
            // Our structure nests two deep; deeper only re-copies the same bytes, slowly.
            if depth < 8 { walk(&inner, depth: depth + 1) }
        case DERTag.integer.rawValue:
            if let value = try? reader.readUnsignedInteger("integer") {
                expect(DER.integer(value) == element.encoded, "INTEGER \(element.encoded) read as \(value)")
            } else {
                reader = raw
            }
        case DERTag.utf8String.rawValue:
            if let string = try? reader.readUTF8String("string") {
                expect(DER.utf8String(string) == element.encoded, "UTF8String \(element.encoded) read as \(string)")
            } else {
                reader = raw
            }
        default:
            reader = raw
        }
        expect(reader.isAtEnd == raw.isAtEnd && reader.peekTag() == raw.peekTag(), "readers went out of step")
    }
}
