/* A minimal TLS server that knows nothing about HSMs: it loads its certificate and key
 * with SSL_CTX_use_certificate_file / SSL_CTX_use_PrivateKey_file, exactly as any
 * libssl application does. Given a fake PEM and OPENSSL_CONF pointing at provider.cnf,
 * every private-key operation of every handshake runs on the HSM cluster.
 *
 * usage: tls_server PORT CERT KEY
 * Answers each connection with a small HTTP response; stops on SIGTERM or SIGINT. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static volatile sig_atomic_t stopping = 0;
static void stop(int sig) { (void)sig; stopping = 1; }

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: %s PORT CERT KEY\n", argv[0]);
        return 2;
    }
    /* Reads OPENSSL_CONF, which loads the cloudhsm provider. */
    OPENSSL_init_ssl(OPENSSL_INIT_LOAD_CONFIG, NULL);
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (ctx == NULL || SSL_CTX_use_certificate_file(ctx, argv[2], SSL_FILETYPE_PEM) != 1
        || SSL_CTX_use_PrivateKey_file(ctx, argv[3], SSL_FILETYPE_PEM) != 1
        || SSL_CTX_check_private_key(ctx) != 1) {
        fprintf(stderr, "tls_server: cannot use %s and %s:\n", argv[2], argv[3]);
        ERR_print_errors_fp(stderr);
        return 1;
    }
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);

    int fd = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(argv[1]))};
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(fd, (struct sockaddr *)&addr, sizeof addr) != 0 || listen(fd, 64) != 0) {
        perror("tls_server: listen");
        return 1;
    }
    struct sigaction sa = {.sa_handler = stop};
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    printf("tls_server listening on 127.0.0.1:%s\n", argv[1]);
    fflush(stdout);

    while (!stopping) {
        int client = accept(fd, NULL, NULL);
        if (client < 0) continue;
        SSL *ssl = SSL_new(ctx);
        SSL_set_fd(ssl, client);
        if (SSL_accept(ssl) == 1) {
            char request[4096];
            (void)SSL_read(ssl, request, sizeof request);
            const char *body = "hello from tls_server\n";
            char response[256];
            int n = snprintf(response, sizeof response,
                             "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %zu\r\n"
                             "Connection: close\r\n\r\n%s",
                             strlen(body), body);
            SSL_write(ssl, response, n);
            SSL_shutdown(ssl);
        } else {
            fprintf(stderr, "tls_server: handshake failed:\n");
            ERR_print_errors_fp(stderr);
        }
        SSL_free(ssl);
        close(client);
    }
    SSL_CTX_free(ctx);
    return 0;
}
