// Every dispatch slot the provider fills or reads, each typed by OpenSSL's accessor for it
// (core_dispatch.h). Nothing here is written by hand but the pairing of an id with its
// accessor.

import COpenSSL

/// What the core offers the provider at init.
enum CoreSlot {
    static let getParams = Slot(OSSL_FUNC_CORE_GET_PARAMS, OSSL_FUNC_core_get_params)
    static let newError = Slot(OSSL_FUNC_CORE_NEW_ERROR, OSSL_FUNC_core_new_error)
    static let setErrorDebug = Slot(OSSL_FUNC_CORE_SET_ERROR_DEBUG, OSSL_FUNC_core_set_error_debug)
    static let vsetError = Slot(OSSL_FUNC_CORE_VSET_ERROR, OSSL_FUNC_core_vset_error)
    static let bioReadEx = Slot(OSSL_FUNC_BIO_READ_EX, OSSL_FUNC_BIO_read_ex)
    static let bioWriteEx = Slot(OSSL_FUNC_BIO_WRITE_EX, OSSL_FUNC_BIO_write_ex)
    static let bioCtrl = Slot(OSSL_FUNC_BIO_CTRL, OSSL_FUNC_BIO_ctrl)
}

/// The provider's own functions.
enum ProviderSlot {
    static let teardown = Slot(OSSL_FUNC_PROVIDER_TEARDOWN, OSSL_FUNC_provider_teardown)
    static let gettableParams = Slot(OSSL_FUNC_PROVIDER_GETTABLE_PARAMS, OSSL_FUNC_provider_gettable_params)
    static let getParams = Slot(OSSL_FUNC_PROVIDER_GET_PARAMS, OSSL_FUNC_provider_get_params)
    static let queryOperation = Slot(OSSL_FUNC_PROVIDER_QUERY_OPERATION, OSSL_FUNC_provider_query_operation)
    static let getReasonStrings = Slot(OSSL_FUNC_PROVIDER_GET_REASON_STRINGS, OSSL_FUNC_provider_get_reason_strings)
}

enum KeyManagementSlot {
    static let new = Slot(OSSL_FUNC_KEYMGMT_NEW, OSSL_FUNC_keymgmt_new)
    static let free = Slot(OSSL_FUNC_KEYMGMT_FREE, OSSL_FUNC_keymgmt_free)
    static let load = Slot(OSSL_FUNC_KEYMGMT_LOAD, OSSL_FUNC_keymgmt_load)
    static let has = Slot(OSSL_FUNC_KEYMGMT_HAS, OSSL_FUNC_keymgmt_has)
    static let match = Slot(OSSL_FUNC_KEYMGMT_MATCH, OSSL_FUNC_keymgmt_match)
    static let importKey = Slot(OSSL_FUNC_KEYMGMT_IMPORT, OSSL_FUNC_keymgmt_import)
    static let importTypes = Slot(OSSL_FUNC_KEYMGMT_IMPORT_TYPES, OSSL_FUNC_keymgmt_import_types)
    static let exportKey = Slot(OSSL_FUNC_KEYMGMT_EXPORT, OSSL_FUNC_keymgmt_export)
    static let exportTypes = Slot(OSSL_FUNC_KEYMGMT_EXPORT_TYPES, OSSL_FUNC_keymgmt_export_types)
    static let getParams = Slot(OSSL_FUNC_KEYMGMT_GET_PARAMS, OSSL_FUNC_keymgmt_get_params)
    static let gettableParams = Slot(OSSL_FUNC_KEYMGMT_GETTABLE_PARAMS, OSSL_FUNC_keymgmt_gettable_params)
    static let queryOperationName = Slot(
        OSSL_FUNC_KEYMGMT_QUERY_OPERATION_NAME, OSSL_FUNC_keymgmt_query_operation_name)
    static let duplicate = Slot(OSSL_FUNC_KEYMGMT_DUP, OSSL_FUNC_keymgmt_dup)
    static let validate = Slot(OSSL_FUNC_KEYMGMT_VALIDATE, OSSL_FUNC_keymgmt_validate)
    static let generationInit = Slot(OSSL_FUNC_KEYMGMT_GEN_INIT, OSSL_FUNC_keymgmt_gen_init)
    static let generationSetParams = Slot(OSSL_FUNC_KEYMGMT_GEN_SET_PARAMS, OSSL_FUNC_keymgmt_gen_set_params)
    static let generationSettableParams = Slot(
        OSSL_FUNC_KEYMGMT_GEN_SETTABLE_PARAMS, OSSL_FUNC_keymgmt_gen_settable_params)
    static let generate = Slot(OSSL_FUNC_KEYMGMT_GEN, OSSL_FUNC_keymgmt_gen)
    static let generationCleanup = Slot(OSSL_FUNC_KEYMGMT_GEN_CLEANUP, OSSL_FUNC_keymgmt_gen_cleanup)
    static let generationSetTemplate = Slot(OSSL_FUNC_KEYMGMT_GEN_SET_TEMPLATE, OSSL_FUNC_keymgmt_gen_set_template)
    static let setParams = Slot(OSSL_FUNC_KEYMGMT_SET_PARAMS, OSSL_FUNC_keymgmt_set_params)
    static let settableParams = Slot(OSSL_FUNC_KEYMGMT_SETTABLE_PARAMS, OSSL_FUNC_keymgmt_settable_params)
}

