// Fuzz target `base64`: the fake PEM's base64 decoder on any text, and the encoder on any
// bytes. Decoding may accept line breaks, spaces and non-zero padding bits, so the checks
// are that decoding what we encode gives back the bytes, and re-encoding is stable.

@testable import CloudHSMCore

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzBase64(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    let bytes = fuzzInput(data, size)
    let encoded = Base64.encode(bytes)
    expect(encoded.utf8.count == (bytes.count + 2) / 3 * 4, "\(bytes.count) bytes encoded in \(encoded.utf8.count)")
    expect(Base64.decode(Substring(encoded)) == bytes, "the encoding of \(bytes) does not decode back")

    let text = String(decoding: bytes, as: UTF8.self)
    guard let decoded = Base64.decode(Substring(text)) else { return 0 }
    let significant = text.utf8.filter { !" \t\r\n=".utf8.contains($0) }.count
    expect(decoded.count == significant * 3 / 4, "\(significant) base64 digits decoded to \(decoded.count) bytes")
    let again = Base64.encode(decoded)
    expect(Base64.decode(Substring(again)) == decoded, "re-encoding \(text) is not stable")
    return 0
}
