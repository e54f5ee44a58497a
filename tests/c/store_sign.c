/* An OSSL_STORE program that knows nothing about HSMs: it opens a key by URI with
 * OSSL_STORE_open, as an application that takes `cloudhsm:` (or `pkcs11:`) URIs does,
 * loads every private key the URI yields, and signs a file with the first one
 * (SHA-256). The provider comes from OPENSSL_CONF.
 *
 *   store_sign URI MESSAGE SIGNATURE
 *
 * Prints "keys: N" and, per key, "key: TYPE BITS"; exits 1 with OpenSSL's errors on
 * stderr when the store cannot be opened, a load fails or no key was found. */
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/store.h>
#include <stdio.h>
#include <stdlib.h>

static int fail(const char *what) {
    fprintf(stderr, "store_sign: %s\n", what);
    ERR_print_errors_fp(stderr);
    return 1;
}

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: store_sign URI MESSAGE SIGNATURE\n");
        return 2;
    }
    OSSL_STORE_CTX *store = OSSL_STORE_open(argv[1], NULL, NULL, NULL, NULL);
    if (store == NULL) return fail("cannot open the URI");
    if (!OSSL_STORE_expect(store, OSSL_STORE_INFO_PKEY)) return fail("cannot ask for private keys");

    EVP_PKEY *first = NULL;
    int count = 0;
    while (!OSSL_STORE_eof(store)) {
        OSSL_STORE_INFO *info = OSSL_STORE_load(store);
        if (info == NULL) {
            if (OSSL_STORE_error(store)) return fail("loading from the store failed");
            continue;
        }
        if (OSSL_STORE_INFO_get_type(info) == OSSL_STORE_INFO_PKEY) {
            EVP_PKEY *key = OSSL_STORE_INFO_get1_PKEY(info);
            printf("key: %s %d\n", EVP_PKEY_get0_type_name(key), EVP_PKEY_get_bits(key));
            if (first == NULL) first = key;
            else EVP_PKEY_free(key);
            count++;
        }
        OSSL_STORE_INFO_free(info);
    }
    OSSL_STORE_close(store);
    printf("keys: %d\n", count);
    if (first == NULL) return fail("the URI yielded no private key");

    FILE *in = fopen(argv[2], "rb");
    if (in == NULL) return fail("cannot read the message");
    unsigned char message[65536];
    size_t length = fread(message, 1, sizeof(message), in);
    fclose(in);

    EVP_MD_CTX *md = EVP_MD_CTX_new();
    size_t size = 0;
    if (md == NULL || EVP_DigestSignInit(md, NULL, EVP_sha256(), NULL, first) != 1
        || EVP_DigestSign(md, NULL, &size, message, length) != 1)
        return fail("cannot start signing");
    unsigned char *signature = malloc(size);
    if (signature == NULL || EVP_DigestSign(md, signature, &size, message, length) != 1)
        return fail("signing failed");
    FILE *out = fopen(argv[3], "wb");
    if (out == NULL || fwrite(signature, 1, size, out) != size || fclose(out) != 0)
        return fail("cannot write the signature");
    free(signature);
    EVP_MD_CTX_free(md);
    EVP_PKEY_free(first);
    return 0;
}
