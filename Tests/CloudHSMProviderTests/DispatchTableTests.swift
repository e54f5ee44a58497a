// The typed dispatch builder: entries go in through slots typed by OpenSSL's accessors and
// come back out through those same accessors, callable; the provider's tables fill each
// slot OpenSSL needs exactly once. (That a function of the wrong signature is refused is a
// compile-time property: `DispatchTable.add(SignatureSlot.freeContext, someNewctx)` does
// not build.)

import COpenSSL
import XCTest

@testable import CloudHSMProvider

nonisolated(unsafe) private var calls: [String] = []

private func testNewContext(_ provider: UnsafeMutableRawPointer?, _ properties: UnsafePointer<CChar>?)
    -> UnsafeMutableRawPointer?
{
    calls.append("newctx \(properties.map { String(cString: $0) } ?? "nil")")
    return UnsafeMutableRawPointer(bitPattern: 0x5151)
}

private func testFreeContext(_ context: UnsafeMutableRawPointer?) {
    calls.append("freectx \(context.map { String(UInt(bitPattern: $0), radix: 16) } ?? "nil")")
}

final class DispatchTableTests: XCTestCase {
    /// The slot ids of a finished table, read the way OpenSSL reads it.
    private func ids(_ table: UnsafePointer<OSSL_DISPATCH>) -> [Int32] {
        var ids: [Int32] = []
        var entry = table
        while entry.pointee.function_id != 0 {
            XCTAssertNotNil(entry.pointee.function, "slot \(entry.pointee.function_id) has no function")
            ids.append(entry.pointee.function_id)
            entry += 1
        }
        return ids
    }

    func testEntriesComeBackThroughOpenSSLsOwnAccessorsAndCall() throws {
        calls = []
        var table = DispatchTable()
        table.add(SignatureSlot.newContext, testNewContext)
        table.add(SignatureSlot.freeContext, testFreeContext)
        let finished = table.finished()
        XCTAssertEqual(ids(finished), [OSSL_FUNC_SIGNATURE_NEWCTX, OSSL_FUNC_SIGNATURE_FREECTX])

        // OpenSSL's accessor casts the entry back to the slot's C type: calling it must
        // reach our function with our arguments.
        let newContext = try XCTUnwrap(OSSL_FUNC_signature_newctx(finished))
        let made = newContext(nil, "provider=cloudhsm")
        XCTAssertEqual(made, UnsafeMutableRawPointer(bitPattern: 0x5151))
        let freeContext = try XCTUnwrap(SignatureSlot.freeContext.function(in: finished))
        freeContext(made)
        XCTAssertEqual(calls, ["newctx provider=cloudhsm", "freectx 5151"])
    }

    func testSlotLookupFindsOnlyWhatIsThere() {
        var table = DispatchTable()
        table.add(SignatureSlot.freeContext, testFreeContext)
        let finished = table.finished()
        XCTAssertNotNil(SignatureSlot.freeContext.function(in: finished))
        XCTAssertNil(SignatureSlot.newContext.function(in: finished))
        XCTAssertNil(SignatureSlot.newContext.function(in: nil))
    }

    func testSignatureTablesFillEverySlotOnce() {
        for slots in [ids(RSASignature.dispatch), ids(ECDSASignature.dispatch)] {
            XCTAssertEqual(Set(slots).count, slots.count, "a slot is filled twice")
            for needed in [
                OSSL_FUNC_SIGNATURE_NEWCTX, OSSL_FUNC_SIGNATURE_FREECTX, OSSL_FUNC_SIGNATURE_DUPCTX,
                OSSL_FUNC_SIGNATURE_SIGN_INIT, OSSL_FUNC_SIGNATURE_SIGN, OSSL_FUNC_SIGNATURE_VERIFY_INIT,
                OSSL_FUNC_SIGNATURE_VERIFY, OSSL_FUNC_SIGNATURE_VERIFY_RECOVER_INIT, OSSL_FUNC_SIGNATURE_VERIFY_RECOVER,
                OSSL_FUNC_SIGNATURE_DIGEST_SIGN_INIT, OSSL_FUNC_SIGNATURE_DIGEST_SIGN_UPDATE,
                OSSL_FUNC_SIGNATURE_DIGEST_SIGN_FINAL, OSSL_FUNC_SIGNATURE_DIGEST_SIGN,
                OSSL_FUNC_SIGNATURE_DIGEST_VERIFY_INIT, OSSL_FUNC_SIGNATURE_DIGEST_VERIFY_UPDATE,
                OSSL_FUNC_SIGNATURE_DIGEST_VERIFY_FINAL, OSSL_FUNC_SIGNATURE_GET_CTX_PARAMS,
                OSSL_FUNC_SIGNATURE_GETTABLE_CTX_PARAMS, OSSL_FUNC_SIGNATURE_SET_CTX_PARAMS,
                OSSL_FUNC_SIGNATURE_SETTABLE_CTX_PARAMS, OSSL_FUNC_SIGNATURE_GET_CTX_MD_PARAMS,
                OSSL_FUNC_SIGNATURE_SET_CTX_MD_PARAMS,
            ] {
                XCTAssertTrue(slots.contains(needed), "signature slot \(needed) is empty")
            }
        }
    }

