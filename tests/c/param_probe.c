/* Sets parameters the way openssl's -pkeyopt and -sigopt do (EVP_PKEY_CTX_ctrl_str) and
 * prints what the operation answers back, so one run with a software key and the default
 * provider and one with a fake PEM and the cloudhsm provider can be compared line by line.
 * The provider is loaded through OPENSSL_CONF.
 *
 * usage: param_probe key KEY NAME...            key parameters (EVP_PKEY_get_params), each read as
 *                                              an int, a string, bytes or a number by its name
 *        param_probe sign KEY DIGEST|- OPT...    digest-sign init, options, then get params
 *        param_probe prehash KEY OPT...          sign init (pre-hashed input), options, then get params
 *        param_probe setkey KEY NAME:VALUE...    key parameters set one at a time (EVP_PKEY_set_params,
 *                                              typed by the key's settable table), then read back
 *        param_probe decrypt KEY OPT...          decrypt init, options, then get params
 * KEY is a private key file (a fake PEM with the provider) or, for `key`, a public key.
 * Each line is "name: value" or "name: FAILED" followed by the error queue. */
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <stdio.h>
#include <string.h>

static void hex(const unsigned char *p, size_t n) {
    for (size_t i = 0; i < n; i++) printf("%02x", p[i]);
}

static void failed(const char *name) {
    printf("%s: FAILED\n", name);
    ERR_print_errors_fp(stdout);
}

static int set_options(EVP_PKEY_CTX *ctx, int argc, char **argv) {
    for (int i = 0; i < argc; i++) {
        char name[256];
        const char *colon = strchr(argv[i], ':');
        if (colon == NULL || (size_t)(colon - argv[i]) >= sizeof(name)) return 0;
        memcpy(name, argv[i], colon - argv[i]);
        name[colon - argv[i]] = 0;
        if (EVP_PKEY_CTX_ctrl_str(ctx, name, colon + 1) <= 0) {
            failed(argv[i]);
            return 0;
        }
        printf("set %s: ok\n", argv[i]);
    }
    return 1;
}

/* Asks for one operation parameter as a string, an integer and octets in turn. */
static void print_operation_param(EVP_PKEY_CTX *ctx, const char *name, int type) {
    OSSL_PARAM params[2];
    char text[256] = "";
    unsigned int number = 0;
    unsigned char octets[256];
    if (type == OSSL_PARAM_UTF8_STRING)
        params[0] = OSSL_PARAM_construct_utf8_string(name, text, sizeof(text));
    else if (type == OSSL_PARAM_UNSIGNED_INTEGER)
        params[0] = OSSL_PARAM_construct_uint(name, &number);
    else
        params[0] = OSSL_PARAM_construct_octet_string(name, octets, sizeof(octets));
    params[1] = OSSL_PARAM_construct_end();
    if (EVP_PKEY_CTX_get_params(ctx, params) <= 0) {
        failed(name);
        return;
    }
    if (!OSSL_PARAM_modified(&params[0])) {
        printf("%s: (not set)\n", name);
        return;
    }
    printf("%s: ", name);
    if (type == OSSL_PARAM_UTF8_STRING)
        printf("%s", text);
    else if (type == OSSL_PARAM_UNSIGNED_INTEGER)
        printf("%u", number);
    else
        hex(octets, params[0].return_size);
    printf("\n");
}

static int is_one_of(const char *name, const char *const *names) {
    for (; *names != NULL; names++)
        if (strcmp(name, *names) == 0) return 1;
    return 0;
}

static int key_params(EVP_PKEY *key, int argc, char **argv) {
    static const char *const ints[] = {"bits", "security-bits", "max-size", "decoded-from-explicit",
                                       "use-cofactor-flag", "include-public", NULL};
    static const char *const strings[] = {"default-digest", "mandatory-digest", "group", "encoding", "point-format",
                                          "field-type", NULL};
    static const char *const octets[] = {"encoded-pub-key", "pub", "generator", "seed", NULL};
    for (int i = 0; i < argc; i++) {
        const char *name = argv[i];
        BIGNUM *bn = NULL;
        int number = 0;
        char text[256];
        unsigned char bytes[512];
        size_t length = 0;
        if (is_one_of(name, ints)) {
            if (EVP_PKEY_get_int_param(key, name, &number)) printf("%s: %d\n", name, number);
            else failed(name);
        } else if (is_one_of(name, strings)) {
            if (EVP_PKEY_get_utf8_string_param(key, name, text, sizeof(text), NULL)) printf("%s: %s\n", name, text);
            else failed(name);
        } else if (is_one_of(name, octets)) {
            if (EVP_PKEY_get_octet_string_param(key, name, bytes, sizeof(bytes), &length)) {
                printf("%s: ", name);
                hex(bytes, length);
                printf("\n");
            } else {
                failed(name);
            }
        } else if (EVP_PKEY_get_bn_param(key, name, &bn)) {
            char *dec = BN_bn2hex(bn);
            printf("%s: %s\n", name, dec);
            OPENSSL_free(dec);
            BN_free(bn);
        } else {
            failed(name);
        }
    }
    return 0;
}

