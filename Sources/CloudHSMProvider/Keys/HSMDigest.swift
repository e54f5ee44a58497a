// The digests the HSMs sign and decrypt with, as OpenSSL names them. Names arrive in any
// of OpenSSL's spellings (SHA256, sha-256, SHA2-256, an OID); the common ones are told
// apart without a fetch (libssl names a digest on every handshake), the rest by asking
// the provider's private library context. A digest OpenSSL knows but the HSMs do not is
// refused by name, never replaced by another.

import CloudHSMCore
import OpenSSLKit

struct HSMDigest: Equatable, Sendable, CustomStringConvertible {
    /// OpenSSL's name, as the default provider answers it in `digest` parameters.
    let name: StaticString
    let length: Int
    /// The digest the HSM applies: in a DigestInfo for PKCS#1 v1.5, in PSS and in OAEP.
    /// `.none` for MD5-SHA1, which TLS 1.0 and 1.1 sign with no DigestInfo.
    let algorithm: DigestAlgorithm
    /// The name the application used, which the default provider answers back.
    private(set) var spelling: String

    static let sha1 = HSMDigest(name: "SHA1", length: 20, algorithm: .sha1)
    static let sha224 = HSMDigest(name: "SHA2-224", length: 28, algorithm: .sha224)
    static let sha256 = HSMDigest(name: "SHA2-256", length: 32, algorithm: .sha256)
    static let sha384 = HSMDigest(name: "SHA2-384", length: 48, algorithm: .sha384)
    static let sha512 = HSMDigest(name: "SHA2-512", length: 64, algorithm: .sha512)
    static let md5SHA1 = HSMDigest(name: "MD5-SHA1", length: 36, algorithm: .none)

    static let all: [HSMDigest] = [.sha1, .sha224, .sha256, .sha384, .sha512, .md5SHA1]

    /// What refusals list as the digests the HSMs take.
    static let supportedNames = "SHA-1, SHA-224, SHA-256, SHA-384 and SHA-512"

    var description: String { name.description }

    static func == (a: HSMDigest, b: HSMDigest) -> Bool { a.algorithm == b.algorithm && a.length == b.length }

    private init(name: StaticString, length: Int, algorithm: DigestAlgorithm) {
        self.name = name
        self.length = length
        self.algorithm = algorithm
        spelling = name.description
    }

    /// The same digest, answered back as `spelling`.
    func spelled(_ spelling: String) -> HSMDigest {
        var copy = self
        copy.spelling = spelling
        return copy
    }

    /// The digest a common spelling names, without asking OpenSSL.
    init?(spelling name: String) {
        switch DigestAlgorithm(name: name) {
        case .sha1?: self = .sha1
        case .sha224?: self = .sha224
        case .sha256?: self = .sha256
        case .sha384?: self = .sha384
        case .sha512?: self = .sha512
        default:
            guard ["MD5-SHA1", "MD5SHA1"].contains(name.uppercased()) else { return nil }
            self = .md5SHA1
        }
    }

    /// The digest `name` names, in any spelling OpenSSL knows.
    ///
    /// - Parameter purpose: what it is for, for the message ("signing", "OAEP").
    /// - Throws: `unsupported` when OpenSSL knows the digest but the HSMs do not take it,
    ///   `invalidInput` when no provider knows the name.
    static func named(_ name: String, properties: String? = nil, for purpose: String) throws -> HSMDigest {
        if properties == nil || properties == "", let digest = HSMDigest(spelling: name) { return digest.spelled(name) }
        let library = try runtime.library()
        let fetched = discardingOpenSSLErrors {
            try? EVPDigest(name: name, properties: properties, context: library.context)
        }
        guard let fetched else {
            let query = properties.map { $0.isEmpty ? "" : " with properties '\($0)'" } ?? ""
            throw ProviderError(
                .invalidInput, "digest '\(name)'\(query) could not be fetched: OpenSSL knows no such digest")
        }
        if let digest = all.first(where: { fetched.isA($0.name.description) }) { return digest.spelled(name) }
        throw ProviderError(
            .unsupported,
            "digest \(fetched.name) for \(purpose): the HSMs take \(supportedNames)")
    }
}