enum KeyExchangeSlot {
    static let newContext = Slot(OSSL_FUNC_KEYEXCH_NEWCTX, OSSL_FUNC_keyexch_newctx)
    static let freeContext = Slot(OSSL_FUNC_KEYEXCH_FREECTX, OSSL_FUNC_keyexch_freectx)
    static let initialize = Slot(OSSL_FUNC_KEYEXCH_INIT, OSSL_FUNC_keyexch_init)
    static let setPeer = Slot(OSSL_FUNC_KEYEXCH_SET_PEER, OSSL_FUNC_keyexch_set_peer)
    static let derive = Slot(OSSL_FUNC_KEYEXCH_DERIVE, OSSL_FUNC_keyexch_derive)
}

enum SignatureSlot {
    static let newContext = Slot(OSSL_FUNC_SIGNATURE_NEWCTX, OSSL_FUNC_signature_newctx)
    static let freeContext = Slot(OSSL_FUNC_SIGNATURE_FREECTX, OSSL_FUNC_signature_freectx)
    static let duplicateContext = Slot(OSSL_FUNC_SIGNATURE_DUPCTX, OSSL_FUNC_signature_dupctx)
    static let signInit = Slot(OSSL_FUNC_SIGNATURE_SIGN_INIT, OSSL_FUNC_signature_sign_init)
    static let sign = Slot(OSSL_FUNC_SIGNATURE_SIGN, OSSL_FUNC_signature_sign)
    static let verifyInit = Slot(OSSL_FUNC_SIGNATURE_VERIFY_INIT, OSSL_FUNC_signature_verify_init)
    static let verify = Slot(OSSL_FUNC_SIGNATURE_VERIFY, OSSL_FUNC_signature_verify)
    static let verifyRecoverInit = Slot(
        OSSL_FUNC_SIGNATURE_VERIFY_RECOVER_INIT, OSSL_FUNC_signature_verify_recover_init)
    static let verifyRecover = Slot(OSSL_FUNC_SIGNATURE_VERIFY_RECOVER, OSSL_FUNC_signature_verify_recover)
    static let digestSignInit = Slot(OSSL_FUNC_SIGNATURE_DIGEST_SIGN_INIT, OSSL_FUNC_signature_digest_sign_init)
    static let digestSignUpdate = Slot(
        OSSL_FUNC_SIGNATURE_DIGEST_SIGN_UPDATE, OSSL_FUNC_signature_digest_sign_update)
    static let digestSignFinal = Slot(OSSL_FUNC_SIGNATURE_DIGEST_SIGN_FINAL, OSSL_FUNC_signature_digest_sign_final)
    static let digestSign = Slot(OSSL_FUNC_SIGNATURE_DIGEST_SIGN, OSSL_FUNC_signature_digest_sign)
    static let digestVerifyInit = Slot(
        OSSL_FUNC_SIGNATURE_DIGEST_VERIFY_INIT, OSSL_FUNC_signature_digest_verify_init)
    static let digestVerifyUpdate = Slot(
        OSSL_FUNC_SIGNATURE_DIGEST_VERIFY_UPDATE, OSSL_FUNC_signature_digest_verify_update)
    static let digestVerifyFinal = Slot(
        OSSL_FUNC_SIGNATURE_DIGEST_VERIFY_FINAL, OSSL_FUNC_signature_digest_verify_final)
    static let getContextParams = Slot(OSSL_FUNC_SIGNATURE_GET_CTX_PARAMS, OSSL_FUNC_signature_get_ctx_params)
    static let gettableContextParams = Slot(
        OSSL_FUNC_SIGNATURE_GETTABLE_CTX_PARAMS, OSSL_FUNC_signature_gettable_ctx_params)
    static let setContextParams = Slot(OSSL_FUNC_SIGNATURE_SET_CTX_PARAMS, OSSL_FUNC_signature_set_ctx_params)
    static let settableContextParams = Slot(
        OSSL_FUNC_SIGNATURE_SETTABLE_CTX_PARAMS, OSSL_FUNC_signature_settable_ctx_params)
    static let getDigestParams = Slot(
        OSSL_FUNC_SIGNATURE_GET_CTX_MD_PARAMS, OSSL_FUNC_signature_get_ctx_md_params)
    static let gettableDigestParams = Slot(
        OSSL_FUNC_SIGNATURE_GETTABLE_CTX_MD_PARAMS, OSSL_FUNC_signature_gettable_ctx_md_params)
    static let setDigestParams = Slot(
        OSSL_FUNC_SIGNATURE_SET_CTX_MD_PARAMS, OSSL_FUNC_signature_set_ctx_md_params)
    static let settableDigestParams = Slot(
        OSSL_FUNC_SIGNATURE_SETTABLE_CTX_MD_PARAMS, OSSL_FUNC_signature_settable_ctx_md_params)
}

