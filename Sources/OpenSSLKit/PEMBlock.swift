// PEM reading and writing through OpenSSL's own codec, so the crypto files need no
// Base64 of their own and accept exactly what the openssl tools write.

import COpenSSL

/// One "-----BEGIN LABEL-----" block of a PEM file.
struct PEMBlock {
    var label: String
    /// True when the block carried RFC 1421 headers ("Proc-Type: 4,ENCRYPTED").
    var hasHeaders: Bool
    var der: [UInt8]

    /// Every block in `contents`, in order; text between blocks is ignored.
    static func readAll(_ contents: [UInt8]) throws -> [PEMBlock] {
        let bio = try OwnedMemoryBIO(contents: contents)
        var blocks: [PEMBlock] = []
        while true {
            var name: UnsafeMutablePointer<CChar>? = nil
            var header: UnsafeMutablePointer<CChar>? = nil
            var data: UnsafeMutablePointer<UInt8>? = nil
            var length = 0
            let ok = PEM_read_bio(bio.pointer, &name, &header, &data, &length)
            defer {
                CRYPTO_free(name, nil, 0)
                CRYPTO_free(header, nil, 0)
                if let data {
                    OPENSSL_cleanse(data, length)
                    CRYPTO_free(data, nil, 0)
                }
            }
            guard ok == 1, let name else {
                // The end of the input reads as "no start line"; anything else is a damaged block.
                let error = OpenSSLError.capture("reading PEM")
                if error.reasons.contains(where: { !$0.contains("no start line") }) {
                    throw CryptoError.invalidKeyData("damaged PEM block: \(error.description)")
                }
                return blocks
            }
            let hasHeaders = header.map { $0.pointee != 0 } ?? false
            let der = data.map { Array(UnsafeBufferPointer(start: $0, count: length)) } ?? []
            blocks.append(PEMBlock(label: String(cString: name), hasHeaders: hasHeaders, der: der))
        }
    }

    /// Writes one block with 64-character lines.
    static func write(label: String, der: [UInt8]) throws -> String {
        let bio = try OwnedMemoryBIO()
        let written = der.withUnsafeBufferPointer {
            PEM_write_bio(bio.pointer, label, "", $0.baseAddress, $0.count)
        }
        guard written > 0 else { throw OpenSSLError.capture("writing PEM") }
        return String(decoding: bio.contents, as: UTF8.self)
    }
}
