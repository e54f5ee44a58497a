/* Reads a private key and then a certificate from one BIO, as a server does with a
 * combined key-and-certificate file: the key must be read without swallowing what follows
 * it. The provider is loaded through OPENSSL_CONF.
 * usage: read_key_then_cert FILE   (prints "key: ok|FAILED", "certificate: ok|FAILED") */
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <stdio.h>

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: %s FILE\n", argv[0]);
        return 2;
    }
    OPENSSL_init_ssl(OPENSSL_INIT_LOAD_CONFIG, NULL);
    BIO *in = BIO_new_file(argv[1], "r");
    if (in == NULL) {
        perror(argv[1]);
        return 2;
    }
    EVP_PKEY *key = PEM_read_bio_PrivateKey(in, NULL, NULL, NULL);
    printf("key: %s\n", key != NULL ? "ok" : "FAILED");
    if (key == NULL) ERR_print_errors_fp(stdout);
    X509 *cert = PEM_read_bio_X509(in, NULL, NULL, NULL);
    printf("certificate: %s\n", cert != NULL ? "ok" : "FAILED");
    if (cert == NULL) ERR_print_errors_fp(stdout);
    int ok = key != NULL && cert != NULL && X509_check_private_key(cert, key) == 1;
    printf("match: %s\n", ok ? "ok" : "FAILED");
    X509_free(cert);
    EVP_PKEY_free(key);
    BIO_free(in);
    return ok ? 0 : 1;
}
