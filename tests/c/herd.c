/*
 * Thread-per-connection blocking echo server and its client, for the
 * thundering-herd test (tests/tests/preload.rs, issue 15).
 *
 *   herd server PORT N   accept N connections, one thread each blocked in
 *                        recv (the last with SO_RCVTIMEO 50 ms, counting
 *                        its EAGAINs); echo everything. Connection 0
 *                        also takes commands (messages starting with '#'):
 *                          #B  note every connection thread's
 *                              voluntary_ctxt_switches (/proc)
 *                          #S  report how many times threads 1..N-2 (the
 *                              ones that got nothing) were switched out
 *                              since #B: "#others T sum=S max=M busy=B
 *                              timeouts=X" (busy: threads with > 20)
 *                          #I  signal thread 1 (SIGUSR1, no SA_RESTART):
 *                              "#eintr=1" when its recv failed with EINTR
 *                          #H  shutdown(SHUT_RDWR) connection N-2, whose
 *                              thread is blocked in recv: "#shut=1" when
 *                              that recv returned 0
 *                          #T  send on connection N-3 (whose thread is
 *                              blocked in recv; the client never reads it)
 *                              with SO_SNDTIMEO 100 ms until it fails:
 *                              "#sndtimeo=EAGAIN waited=1"
 *   herd eserver PORT N  the same with one epoll set per connection
 *                        thread (a multi-threaded epoll server such as
 *                        memcached): each thread blocks in epoll_wait on
 *                        its own set and then reads without blocking; the
 *                        last thread's epoll_wait has a 50 ms timeout
 *                        instead of SO_RCVTIMEO (its timeouts counted the
 *                        same way), and #I interrupts an epoll_wait
 *   herd pserver PORT N  the same with each connection thread blocked in
 *                        poll() on its socket alone (then a read without
 *                        blocking); the last thread's poll has a 50 ms
 *                        timeout, and #I interrupts a poll
 *   herd mserver PORT N  the same with each connection thread blocked in
 *                        poll() on two fds: its socket and the read end of
 *                        a pipe of its own that nobody writes (a program
 *                        that also waits for a wake-up pipe)
 *   herd sserver PORT N  the same as mserver with select() instead of poll()
 *   herd client IP PORT N K M
 *                        connect N times (each from a new thread), let the
 *                        server's threads block,
 *                        #B, K round trips on connection 0 only, #S, #I,
 *                        #H (and EOF on connection N-2), #T, then the
 *                        stress: every other connection at once in its
 *                        own thread, M round trips of 1..200 bytes each,
 *                        content checked, 5 s limit per answer.
 *
 * Output lines are the same on Linux and under the shim except the
 * numbers of the #S report.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define MAXN 256

static int nconn;
static int socks[MAXN];
static pthread_t ths[MAXN];
static volatile pid_t tids[MAXN];
static long base[MAXN];
static volatile long timeouts;
static volatile int eintr_seen;
static volatile int shut_seen;

static long now_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

static long vcs(pid_t tid)
{
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/self/task/%d/status", (int)tid);
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    long v = -1;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "voluntary_ctxt_switches: %ld", &v) == 1) break;
    fclose(f);
    return v;
}

static int send_all(int s, const char *b, size_t n)
{
    while (n > 0) {
        ssize_t w = send(s, b, n, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return -1;
        b += w;
        n -= (size_t)w;
    }
    return 0;
}

static void on_usr1(int sig) { (void)sig; }

static void command(int s, const char *b, ssize_t n)
{
    char out[256];
    if (n >= 2 && b[1] == 'B') {
        for (int j = 0; j < nconn; j++) base[j] = vcs(tids[j]);
        snprintf(out, sizeof out, "#ok\n");
    } else if (n >= 2 && b[1] == 'S') {
        long sum = 0, max = 0;
        int busy = 0, t = 0;
        for (int j = 1; j < nconn - 1; j++) {
            long d = vcs(tids[j]) - base[j];
            sum += d;
            if (d > max) max = d;
            if (d > 20) busy++;
            t++;
        }
        snprintf(out, sizeof out, "#others %d sum=%ld max=%ld busy=%d timeouts=%ld\n", t, sum, max,
                 busy, timeouts);
    } else if (n >= 2 && b[1] == 'I') {
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = on_usr1;
        sigaction(SIGUSR1, &sa, NULL);
        eintr_seen = 0;
        pthread_kill(ths[1], SIGUSR1);
        for (int i = 0; i < 200 && !eintr_seen; i++) usleep(10000);
        snprintf(out, sizeof out, "#eintr=%d\n", eintr_seen);
    } else if (n >= 2 && b[1] == 'H') {
        shut_seen = 0;
        shutdown(socks[nconn - 2], SHUT_RDWR);
        for (int i = 0; i < 200 && !shut_seen; i++) usleep(10000);
        snprintf(out, sizeof out, "#shut=%d\n", shut_seen);
    } else if (n >= 2 && b[1] == 'T') {
        int t = socks[nconn - 3];
        struct timeval tv = {0, 100000};
        setsockopt(t, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
        static char big[65536];
        memset(big, 'j', sizeof big);
        long t0 = 0, took = 0;
        ssize_t w;
        int e = 0;
        for (int i = 0; i < 100000; i++) {
            t0 = now_ms();
            w = send(t, big, sizeof big, MSG_NOSIGNAL);
            if (w < 0) {
                e = errno;
                took = now_ms() - t0;
                break;
            }
        }
        snprintf(out, sizeof out, "#sndtimeo=%s waited=%d\n",
                 e == EAGAIN ? "EAGAIN" : e ? strerror(e) : "never", took >= 80 && took < 2000);
    } else {
        snprintf(out, sizeof out, "#what\n");
    }
    send_all(s, out, strlen(out));
}

/* What connection i's thread does with recv's result n (bytes in b):
 * echo them, or run a command on connection 0; -1 when the connection
 * is over (EOF, an error). */