enum AsymmetricCipherSlot {
    static let newContext = Slot(OSSL_FUNC_ASYM_CIPHER_NEWCTX, OSSL_FUNC_asym_cipher_newctx)
    static let freeContext = Slot(OSSL_FUNC_ASYM_CIPHER_FREECTX, OSSL_FUNC_asym_cipher_freectx)
    static let duplicateContext = Slot(OSSL_FUNC_ASYM_CIPHER_DUPCTX, OSSL_FUNC_asym_cipher_dupctx)
    static let encryptInit = Slot(OSSL_FUNC_ASYM_CIPHER_ENCRYPT_INIT, OSSL_FUNC_asym_cipher_encrypt_init)
    static let encrypt = Slot(OSSL_FUNC_ASYM_CIPHER_ENCRYPT, OSSL_FUNC_asym_cipher_encrypt)
    static let decryptInit = Slot(OSSL_FUNC_ASYM_CIPHER_DECRYPT_INIT, OSSL_FUNC_asym_cipher_decrypt_init)
    static let decrypt = Slot(OSSL_FUNC_ASYM_CIPHER_DECRYPT, OSSL_FUNC_asym_cipher_decrypt)
    static let getContextParams = Slot(OSSL_FUNC_ASYM_CIPHER_GET_CTX_PARAMS, OSSL_FUNC_asym_cipher_get_ctx_params)
    static let gettableContextParams = Slot(
        OSSL_FUNC_ASYM_CIPHER_GETTABLE_CTX_PARAMS, OSSL_FUNC_asym_cipher_gettable_ctx_params)
    static let setContextParams = Slot(OSSL_FUNC_ASYM_CIPHER_SET_CTX_PARAMS, OSSL_FUNC_asym_cipher_set_ctx_params)
    static let settableContextParams = Slot(
        OSSL_FUNC_ASYM_CIPHER_SETTABLE_CTX_PARAMS, OSSL_FUNC_asym_cipher_settable_ctx_params)
}

enum DecoderSlot {
    static let newContext = Slot(OSSL_FUNC_DECODER_NEWCTX, OSSL_FUNC_decoder_newctx)
    static let freeContext = Slot(OSSL_FUNC_DECODER_FREECTX, OSSL_FUNC_decoder_freectx)
    static let decode = Slot(OSSL_FUNC_DECODER_DECODE, OSSL_FUNC_decoder_decode)
}

enum EncoderSlot {
    static let newContext = Slot(OSSL_FUNC_ENCODER_NEWCTX, OSSL_FUNC_encoder_newctx)
    static let freeContext = Slot(OSSL_FUNC_ENCODER_FREECTX, OSSL_FUNC_encoder_freectx)
    static let doesSelection = Slot(OSSL_FUNC_ENCODER_DOES_SELECTION, OSSL_FUNC_encoder_does_selection)
    static let encode = Slot(OSSL_FUNC_ENCODER_ENCODE, OSSL_FUNC_encoder_encode)
}

enum StoreSlot {
    static let open = Slot(OSSL_FUNC_STORE_OPEN, OSSL_FUNC_store_open)
    static let attach = Slot(OSSL_FUNC_STORE_ATTACH, OSSL_FUNC_store_attach)
    static let settableContextParams = Slot(
        OSSL_FUNC_STORE_SETTABLE_CTX_PARAMS, OSSL_FUNC_store_settable_ctx_params)
    static let setContextParams = Slot(OSSL_FUNC_STORE_SET_CTX_PARAMS, OSSL_FUNC_store_set_ctx_params)
    static let load = Slot(OSSL_FUNC_STORE_LOAD, OSSL_FUNC_store_load)
    static let eof = Slot(OSSL_FUNC_STORE_EOF, OSSL_FUNC_store_eof)
    static let close = Slot(OSSL_FUNC_STORE_CLOSE, OSSL_FUNC_store_close)
}
