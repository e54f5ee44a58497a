/* The floor under the channel benchmark (scripts/bench_channel.py): what one request and
 * answer over TCP on loopback cost on this machine with nothing else in the way (no TLS,
 * no framing, no client library). A forked server reads a 64-byte request, stays busy for
 * BUSY_US microseconds (as a node does while it signs) and answers 280 bytes (a signature
 * response's size); the client sends, waits in poll() and reads, as HSMClient does. Prints
 * one JSON line: the client's CPU time per exchange and the wall time per exchange beyond
 * BUSY_US. A remote node's client pays at least this per operation in this design.
 *
 * usage: tcp_floor EXCHANGES BUSY_US */
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define REQUEST 64
#define ANSWER 280

static double now_us(clockid_t clock) {
    struct timespec t;
    clock_gettime(clock, &t);
    return t.tv_sec * 1e6 + t.tv_nsec / 1e3;
}

static int read_all(int fd, char *buffer, int length, int wait) {
    int got = 0;
    while (got < length) {
        if (wait) {
            struct pollfd p = {fd, POLLIN, 0};
            if (poll(&p, 1, 10000) <= 0) return -1;
        }
        ssize_t n = read(fd, buffer + got, length - got);
        if (n == 0) return -1;
        if (n > 0) got += n;
    }
    return got;
}

int main(int argc, char **argv) {
    if (argc != 3 || atoi(argv[1]) < 1 || atof(argv[2]) < 0) {
        fprintf(stderr, "usage: %s EXCHANGES BUSY_US\n", argv[0]);
        return 2;
    }
    int exchanges = atoi(argv[1]), one = 1;
    double busy = atof(argv[2]);
    int listener = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in address = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t length = sizeof address;
    if (bind(listener, (struct sockaddr *)&address, sizeof address) != 0 || listen(listener, 1) != 0
        || getsockname(listener, (struct sockaddr *)&address, &length) != 0) {
        perror("tcp_floor: listen");
        return 1;
    }
    pid_t server = fork();
    if (server == 0) {
        int s = accept(listener, NULL, NULL);
        setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        char buffer[ANSWER];
        memset(buffer, 7, sizeof buffer);
        while (read_all(s, buffer, REQUEST, 0) == REQUEST) {
            double started = now_us(CLOCK_MONOTONIC);
            while (now_us(CLOCK_MONOTONIC) - started < busy) {}
            if (write(s, buffer, ANSWER) != ANSWER) break;
        }
        _exit(0);
    }
    int c = socket(AF_INET, SOCK_STREAM, 0);
    if (connect(c, (struct sockaddr *)&address, sizeof address) != 0) {
        perror("tcp_floor: connect");
        return 1;
    }
    setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    fcntl(c, F_SETFL, O_NONBLOCK);
    char buffer[ANSWER];
    memset(buffer, 1, sizeof buffer);
    double cpu = now_us(CLOCK_PROCESS_CPUTIME_ID), wall = now_us(CLOCK_MONOTONIC);
    for (int i = 0; i < exchanges; i++) {
        if (write(c, buffer, REQUEST) != REQUEST || read_all(c, buffer, ANSWER, 1) != ANSWER) {
            fprintf(stderr, "tcp_floor: exchange %d failed\n", i);
            return 1;
        }
    }
    cpu = now_us(CLOCK_PROCESS_CPUTIME_ID) - cpu;
    wall = now_us(CLOCK_MONOTONIC) - wall;
    close(c);
    waitpid(server, NULL, 0);
    printf("{\"exchanges\": %d, \"busy_us\": %.1f, \"client_cpu_us\": %.1f, \"added_wall_us\": %.1f}\n", exchanges,
           busy, cpu / exchanges, wall / exchanges - busy);
    return 0;
}
