// What the provider's unit tests share: a local RSA key made by OpenSSLKit, key
// references around any SubjectPublicKeyInfo, and real OSSL_PARAM arrays to read from
// and answer into, as OpenSSL hands them to the provider.

import COpenSSL
import CloudHSMCore
import OpenSSLKit
import XCTest

@testable import CloudHSMProvider

enum ProviderTestSupport {
    static let context = try! CryptoContext()
    static let rsaKey = try! RSAPrivateKey.generate(bits: 2048, publicExponent: 65537, context: context)

    /// `openssl ecparam -name prime256v1 -genkey | openssl pkey -pubout -outform DER`.
    static let ecPublicKeyInfo = hex(
        "3059301306072a8648ce3d020106082a8648ce3d030107034200046599208ea4c16384930e926b77fcce5bce396c45cee4"
            + "9a5c43232c9d27e58e1bb427e6bfe43bdf5ab9f7a805baa06edc789df218c5d6589b9814886ef2592972")
    /// `openssl genpkey -algorithm ed25519 | openssl pkey -pubout -outform DER`.
    static let ed25519PublicKeyInfo = hex(
        "302a300506032b657003210087ff62c51bfc07f18a568b46848f9977fb60c36cd05f9122e385ed2382a5090c")

    static func reference(_ publicKeyInfo: [UInt8], handle: KeyHandle = 0x1234) -> KeyReference {
        KeyReference(clusterID: "test-cluster", handle: handle, publicKeyInfo: publicKeyInfo, label: "unit")
    }

    /// An HSM key object for the local RSA key (no HSM is asked anything).
    static func rsaProviderKey() throws -> ProviderKey {
        try ProviderKey(reference: reference(rsaKey.publicKeyInfo))
    }

    /// Calls `body` with a reader over a real OSSL_PARAM array holding `values`.
    static func reading<R>(_ values: [ParamValue], _ body: (ParamReader) throws -> R) throws -> R {
        try parameterList(values).withUnsafePointer { try body(ParamReader(UnsafePointer($0))) }
    }

    /// Calls `body` with a reader over one octet-string parameter.
    static func reading<R>(octets key: StaticString, _ value: [UInt8], _ body: (ParamReader) throws -> R) throws -> R {
        let builder = try ParamBuilder()
        try builder.push(key, octets: value)
        return try builder.build().withUnsafePointer { try body(ParamReader(UnsafePointer($0))) }
    }

    enum Request {
        case string(StaticString)
        case int(StaticString)
        case octets(StaticString)
    }

    /// Asks `body` to answer `requests` as OpenSSL asks (buffers of the requested type) and
    /// returns what was answered, by key: strings as they are, integers and octets as text.
    static func answers(_ requests: [Request], _ body: (ParamWriter) throws -> Void) throws -> [String: String] {
        let buffers = requests.map { _ in UnsafeMutableRawPointer.allocate(byteCount: 256, alignment: 8) }
        defer { buffers.forEach { $0.deallocate() } }
        var params: [OSSL_PARAM] = zip(requests, buffers).map { request, buffer in
            switch request {
            case .string(let key):
                return OSSL_PARAM_construct_utf8_string(cString(key), buffer.assumingMemoryBound(to: CChar.self), 256)
            case .int(let key):
                return OSSL_PARAM_construct_int(cString(key), buffer.assumingMemoryBound(to: Int32.self))
            case .octets(let key):
                return OSSL_PARAM_construct_octet_string(cString(key), buffer, 256)
            }
        }
        params.append(OSSL_PARAM_construct_end())
        try params.withUnsafeMutableBufferPointer { try body(ParamWriter($0.baseAddress)) }
        var result: [String: String] = [:]
        for (index, request) in requests.enumerated() where OSSL_PARAM_modified(&params[index]) == 1 {
            switch request {
            case .string(let key):
                result[key.description] = String(cString: buffers[index].assumingMemoryBound(to: CChar.self))
            case .int(let key):
                result[key.description] = String(buffers[index].load(as: Int32.self))
            case .octets(let key):
                let bytes = UnsafeRawBufferPointer(start: buffers[index], count: params[index].return_size)
                result[key.description] = bytes.map { ($0 < 16 ? "0" : "") + String($0, radix: 16) }.joined()
            }
        }
        return result
    }

    static func hex(_ text: String) -> [UInt8] {
        var out: [UInt8] = []
        var index = text.startIndex
        while index < text.endIndex {
            let next = text.index(index, offsetBy: 2)
            out.append(UInt8(text[index..<next], radix: 16)!)
            index = next
        }
        return out
    }
}

/// Asserts that `body` throws a ProviderError with `reason` whose message contains `text`.
func assertRefused<T>(
    _ reason: ProviderReason, _ text: String, file: StaticString = #filePath, line: UInt = #line,
    _ body: () throws -> T
) {
    XCTAssertThrowsError(try body(), file: file, line: line) { error in
        guard let error = error as? ProviderError else {
            return XCTFail("not a ProviderError: \(error)", file: file, line: line)
        }
        XCTAssertEqual(error.reason, reason, error.message, file: file, line: line)
        XCTAssertTrue(error.message.contains(text), "'\(error.message)' does not say '\(text)'", file: file, line: line)
    }
}