static int serve(int i, int s, char *b, ssize_t n)
{
    if (n < 0) {
        fprintf(stderr, "server: recv on connection %d: %s\n", i, strerror(errno));
        return -1;
    }
    if (n == 0) {
        if (i == nconn - 2) shut_seen = 1;
        return -1;
    }
    if (i == 0 && b[0] == '#') {
        command(s, b, n);
        return 0;
    }
    if (send_all(s, b, (size_t)n) < 0) {
        fprintf(stderr, "server: send on connection %d: %s\n", i, strerror(errno));
        return -1;
    }
    return 0;
}

static void *conn_thread(void *arg)
{
    int i = (int)(long)arg;
    int s = socks[i];
    tids[i] = (pid_t)syscall(SYS_gettid);
    if (i == nconn - 1) {
        struct timeval tv = {0, 50000};
        setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    }
    char b[512];
    for (;;) {
        ssize_t n = recv(s, b, sizeof b, 0);
        if (n < 0 && errno == EAGAIN && i == nconn - 1) {
            timeouts++;
            continue;
        }
        if (n < 0 && errno == EINTR) {
            if (i == 1) eintr_seen = 1;
            continue;
        }
        if (serve(i, s, b, n) < 0) break;
    }
    close(s);
    return NULL;
}

/* How a wait_serve thread waits for readability. */
enum how { BY_EPOLL, BY_POLL, BY_POLL2, BY_SELECT2 };

/* The connection thread of eserver, pserver, mserver and sserver: the
 * same protocol as conn_thread, waiting for readability in an epoll set of
 * its own (ep), in poll() on its socket alone, or in poll() / select() on
 * its socket and the read end of a pipe of its own (pipe_r, never
 * written), then reading without blocking. */
static void wait_serve(int i, int s, enum how how, int ep, int pipe_r)
{
    static const char *calls[] = {"epoll_wait", "poll", "poll", "select"};
    const char *call = calls[how];
    int wait_ms = i == nconn - 1 ? 50 : -1;
    char b[512];
    for (;;) {
        int r;
        if (how == BY_EPOLL) {
            struct epoll_event got;
            r = epoll_wait(ep, &got, 1, wait_ms);
        } else if (how == BY_POLL) {
            struct pollfd p = {.fd = s, .events = POLLIN};
            r = poll(&p, 1, wait_ms);
        } else if (how == BY_POLL2) {
            struct pollfd p[2] = {{.fd = pipe_r, .events = POLLIN}, {.fd = s, .events = POLLIN}};
            r = poll(p, 2, wait_ms);
            if (r > 0 && p[0].revents) {
                fprintf(stderr, "server: the idle pipe of connection %d fired\n", i);
                break;
            }
        } else {
            fd_set rd;
            FD_ZERO(&rd);
            FD_SET(pipe_r, &rd);
            FD_SET(s, &rd);
            struct timeval tv = {0, wait_ms * 1000};
            r = select((s > pipe_r ? s : pipe_r) + 1, &rd, NULL, NULL, wait_ms < 0 ? NULL : &tv);
            if (r > 0 && FD_ISSET(pipe_r, &rd)) {
                fprintf(stderr, "server: the idle pipe of connection %d fired\n", i);
                break;
            }
        }
        if (r == 0) {
            timeouts++;
            continue;
        }
        if (r < 0 && errno == EINTR) {
            if (i == 1) eintr_seen = 1;
            continue;
        }
        if (r < 0) {
            fprintf(stderr, "server: %s on connection %d: %s\n", call, i, strerror(errno));
            break;
        }
        ssize_t n = recv(s, b, sizeof b, MSG_DONTWAIT);
        if (n < 0 && (errno == EAGAIN || errno == EINTR)) continue;
        if (serve(i, s, b, n) < 0) break;
    }
}

