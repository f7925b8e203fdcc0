/* How soon a readiness wait sees data that has arrived, while something
 * else in the same wait is always ready (as iperf3's client loops on
 * select() with its writable data socket in the set).
 *
 * Connects to HOST:PORT (an echo server). Each round first blocks in a
 * recv() that times out after 100 ms (a thread blocked in the shim: its
 * reactor then sleeps long), then sends one byte and waits for the echo
 * with METHOD, the socket in the read set next to an always-ready fd:
 *   select  select(): a pipe with data in the read set, the socket in the
 *           read and the write set, timeout 1 s
 *   poll    the same with poll()
 *   epoll   the same with epoll_wait() (level-triggered)
 *   poll0   poll() on the socket alone with timeout 0, in a loop
 * Prints "METHOD worst_us=N mean_us=N rounds=N" per method and exits 0;
 * exits 1 when an echo does not come back within 3 s or a call fails.
 * usage: tas-stall HOST PORT ROUNDS [METHOD...] */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static long long now_us(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (long long)t.tv_sec * 1000000 + t.tv_nsec / 1000;
}

static void die(const char *what) {
    fprintf(stderr, "%s: %s\n", what, strerror(errno));
    exit(1);
}

/* One wait; returns 1 when `s` was reported readable. */
static int wait_once(const char *m, int s, int always, int ep) {
    if (!strcmp(m, "select")) {
        fd_set r, w;
        FD_ZERO(&r);
        FD_ZERO(&w);
        FD_SET(always, &r);
        FD_SET(s, &r);
        FD_SET(s, &w);
        struct timeval tv = {1, 0};
        int n = select((s > always ? s : always) + 1, &r, &w, NULL, &tv);
        if (n < 0)
            die("select");
        return FD_ISSET(s, &r) != 0;
    }
    if (!strcmp(m, "poll")) {
        struct pollfd p[2] = {{always, POLLIN, 0}, {s, POLLIN | POLLOUT, 0}};
        if (poll(p, 2, 1000) < 0)
            die("poll");
        return (p[1].revents & POLLIN) != 0;
    }
    if (!strcmp(m, "epoll")) {
        struct epoll_event ev[4];
        int n = epoll_wait(ep, ev, 4, 1000);
        if (n < 0)
            die("epoll_wait");
        for (int i = 0; i < n; i++)
            if (ev[i].data.fd == s && (ev[i].events & EPOLLIN))
                return 1;
        return 0;
    }
    if (!strcmp(m, "poll0")) {
        struct pollfd p = {s, POLLIN, 0};
        if (poll(&p, 1, 0) < 0)
            die("poll 0");
        return (p.revents & POLLIN) != 0;
    }
    fprintf(stderr, "unknown method %s\n", m);
    exit(2);
}

int main(int argc, char **argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: %s HOST PORT ROUNDS [METHOD...]\n", argv[0]);
        return 2;
    }
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[2]))};
    if (inet_pton(AF_INET, argv[1], &sa.sin_addr) != 1) {
        fprintf(stderr, "bad address %s\n", argv[1]);
        return 2;
    }
    int rounds = atoi(argv[3]);
    const char *all[] = {"select", "poll", "epoll", "poll0"};
    const char **methods = argc > 4 ? (const char **)argv + 4 : all;
    int nm = argc > 4 ? argc - 4 : 4;

    int s = socket(AF_INET, SOCK_STREAM, 0);
    if (s < 0 || connect(s, (struct sockaddr *)&sa, sizeof sa) != 0)
        die("socket/connect");
    int one = 1;
    setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct timeval to = {0, 100000};
    if (setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &to, sizeof to) != 0)
        die("SO_RCVTIMEO");
    int pp[2];
    if (pipe(pp) != 0 || write(pp[1], "a", 1) != 1)
        die("pipe");
    int ep = epoll_create1(0);
    struct epoll_event e1 = {.events = EPOLLIN, .data.fd = pp[0]};
    struct epoll_event e2 = {.events = EPOLLIN | EPOLLOUT, .data.fd = s};
    if (ep < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, pp[0], &e1) != 0 ||
        epoll_ctl(ep, EPOLL_CTL_ADD, s, &e2) != 0)
        die("epoll");

    for (int k = 0; k < nm; k++) {
        const char *m = methods[k];
        long long worst = 0, sum = 0;
        for (int r = 0; r < rounds; r++) {
            char c;
            /* Block in the shim for 100 ms: nothing comes. */
            if (recv(s, &c, 1, 0) != -1 || (errno != EAGAIN && errno != EWOULDBLOCK)) {
                fprintf(stderr, "%s round %d: the blocking recv did not time out\n", m, r);
                return 1;
            }
            if (send(s, "x", 1, 0) != 1)
                die("send");
            long long t0 = now_us(), dt;
            for (;;) {
                if (wait_once(m, s, pp[0], ep))
                    break;
                if (now_us() - t0 > 3000000) {
                    fprintf(stderr, "%s round %d: no echo within 3 s\n", m, r);
                    return 1;
                }
            }
            dt = now_us() - t0;
            if (recv(s, &c, 1, MSG_DONTWAIT) != 1 || c != 'x') {
                fprintf(stderr, "%s round %d: readable, but recv: %s\n", m, r, strerror(errno));
                return 1;
            }
            if (dt > worst)
                worst = dt;
            sum += dt;
        }
        printf("%s worst_us=%lld mean_us=%lld rounds=%d\n", m, worst, rounds ? sum / rounds : 0,
               rounds);
        fflush(stdout);
    }
    close(s);
    return 0;
}
