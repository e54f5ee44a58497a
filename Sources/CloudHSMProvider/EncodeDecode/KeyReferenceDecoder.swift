// Decoders for the fake PEM: one takes our PEM block to DER (and only ours), the next
// takes that DER to a key object. Both applications' ways of loading a key end here:
// PEM_read_bio_PrivateKey / SSL_CTX_use_PrivateKey_file and the apps' file: store.
// Input that is not ours passes through: return 1, call nothing, leave the error queue as
// it was. The one exception is text too large to be a key file with no PEM block in it,
// which is refused with its size (see decodePEM and docs/architecture.md). The key type
// comes from the SubjectPublicKeyInfo inside the reference (Algorithms.keyType(of:)): a
// type the provider does not hold is refused with its name.

import COpenSSL
import CloudHSMCore
import OpenSSLKit

enum KeyReferenceDecoder {
    static let structureName: StaticString = "CloudHSMKeyReference"

    /// Our PEM block to DER, for the next decoder. No structure name on the output: the
    /// file: store's chain passes on only unstructured DER (and the default provider's
    /// PEM decoder ignores labels it does not know, such as ours).
    ///
    /// OpenSSL's file: store calls this once for every position it reaches in a file, so
    /// each call reads a bounded prefix (`KeyReference.searchLimit` of text, growing
    /// geometrically) and scans it once. Text longer than that with no PEM block at all
    /// is refused as too large, after reading it to its end, which also ends OpenSSL's
    /// loop over it at once. When the input is not ours, the position is left where the
    /// default provider's PEM reader leaves it (after the first PEM block, else at the
    /// last line read), so the loop moves on whatever the order of the decoders.
    static func decodePEM(_ input: OpaquePointer?, _ callback: DataCallback, _ argument: UnsafeMutableRawPointer?)
        -> Int32
    {
        var reader = DecoderInput(input)
        reader.fill(upTo: 4096)
        // PEM is text; DER and other binary input are someone else's, decided at once.
        guard KeyReference.looksLikeText(reader.bytes) else {
            reader.settle(at: reader.bytes.count)
            return 1
        }
        var target = 4096
        while true {
            switch KeyReference.scan(reader.bytes) {
            case .found(let block):
                reader.settle(at: block.upperBound)
                let found = reportingResult("reading a CloudHSM key file") {
                    () -> (KeyReference, any ProviderKeyType.Type) in
                    let reference: KeyReference
                    do {
                        reference = try KeyReference(pemBlock: reader.bytes[block])
                    } catch {
                        throw ProviderError(.malformedKeyReference, "\(error)")
                    }
                    return (reference, try keyType(of: reference))
                }
                guard let (reference, type) = found else { return 0 }
                return passOn(reference.derEncoded(), dataType: type.name, callback, argument)
            case .unterminated(let begin):
                if reader.isAtEnd {
                    return refuse(ProviderError(.malformedKeyReference, "the PEM block has no END line"))
                }
                if reader.bytes.count - begin > KeyReference.maximumEncodedLength {
                    return refuse(
                        ProviderError(
                            .malformedKeyReference,
                            "the PEM block has no END line within \(KeyReference.maximumEncodedLength) bytes "
                                + "of its BEGIN line (the longest key reference accepted)"))
                }
            case .absent(let sawPEM, let firstBlockEnd, let lastLineStart):
                if reader.isAtEnd {
                    reader.settle(at: firstBlockEnd ?? reader.bytes.count)
                    return 1
                }
                if reader.bytes.count >= KeyReference.searchLimit {
                    if sawPEM {
                        // Someone else's PEM: OpenSSL comes back after it, and we look again.
                        reader.settle(at: firstBlockEnd ?? max(lastLineStart, 1))
                        return 1
                    }
                    let size = reader.drain()
                    return refuse(
                        ProviderError(
                            .invalidInput,
                            "key file too large: \(size.total) bytes of text\(size.complete ? "" : " or more") and no "
                                + "PEM block in the first \(KeyReference.searchLimit) (the CloudHSM provider looks "
                                + "for a key reference in the first \(KeyReference.searchLimit / 1024) KiB)"))
                }
            }
            target *= 2
            reader.fill(upTo: target)
        }
    }

    /// Raises `error` and answers the decoder's failure: it ends OpenSSL's loop over the input.
    private static func refuse(_ error: ProviderError, function: StaticString = #function) -> Int32 {
        reportingStatus(function: function) { throw error }
    }

    /// The key type of the public key a reference holds; a type the provider does not hold
    /// is refused by name.
    static func keyType(of reference: KeyReference) throws -> any ProviderKeyType.Type {
        let publicKey: EVPKey
        do {
            publicKey = try EVPKey(publicKeyInfo: reference.publicKeyInfo, context: runtime.library().context)
        } catch {
            throw ProviderError(.malformedKeyReference, "the key reference's public key is not a valid public key")
        }
        return try Algorithms.keyType(of: publicKey)
    }

