/* Loads a fake PEM key (provider via OPENSSL_CONF), signs in the parent, forks children
 * that each sign with their own HSM connections, and signs again in the parent: the
 * provider must neither hang nor share a connection across fork (DESIGN.md rule 1).
 * Every signature is verified with the public key in a default-only library context.
 * usage: fork_sign KEY CHILDREN SIGNATURES_PER_PROCESS */
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/provider.h>
#include <openssl/x509.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <dirent.h>
#include <unistd.h>

static EVP_PKEY *verifier;

/* Threads in this process: nginx forks after loading keys, and a thread started by then
 * would not exist in the children (DESIGN.md, hard rule 1). */
static int thread_count(void) {
    int n = 0;
    DIR *d = opendir("/proc/self/task");
    if (d == NULL) return -1;
    for (struct dirent *e; (e = readdir(d)) != NULL;)
        if (e->d_name[0] != '.') n++;
    closedir(d);
    return n;
}
static OSSL_LIB_CTX *plain;

static int sign_and_verify(EVP_PKEY *key, const char *who, int round) {
    char message[64];
    snprintf(message, sizeof message, "%s %d %d", who, (int)getpid(), round);
    unsigned char sig[1024];
    size_t siglen = sizeof sig;
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    int ok = EVP_DigestSignInit_ex(md, NULL, "SHA256", NULL, NULL, key, NULL) == 1
        && EVP_DigestSign(md, sig, &siglen, (unsigned char *)message, strlen(message)) == 1;
    EVP_MD_CTX_free(md);
    if (!ok) {
        printf("%s %d: sign failed\n", who, (int)getpid());
        ERR_print_errors_fp(stdout);
        return 0;
    }
    md = EVP_MD_CTX_new();
    ok = EVP_DigestVerifyInit_ex(md, NULL, "SHA256", plain, NULL, verifier, NULL) == 1
        && EVP_DigestVerify(md, sig, siglen, (unsigned char *)message, strlen(message)) == 1;
    EVP_MD_CTX_free(md);
    if (!ok) printf("%s %d: signature did not verify\n", who, (int)getpid());
    return ok;
}

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: %s KEY CHILDREN SIGNATURES\n", argv[0]);
        return 2;
    }
    int children = atoi(argv[2]), rounds = atoi(argv[3]);
    OPENSSL_init_crypto(OPENSSL_INIT_LOAD_CONFIG, NULL);
    FILE *f = fopen(argv[1], "r");
    EVP_PKEY *key = f ? PEM_read_PrivateKey(f, NULL, NULL, NULL) : NULL;
    if (f) fclose(f);
    if (key == NULL) {
        printf("cannot load %s\n", argv[1]);
        ERR_print_errors_fp(stdout);
        return 1;
    }
    printf("threads after loading the key: %d\n", thread_count());
    plain = OSSL_LIB_CTX_new();
    OSSL_PROVIDER_load(plain, "default");
    unsigned char *der = NULL;
    int len = i2d_PUBKEY(key, &der);
    const unsigned char *p = der;
    verifier = d2i_PUBKEY_ex(NULL, &p, len, plain, NULL);
    if (verifier == NULL) {
        printf("cannot read the public key\n");
        return 1;
    }

    int failures = 0;
    for (int r = 0; r < rounds; r++) failures += !sign_and_verify(key, "parent-before", r);
    printf("threads after signing: %d\n", thread_count());
    fflush(stdout);
    pid_t pids[64];
    for (int c = 0; c < children && c < 64; c++) {
        pids[c] = fork();
        if (pids[c] == 0) {
            int bad = 0;
            for (int r = 0; r < rounds; r++) bad += !sign_and_verify(key, "child", r);
            printf("child %d: %d of %d signatures ok\n", (int)getpid(), rounds - bad, rounds);
            fflush(stdout);
            _exit(bad ? 1 : 0);
        }
    }
    for (int r = 0; r < rounds; r++) failures += !sign_and_verify(key, "parent-during", r);
    for (int c = 0; c < children && c < 64; c++) {
        int status = 0;
        waitpid(pids[c], &status, 0);
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) failures++;
    }
    for (int r = 0; r < rounds; r++) failures += !sign_and_verify(key, "parent-after", r);
    printf("fork_sign: %d failures\n", failures);
    return failures ? 1 : 0;
}