    func testKeyManagementAndCipherTablesFillEverySlotOnce() {
        let sharedKeyManagement = [
            OSSL_FUNC_KEYMGMT_NEW, OSSL_FUNC_KEYMGMT_FREE, OSSL_FUNC_KEYMGMT_LOAD, OSSL_FUNC_KEYMGMT_HAS,
            OSSL_FUNC_KEYMGMT_MATCH, OSSL_FUNC_KEYMGMT_IMPORT, OSSL_FUNC_KEYMGMT_IMPORT_TYPES,
            OSSL_FUNC_KEYMGMT_EXPORT, OSSL_FUNC_KEYMGMT_EXPORT_TYPES, OSSL_FUNC_KEYMGMT_GET_PARAMS,
            OSSL_FUNC_KEYMGMT_GETTABLE_PARAMS, OSSL_FUNC_KEYMGMT_QUERY_OPERATION_NAME,
            OSSL_FUNC_KEYMGMT_DUP, OSSL_FUNC_KEYMGMT_VALIDATE, OSSL_FUNC_KEYMGMT_GEN_INIT,
            OSSL_FUNC_KEYMGMT_GEN_SET_TEMPLATE, OSSL_FUNC_KEYMGMT_GEN_SET_PARAMS,
            OSSL_FUNC_KEYMGMT_GEN_SETTABLE_PARAMS, OSSL_FUNC_KEYMGMT_GEN, OSSL_FUNC_KEYMGMT_GEN_CLEANUP,
        ]
        for (table, needed) in [
            (RSAKeyType.keyManagement, sharedKeyManagement),
            // EC keys take domain parameters (the group) on their own, as the default provider's do.
            (
                ECKeyType.keyManagement,
                sharedKeyManagement + [OSSL_FUNC_KEYMGMT_SET_PARAMS, OSSL_FUNC_KEYMGMT_SETTABLE_PARAMS]
            ),
            (
                ECDHKeyExchange.dispatch,
                [
                    OSSL_FUNC_KEYEXCH_NEWCTX, OSSL_FUNC_KEYEXCH_FREECTX, OSSL_FUNC_KEYEXCH_INIT,
                    OSSL_FUNC_KEYEXCH_SET_PEER, OSSL_FUNC_KEYEXCH_DERIVE,
                ]
            ),
            (
                RSAAsymmetricCipher.dispatch,
                [
                    OSSL_FUNC_ASYM_CIPHER_NEWCTX, OSSL_FUNC_ASYM_CIPHER_FREECTX, OSSL_FUNC_ASYM_CIPHER_DUPCTX,
                    OSSL_FUNC_ASYM_CIPHER_ENCRYPT_INIT, OSSL_FUNC_ASYM_CIPHER_ENCRYPT,
                    OSSL_FUNC_ASYM_CIPHER_DECRYPT_INIT, OSSL_FUNC_ASYM_CIPHER_DECRYPT,
                    OSSL_FUNC_ASYM_CIPHER_GET_CTX_PARAMS, OSSL_FUNC_ASYM_CIPHER_GETTABLE_CTX_PARAMS,
                    OSSL_FUNC_ASYM_CIPHER_SET_CTX_PARAMS, OSSL_FUNC_ASYM_CIPHER_SETTABLE_CTX_PARAMS,
                ]
            ),
            (
                KeyReferenceDecoder.derDispatch,
                [OSSL_FUNC_DECODER_NEWCTX, OSSL_FUNC_DECODER_FREECTX, OSSL_FUNC_DECODER_DECODE]
            ),
            (
                KeyReferenceEncoder.pemDispatch,
                [
                    OSSL_FUNC_ENCODER_NEWCTX, OSSL_FUNC_ENCODER_FREECTX, OSSL_FUNC_ENCODER_DOES_SELECTION,
                    OSSL_FUNC_ENCODER_ENCODE,
                ]
            ),
        ] {
            let slots = ids(table)
            XCTAssertEqual(Set(slots).count, slots.count, "a slot is filled twice")
            XCTAssertEqual(Set(slots), Set(needed))
        }
    }

    func testKeyManagementAnswersThroughItsTable() throws {
        let table = RSAKeyType.keyManagement
        let name = try XCTUnwrap(KeyManagementSlot.queryOperationName.function(in: table))
        XCTAssertEqual(name(OSSL_OP_SIGNATURE).map { String(cString: $0) }, "RSA")
        let gettable = try XCTUnwrap(KeyManagementSlot.gettableParams.function(in: table)?(nil))
        for key in ["bits", "security-bits", "max-size", "default-digest", "n", "e", "d", "rsa-factor1"] {
            XCTAssertNotNil(OSSL_PARAM_locate_const(gettable, key), "\(key) is not listed")
        }
        let settable = try XCTUnwrap(KeyManagementSlot.generationSettableParams.function(in: table)?(nil, nil))
        for key in ["bits", "primes", "e"] {
            XCTAssertNotNil(OSSL_PARAM_locate_const(settable, key), "\(key) is not settable")
        }
    }

    func testAlgorithmTablesListEveryKeyType() {
        // Key exchange is listed so that ECDH on an HSM key is refused by name (ECDHKeyExchange).
        for operation in [
            OSSL_OP_KEYMGMT, OSSL_OP_SIGNATURE, OSSL_OP_ASYM_CIPHER, OSSL_OP_KEYEXCH, OSSL_OP_ENCODER, OSSL_OP_DECODER,
        ] {
            guard let table = Algorithms.table(for: operation) else { return XCTFail("no table for \(operation)") }
            XCTAssertNotNil(table.pointee.algorithm_names)
            XCTAssertNotNil(table.pointee.implementation)
        }
        XCTAssertNil(Algorithms.table(for: OSSL_OP_KDF), "nothing else is offered")
    }
}