/* The eserver's connection thread. */
static void *econn_thread(void *arg)
{
    int i = (int)(long)arg;
    int s = socks[i];
    tids[i] = (pid_t)syscall(SYS_gettid);
    int ep = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)i};
    if (ep < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, s, &ev) < 0) {
        fprintf(stderr, "server: epoll for connection %d: %s\n", i, strerror(errno));
        return NULL;
    }
    wait_serve(i, s, BY_EPOLL, ep, -1);
    close(ep);
    close(s);
    return NULL;
}

/* The pserver's connection thread. */
static void *pconn_thread(void *arg)
{
    int i = (int)(long)arg;
    int s = socks[i];
    tids[i] = (pid_t)syscall(SYS_gettid);
    wait_serve(i, s, BY_POLL, -1, -1);
    close(s);
    return NULL;
}

/* The mserver's and sserver's connection thread (how: BY_POLL2 or
 * BY_SELECT2). */
static void two_fd_thread(int i, enum how how)
{
    int s = socks[i];
    tids[i] = (pid_t)syscall(SYS_gettid);
    int p[2];
    if (pipe2(p, O_CLOEXEC) < 0) {
        fprintf(stderr, "server: pipe for connection %d: %s\n", i, strerror(errno));
        return;
    }
    wait_serve(i, s, how, -1, p[0]);
    close(p[0]);
    close(p[1]);
    close(s);
}

static void *mconn_thread(void *arg)
{
    two_fd_thread((int)(long)arg, BY_POLL2);
    return NULL;
}

static void *sconn_thread(void *arg)
{
    two_fd_thread((int)(long)arg, BY_SELECT2);
    return NULL;
}

static int server(int port, int n, void *(*thread)(void *))
{
    nconn = n;
    int l = socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
    if (bind(l, (struct sockaddr *)&a, sizeof a) || listen(l, MAXN)) {
        perror("server: bind/listen");
        return 1;
    }
    printf("server listening\n");
    fflush(stdout);
    for (int i = 0; i < n; i++) {
        socks[i] = accept(l, NULL, NULL);
        if (socks[i] < 0) {
            perror("server: accept");
            return 1;
        }
        setsockopt(socks[i], IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    }
    for (int i = 0; i < n; i++) pthread_create(&ths[i], NULL, thread, (void *)(long)i);
    for (int i = 0; i < n; i++) pthread_join(ths[i], NULL);
    printf("server done\n");
    return 0;
}

/* Client side. */

static int recv_exact(int s, char *b, size_t n)
{
    while (n > 0) {
        ssize_t r = recv(s, b, n, 0);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) return -1;
        b += r;
        n -= (size_t)r;
    }
    return 0;
}

/* A '#' command on connection 0; prints the answer line. */
static int cmd(int s, const char *c, char *ans, size_t cap)
{
    if (send_all(s, c, strlen(c)) < 0) return -1;
    size_t n = 0;
    while (n + 1 < cap) {
        ssize_t r = recv(s, ans + n, 1, 0);
        if (r <= 0) return -1;
        if (ans[n] == '\n') break;
        n++;
    }
    ans[n] = 0;
    return 0;
}

static int cm;
static volatile int stress_fail;

static void *stress_thread(void *arg)
{
    int i = (int)(long)arg;
    int s = socks[i];
    unsigned seed = 12345u + (unsigned)i;
    char out[256], in[256];
    for (int k = 0; k < cm && !stress_fail; k++) {
        int len = 1 + (int)(rand_r(&seed) % 200);
        for (int j = 0; j < len; j++) out[j] = (char)('a' + (i + k + j) % 26);
        if (send_all(s, out, (size_t)len) < 0 || recv_exact(s, in, (size_t)len) < 0) {
            printf("stress: FAILED connection %d message %d: %s\n", i, k, strerror(errno));
            stress_fail = 1;
            break;
        }
        if (memcmp(in, out, (size_t)len) != 0) {
            printf("stress: FAILED connection %d message %d: wrong bytes\n", i, k);
            stress_fail = 1;
            break;
        }
    }
    return NULL;
}

