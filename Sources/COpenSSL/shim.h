/* The OpenSSL 3 headers the package uses, and small inline helpers for the macros
 * and variadic functions that Swift cannot import. */
#ifndef COPENSSL_SHIM_H
#define COPENSSL_SHIM_H

#include <stdarg.h>
#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/core.h>
#include <openssl/core_dispatch.h>
#include <openssl/core_names.h>
#include <openssl/core_object.h>
#include <openssl/crypto.h>
#include <openssl/decoder.h>
#include <openssl/encoder.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/params.h>
#include <openssl/param_build.h>
#include <openssl/pem.h>
#include <openssl/provider.h>
#include <openssl/rand.h>
#include <openssl/rsa.h>
#include <openssl/ssl.h>
#include <openssl/store.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

static inline long cshim_SSL_CTX_set_min_proto_version(SSL_CTX *ctx, int version) {
    return SSL_CTX_set_min_proto_version(ctx, version);
}
static inline long cshim_SSL_CTX_set_mode(SSL_CTX *ctx, long mode) {
    return SSL_CTX_set_mode(ctx, mode);
}
static inline long cshim_SSL_set_tlsext_host_name(SSL *ssl, const char *name) {
    return SSL_set_tlsext_host_name(ssl, name);
}
static inline int cshim_BIO_get_mem_data(BIO *bio, char **data) {
    return (int)BIO_get_mem_data(bio, data);
}
static inline uint64_t cshim_SSL_OP_IGNORE_UNEXPECTED_EOF(void) { return SSL_OP_IGNORE_UNEXPECTED_EOF; }
static inline int cshim_EVP_PKEY_PUBLIC_KEY(void) { return EVP_PKEY_PUBLIC_KEY; }
static inline int cshim_OSSL_KEYMGMT_SELECT_KEYPAIR(void) { return OSSL_KEYMGMT_SELECT_KEYPAIR; }

/* Calls a provider core's vset_error (a va_list function, which Swift cannot call)
 * with a preformatted message. */
typedef void (*cshim_vset_error_fn)(const OSSL_CORE_HANDLE *, uint32_t, const char *, va_list);
static inline void cshim_vset_error_varargs(void (*fn)(void), const OSSL_CORE_HANDLE *handle, uint32_t reason,
                                            const char *format, ...) {
    va_list arguments;
    va_start(arguments, format);
    ((cshim_vset_error_fn)fn)(handle, reason, format, arguments);
    va_end(arguments);
}
static inline void cshim_vset_error(void (*fn)(void), const OSSL_CORE_HANDLE *handle, uint32_t reason,
                                    const char *message) {
    cshim_vset_error_varargs(fn, handle, reason, "%s", message);
}
#endif