    /// Hands our DER to the next decoder, named by its key type (only our DER decoder for
    /// that type takes it).
    private static func passOn(
        _ der: [UInt8], dataType: StaticString, _ callback: DataCallback, _ argument: UnsafeMutableRawPointer?
    ) -> Int32 {
        var objectType = Int32(OSSL_OBJECT_PKEY)
        return der.withUnsafeBytes { raw in
            var params = [
                OSSL_PARAM_construct_int(cString("type"), &objectType),
                OSSL_PARAM_construct_utf8_string(
                    cString("data-type"), UnsafeMutablePointer(mutating: cString(dataType)), 0),
                OSSL_PARAM_construct_octet_string(
                    cString("data"), UnsafeMutableRawPointer(mutating: raw.baseAddress), raw.count),
                OSSL_PARAM_construct_end(),
            ]
            return callback(&params, argument)
        }
    }

    /// DER to a key object. Reads the first bytes only, unless they start our structure,
    /// then exactly that structure (at most `KeyReference.maximumEncodedLength`).
    static func decodeDER(_ input: OpaquePointer?, _ callback: DataCallback, _ argument: UnsafeMutableRawPointer?)
        -> Int32
    {
        var reader = DecoderInput(input)
        reader.fill(upTo: 16)
        guard looksLikeKeyReference(reader.bytes), let length = derLength(reader.bytes) else { return 1 }
        let key = reportingResult("reading a CloudHSM key reference") { () -> ProviderKey in
            guard length <= KeyReference.maximumEncodedLength else {
                throw ProviderError(
                    .malformedKeyReference,
                    "the key reference claims \(length) bytes, more than the \(KeyReference.maximumEncodedLength) "
                        + "accepted")
            }
            reader.fill(upTo: length)
            guard reader.bytes.count >= length else {
                throw ProviderError(
                    .malformedKeyReference, "the key reference is cut off: \(reader.bytes.count) of \(length) bytes")
            }
            reader.settle(at: length)
            let reference: KeyReference
            do {
                reference = try KeyReference(der: Array(reader.bytes[0..<length]))
            } catch {
                throw ProviderError(.malformedKeyReference, "\(error)")
            }
            let key = try ProviderKey(reference: reference)
            runtime.keys.prepare()
            return key
        }
        guard let key else { return 0 }
        return emit(key, callback, argument)
    }

    /// Hands a new key object to libcrypto by reference; our keymgmt's `load` takes it.
    static func emit(_ key: ProviderKey, _ callback: DataCallback, _ argument: UnsafeMutableRawPointer?)
        -> Int32
    {
        var slot: UnsafeMutableRawPointer? = retainedPointer(KeyHolder(key.type, key))
        defer { if let left = slot { releasePointer(left, as: KeyHolder.self) } }
        var objectType = Int32(OSSL_OBJECT_PKEY)
        let handle = key.reference?.handle ?? 0
        return withUnsafeMutableBytes(of: &slot) { reference in
            var params = [
                OSSL_PARAM_construct_int(cString("type"), &objectType),
                OSSL_PARAM_construct_utf8_string(
                    cString("data-type"), UnsafeMutablePointer(mutating: cString(key.type.name)), 0),
                OSSL_PARAM_construct_octet_string(cString("reference"), reference.baseAddress, reference.count),
                OSSL_PARAM_construct_end(),
            ]
            let accepted = callback(&params, argument)
            trace("decoder: key handle \(handle) passed on, accepted=\(accepted)")
            return accepted
        }
    }

    /// Our structure starts `SEQUENCE { INTEGER 1, UTF8String ...`, which no PKCS#8,
    /// PKCS#1 or SubjectPublicKeyInfo does; anything else is someone else's DER.
    static func looksLikeKeyReference(_ der: [UInt8]) -> Bool {
        guard der.count > 8, der[0] == 0x30 else { return false }
        var index = 1
        if der[index] & 0x80 != 0 { index += Int(der[index] & 0x7f) }
        index += 1
        guard index + 4 < der.count else { return false }
        return der[index] == 0x02 && der[index + 1] == 0x01 && der[index + 2] == 0x01 && der[index + 3] == 0x0c
    }

    /// The whole length (header included) of the DER element `bytes` starts with, when
    /// its header is complete and its length fits in four bytes.
    static func derLength(_ bytes: [UInt8]) -> Int? {
        guard bytes.count >= 2 else { return nil }
        let first = Int(bytes[1])
        guard first & 0x80 != 0 else { return 2 + first }
        let count = first & 0x7f
        guard (1...4).contains(count), bytes.count >= 2 + count else { return nil }
        let length = bytes[2..<2 + count].reduce(0) { $0 << 8 | Int($1) }
        return 2 + count + length
    }