static void print_signature_params(EVP_PKEY_CTX *ctx) {
    print_operation_param(ctx, OSSL_SIGNATURE_PARAM_PAD_MODE, OSSL_PARAM_UTF8_STRING);
    print_operation_param(ctx, OSSL_SIGNATURE_PARAM_DIGEST, OSSL_PARAM_UTF8_STRING);
    print_operation_param(ctx, OSSL_SIGNATURE_PARAM_MGF1_DIGEST, OSSL_PARAM_UTF8_STRING);
    print_operation_param(ctx, OSSL_SIGNATURE_PARAM_PSS_SALTLEN, OSSL_PARAM_UTF8_STRING);
    print_operation_param(ctx, OSSL_SIGNATURE_PARAM_ALGORITHM_ID, OSSL_PARAM_OCTET_STRING);
    print_operation_param(ctx, OSSL_SIGNATURE_PARAM_DIGEST_SIZE, OSSL_PARAM_UNSIGNED_INTEGER);
}

static int sign_params(EVP_PKEY *key, const char *digest, int argc, char **argv) {
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    EVP_PKEY_CTX *ctx = NULL;
    if (EVP_DigestSignInit_ex(md, &ctx, strcmp(digest, "-") == 0 ? NULL : digest, NULL, NULL, key, NULL) != 1) {
        failed("init");
        return 1;
    }
    if (!set_options(ctx, argc, argv)) return 1;
    print_signature_params(ctx);
    EVP_MD_CTX_free(md);
    return 0;
}

static int prehash_params(EVP_PKEY *key, int argc, char **argv) {
    EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_pkey(NULL, key, NULL);
    if (ctx == NULL || EVP_PKEY_sign_init(ctx) != 1) {
        failed("init");
        return 1;
    }
    if (!set_options(ctx, argc, argv)) return 1;
    print_signature_params(ctx);
    EVP_PKEY_CTX_free(ctx);
    return 0;
}

/* Each NAME:VALUE on its own, as the key's settable table types it (as
 * OSSL_PARAM_allocate_from_text does for -pkeyopt), then the named parameter read back. */
static int set_key_params(EVP_PKEY *key, int argc, char **argv) {
    for (int i = 0; i < argc; i++) {
        char name[256];
        const char *colon = strchr(argv[i], ':');
        if (colon == NULL || (size_t)(colon - argv[i]) >= sizeof(name)) return 2;
        memcpy(name, argv[i], colon - argv[i]);
        name[colon - argv[i]] = 0;
        OSSL_PARAM params[2] = {OSSL_PARAM_END, OSSL_PARAM_END};
        int found = 0;
        if (!OSSL_PARAM_allocate_from_text(&params[0], EVP_PKEY_settable_params(key), name, colon + 1,
                                           strlen(colon + 1), &found)) {
            printf("set %s: not settable (%s)\n", argv[i], found ? "bad value" : "unknown name");
            continue;
        }
        if (EVP_PKEY_set_params(key, params) == 1) {
            printf("set %s: ok\n", argv[i]);
            /* "hexNAME" sets NAME from hex digits */
            char *args[] = {strncmp(name, "hex", 3) == 0 ? name + 3 : name};
            key_params(key, 1, args);
        } else {
            failed(argv[i]);
        }
        OPENSSL_free(params[0].data);
    }
    return 0;
}

static int decrypt_params(EVP_PKEY *key, int argc, char **argv) {
    EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_pkey(NULL, key, NULL);
    if (ctx == NULL || EVP_PKEY_decrypt_init(ctx) != 1) {
        failed("init");
        return 1;
    }
    if (!set_options(ctx, argc, argv)) return 1;
    print_operation_param(ctx, OSSL_ASYM_CIPHER_PARAM_PAD_MODE, OSSL_PARAM_UTF8_STRING);
    print_operation_param(ctx, OSSL_ASYM_CIPHER_PARAM_OAEP_DIGEST, OSSL_PARAM_UTF8_STRING);
    print_operation_param(ctx, OSSL_ASYM_CIPHER_PARAM_MGF1_DIGEST, OSSL_PARAM_UTF8_STRING);
    print_operation_param(ctx, OSSL_ASYM_CIPHER_PARAM_TLS_CLIENT_VERSION, OSSL_PARAM_UNSIGNED_INTEGER);
    print_operation_param(ctx, OSSL_ASYM_CIPHER_PARAM_TLS_NEGOTIATED_VERSION, OSSL_PARAM_UNSIGNED_INTEGER);
    EVP_PKEY_CTX_free(ctx);
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: %s key|sign|prehash|setkey|decrypt KEY ...\n", argv[0]);
        return 2;
    }
    OPENSSL_init_crypto(OPENSSL_INIT_LOAD_CONFIG, NULL);
    FILE *f = fopen(argv[2], "r");
    if (f == NULL) {
        perror(argv[2]);
        return 2;
    }
    EVP_PKEY *key = PEM_read_PrivateKey(f, NULL, NULL, NULL);
    if (key == NULL && strcmp(argv[1], "key") == 0) {
        /* Not a private key: the public key of one, read as applications read them. */
        ERR_clear_error();
        rewind(f);
        key = PEM_read_PUBKEY(f, NULL, NULL, NULL);
    }
    fclose(f);
    if (key == NULL) {
        failed("load key");
        return 1;
    }
    int rc;
    if (strcmp(argv[1], "key") == 0) rc = key_params(key, argc - 3, argv + 3);
    else if (strcmp(argv[1], "sign") == 0 && argc >= 4) rc = sign_params(key, argv[3], argc - 4, argv + 4);
    else if (strcmp(argv[1], "prehash") == 0) rc = prehash_params(key, argc - 3, argv + 3);
    else if (strcmp(argv[1], "setkey") == 0) rc = set_key_params(key, argc - 3, argv + 3);
    else if (strcmp(argv[1], "decrypt") == 0) rc = decrypt_params(key, argc - 3, argv + 3);
    else rc = 2;
    EVP_PKEY_free(key);
    return rc;
}