static struct sockaddr_in caddr;

/* Each connection is made by a thread of its own (under the shim with
 * TAS_CONTEXTS > 1 the connections then spread over several contexts). */
static void *connect_thread(void *arg)
{
    int i = (int)(long)arg;
    int one = 1;
    int s = socket(AF_INET, SOCK_STREAM, 0);
    if (connect(s, (struct sockaddr *)&caddr, sizeof caddr)) {
        perror("client: connect");
        close(s);
        return (void *)1;
    }
    setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct timeval tv = {5, 0};
    setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    socks[i] = s;
    return NULL;
}

static int client(const char *ip, int port, int n, int k, int m)
{
    cm = m;
    caddr.sin_family = AF_INET;
    caddr.sin_port = htons(port);
    inet_pton(AF_INET, ip, &caddr.sin_addr);
    /* In order: the server numbers its connections by accept order. */
    for (int i = 0; i < n; i++) {
        pthread_t t;
        void *r = NULL;
        pthread_create(&t, NULL, connect_thread, (void *)(long)i);
        pthread_join(t, &r);
        if (r) return 1;
    }
    /* Every server thread is blocked in recv by now (and past its spin). */
    usleep(300000);
    char ans[256];
    if (cmd(socks[0], "#B", ans, sizeof ans) < 0) {
        printf("client: #B failed\n");
        return 1;
    }
    char msg[64], back[64];
    memset(msg, 'x', sizeof msg);
    for (int i = 0; i < k; i++) {
        if (send_all(socks[0], msg, sizeof msg) < 0 || recv_exact(socks[0], back, sizeof back) < 0) {
            printf("quiet: FAILED round trip %d: %s\n", i, strerror(errno));
            return 1;
        }
    }
    printf("quiet: %d round trips ok\n", k);
    if (cmd(socks[0], "#S", ans, sizeof ans) < 0) {
        printf("client: #S failed\n");
        return 1;
    }
    printf("herd: %s\n", ans);
    if (cmd(socks[0], "#I", ans, sizeof ans) < 0) {
        printf("client: #I failed\n");
        return 1;
    }
    printf("signal: %s\n", ans);
    pthread_t th[MAXN];
    if (cmd(socks[0], "#H", ans, sizeof ans) < 0) {
        printf("client: #H failed\n");
        return 1;
    }
    printf("shutdown: %s\n", ans);
    char c;
    printf("shutdown: client reads EOF = %d\n", (int)recv(socks[n - 2], &c, 1, 0) == 0);
    if (cmd(socks[0], "#T", ans, sizeof ans) < 0) {
        printf("client: #T failed\n");
        return 1;
    }
    printf("send timeout: %s\n", ans);
    /* Connections n-2 (shut down) and n-3 (full of junk) sit out. */
    for (int i = 0; i < n; i++)
        if (i < n - 3 || i == n - 1) pthread_create(&th[i], NULL, stress_thread, (void *)(long)i);
    for (int i = 0; i < n; i++)
        if (i < n - 3 || i == n - 1) pthread_join(th[i], NULL);
    if (!stress_fail) printf("stress: %d x %d round trips ok\n", n - 2, m);
    for (int i = 0; i < n; i++) close(socks[i]);
    return stress_fail;
}

int main(int argc, char **argv)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    static const struct {
        const char *name;
        void *(*thread)(void *);
    } modes[] = {{"server", conn_thread},   {"eserver", econn_thread}, {"pserver", pconn_thread},
                 {"mserver", mconn_thread}, {"sserver", sconn_thread}};
    for (size_t i = 0; argc == 4 && i < sizeof modes / sizeof modes[0]; i++) {
        if (strcmp(argv[1], modes[i].name)) continue;
        int n = atoi(argv[3]);
        if (n < 5 || n > MAXN) return 2;
        return server(atoi(argv[2]), n, modes[i].thread);
    }
    if (argc == 7 && !strcmp(argv[1], "client")) {
        int n = atoi(argv[4]);
        if (n < 5 || n > MAXN) return 2;
        return client(argv[2], atoi(argv[3]), n, atoi(argv[5]), atoi(argv[6]));
    }
    fprintf(stderr, "usage: herd server|eserver|pserver|mserver|sserver PORT N | herd client IP PORT N K M\n");
    return 2;
}
