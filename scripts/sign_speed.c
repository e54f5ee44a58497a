/* The channel benchmark's signing loop (scripts/bench_channel.py): loads a private key the
 * way nginx does (PEM_read_PrivateKey, providers from OPENSSL_CONF), so the same program
 * signs with a plain key file through the default provider or with a fake PEM through
 * cloudhsm.so. THREADS threads each sign SHA-256 PKCS#1 v1.5 digests (EVP_DigestSign, as
 * libssl does per handshake) for SECONDS after a warm-up, then one JSON line gives the
 * rate, the latency percentiles and the process's CPU time per signature over the timed
 * part only. The first signature is verified with the public key in a default-only
 * library context: a broken path fails here, not in the figures.
 *
 * usage: sign_speed KEY THREADS SECONDS [WARMUP_SIGNATURES_PER_THREAD] */
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/provider.h>
#include <openssl/x509.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MAX_THREADS 64
#define MAX_SAMPLES (1 << 20)

static EVP_PKEY *key;
static double seconds;
static int warmup = 20;
static pthread_barrier_t ready, started;
static struct timespec stop_at;

struct worker {
    pthread_t thread;
    double *latencies; /* microseconds */
    long count;
    long failures;
};

static double now_us(clockid_t clock) {
    struct timespec t;
    clock_gettime(clock, &t);
    return t.tv_sec * 1e6 + t.tv_nsec / 1e3;
}

static int sign_once(unsigned char *sig, size_t *siglen, const unsigned char *message, size_t length) {
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    int ok = md != NULL && EVP_DigestSignInit_ex(md, NULL, "SHA256", NULL, NULL, key, NULL) == 1
        && EVP_DigestSign(md, sig, siglen, message, length) == 1;
    EVP_MD_CTX_free(md);
    return ok;
}

static void *work(void *argument) {
    struct worker *w = argument;
    unsigned char message[32], sig[1024];
    memset(message, 0x5a, sizeof message);
    for (int i = 0; i < warmup; i++) {
        size_t siglen = sizeof sig;
        if (!sign_once(sig, &siglen, message, sizeof message)) w->failures++;
    }
    pthread_barrier_wait(&ready);
    pthread_barrier_wait(&started);
    double stop = stop_at.tv_sec * 1e6 + stop_at.tv_nsec / 1e3;
    while (w->count < MAX_SAMPLES) {
        double began = now_us(CLOCK_MONOTONIC);
        if (began >= stop) break;
        size_t siglen = sizeof sig;
        message[0] = (unsigned char)w->count;
        if (!sign_once(sig, &siglen, message, sizeof message)) {
            w->failures++;
            continue;
        }
        w->latencies[w->count++] = now_us(CLOCK_MONOTONIC) - began;
    }
    return NULL;
}

static int by_value(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static int verify_one(void) {
    OSSL_LIB_CTX *plain = OSSL_LIB_CTX_new();
    OSSL_PROVIDER_load(plain, "default");
    unsigned char *der = NULL;
    int length = i2d_PUBKEY(key, &der);
    const unsigned char *p = der;
    EVP_PKEY *verifier = length > 0 ? d2i_PUBKEY_ex(NULL, &p, length, plain, NULL) : NULL;
    unsigned char message[] = "sign_speed", sig[1024];
    size_t siglen = sizeof sig;
    int ok = verifier != NULL && sign_once(sig, &siglen, message, sizeof message);
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    ok = ok && EVP_DigestVerifyInit_ex(md, NULL, "SHA256", plain, NULL, verifier, NULL) == 1
        && EVP_DigestVerify(md, sig, siglen, message, sizeof message) == 1;
    EVP_MD_CTX_free(md);
    EVP_PKEY_free(verifier);
    OPENSSL_free(der);
    OSSL_LIB_CTX_free(plain);
    return ok;
}

int main(int argc, char **argv) {
    if (argc < 4 || argc > 5) {
        fprintf(stderr, "usage: %s KEY THREADS SECONDS [WARMUP_SIGNATURES_PER_THREAD]\n", argv[0]);
        return 2;
    }
    int threads = atoi(argv[2]);
    seconds = atof(argv[3]);
    if (argc == 5) warmup = atoi(argv[4]);
    if (threads < 1 || threads > MAX_THREADS || seconds <= 0 || warmup < 0) {
        fprintf(stderr, "sign_speed: THREADS 1-%d, SECONDS > 0, WARMUP >= 0\n", MAX_THREADS);
        return 2;
    }
    OPENSSL_init_crypto(OPENSSL_INIT_LOAD_CONFIG, NULL);
    FILE *f = fopen(argv[1], "r");
    key = f ? PEM_read_PrivateKey(f, NULL, NULL, NULL) : NULL;
    if (f) fclose(f);
    if (key == NULL) {
        fprintf(stderr, "sign_speed: cannot load %s\n", argv[1]);
        ERR_print_errors_fp(stderr);
        return 1;
    }
    if (!verify_one()) {
        fprintf(stderr, "sign_speed: the first signature did not verify\n");
        ERR_print_errors_fp(stderr);
        return 1;
    }
    struct worker workers[MAX_THREADS] = {0};
    pthread_barrier_init(&ready, NULL, threads + 1);
    pthread_barrier_init(&started, NULL, threads + 1);
    for (int i = 0; i < threads; i++) {
        workers[i].latencies = malloc(sizeof(double) * MAX_SAMPLES);
        pthread_create(&workers[i].thread, NULL, work, &workers[i]);
    }
    pthread_barrier_wait(&ready);
    double cpu_before = now_us(CLOCK_PROCESS_CPUTIME_ID), wall_before = now_us(CLOCK_MONOTONIC);
    clock_gettime(CLOCK_MONOTONIC, &stop_at);
    stop_at.tv_sec += (time_t)seconds;
    stop_at.tv_nsec += (long)((seconds - (time_t)seconds) * 1e9);
    if (stop_at.tv_nsec >= 1000000000L) {
        stop_at.tv_sec++;
        stop_at.tv_nsec -= 1000000000L;
    }
    pthread_barrier_wait(&started);
    long total = 0, failures = 0;
    for (int i = 0; i < threads; i++) {
        pthread_join(workers[i].thread, NULL);
        total += workers[i].count;
        failures += workers[i].failures;
    }
    double wall = now_us(CLOCK_MONOTONIC) - wall_before, cpu = now_us(CLOCK_PROCESS_CPUTIME_ID) - cpu_before;
    double *all = malloc(sizeof(double) * (total ? total : 1));
    long n = 0;
    for (int i = 0; i < threads; i++)
        for (long j = 0; j < workers[i].count; j++) all[n++] = workers[i].latencies[j];
    qsort(all, n, sizeof(double), by_value);
    double p50 = n ? all[(n - 1) / 2] : 0, p99 = n ? all[(long)((n - 1) * 0.99)] : 0;
    printf("{\"threads\": %d, \"signatures\": %ld, \"failures\": %ld, \"seconds\": %.3f, "
           "\"per_second\": %.1f, \"p50_us\": %.1f, \"p99_us\": %.1f, \"cpu_us_per_signature\": %.1f}\n",
           threads, total, failures, wall / 1e6, total / (wall / 1e6), p50, p99, total ? cpu / total : 0);
    if (failures) ERR_print_errors_fp(stderr);
    return failures ? 3 : 0;
}
