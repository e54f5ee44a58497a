/* Checks that a fake PEM key and its certificate match through OpenSSL's own APIs, in
 * both orders: X509_check_private_key, and SSL_CTX_check_private_key after loading the
 * certificate first and the key first. The provider is loaded through OPENSSL_CONF.
 * usage: check_private_key KEY CERT */
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <stdio.h>

static int report(const char *what, int ok) {
    printf("%s: %s\n", what, ok ? "ok" : "FAILED");
    if (!ok) ERR_print_errors_fp(stdout);
    return ok;
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: %s KEY CERT\n", argv[0]);
        return 2;
    }
    OPENSSL_init_ssl(OPENSSL_INIT_LOAD_CONFIG, NULL);
    FILE *kf = fopen(argv[1], "r"), *cf = fopen(argv[2], "r");
    if (kf == NULL || cf == NULL) {
        perror("open");
        return 2;
    }
    EVP_PKEY *key = PEM_read_PrivateKey(kf, NULL, NULL, NULL);
    X509 *cert = PEM_read_X509(cf, NULL, NULL, NULL);
    fclose(kf);
    fclose(cf);
    int ok = report("load key", key != NULL) & report("load certificate", cert != NULL);
    if (!ok) return 1;
    ok &= report("X509_check_private_key", X509_check_private_key(cert, key) == 1);

    SSL_CTX *a = SSL_CTX_new(TLS_server_method());
    ok &= report("certificate then key: SSL_CTX_use_certificate", SSL_CTX_use_certificate(a, cert) == 1);
    ok &= report("certificate then key: SSL_CTX_use_PrivateKey", SSL_CTX_use_PrivateKey(a, key) == 1);
    ok &= report("certificate then key: SSL_CTX_check_private_key", SSL_CTX_check_private_key(a) == 1);

    SSL_CTX *b = SSL_CTX_new(TLS_server_method());
    ok &= report("key then certificate: SSL_CTX_use_PrivateKey", SSL_CTX_use_PrivateKey(b, key) == 1);
    ok &= report("key then certificate: SSL_CTX_use_certificate", SSL_CTX_use_certificate(b, cert) == 1);
    ok &= report("key then certificate: SSL_CTX_check_private_key", SSL_CTX_check_private_key(b) == 1);

    SSL_CTX_free(a);
    SSL_CTX_free(b);
    X509_free(cert);
    EVP_PKEY_free(key);
    return ok ? 0 : 1;
}