    static let pemDispatch: UnsafePointer<OSSL_DISPATCH> = {
        var table = DispatchTable()
        table.add(DecoderSlot.newContext, decoderNewContext)
        table.add(DecoderSlot.freeContext, decoderFreeContext)
        table.add(DecoderSlot.decode, pemDecode)
        return table.finished()
    }()

    /// One table for every key type: the type comes from the reference, not the row.
    static let derDispatch: UnsafePointer<OSSL_DISPATCH> = {
        var table = DispatchTable()
        table.add(DecoderSlot.newContext, decoderNewContext)
        table.add(DecoderSlot.freeContext, decoderFreeContext)
        table.add(DecoderSlot.decode, derDecode)
        return table.finished()
    }()
}

/// The decoders keep no state; any non-NULL context will do.
private func decoderNewContext(_ provider: UnsafeMutableRawPointer?) -> UnsafeMutableRawPointer? {
    UnsafeMutableRawPointer(mutating: cString(KeyReferenceDecoder.structureName))
}

private func decoderFreeContext(_ context: UnsafeMutableRawPointer?) {}

private func pemDecode(
    _ context: UnsafeMutableRawPointer?, _ input: OpaquePointer?, _ selection: Int32, _ callback: DataCallback?,
    _ argument: UnsafeMutableRawPointer?, _ passphrase: PassphraseCallback?,
    _ passphraseArgument: UnsafeMutableRawPointer?
) -> Int32 {
    guard let callback else { return 1 }
    return KeyReferenceDecoder.decodePEM(input, callback, argument)
}

private func derDecode(
    _ context: UnsafeMutableRawPointer?, _ input: OpaquePointer?, _ selection: Int32, _ callback: DataCallback?,
    _ argument: UnsafeMutableRawPointer?, _ passphrase: PassphraseCallback?,
    _ passphraseArgument: UnsafeMutableRawPointer?
) -> Int32 {
    guard let callback else { return 1 }
    return KeyReferenceDecoder.decodeDER(input, callback, argument)
}

/// A decoder's input, read in growing prefixes: the bytes read so far, whether the input
/// ended, and where to leave its position. The core BIO is OpenSSL's; `tell` and `seek`
/// go through the core's BIO_ctrl (the decoder framework keeps its inputs seekable).
private struct DecoderInput {
    let bio: OpaquePointer?
    private(set) var bytes: [UInt8] = []
    private(set) var isAtEnd = false
    /// The position when we started, or nil when the input cannot tell it.
    private let start: Int?

    private static let tellCommand: Int32 = 133  // BIO_C_FILE_TELL
    private static let seekCommand: Int32 = 128  // BIO_C_FILE_SEEK

    init(_ bio: OpaquePointer?) {
        self.bio = bio
        let position = core.bioCtrl.map { Int($0(bio, Self.tellCommand, 0, nil)) } ?? -1
        start = position >= 0 ? position : nil
    }

    /// Reads until `count` bytes are held or the input ends.
    mutating func fill(upTo count: Int) {
        guard let read = core.bioReadEx else {
            isAtEnd = true
            return
        }
        while bytes.count < count, !isAtEnd {
            let wanted = count - bytes.count
            let before = bytes.count
            var got = 0
            bytes.append(contentsOf: repeatElement(0, count: wanted))
            let ok = bytes.withUnsafeMutableBytes { read(bio, $0.baseAddress! + before, wanted, &got) }
            bytes.removeLast(wanted - (ok == 0 ? 0 : min(got, wanted)))
            if ok == 0 || got == 0 { isAtEnd = true }
        }
    }

    /// Leaves the input's position `offset` bytes after where we started (the bytes read
    /// beyond it are read again by whoever comes next).
    func settle(at offset: Int) {
        guard offset < bytes.count, let start, let seek = core.bioCtrl else { return }
        _ = seek(bio, Self.seekCommand, start + offset, nil)
    }

    /// Reads the rest of the input, without keeping it, up to 64 MiB in all: how much
    /// there was, and whether that was all of it.
    mutating func drain() -> (total: Int, complete: Bool) {
        guard let read = core.bioReadEx else { return (bytes.count, isAtEnd) }
        var total = bytes.count
        var chunk = [UInt8](repeating: 0, count: 65536)
        while !isAtEnd, total < 64 << 20 {
            var got = 0
            let ok = chunk.withUnsafeMutableBytes { read(bio, $0.baseAddress, $0.count, &got) }
            if ok == 0 || got == 0 { isAtEnd = true } else { total += got }
        }
        return (total, isAtEnd)
    }
}
