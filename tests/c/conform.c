/*
 * conform.c — socket-API conformance program for libtas_preload.so.
 *
 * The same binary runs twice: once on the Linux stack and once under
 * LD_PRELOAD=libtas_preload.so against TAS. Every case prints lines
 * "case: result" with return values and errno names; the two outputs must
 * be identical. A partner (this program in "partner" mode) runs on the
 * Linux side of the link and plays the peer for each case.
 *
 *   conform partner                 serve the peer behaviours below (198.18.0.2)
 *   conform run PEER_IP OWN_IP      run every case, print the results
 *   conform tasonly PEER_IP OWN_IP  fork/exec/threads/idle-CPU checks of the shim
 *   conform scmuser PEER_IP OWN_IP  a TAS socket passed to another user (refused)
 *   conform spawnaccept LFD PIPEFD  (posix_spawn case) accept on LFD, report on PIPEFD
 *   conform vforkkid FD            (vfork case) answer on the inherited connection FD
 *   conform spawnplain PEER_IP OWN_IP 0|1  posix_spawn of a program without/with the shim
 *
 * Partner ports (PEER_IP):
 *   7000  nothing listens (connect refused)
 *   7001  echo until EOF
 *   7002  send "hello", shutdown(SHUT_WR), read until EOF, close
 *   7003  accept, wait 100 ms, reset (SO_LINGER 0)
 *   7004  sink that starts reading only after 1.5 s
 *   7005  send "0123456789", read until EOF, close
 *   7006  read until EOF, answer "<bytes> <sum>", close
 *   7007  send "a", "b", "c" 300 ms apart, read until EOF, close
 *   7008  send 1 MB, read until EOF, close
 *   7099  control: a line "CONNECT IP PORT MODE" makes the partner connect
 *         to IP:PORT; MODE "hi" sends "hi" and waits for EOF.
 *
 * Built by tests/tests/preload.rs with: cc -O2 -D_FORTIFY_SOURCE=2 -pthread
 * (fortified builds call __read_chk/__recv_chk/__poll_chk, which the shim
 * must interpose too).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/ip.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <sys/select.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/timerfd.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static const char *peer_ip = "198.18.0.2";
static const char *own_ip = "198.18.0.1";

/* ------------------------------------------------------------------ */
/* Output helpers. */

static const char *ename(int e)
{
    const char *n = strerrorname_np(e);
    return n ? n : "E?";
}

static void out(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    putchar('\n');
    fflush(stdout);
}

/* "name = value" or "name = -1 ERRNO" */
static long rep(const char *name, long r, int e)
{
    if (r < 0)
        out("%s = -1 %s", name, ename(e));
    else
        out("%s = %ld", name, r);
    return r;
}
#define R(name, expr) ({ errno = 0; long _r = (long)(expr); int _e = errno; rep(name, _r, _e); })

static const char *pev(int ev)
{
    static char buf[128];
    buf[0] = 0;
    struct { int bit; const char *n; } t[] = {
        {POLLIN, "IN"}, {POLLPRI, "PRI"}, {POLLOUT, "OUT"}, {POLLERR, "ERR"},
        {POLLHUP, "HUP"}, {POLLNVAL, "NVAL"}, {POLLRDHUP, "RDHUP"},
    };
    for (unsigned i = 0; i < sizeof t / sizeof t[0]; i++)
        if (ev & t[i].bit) {
            if (buf[0]) strcat(buf, "|");
            strcat(buf, t[i].n);
        }
    if (!buf[0]) strcpy(buf, "0");
    return buf;
}

static const char *eev(uint32_t ev)
{
    static char buf[128];
    buf[0] = 0;
    struct { uint32_t bit; const char *n; } t[] = {
        {EPOLLIN, "IN"}, {EPOLLPRI, "PRI"}, {EPOLLOUT, "OUT"}, {EPOLLERR, "ERR"},
        {EPOLLHUP, "HUP"}, {EPOLLRDHUP, "RDHUP"},
    };
    for (unsigned i = 0; i < sizeof t / sizeof t[0]; i++)
        if (ev & t[i].bit) {
            if (buf[0]) strcat(buf, "|");
            strcat(buf, t[i].n);
        }
    if (!buf[0]) strcpy(buf, "0");
    return buf;
}

static void msleep(int ms) { usleep(ms * 1000); }

static long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static struct sockaddr_in addr(const char *ip, int port)
{
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    inet_pton(AF_INET, ip, &a.sin_addr);
    return a;
}

static const char *saddr(const struct sockaddr_in *a, int with_port)
{
    static char buf[64];
    char ip[32];
    inet_ntop(AF_INET, &a->sin_addr, ip, sizeof ip);
    if (with_port)
        snprintf(buf, sizeof buf, "%s:%d", ip, ntohs(a->sin_port));
    else
        snprintf(buf, sizeof buf, "%s", ip);
    return buf;
}

static struct sockaddr_in6 addr6(const char *ip, int port)
{
    struct sockaddr_in6 a;
    memset(&a, 0, sizeof a);
    a.sin6_family = AF_INET6;
    a.sin6_port = htons(port);
    inet_pton(AF_INET6, ip, &a.sin6_addr);
    return a;
}

/* "[ip]:port" (or "ip") of a sockaddr_in6, with its family checked. */
static const char *saddr6(const struct sockaddr_in6 *a, int with_port)
{
    static char buf[96];
    char ip[64];
    if (a->sin6_family != AF_INET6) {
        snprintf(buf, sizeof buf, "family %d", a->sin6_family);
        return buf;
    }
    inet_ntop(AF_INET6, &a->sin6_addr, ip, sizeof ip);
    if (with_port)
        snprintf(buf, sizeof buf, "[%s]:%d", ip, ntohs(a->sin6_port));
    else
        snprintf(buf, sizeof buf, "%s", ip);
    return buf;
}

/* A blocking TCP connection to the partner. */
static int conn_to(int port)
{
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = addr(peer_ip, port);
    if (connect(s, (struct sockaddr *)&a, sizeof a) != 0) {
        out("FATAL connect to %d: %s", port, ename(errno));
        exit(1);
    }
    return s;
}

static void set_nonblock(int fd, int on)
{
    int fl = fcntl(fd, F_GETFL);
    fcntl(fd, F_SETFL, on ? fl | O_NONBLOCK : fl & ~O_NONBLOCK);
}

/* Waits until fd is readable (bounded); returns revents. */
static int wait_in(int fd, int ms)
{
    struct pollfd p = {fd, POLLIN, 0};
    poll(&p, 1, ms);
    return p.revents;
}

/* Waits (bounded) until all of `want` are in fd's poll events, so that
 * results do not depend on how fast the peer's segments arrive. */
static void wait_all(int fd, int want, int ms)
{
    long end = now_ms() + ms;
    while (now_ms() < end) {
        struct pollfd p = {fd, want, 0};
        poll(&p, 1, 50);
        if ((p.revents & want) == want) return;
    }
}

static int getint(int fd, int level, int name)
{
    int v = -12345;
    socklen_t l = sizeof v;
    if (getsockopt(fd, level, name, &v, &l) != 0)
        return -1000 - errno;
    return v;
}

static int setint(int fd, int level, int name, int v)
{
    return setsockopt(fd, level, name, &v, sizeof v);
}

static volatile sig_atomic_t sigpipes;
static void on_sigpipe(int s) { (void)s; sigpipes++; }

/* Reads until EOF (bounded), returns the bytes in buf. */
static int read_all(int fd, char *buf, int cap)
{
    int n = 0;
    long end = now_ms() + 5000;
    while (n < cap - 1 && now_ms() < end) {
        int r = read(fd, buf + n, cap - 1 - n);
        if (r <= 0) break;
        n += r;
    }
    buf[n] = 0;
    return n;
}

/* Asks the partner to connect to us. */
static void partner_connect(int port, const char *mode)
{
    int c = conn_to(7099);
    char line[128];
    snprintf(line, sizeof line, "CONNECT %s %d %s\n", own_ip, port, mode);
    write(c, line, strlen(line));
    close(c);
}

/* ------------------------------------------------------------------ */
/* Cases. */

static void case_basics(void)
{
    out("# basics");
    int s = R("socket", socket(AF_INET, SOCK_STREAM, 0));
    out("SO_TYPE = %d", getint(s, SOL_SOCKET, SO_TYPE));
    out("SO_DOMAIN = %d", getint(s, SOL_SOCKET, SO_DOMAIN));
    out("SO_PROTOCOL = %d", getint(s, SOL_SOCKET, SO_PROTOCOL));
    out("SO_ERROR = %d", getint(s, SOL_SOCKET, SO_ERROR));
    out("SO_ACCEPTCONN = %d", getint(s, SOL_SOCKET, SO_ACCEPTCONN));
    struct stat st;
    fstat(s, &st);
    out("S_ISSOCK = %d", S_ISSOCK(st.st_mode));
    struct sockaddr_in a;
    socklen_t l = sizeof a;
    memset(&a, 0xff, sizeof a);
    R("getsockname unbound", getsockname(s, (struct sockaddr *)&a, &l));
    out("  name = %s len %d", saddr(&a, 1), (int)l);
    l = sizeof a;
    R("getpeername unconnected", getpeername(s, (struct sockaddr *)&a, &l));
    char b[16];
    R("read unconnected", read(s, b, sizeof b));
    R("recv unconnected", recv(s, b, sizeof b, 0));
    R("send unconnected NOSIGNAL", send(s, "x", 1, MSG_NOSIGNAL));
    sigpipes = 0;
    R("write unconnected", write(s, "x", 1));
    out("  sigpipes = %d", (int)sigpipes);
    R("shutdown unconnected", shutdown(s, SHUT_WR));
    R("shutdown bad how", shutdown(s, 7));
    R("accept not listening", accept(s, NULL, NULL));
    R("close", close(s));
    R("read closed fd", read(s, b, 1));
    s = R("socket NONBLOCK|CLOEXEC", socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
    out("  O_NONBLOCK = %d", !!(fcntl(s, F_GETFL) & O_NONBLOCK));
    out("  FD_CLOEXEC = %d", !!(fcntl(s, F_GETFD) & FD_CLOEXEC));
    out("  O_RDWR = %d", (fcntl(s, F_GETFL) & O_ACCMODE) == O_RDWR);
    R("accept4 bad flags", accept4(s, NULL, NULL, 0x40000000));
    close(s);
    s = socket(AF_INET, SOCK_STREAM, IPPROTO_TCP);
    out("socket IPPROTO_TCP SO_PROTOCOL = %d", getint(s, SOL_SOCKET, SO_PROTOCOL));
    close(s);
}

static void case_options(void)
{
    out("# options");
    int s = socket(AF_INET, SOCK_STREAM, 0);
    R("set SO_REUSEADDR", setint(s, SOL_SOCKET, SO_REUSEADDR, 1));
    out("  get = %d", getint(s, SOL_SOCKET, SO_REUSEADDR));
    R("set SO_REUSEPORT", setint(s, SOL_SOCKET, SO_REUSEPORT, 1));
    out("  get = %d", getint(s, SOL_SOCKET, SO_REUSEPORT));
    out("SO_KEEPALIVE default = %d", getint(s, SOL_SOCKET, SO_KEEPALIVE));
    R("set SO_KEEPALIVE", setint(s, SOL_SOCKET, SO_KEEPALIVE, 1));
    out("  get = %d", getint(s, SOL_SOCKET, SO_KEEPALIVE));
    out("TCP_NODELAY default = %d", getint(s, IPPROTO_TCP, TCP_NODELAY));
    R("set TCP_NODELAY", setint(s, IPPROTO_TCP, TCP_NODELAY, 1));
    out("  get = %d", getint(s, IPPROTO_TCP, TCP_NODELAY));
    out("TCP_KEEPIDLE default = %d", getint(s, IPPROTO_TCP, TCP_KEEPIDLE));
    out("TCP_KEEPINTVL default = %d", getint(s, IPPROTO_TCP, TCP_KEEPINTVL));
    out("TCP_KEEPCNT default = %d", getint(s, IPPROTO_TCP, TCP_KEEPCNT));
    R("set TCP_KEEPIDLE 30", setint(s, IPPROTO_TCP, TCP_KEEPIDLE, 30));
    out("  get = %d", getint(s, IPPROTO_TCP, TCP_KEEPIDLE));
    R("set TCP_KEEPIDLE 0", setint(s, IPPROTO_TCP, TCP_KEEPIDLE, 0));
    R("set TCP_KEEPINTVL 10", setint(s, IPPROTO_TCP, TCP_KEEPINTVL, 10));
    out("  get = %d", getint(s, IPPROTO_TCP, TCP_KEEPINTVL));
    R("set TCP_KEEPCNT 5", setint(s, IPPROTO_TCP, TCP_KEEPCNT, 5));
    out("  get = %d", getint(s, IPPROTO_TCP, TCP_KEEPCNT));
    R("set TCP_KEEPCNT 200", setint(s, IPPROTO_TCP, TCP_KEEPCNT, 200));
    R("set SO_RCVBUF 65536", setint(s, SOL_SOCKET, SO_RCVBUF, 65536));
    out("  get = %d", getint(s, SOL_SOCKET, SO_RCVBUF));
    R("set SO_SNDBUF 65536", setint(s, SOL_SOCKET, SO_SNDBUF, 65536));
    out("  get = %d", getint(s, SOL_SOCKET, SO_SNDBUF));
    R("set SO_RCVBUF 1", setint(s, SOL_SOCKET, SO_RCVBUF, 1));
    out("  get = %d", getint(s, SOL_SOCKET, SO_RCVBUF));
    struct linger lg = {1, 5};
    R("set SO_LINGER", setsockopt(s, SOL_SOCKET, SO_LINGER, &lg, sizeof lg));
    memset(&lg, 0, sizeof lg);
    socklen_t l = sizeof lg;
    R("get SO_LINGER", getsockopt(s, SOL_SOCKET, SO_LINGER, &lg, &l));
    out("  = {%d, %d} len %d", lg.l_onoff, lg.l_linger, (int)l);
    R("set SO_LINGER short", setsockopt(s, SOL_SOCKET, SO_LINGER, &lg, 4));
    struct timeval tv = {1, 500000};
    R("set SO_RCVTIMEO", setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv));
    memset(&tv, 0, sizeof tv);
    l = sizeof tv;
    R("get SO_RCVTIMEO", getsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, &l));
    out("  = {%ld, %ld}", (long)tv.tv_sec, (long)tv.tv_usec);
    tv.tv_usec = 2000000;
    R("set SO_SNDTIMEO bad usec", setsockopt(s, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv));
    int v = 1;
    R("set unknown SOL_SOCKET 12345", setsockopt(s, SOL_SOCKET, 12345, &v, sizeof v));
    l = sizeof v;
    R("get unknown SOL_SOCKET 12345", getsockopt(s, SOL_SOCKET, 12345, &v, &l));
    R("set unknown IPPROTO_TCP 9999", setsockopt(s, IPPROTO_TCP, 9999, &v, sizeof v));
    R("set unknown level 4242", setsockopt(s, 4242, 1, &v, sizeof v));
    R("set SO_KEEPALIVE optlen 2", setsockopt(s, SOL_SOCKET, SO_KEEPALIVE, &v, 2));
    R("set TCP_NODELAY optlen 0", setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &v, 0));
    R("set SO_ERROR", setint(s, SOL_SOCKET, SO_ERROR, 1));
    R("set SO_TYPE", setint(s, SOL_SOCKET, SO_TYPE, 1));
    R("set IP_TOS 0x10", setint(s, IPPROTO_IP, IP_TOS, 0x10));
    out("  get = %d", getint(s, IPPROTO_IP, IP_TOS));
    out("IP_TTL default = %d", getint(s, IPPROTO_IP, IP_TTL));
    char cc[32] = {0};
    l = sizeof cc;
    R("get TCP_CONGESTION", getsockopt(s, IPPROTO_TCP, TCP_CONGESTION, cc, &l));
    out("SO_RCVLOWAT default = %d", getint(s, SOL_SOCKET, SO_RCVLOWAT));
    out("SO_SNDLOWAT default = %d", getint(s, SOL_SOCKET, SO_SNDLOWAT));
    R("set SO_SNDLOWAT", setint(s, SOL_SOCKET, SO_SNDLOWAT, 10));
    l = 2;
    v = 0;
    R("get SO_TYPE short len", getsockopt(s, SOL_SOCKET, SO_TYPE, &v, &l));
    out("  len = %d", (int)l);
    close(s);
}

static void case_connect_refused(void)
{
    out("# connect refused (blocking)");
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = addr(peer_ip, 7000);
    R("connect", connect(s, (struct sockaddr *)&a, sizeof a));
    out("SO_ERROR after = %d", getint(s, SOL_SOCKET, SO_ERROR));
    socklen_t l = sizeof a;
    R("getpeername", getpeername(s, (struct sockaddr *)&a, &l));
    char b[4];
    R("read after refused", read(s, b, sizeof b));
    close(s);

    out("# connect refused (non-blocking) + SO_ERROR");
    s = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    a = addr(peer_ip, 7000);
    R("connect", connect(s, (struct sockaddr *)&a, sizeof a));
    struct pollfd p = {s, POLLIN | POLLOUT | POLLRDHUP, 0};
    R("poll", poll(&p, 1, 3000));
    out("  revents = %s", pev(p.revents));
    out("SO_ERROR = %s", ename(getint(s, SOL_SOCKET, SO_ERROR)));
    out("SO_ERROR again = %d", getint(s, SOL_SOCKET, SO_ERROR));
    p.revents = 0;
    R("poll after SO_ERROR", poll(&p, 1, 0));
    out("  revents = %s", pev(p.revents));
    close(s);

    out("# connect refused (non-blocking), second connect reports");
    s = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    R("connect", connect(s, (struct sockaddr *)&a, sizeof a));
    p.fd = s;
    p.revents = 0;
    poll(&p, 1, 3000);
    R("connect again", connect(s, (struct sockaddr *)&a, sizeof a));
    close(s);

    out("# connect bad address");
    s = socket(AF_INET, SOCK_STREAM, 0);
    R("connect short len", connect(s, (struct sockaddr *)&a, 8));
    struct sockaddr_in6 a6;
    memset(&a6, 0, sizeof a6);
    a6.sin6_family = AF_INET6;
    R("connect AF_INET6 addr", connect(s, (struct sockaddr *)&a6, sizeof a6));
    close(s);
}

static void case_connect_ok(void)
{
    out("# non-blocking connect");
    int s = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    struct sockaddr_in a = addr(peer_ip, 7001);
    R("connect", connect(s, (struct sockaddr *)&a, sizeof a));
    struct pollfd p = {s, POLLOUT, 0};
    R("poll OUT", poll(&p, 1, 3000));
    out("  revents = %s", pev(p.revents));
    out("SO_ERROR = %d", getint(s, SOL_SOCKET, SO_ERROR));
    R("connect again", connect(s, (struct sockaddr *)&a, sizeof a));
    R("connect third", connect(s, (struct sockaddr *)&a, sizeof a));
    struct sockaddr_in n;
    socklen_t l = sizeof n;
    R("getpeername", getpeername(s, (struct sockaddr *)&n, &l));
    out("  peer = %s", saddr(&n, 1));
    l = sizeof n;
    R("getsockname", getsockname(s, (struct sockaddr *)&n, &l));
    out("  local ip = %s port>0 %d", saddr(&n, 0), ntohs(n.sin_port) > 0);
    l = 4;
    R("getpeername short", getpeername(s, (struct sockaddr *)&n, &l));
    out("  len = %d", (int)l);
    R("write", write(s, "ping", 4));
    wait_in(s, 3000);
    char b[16] = {0};
    R("read", read(s, b, sizeof b));
    out("  data = %s", b);
    R("listen on connected", listen(s, 5));
    R("bind on connected", bind(s, (struct sockaddr *)&a, sizeof a));
    out("TCP_MAXSEG > 500 = %d", getint(s, IPPROTO_TCP, TCP_MAXSEG) > 500);
    close(s);

    out("# blocking connect");
    s = conn_to(7001);
    R("send", send(s, "abc", 3, 0));
    R("recv WAITALL", recv(s, b, 3, MSG_WAITALL));
    R("shutdown WR", shutdown(s, SHUT_WR));
    R("read EOF", read(s, b, sizeof b));
    close(s);
}

static void case_listen_accept(void)
{
    out("# listen / accept (non-blocking listener)");
    int l = socket(AF_INET, SOCK_STREAM, 0);
    setint(l, SOL_SOCKET, SO_REUSEADDR, 1);
    struct sockaddr_in a = addr("0.0.0.0", 8001);
    R("bind", bind(l, (struct sockaddr *)&a, sizeof a));
    R("bind again", bind(l, (struct sockaddr *)&a, sizeof a));
    R("listen", listen(l, 16));
    R("listen again", listen(l, 32));
    out("SO_ACCEPTCONN = %d", getint(l, SOL_SOCKET, SO_ACCEPTCONN));
    struct sockaddr_in n;
    socklen_t nl = sizeof n;
    R("getsockname", getsockname(l, (struct sockaddr *)&n, &nl));
    out("  = %s", saddr(&n, 1));
    nl = sizeof n;
    R("getpeername listener", getpeername(l, (struct sockaddr *)&n, &nl));
    set_nonblock(l, 1);
    R("accept (nothing yet)", accept(l, NULL, NULL));
    struct pollfd p = {l, POLLIN | POLLOUT, 0};
    R("poll listener idle", poll(&p, 1, 0));
    out("  revents = %s", pev(p.revents));
    char b[16];
    R("read listener", read(l, b, 1));
    R("connect on listener", connect(l, (struct sockaddr *)&a, sizeof a));

    int l2 = socket(AF_INET, SOCK_STREAM, 0);
    R("bind same port, no SO_REUSEADDR", bind(l2, (struct sockaddr *)&a, sizeof a));
    setint(l2, SOL_SOCKET, SO_REUSEADDR, 1);
    R("bind same port, SO_REUSEADDR, other listening", bind(l2, (struct sockaddr *)&a, sizeof a));
    close(l2);

    partner_connect(8001, "hi");
    p.revents = 0;
    p.events = POLLIN;
    R("poll listener", poll(&p, 1, 3000));
    out("  revents = %s", pev(p.revents));
    memset(&n, 0, sizeof n);
    nl = sizeof n;
    int c = R("accept4", accept4(l, (struct sockaddr *)&n, &nl, SOCK_NONBLOCK | SOCK_CLOEXEC));
    out("  peer ip = %s len %d", saddr(&n, 0), (int)nl);
    out("  O_NONBLOCK = %d FD_CLOEXEC = %d", !!(fcntl(c, F_GETFL) & O_NONBLOCK), !!(fcntl(c, F_GETFD) & FD_CLOEXEC));
    nl = sizeof n;
    getsockname(c, (struct sockaddr *)&n, &nl);
    out("  local = %s", saddr(&n, 1));
    out("  SO_ACCEPTCONN = %d", getint(c, SOL_SOCKET, SO_ACCEPTCONN));
    out("  SO_REUSEADDR inherited = %d", getint(c, SOL_SOCKET, SO_REUSEADDR));
    wait_in(c, 3000);
    memset(b, 0, sizeof b);
    R("read", read(c, b, sizeof b));
    out("  data = %s", b);
    R("accept again", accept(l, NULL, NULL));
    p.revents = 0;
    R("poll listener drained", poll(&p, 1, 0));
    close(c);

    /* A blocking accept that a connection wakes up. */
    set_nonblock(l, 0);
    partner_connect(8001, "hi");
    nl = 2;
    c = R("blocking accept (short addrlen)", accept(l, (struct sockaddr *)&n, &nl));
    out("  addrlen = %d", (int)nl);
    close(c);
    R("close listener", close(l));

    out("# listen without bind picks a port");
    l = socket(AF_INET, SOCK_STREAM, 0);
    R("listen", listen(l, 4));
    nl = sizeof n;
    getsockname(l, (struct sockaddr *)&n, &nl);
    out("  port > 0 = %d ip = %s", ntohs(n.sin_port) > 0, saddr(&n, 0));
    close(l);

    out("# bind port 0");
    l = socket(AF_INET, SOCK_STREAM, 0);
    a = addr("0.0.0.0", 0);
    R("bind", bind(l, (struct sockaddr *)&a, sizeof a));
    nl = sizeof n;
    getsockname(l, (struct sockaddr *)&n, &nl);
    out("  port > 0 = %d", ntohs(n.sin_port) > 0);
    close(l);

    out("# bind to a foreign address");
    l = socket(AF_INET, SOCK_STREAM, 0);
    a = addr("198.18.0.99", 8002);
    R("bind", bind(l, (struct sockaddr *)&a, sizeof a));
    a = addr(own_ip, 8002);
    R("bind own address", bind(l, (struct sockaddr *)&a, sizeof a));
    nl = sizeof n;
    getsockname(l, (struct sockaddr *)&n, &nl);
    out("  = %s", saddr(&n, 1));
    close(l);
    l = socket(AF_INET, SOCK_STREAM, 0);
    a = addr(own_ip, 8003);
    a.sin_family = AF_UNIX;
    R("bind AF_UNIX family", bind(l, (struct sockaddr *)&a, sizeof a));
    R("bind short len", bind(l, (struct sockaddr *)&a, 4));
    close(l);
}

static void case_partial_reads(void)
{
    out("# partial reads, MSG_PEEK, FIONREAD, DONTWAIT");
    int s = conn_to(7005);
    wait_in(s, 3000);
    msleep(200);
    int q = -1;
    R("FIONREAD", ioctl(s, FIONREAD, &q));
    out("  = %d", q);
    char b[128] = {0};
    volatile size_t four = 4; /* not a constant: fortified builds use __read_chk */
    R("read 4", read(s, b, four));
    out("  data = %.4s", b);
    memset(b, 0, sizeof b);
    R("recv PEEK 4", recv(s, b, four, MSG_PEEK));
    out("  data = %.4s", b);
    memset(b, 0, sizeof b);
    R("read 100", read(s, b, 100));
    out("  data = %s", b);
    R("recv DONTWAIT", recv(s, b, 10, MSG_DONTWAIT));
    R("read 0 bytes", read(s, b, 0));
    set_nonblock(s, 1);
    R("read non-blocking", read(s, b, 10));
    R("FIONREAD", ioctl(s, FIONREAD, &q));
    out("  = %d", q);
    int on = 0;
    R("FIONBIO 0", ioctl(s, FIONBIO, &on));
    out("  O_NONBLOCK = %d", !!(fcntl(s, F_GETFL) & O_NONBLOCK));
    on = 1;
    R("FIONBIO 1", ioctl(s, FIONBIO, &on));
    R("read after FIONBIO", read(s, b, 10));
    R("recv OOB", recv(s, b, 10, MSG_OOB));
    R("shutdown WR", shutdown(s, SHUT_WR));
    struct pollfd p = {s, POLLIN | POLLOUT | POLLRDHUP, 0};
    wait_all(s, POLLRDHUP, 3000);
    R("poll after peer close", poll(&p, 1, 3000));
    out("  revents = %s", pev(p.revents));
    R("read EOF", read(s, b, 10));
    R("read EOF again", read(s, b, 10));
    close(s);
}

static void case_half_close(void)
{
    out("# half-close (ours)");
    int s = conn_to(7006);
    char buf[1000];
    for (int i = 0; i < 1000; i++) buf[i] = (char)(i * 7);
    R("write 1000", write(s, buf, 1000));
    R("shutdown WR", shutdown(s, SHUT_WR));
    R("send after SHUT_WR NOSIGNAL", send(s, "x", 1, MSG_NOSIGNAL));
    sigpipes = 0;
    R("write after SHUT_WR", write(s, "x", 1));
    out("  sigpipes = %d", (int)sigpipes);
    char r[64];
    int n = read_all(s, r, sizeof r);
    out("reply (%d) = %s", n, r);
    R("read EOF", read(s, r, 10));
    wait_all(s, POLLHUP, 3000);
    struct pollfd p = {s, POLLIN | POLLOUT | POLLRDHUP, 0};
    R("poll", poll(&p, 1, 0));
    out("  revents = %s", pev(p.revents));
    close(s);

    /* The sink peer stays open for 1.5 s: no race with its close. */
    s = conn_to(7004);
    R("shutdown WR (peer open)", shutdown(s, SHUT_WR));
    R("shutdown WR again", shutdown(s, SHUT_WR));
    R("shutdown RD after WR", shutdown(s, SHUT_RD));
    close(s);

    out("# half-close (peer's)");
    s = conn_to(7002);
    wait_all(s, POLLIN | POLLRDHUP, 3000);
    p.fd = s;
    p.revents = 0;
    R("poll", poll(&p, 1, 3000));
    out("  revents = %s", pev(p.revents));
    memset(r, 0, sizeof r);
    R("read", read(s, r, sizeof r));
    out("  data = %s", r);
    R("read EOF", read(s, r, sizeof r));
    R("read EOF again", read(s, r, sizeof r));
    R("write still works", write(s, "x", 1));
    struct sockaddr_in n2;
    socklen_t nl = sizeof n2;
    R("getpeername", getpeername(s, (struct sockaddr *)&n2, &nl));
    R("shutdown RDWR", shutdown(s, SHUT_RDWR));
    wait_all(s, POLLHUP, 3000);
    p.revents = 0;
    R("poll after both", poll(&p, 1, 0));
    out("  revents = %s", pev(p.revents));
    close(s);

    out("# shutdown(SHUT_RD)");
    s = conn_to(7005);
    wait_in(s, 3000);
    msleep(100);
    R("shutdown RD", shutdown(s, SHUT_RD));
    p.fd = s;
    p.revents = 0;
    R("poll", poll(&p, 1, 0));
    out("  revents = %s", pev(p.revents));
    memset(r, 0, sizeof r);
    R("read", read(s, r, sizeof r));
    out("  data = %s", r);
    R("read again", read(s, r, sizeof r));
    R("write", write(s, "x", 1));
    close(s);
}

static void case_reset(void)
{
    out("# reset by peer: read first");
    int s = conn_to(7003);
    wait_all(s, POLLERR, 3000);
    struct pollfd p = {s, POLLIN | POLLOUT | POLLRDHUP, 0};
    R("poll", poll(&p, 1, 3000));
    out("  revents = %s", pev(p.revents));
    char b[8];
    R("read", read(s, b, sizeof b));
    p.revents = 0;
    R("poll after read", poll(&p, 1, 0));
    out("  revents = %s", pev(p.revents));
    R("read again", read(s, b, sizeof b));
    R("send NOSIGNAL", send(s, "x", 1, MSG_NOSIGNAL));
    sigpipes = 0;
    R("write", write(s, "x", 1));
    out("  sigpipes = %d", (int)sigpipes);
    out("SO_ERROR = %d", getint(s, SOL_SOCKET, SO_ERROR));
    struct sockaddr_in n;
    socklen_t nl = sizeof n;
    R("getpeername", getpeername(s, (struct sockaddr *)&n, &nl));
    R("shutdown WR", shutdown(s, SHUT_WR));
    close(s);

    out("# reset by peer: SO_ERROR first");
    s = conn_to(7003);
    wait_all(s, POLLERR, 3000);
    out("SO_ERROR = %s", ename(getint(s, SOL_SOCKET, SO_ERROR)));
    R("read", read(s, b, sizeof b));
    close(s);

    out("# reset by peer: write first");
    s = conn_to(7003);
    wait_all(s, POLLERR, 3000);
    sigpipes = 0;
    R("write", write(s, "x", 1));
    R("write again", write(s, "x", 1));
    out("  sigpipes = %d", (int)sigpipes);
    close(s);

    out("# reset by peer: epoll");
    s = conn_to(7003);
    int ep = epoll_create1(0);
    struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP | EPOLLET, .data.u32 = 1};
    epoll_ctl(ep, EPOLL_CTL_ADD, s, &ev);
    struct epoll_event got[4];
    wait_all(s, POLLERR, 3000);
    int n2 = R("epoll_wait", epoll_wait(ep, got, 4, 3000));
    if (n2 > 0) out("  events = %s", eev(got[0].events));
    close(ep);
    close(s);
}

static void case_epoll(void)
{
    out("# EPOLLET wake-ups");
    int s = conn_to(7007);
    set_nonblock(s, 1);
    int ep = R("epoll_create1", epoll_create1(EPOLL_CLOEXEC));
    struct epoll_event ev = {.events = EPOLLIN | EPOLLET, .data.u32 = 7};
    R("epoll_ctl ADD", epoll_ctl(ep, EPOLL_CTL_ADD, s, &ev));
    R("epoll_ctl ADD again", epoll_ctl(ep, EPOLL_CTL_ADD, s, &ev));
    struct epoll_event got[8];
    int n = R("wait a", epoll_wait(ep, got, 8, 3000));
    if (n > 0) out("  data = %u events = %s", got[0].data.u32, eev(got[0].events));
    R("wait again (no new edge)", epoll_wait(ep, got, 8, 0));
    n = R("wait b (new data, not drained)", epoll_wait(ep, got, 8, 3000));
    msleep(50);
    char b[16] = {0};
    R("read", read(s, b, sizeof b));
    out("  data = %s", b);
    n = R("wait c", epoll_wait(ep, got, 8, 3000));
    memset(b, 0, sizeof b);
    R("read", read(s, b, sizeof b));
    out("  data = %s", b);
    R("read drained", read(s, b, sizeof b));
    R("epoll_ctl DEL", epoll_ctl(ep, EPOLL_CTL_DEL, s, NULL));
    R("epoll_ctl DEL again", epoll_ctl(ep, EPOLL_CTL_DEL, s, NULL));
    R("epoll_ctl MOD missing", epoll_ctl(ep, EPOLL_CTL_MOD, s, &ev));
    close(s);

    out("# level-triggered, EPOLLONESHOT");
    s = conn_to(7005);
    wait_in(s, 3000);
    msleep(100);
    ev.events = EPOLLIN;
    ev.data.u32 = 5;
    epoll_ctl(ep, EPOLL_CTL_ADD, s, &ev);
    R("wait LT", epoll_wait(ep, got, 8, 1000));
    R("wait LT again", epoll_wait(ep, got, 8, 0));
    ev.events = EPOLLIN | EPOLLONESHOT;
    R("MOD ONESHOT", epoll_ctl(ep, EPOLL_CTL_MOD, s, &ev));
    R("wait ONESHOT", epoll_wait(ep, got, 8, 1000));
    R("wait ONESHOT again", epoll_wait(ep, got, 8, 0));
    R("MOD rearm", epoll_ctl(ep, EPOLL_CTL_MOD, s, &ev));
    R("wait rearmed", epoll_wait(ep, got, 8, 0));
    char b2[32];
    read(s, b2, sizeof b2);
    ev.events = EPOLLIN;
    epoll_ctl(ep, EPOLL_CTL_MOD, s, &ev);
    R("wait drained LT", epoll_wait(ep, got, 8, 0));
    ev.events = EPOLLOUT;
    epoll_ctl(ep, EPOLL_CTL_MOD, s, &ev);
    n = R("wait OUT", epoll_wait(ep, got, 8, 0));
    if (n > 0) out("  events = %s", eev(got[0].events));
    epoll_ctl(ep, EPOLL_CTL_DEL, s, NULL);
    close(s);

    out("# EPOLLRDHUP");
    s = conn_to(7002);
    wait_all(s, POLLIN | POLLRDHUP, 3000);
    ev.events = EPOLLIN | EPOLLRDHUP | EPOLLET;
    ev.data.u32 = 2;
    epoll_ctl(ep, EPOLL_CTL_ADD, s, &ev);
    n = R("wait", epoll_wait(ep, got, 8, 1000));
    if (n > 0) out("  events = %s", eev(got[0].events));
    shutdown(s, SHUT_WR);
    wait_all(s, POLLHUP, 3000);
    ev.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP;
    epoll_ctl(ep, EPOLL_CTL_MOD, s, &ev);
    n = R("wait after both closed", epoll_wait(ep, got, 8, 1000));
    if (n > 0) out("  events = %s", eev(got[0].events));
    close(s);

    out("# EPOLLOUT edge when the peer drains");
    s = conn_to(7004);
    set_nonblock(s, 1);
    ev.events = EPOLLOUT | EPOLLET;
    ev.data.u32 = 4;
    epoll_ctl(ep, EPOLL_CTL_ADD, s, &ev);
    n = R("wait initial", epoll_wait(ep, got, 8, 0));
    R("wait again", epoll_wait(ep, got, 8, 0));
    static char big[65536];
    long total = 0;
    int r;
    long end = now_ms() + 1000;
    while ((r = write(s, big, sizeof big)) > 0 && now_ms() < end) total += r;
    out("write until full: last = -1 %s, wrote > 0: %d", ename(errno), total > 0);
    R("wait while full", epoll_wait(ep, got, 8, 0));
    n = R("wait for drain", epoll_wait(ep, got, 8, 5000));
    if (n > 0) out("  events = %s", eev(got[0].events));
    struct pollfd p = {s, POLLOUT, 0};
    R("poll OUT", poll(&p, 1, 0));
    close(s);
    close(ep);

    out("# epoll_pwait with a signal mask");
    s = conn_to(7005);
    ep = epoll_create(1);
    ev.events = EPOLLIN;
    epoll_ctl(ep, EPOLL_CTL_ADD, s, &ev);
    sigset_t m;
    sigemptyset(&m);
    n = R("epoll_pwait", epoll_pwait(ep, got, 8, 3000, &m));
    close(s);
    close(ep);
}

/* Sockets only epoll waits on (no poll/select/blocking call): under the
 * shim their readability is answered from user space (vready.rs); these
 * steps hold it to Linux's epoll semantics. */
struct ep_waiter {
    int ep, n;
    unsigned data;
};

static void *ep_wait_thread(void *arg)
{
    struct ep_waiter *w = arg;
    struct epoll_event got[4];
    w->n = epoll_wait(w->ep, got, 4, 3000);
    w->data = w->n > 0 ? got[0].data.u32 : 0;
    return NULL;
}

/* Adds s to ep for `events` (data `data`) and waits (bounded) for a wait
 * that reports `until`; prints that wait's count and first event. */
static void ep_add_until(int ep, int s, uint32_t events, unsigned data, uint32_t until)
{
    struct epoll_event ev = {.events = events, .data.u32 = data}, got[8];
    epoll_ctl(ep, EPOLL_CTL_ADD, s, &ev);
    long end = now_ms() + 3000;
    int n = 0;
    while (now_ms() < end) {
        n = epoll_wait(ep, got, 8, 100);
        if (n > 0 && (got[0].events & until)) break;
    }
    out("  n = %d events = %s", n, n > 0 ? eev(got[0].events) : "-");
}

static volatile sig_atomic_t sigios;
static void on_sigio(int s) { (void)s; sigios++; }

/* A connection nothing waits on (under the shim its readability is kept
 * off the pair until something could see it): blocking reads, then
 * O_ASYNC, whose SIGIO comes from the pair. */
static void case_lazy(void)
{
    char b[64];
    out("# blocking read on a connection nothing else waits on");
    int s = conn_to(7007);
    R("read a", read(s, b, sizeof b));
    R("read b", read(s, b, sizeof b));
    out("# O_ASYNC: SIGIO on arrival");
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_sigio;
    sigaction(SIGIO, &sa, NULL);
    R("F_SETOWN", fcntl(s, F_SETOWN, getpid()));
    R("O_ASYNC", fcntl(s, F_SETFL, fcntl(s, F_GETFL) | O_ASYNC));
    long end = now_ms() + 3000;
    while (!sigios && now_ms() < end) msleep(5);
    out("  SIGIO seen = %d", sigios > 0);
    R("read c", read(s, b, sizeof b));
    signal(SIGIO, SIG_IGN);
    close(s);
}

static void case_epoll_only(void)
{
    struct epoll_event ev, got[8];
    char b[64];
    int n;

    out("# epoll only: level-triggered reads");
    int ep = epoll_create1(EPOLL_CLOEXEC);
    int s = conn_to(7005);
    set_nonblock(s, 1);
    ev.events = EPOLLIN;
    ev.data.u32 = 51;
    R("ADD", epoll_ctl(ep, EPOLL_CTL_ADD, s, &ev));
    n = R("wait", epoll_wait(ep, got, 8, 3000));
    if (n > 0) out("  data = %u events = %s", got[0].data.u32, eev(got[0].events));
    msleep(100);
    R("wait again", epoll_wait(ep, got, 8, 0));
    R("read 4", read(s, b, 4));
    R("wait after partial read", epoll_wait(ep, got, 8, 0));
    R("read rest", read(s, b, sizeof b));
    R("wait drained", epoll_wait(ep, got, 8, 0));
    R("read drained", read(s, b, sizeof b));

    out("# epoll only: MOD to edge-triggered with data pending");
    int s2 = conn_to(7005);
    set_nonblock(s2, 1);
    ev.events = EPOLLIN;
    ev.data.u32 = 52;
    epoll_ctl(ep, EPOLL_CTL_ADD, s2, &ev);
    n = R("wait", epoll_wait(ep, got, 8, 3000));
    msleep(100);
    ev.events = EPOLLIN | EPOLLET;
    R("MOD ET", epoll_ctl(ep, EPOLL_CTL_MOD, s2, &ev));
    n = R("wait after MOD", epoll_wait(ep, got, 8, 0));
    if (n > 0) out("  data = %u events = %s", got[0].data.u32, eev(got[0].events));
    R("wait again (no new edge)", epoll_wait(ep, got, 8, 0));
    R("DEL", epoll_ctl(ep, EPOLL_CTL_DEL, s2, NULL));
    R("wait after DEL", epoll_wait(ep, got, 8, 0));
    close(s2);
    close(s);

    out("# epoll only: two ready sockets, maxevents 1");
    int a = conn_to(7005), c = conn_to(7005);
    ev.events = EPOLLIN;
    ev.data.u32 = 1;
    epoll_ctl(ep, EPOLL_CTL_ADD, a, &ev);
    ev.data.u32 = 2;
    epoll_ctl(ep, EPOLL_CTL_ADD, c, &ev);
    long end = now_ms() + 3000;
    int seen = 0;
    while (seen != 3 && now_ms() < end)
        if (epoll_wait(ep, got, 1, 100) == 1) seen |= got[0].data.u32;
    out("  both reported = %d", seen == 3);
    unsigned first = 0, second = 0;
    if (epoll_wait(ep, got, 1, 0) == 1) first = got[0].data.u32;
    if (epoll_wait(ep, got, 1, 0) == 1) second = got[0].data.u32;
    out("  two waits of 1 give both = %d", first + second == 3);
    n = R("wait 8", epoll_wait(ep, got, 8, 0));
    close(a);
    close(c);

    out("# epoll only: data and FIN in one event");
    s = conn_to(7002);
    ep_add_until(ep, s, EPOLLIN | EPOLLRDHUP, 53, EPOLLRDHUP);
    R("read", read(s, b, sizeof b));
    n = R("wait at EOF", epoll_wait(ep, got, 8, 0));
    if (n > 0) out("  events = %s", eev(got[0].events));
    close(s);

    out("# epoll only: readable and writable in one event");
    s = conn_to(7005);
    ep_add_until(ep, s, EPOLLIN | EPOLLOUT, 54, EPOLLIN);
    close(s);

    out("# epoll only: a thread blocked in epoll_wait is woken");
    s = conn_to(7007);
    set_nonblock(s, 1);
    ev.events = EPOLLIN | EPOLLET;
    ev.data.u32 = 55;
    epoll_ctl(ep, EPOLL_CTL_ADD, s, &ev);
    n = R("wait a", epoll_wait(ep, got, 8, 3000));
    R("read a", read(s, b, sizeof b));
    struct ep_waiter w = {ep, -9, 0};
    pthread_t t;
    pthread_create(&t, NULL, ep_wait_thread, &w);
    /* This thread keeps calling into the socket meanwhile (it may be the
     * one that takes the news of "b"). */
    end = now_ms() + 1000;
    while (now_ms() < end) {
        char pk;
        recv(s, &pk, 1, MSG_PEEK | MSG_DONTWAIT);
        msleep(1);
    }
    pthread_join(t, NULL);
    out("  blocked waiter n = %d data = %u", w.n, w.data);
    close(s);

    out("# epoll only: poll on the socket after epoll (pair takes over)");
    s = conn_to(7005);
    ev.events = EPOLLIN;
    ev.data.u32 = 56;
    epoll_ctl(ep, EPOLL_CTL_ADD, s, &ev);
    n = R("epoll", epoll_wait(ep, got, 8, 3000));
    msleep(100);
    struct pollfd p = {s, POLLIN, 0};
    R("poll", poll(&p, 1, 0));
    out("  revents = %s", pev(p.revents));
    R("epoll again", epoll_wait(ep, got, 8, 0));
    R("read", read(s, b, sizeof b));
    R("epoll drained", epoll_wait(ep, got, 8, 0));
    R("poll drained", poll(&p, 1, 0));
    close(s);

    out("# epoll only: a new epoll set after close, and a dup");
    close(ep);
    ep = epoll_create1(0);
    s = conn_to(7005);
    ev.events = EPOLLIN;
    ev.data.u32 = 57;
    R("ADD to new set", epoll_ctl(ep, EPOLL_CTL_ADD, s, &ev));
    n = R("wait", epoll_wait(ep, got, 8, 3000));
    msleep(100);
    int d = dup(s);
    n = R("wait after dup", epoll_wait(ep, got, 8, 0));
    R("read via dup", read(d, b, sizeof b));
    R("wait drained", epoll_wait(ep, got, 8, 0));
    close(d);
    close(s);
    close(ep);
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

static void case_mixed(void)
{
    out("# poll/select/epoll on mixed fds");
    int pp[2];
    pipe2(pp, O_NONBLOCK);
    int efd = eventfd(0, EFD_NONBLOCK);
    int tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK);
    int us[2];
    socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, us);
    int s = conn_to(7005);
    int idle = conn_to(7001);
    struct pollfd p[6] = {
        {pp[0], POLLIN, 0}, {efd, POLLIN, 0}, {tfd, POLLIN, 0},
        {us[0], POLLIN, 0}, {s, POLLIN, 0}, {idle, POLLIN, 0},
    };
    msleep(300);
    volatile int six = 6;
    R("poll (only the TCP data ready)", poll(p, six, 1000));
    for (int i = 0; i < 6; i++) out("  fd%d revents = %s", i, pev(p[i].revents));
    /* A TAS fd, idle, among kernel fds that become ready while blocked. */
    struct pollfd q[3] = {{pp[0], POLLIN, 0}, {idle, POLLIN, 0}, {tfd, POLLIN, 0}};
    struct itimerspec its = {{0, 0}, {0, 100 * 1000000}};
    timerfd_settime(tfd, 0, &its, NULL);
    long t0 = now_ms();
    R("poll woken by timerfd", poll(q, 3, 3000));
    long dt = now_ms() - t0;
    out("  waited 50..1000 ms = %d", dt >= 50 && dt < 1000);
    for (int i = 0; i < 3; i++) out("  fd%d revents = %s", i, pev(q[i].revents));
    write(pp[1], "x", 1);
    uint64_t one = 1;
    write(efd, &one, 8);
    write(us[1], "y", 1);
    for (int i = 0; i < 6; i++) p[i].revents = 0;
    R("poll (all but idle)", poll(p, 6, 1000));
    for (int i = 0; i < 6; i++) out("  fd%d revents = %s", i, pev(p[i].revents));

    struct timespec ts = {1, 0};
    sigset_t m;
    sigemptyset(&m);
    R("ppoll", ppoll(p, 6, &ts, &m));

    fd_set rs, ws;
    FD_ZERO(&rs);
    FD_ZERO(&ws);
    int fds[6] = {pp[0], efd, tfd, us[0], s, idle};
    int maxfd = 0;
    for (int i = 0; i < 6; i++) {
        FD_SET(fds[i], &rs);
        if (fds[i] > maxfd) maxfd = fds[i];
    }
    FD_SET(s, &ws);
    struct timeval tv = {1, 0};
    R("select", select(maxfd + 1, &rs, &ws, NULL, &tv));
    for (int i = 0; i < 6; i++) out("  fd%d r=%d", i, FD_ISSET(fds[i], &rs) ? 1 : 0);
    out("  tcp w=%d", FD_ISSET(s, &ws) ? 1 : 0);
    FD_ZERO(&rs);
    FD_SET(idle, &rs);
    tv.tv_sec = 0;
    tv.tv_usec = 200000;
    R("select idle tcp (timeout)", select(idle + 1, &rs, NULL, NULL, &tv));
    out("  r=%d", FD_ISSET(idle, &rs) ? 1 : 0);
    FD_ZERO(&rs);
    for (int i = 0; i < 6; i++) FD_SET(fds[i], &rs);
    ts.tv_sec = 1;
    R("pselect", pselect(maxfd + 1, &rs, NULL, NULL, &ts, &m));

    int ep = epoll_create1(0);
    for (int i = 0; i < 6; i++) {
        struct epoll_event ev = {.events = EPOLLIN, .data.u32 = 100 + i};
        epoll_ctl(ep, EPOLL_CTL_ADD, fds[i], &ev);
    }
    struct epoll_event got[8];
    int n = R("epoll_wait mixed", epoll_wait(ep, got, 8, 1000));
    uint32_t ids[8];
    for (int i = 0; i < n; i++) ids[i] = got[i].data.u32;
    qsort(ids, n, sizeof ids[0], cmp_u32);
    for (int i = 0; i < n; i++) out("  ready %u", ids[i]);
    close(ep);
    close(pp[0]);
    close(pp[1]);
    close(efd);
    close(tfd);
    close(us[0]);
    close(us[1]);
    close(s);
    close(idle);
}

static void case_dup(void)
{
    out("# dup, dup2, dup3, F_DUPFD_CLOEXEC");
    int s = conn_to(7001);
    int d0 = dup(s);
    R("dup > original", d0 > s);
    close(d0);
    int d = dup(s);
    R("write via dup", write(d, "dup", 3));
    char b[16] = {0};
    wait_in(s, 3000);
    msleep(50);
    R("read via original", read(s, b, sizeof b));
    out("  data = %s", b);
    out("  dup FD_CLOEXEC = %d", !!(fcntl(d, F_GETFD) & FD_CLOEXEC));
    R("close original", close(s));
    R("write via dup after close", write(d, "x", 1));
    wait_in(d, 3000);
    R("read via dup", read(d, b, sizeof b));
    int d2 = fcntl(d, F_DUPFD_CLOEXEC, 100);
    out("F_DUPFD_CLOEXEC >= 100 = %d cloexec = %d", d2 >= 100, !!(fcntl(d2, F_GETFD) & FD_CLOEXEC));
    R("dup2 to 200", dup2(d, 200));
    R("write via 200", write(200, "y", 1));
    wait_in(200, 3000);
    R("read via 200", read(200, b, sizeof b));
    R("dup3 to 201 CLOEXEC", dup3(d, 201, O_CLOEXEC));
    out("  201 cloexec = %d", !!(fcntl(201, F_GETFD) & FD_CLOEXEC));
    R("dup3 same fd", dup3(201, 201, 0));
    R("dup2 same fd", dup2(201, 201));
    R("dup3 bad flags", dup3(d, 202, 12345));
    int pp[2];
    pipe(pp);
    R("dup2 pipe over tcp 201", dup2(pp[0], 201));
    R("write to pipe", write(pp[1], "z", 1));
    R("read 201 is the pipe now", read(201, b, 1));
    R("dup2 bad source", dup2(9999, 202));
    close(pp[0]);
    close(pp[1]);
    close(201);
    close(200);
    close(d2);
    R("shutdown via last dup", shutdown(d, SHUT_WR));
    R("read EOF", read(d, b, sizeof b));
    close(d);
}

static void case_vectors(void)
{
    out("# readv/writev/sendmsg/recvmsg/recvfrom");
    int s = conn_to(7001);
    struct iovec v[3] = {{"ab", 2}, {"cd", 2}, {"ef", 2}};
    R("writev", writev(s, v, 3));
    wait_in(s, 3000);
    msleep(100);
    char x[3] = {0}, y[4] = {0};
    struct iovec rv[2] = {{x, 3}, {y, 3}};
    struct msghdr mh;
    memset(&mh, 0, sizeof mh);
    struct sockaddr_in from;
    mh.msg_name = &from;
    mh.msg_namelen = sizeof from;
    mh.msg_iov = rv;
    mh.msg_iovlen = 2;
    char ctl[64];
    mh.msg_control = ctl;
    mh.msg_controllen = sizeof ctl;
    R("recvmsg", recvmsg(s, &mh, 0));
    out("  data = %.3s %.3s namelen %d controllen %d flags %d", x, y, (int)mh.msg_namelen, (int)mh.msg_controllen,
        mh.msg_flags);
    struct iovec sv[2] = {{"12", 2}, {"345", 3}};
    memset(&mh, 0, sizeof mh);
    mh.msg_iov = sv;
    mh.msg_iovlen = 2;
    R("sendmsg", sendmsg(s, &mh, 0));
    wait_in(s, 3000);
    msleep(100);
    char b[16] = {0};
    socklen_t fl = sizeof from;
    R("recvfrom", recvfrom(s, b, sizeof b, 0, (struct sockaddr *)&from, &fl));
    out("  data = %s addrlen %d", b, (int)fl);
    R("sendto with address", sendto(s, "q", 1, 0, (struct sockaddr *)&from, sizeof from));
    wait_in(s, 3000);
    char r1[2] = {0}, r2[2] = {0};
    struct iovec rr[2] = {{r1, 1}, {r2, 1}};
    R("readv", readv(s, rr, 2));
    volatile int neg = -1;
    R("writev iovcnt -1", writev(s, v, neg));
    R("writev iovcnt 0", writev(s, v, 0));
    close(s);
}

static void case_sendfile(void)
{
    out("# sendfile");
    char path[] = "/tmp/conform-sendfile-XXXXXX";
    int f = mkstemp(path);
    unlink(path);
    static char data[300000];
    unsigned sum = 0;
    for (int i = 0; i < (int)sizeof data; i++) {
        data[i] = (char)(i * 31 + (i >> 8));
        sum = sum * 31 + (unsigned char)data[i];
    }
    write(f, data, sizeof data);
    int s = conn_to(7006);
    off_t off = 0;
    long total = 0;
    while (total < (long)sizeof data) {
        ssize_t r = sendfile(s, f, &off, sizeof data - total);
        if (r <= 0) break;
        total += r;
    }
    out("sendfile total = %ld off = %ld", total, (long)off);
    lseek(f, 1000, SEEK_SET);
    R("sendfile from file position", sendfile(s, f, NULL, 1000));
    out("  file position = %ld", (long)lseek(f, 0, SEEK_CUR));
    shutdown(s, SHUT_WR);
    char r[64];
    read_all(s, r, sizeof r);
    unsigned long n = 0, got = 0;
    sscanf(r, "%lu %lu", &n, &got);
    unsigned expect = sum;
    for (int i = 1000; i < 2000; i++) expect = expect * 31 + (unsigned char)data[i];
    out("peer got %lu bytes, sum ok %d", n, (unsigned)got == expect);
    off = 0;
    sigpipes = 0;
    R("sendfile after SHUT_WR", sendfile(s, f, &off, 10));
    out("  sigpipes = %d", (int)sigpipes);
    close(s);
    close(f);
}

static void *reader_thread(void *arg)
{
    int s = *(int *)arg;
    char b[8] = {0};
    long r = read(s, b, sizeof b);
    return (void *)r;
}

static void case_blocking(void)
{
    out("# SO_RCVTIMEO, MSG_WAITALL, threads");
    int s = conn_to(7001);
    struct timeval tv = {0, 200000};
    setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    long t0 = now_ms();
    char b[8];
    R("read with timeout", read(s, b, sizeof b));
    long dt = now_ms() - t0;
    out("  took 150..1000 ms = %d", dt >= 150 && dt < 1000);
    tv.tv_usec = 0;
    setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    pthread_t th;
    pthread_create(&th, NULL, reader_thread, &s);
    msleep(200);
    R("write from another thread", write(s, "t", 1));
    void *res;
    pthread_join(th, &res);
    out("blocked reader got = %ld", (long)res);
    close(s);

    s = conn_to(7007);
    memset(b, 0, sizeof b);
    R("recv WAITALL 3 (drip)", recv(s, b, 3, MSG_WAITALL));
    out("  data = %s", b);
    close(s);
}

/* The restart case: a thread that, 100 ms after it starts, signals the
 * blocked thread (SIGUSR1) and 200 ms later makes the blocked call able
 * to finish: one byte on `fd` (the echo partner sends it back) or, with
 * fd < 0, the partner connecting to our `port`. */
struct poke {
    pthread_t target;
    int fd;
    int port;
};

static volatile sig_atomic_t usr1s;
static void on_usr1(int s) { (void)s; usr1s++; }

static void *poker(void *arg)
{
    struct poke *p = arg;
    msleep(100);
    pthread_kill(p->target, SIGUSR1);
    msleep(200);
    if (p->fd >= 0)
        write(p->fd, "r", 1);
    else
        partner_connect(p->port, "hi");
    return NULL;
}

static void set_usr1(int flags)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = flags < 0 ? SIG_DFL : on_usr1;
    sa.sa_flags = flags < 0 ? 0 : flags;
    sigaction(SIGUSR1, &sa, NULL);
    usr1s = 0;
}

static void case_restart(void)
{
    out("# a blocking call interrupted by a signal handler (SA_RESTART, timeouts)");
    /* main() has a SIGPIPE handler without SA_RESTART: a synchronous
     * signal, which cannot interrupt a sleeping call. */
    /* `other`: SIGUSR2 also has a handler, without SA_RESTART, and never
     * fires: only the handler that ran decides (the shim used to answer
     * EINTR whenever such a handler existed). */
    struct { const char *name; int flags; int timeo; int other; } t[] = {
        {"read, SA_RESTART", SA_RESTART, 0, 0},
        {"read, no SA_RESTART", 0, 0, 0},
        {"read, SA_RESTART, SO_RCVTIMEO 3 s", SA_RESTART, 1, 0},
        {"read, SA_RESTART, another signal's handler without", SA_RESTART, 0, 1},
    };
    for (unsigned i = 0; i < sizeof t / sizeof t[0]; i++) {
        set_usr1(t[i].flags);
        struct sigaction o2;
        memset(&o2, 0, sizeof o2);
        o2.sa_handler = t[i].other ? on_usr1 : SIG_DFL;
        sigaction(SIGUSR2, &o2, NULL);
        int s = conn_to(7001);
        if (t[i].timeo) {
            struct timeval tv = {3, 0};
            setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        }
        struct poke p = {pthread_self(), s, 0};
        pthread_t th;
        pthread_create(&th, NULL, poker, &p);
        char b[8];
        R(t[i].name, read(s, b, sizeof b));
        pthread_join(th, NULL);
        out("  handler ran = %d", (int)usr1s);
        close(s);
    }
    signal(SIGUSR2, SIG_DFL);
    int l = socket(AF_INET, SOCK_STREAM, 0);
    setint(l, SOL_SOCKET, SO_REUSEADDR, 1);
    struct sockaddr_in a = addr("0.0.0.0", 8020);
    bind(l, (struct sockaddr *)&a, sizeof a);
    listen(l, 8);
    struct { const char *name; int flags; } u[] = {
        {"accept, SA_RESTART", SA_RESTART},
        {"accept, no SA_RESTART", 0},
    };
    for (unsigned i = 0; i < sizeof u / sizeof u[0]; i++) {
        set_usr1(u[i].flags);
        struct poke p = {pthread_self(), -1, 8020};
        pthread_t th;
        pthread_create(&th, NULL, poker, &p);
        errno = 0;
        int c = accept(l, NULL, NULL);
        if (c >= 0)
            out("%s = ok", u[i].name);
        else
            out("%s = -1 %s", u[i].name, ename(errno));
        pthread_join(th, NULL);
        out("  handler ran = %d", (int)usr1s);
        if (c < 0) {
            /* The partner's connection still comes: take it. */
            c = accept(l, NULL, NULL);
            out("  accept after = %s", c >= 0 ? "ok" : ename(errno));
        }
        if (c >= 0) close(c);
    }
    close(l);
    set_usr1(-1);
}

static void case_close_unread(void)
{
    out("# close with unread data resets, SO_LINGER 0");
    int l = socket(AF_INET, SOCK_STREAM, 0);
    setint(l, SOL_SOCKET, SO_REUSEADDR, 1);
    struct sockaddr_in a = addr("0.0.0.0", 8004);
    bind(l, (struct sockaddr *)&a, sizeof a);
    listen(l, 4);
    partner_connect(8004, "hi");
    int c = accept(l, NULL, NULL);
    wait_in(c, 3000);
    msleep(100);
    /* The partner's "hi" is unread: Linux answers close() with a reset. */
    R("close with unread data", close(c));
    partner_connect(8004, "hi");
    c = accept(l, NULL, NULL);
    struct linger lg = {1, 0};
    setsockopt(c, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    R("close with SO_LINGER 0", close(c));
    close(l);
}

static void case_loopback(void)
{
    out("# loopback goes to the kernel");
    int l = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = addr("127.0.0.1", 0);
    R("bind 127.0.0.1", bind(l, (struct sockaddr *)&a, sizeof a));
    R("listen", listen(l, 4));
    socklen_t al = sizeof a;
    getsockname(l, (struct sockaddr *)&a, &al);
    int c = socket(AF_INET, SOCK_STREAM, 0);
    R("connect 127.0.0.1", connect(c, (struct sockaddr *)&a, sizeof a));
    int s = R("accept", accept(l, NULL, NULL) >= 0);
    (void)s;
    R("write", write(c, "lo", 2));
    close(c);
    close(l);
    c = socket(AF_INET, SOCK_STREAM, 0);
    a = addr("127.0.0.1", 9);
    R("connect 127.0.0.1:9 refused", connect(c, (struct sockaddr *)&a, sizeof a));
    close(c);
    int u = socket(AF_INET, SOCK_DGRAM, 0);
    a = addr("127.0.0.1", 9);
    R("udp sendto", sendto(u, "u", 1, 0, (struct sockaddr *)&a, sizeof a));
    close(u);
}

/* Accepts one connection on l (waiting up to 3 s; l is made non-blocking)
 * and prints its names as sockaddr_in6s. Returns the fd. */
static int accept6(int l, const char *what)
{
    wait_in(l, 3000);
    set_nonblock(l, 1); /* nothing to accept must not hang the case */
    struct sockaddr_in6 n;
    memset(&n, 0, sizeof n);
    socklen_t nl = sizeof n;
    int c = accept4(l, (struct sockaddr *)&n, &nl, SOCK_CLOEXEC);
    out("accept %s = %s", what, c >= 0 ? "ok" : ename(errno));
    if (c < 0)
        return c;
    out("  peer ip = %s len %d", saddr6(&n, 0), (int)nl);
    nl = sizeof n;
    getsockname(c, (struct sockaddr *)&n, &nl);
    out("  local = %s len %d", saddr6(&n, 0), (int)nl);
    nl = sizeof n;
    R("  getpeername", getpeername(c, (struct sockaddr *)&n, &nl));
    out("  = %s len %d", saddr6(&n, 0), (int)nl);
    out("  SO_DOMAIN = %d IPV6_V6ONLY = %d", getint(c, SOL_SOCKET, SO_DOMAIN),
        getint(c, IPPROTO_IPV6, IPV6_V6ONLY));
    return c;
}

static void case_dualstack(void)
{
    out("# dual-stack AF_INET6 listener on ::");
    int l = socket(AF_INET6, SOCK_STREAM, 0);
    out("socket AF_INET6 ok = %d", l >= 0);
    out("SO_DOMAIN = %d", getint(l, SOL_SOCKET, SO_DOMAIN));
    out("SO_PROTOCOL = %d", getint(l, SOL_SOCKET, SO_PROTOCOL));
    out("IPV6_V6ONLY default = %d", getint(l, IPPROTO_IPV6, IPV6_V6ONLY));
    R("set IPV6_V6ONLY 0", setint(l, IPPROTO_IPV6, IPV6_V6ONLY, 0));
    R("set IPV6_V6ONLY short", setsockopt(l, IPPROTO_IPV6, IPV6_V6ONLY, "", 1));
    out("IPV6_TCLASS default = %d", getint(l, IPPROTO_IPV6, IPV6_TCLASS));
    R("set IPV6_TCLASS 0x20", setint(l, IPPROTO_IPV6, IPV6_TCLASS, 0x20));
    out("  get = %d", getint(l, IPPROTO_IPV6, IPV6_TCLASS));
    out("IPV6_UNICAST_HOPS = %d", getint(l, IPPROTO_IPV6, IPV6_UNICAST_HOPS));
    struct sockaddr_in6 n;
    socklen_t nl = sizeof n;
    memset(&n, 0xff, sizeof n);
    R("getsockname unbound", getsockname(l, (struct sockaddr *)&n, &nl));
    out("  = %s len %d", saddr6(&n, 1), (int)nl);
    setint(l, SOL_SOCKET, SO_REUSEADDR, 1);
    struct sockaddr_in a4 = addr("0.0.0.0", 8010);
    R("bind sockaddr_in", bind(l, (struct sockaddr *)&a4, sizeof a4));
    struct sockaddr_in6 a6 = addr6("::", 8010);
    a6.sin6_family = AF_INET;
    R("bind AF_INET family", bind(l, (struct sockaddr *)&a6, sizeof a6));
    a6.sin6_family = AF_INET6;
    R("bind ::", bind(l, (struct sockaddr *)&a6, sizeof a6));
    R("bind again", bind(l, (struct sockaddr *)&a6, sizeof a6));
    R("set IPV6_V6ONLY after bind", setint(l, IPPROTO_IPV6, IPV6_V6ONLY, 1));
    R("listen", listen(l, 16));
    out("SO_ACCEPTCONN = %d", getint(l, SOL_SOCKET, SO_ACCEPTCONN));
    nl = sizeof n;
    R("getsockname", getsockname(l, (struct sockaddr *)&n, &nl));
    out("  = %s len %d", saddr6(&n, 1), (int)nl);
    nl = 8;
    memset(&n, 0, sizeof n);
    R("getsockname short", getsockname(l, (struct sockaddr *)&n, &nl));
    out("  len = %d family %d port %d", (int)nl, n.sin6_family, ntohs(n.sin6_port));
    int l4 = socket(AF_INET, SOCK_STREAM, 0);
    setint(l4, SOL_SOCKET, SO_REUSEADDR, 1);
    R("bind AF_INET 0.0.0.0 same port", bind(l4, (struct sockaddr *)&a4, sizeof a4));
    close(l4);
    set_nonblock(l, 1);
    R("accept (nothing yet)", accept(l, NULL, NULL));

    /* An IPv4 client of the server's address (through TAS under the shim). */
    partner_connect(8010, "hi");
    int s;
    int c = accept6(l, "IPv4 client of own address");
    wait_in(c, 3000);
    char b[32] = {0};
    struct sockaddr_in6 from;
    socklen_t fl = sizeof from;
    R("  recvfrom", recvfrom(c, b, sizeof b, 0, (struct sockaddr *)&from, &fl));
    out("  data = %s fromlen %d", b, (int)fl);
    R("  write", write(c, "ok", 2));
    R("  set IPV6_V6ONLY", setint(c, IPPROTO_IPV6, IPV6_V6ONLY, 1));
    out("  TCP_NODELAY = %d", getint(c, IPPROTO_TCP, TCP_NODELAY));
    close(c);
    partner_connect(8010, "hi");
    wait_in(l, 3000);
    memset(&n, 0, sizeof n);
    nl = 10;
    c = accept(l, (struct sockaddr *)&n, &nl);
    out("accept short addrlen = %s len %d family %d port>0 %d", c >= 0 ? "ok" : ename(errno),
        (int)nl, n.sin6_family, ntohs(n.sin6_port) > 0);
    close(c);

    /* Loopback clients reach the same listener (the kernel's half). */
    int k = socket(AF_INET6, SOCK_STREAM, 0);
    a6 = addr6("::1", 8010);
    R("connect [::1]", connect(k, (struct sockaddr *)&a6, sizeof a6));
    c = accept6(l, "[::1] client");
    R("  write", write(k, "v6", 2));
    wait_in(c, 3000);
    memset(b, 0, sizeof b);
    R("  read", read(c, b, sizeof b));
    out("  data = %s", b);
    close(c);
    close(k);
    k = socket(AF_INET, SOCK_STREAM, 0);
    a4 = addr("127.0.0.1", 8010);
    R("connect 127.0.0.1", connect(k, (struct sockaddr *)&a4, sizeof a4));
    c = accept6(l, "127.0.0.1 client");
    close(c);
    close(k);
    R("accept drained", accept(l, NULL, NULL));
    R("close listener", close(l));

    out("# AF_INET6 listen without bind: [::]:ephemeral");
    l = socket(AF_INET6, SOCK_STREAM, 0);
    R("listen", listen(l, 4));
    nl = sizeof n;
    getsockname(l, (struct sockaddr *)&n, &nl);
    out("  ip = %s port > 0 = %d", saddr6(&n, 0), ntohs(n.sin6_port) > 0);
    close(l);

    out("# IPV6_V6ONLY=1 listener: IPv4 clients are refused, IPv6 ones served");
    l = socket(AF_INET6, SOCK_STREAM, 0);
    R("set IPV6_V6ONLY 1", setint(l, IPPROTO_IPV6, IPV6_V6ONLY, 1));
    out("  get = %d", getint(l, IPPROTO_IPV6, IPV6_V6ONLY));
    setint(l, SOL_SOCKET, SO_REUSEADDR, 1);
    a6 = addr6("::", 8011);
    R("bind ::", bind(l, (struct sockaddr *)&a6, sizeof a6));
    R("listen", listen(l, 4));
    nl = sizeof n;
    getsockname(l, (struct sockaddr *)&n, &nl);
    out("  = %s len %d", saddr6(&n, 1), (int)nl);
    partner_connect(8011, "hi");
    R("poll after an IPv4 client of own address", wait_in(l, 500));
    k = socket(AF_INET, SOCK_STREAM, 0);
    a4 = addr("127.0.0.1", 8011);
    R("connect 127.0.0.1", connect(k, (struct sockaddr *)&a4, sizeof a4));
    close(k);
    k = socket(AF_INET6, SOCK_STREAM, 0);
    a6 = addr6("::1", 8011);
    R("connect [::1]", connect(k, (struct sockaddr *)&a6, sizeof a6));
    c = accept6(l, "[::1] client");
    close(c);
    close(k);
    close(l);

    out("# AF_INET6 bind to addresses");
    l = socket(AF_INET6, SOCK_STREAM, 0);
    a6 = addr6("::1", 0);
    R("bind [::1]", bind(l, (struct sockaddr *)&a6, sizeof a6));
    nl = sizeof n;
    getsockname(l, (struct sockaddr *)&n, &nl);
    out("  = %s port>0 %d", saddr6(&n, 0), ntohs(n.sin6_port) > 0);
    out("  IPV6_V6ONLY = %d", getint(l, IPPROTO_IPV6, IPV6_V6ONLY));
    close(l);
    l = socket(AF_INET6, SOCK_STREAM, 0);
    a6 = addr6("::ffff:198.18.0.99", 0);
    R("bind ::ffff:198.18.0.99", bind(l, (struct sockaddr *)&a6, sizeof a6));
    close(l);
    l = socket(AF_INET6, SOCK_STREAM, 0);
    setint(l, SOL_SOCKET, SO_REUSEADDR, 1);
    char mapped[64];
    snprintf(mapped, sizeof mapped, "::ffff:%s", own_ip);
    a6 = addr6(mapped, 8012);
    R("bind ::ffff:own", bind(l, (struct sockaddr *)&a6, sizeof a6));
    R("listen", listen(l, 4));
    nl = sizeof n;
    getsockname(l, (struct sockaddr *)&n, &nl);
    out("  = %s port 8012 %d", saddr6(&n, 0), ntohs(n.sin6_port) == 8012);
    partner_connect(8012, "hi");
    c = accept6(l, "IPv4 client of ::ffff:own");
    close(c);
    close(l);
    l = socket(AF_INET6, SOCK_STREAM, 0);
    setint(l, IPPROTO_IPV6, IPV6_V6ONLY, 1);
    R("bind ::ffff:own with IPV6_V6ONLY", bind(l, (struct sockaddr *)&a6, sizeof a6));
    close(l);

    out("# AF_INET6 socket bound to [::]:port connects to [::1]");
    l = socket(AF_INET6, SOCK_STREAM, 0);
    setint(l, IPPROTO_IPV6, IPV6_V6ONLY, 1);
    a6 = addr6("::1", 8013);
    setint(l, SOL_SOCKET, SO_REUSEADDR, 1);
    bind(l, (struct sockaddr *)&a6, sizeof a6);
    listen(l, 4);
    s = socket(AF_INET6, SOCK_STREAM, 0);
    R("set IPV6_V6ONLY 0", setint(s, IPPROTO_IPV6, IPV6_V6ONLY, 0));
    a6 = addr6("::", 8014);
    R("bind [::]:8014", bind(s, (struct sockaddr *)&a6, sizeof a6));
    a6 = addr6("::1", 8013);
    R("connect [::1]:8013", connect(s, (struct sockaddr *)&a6, sizeof a6));
    nl = sizeof n;
    getsockname(s, (struct sockaddr *)&n, &nl);
    out("  local = %s IPV6_V6ONLY = %d", saddr6(&n, 1), getint(s, IPPROTO_IPV6, IPV6_V6ONLY));
    c = accept6(l, "bound client");
    close(c);
    close(s);
    close(l);

    out("# AF_INET6 client to an IPv4-mapped address");
    s = socket(AF_INET6, SOCK_STREAM, 0);
    snprintf(mapped, sizeof mapped, "::ffff:%s", peer_ip);
    a6 = addr6(mapped, 7001);
    R("connect ::ffff:peer", connect(s, (struct sockaddr *)&a6, sizeof a6));
    nl = sizeof n;
    R("getpeername", getpeername(s, (struct sockaddr *)&n, &nl));
    out("  = %s len %d", saddr6(&n, 1), (int)nl);
    nl = sizeof n;
    getsockname(s, (struct sockaddr *)&n, &nl);
    out("  local ip = %s port>0 %d", saddr6(&n, 0), ntohs(n.sin6_port) > 0);
    R("connect again", connect(s, (struct sockaddr *)&a6, sizeof a6));
    R("write", write(s, "six", 3));
    wait_in(s, 3000);
    memset(b, 0, sizeof b);
    R("read", read(s, b, sizeof b));
    out("  data = %s", b);
    close(s);
    s = socket(AF_INET6, SOCK_STREAM, 0);
    a4 = addr(peer_ip, 7001);
    R("connect sockaddr_in", connect(s, (struct sockaddr *)&a4, sizeof a4));
    setint(s, IPPROTO_IPV6, IPV6_V6ONLY, 1);
    R("connect ::ffff:peer with IPV6_V6ONLY", connect(s, (struct sockaddr *)&a6, sizeof a6));
    close(s);
}

static void case_fork(void)
{
    out("# fork: the parent's connection survives the child");
    int s = conn_to(7001);
    pid_t pid = fork();
    if (pid == 0) {
        /* The child closes its copy and exits. */
        close(s);
        _exit(0);
    }
    int st;
    waitpid(pid, &st, 0);
    R("write after child exit", write(s, "f", 1));
    wait_in(s, 3000);
    char b[4] = {0};
    R("read", read(s, b, sizeof b));
    out("  data = %s", b);
    close(s);
}

static int echo_once(int s, const char *msg);

/* The pre-forking server pattern (postgres, socat fork): the child serves
 * an inherited connection while the parent closes its copy; the
 * connection ends when the child closes it. */
static void case_fork_handoff(void)
{
    out("# fork handoff: the child serves the connection, the parent closes its copy");
    int s = conn_to(7001);
    int pp[2];
    if (pipe(pp) != 0) return;
    pid_t pid = fork();
    if (pid == 0) {
        close(pp[0]);
        char r[64];
        int ok1 = echo_once(s, "child-one");
        usleep(100000); /* the parent has closed its copy by now */
        int ok2 = echo_once(s, "child-two");
        int c = close(s);
        int n = snprintf(r, sizeof r, "%d %d %d", ok1, ok2, c);
        if (write(pp[1], r, n) != n) _exit(1);
        _exit(0);
    }
    close(pp[1]);
    R("parent: close its copy", close(s));
    char b[64] = {0};
    int n = 0, r;
    while (n < (int)sizeof b - 1 && (r = read(pp[0], b + n, sizeof b - 1 - n)) > 0) n += r;
    close(pp[0]);
    int st = 0;
    waitpid(pid, &st, 0);
    out("  child: echo before, echo after the parent's close, close = %s", b);
    out("  child exit = %d", WIFEXITED(st) ? WEXITSTATUS(st) : -1);
    /* Two children share one inherited connection one after the other. */
    s = conn_to(7001);
    pid = fork();
    if (pid == 0) {
        _exit(echo_once(s, "first") ? 0 : 1);
    }
    waitpid(pid, &st, 0);
    out("  first child echo = %d", WIFEXITED(st) ? WEXITSTATUS(st) : -1);
    close(s);
}

/* SCM_RIGHTS: a socket passed over a Unix socket to a process that did
 * not inherit it (forked before the socket existed, or exec'ed). */
static int send_fd(int u, int fd)
{
    char c = 'F';
    struct iovec iov = {&c, 1};
    union { char buf[CMSG_SPACE(sizeof(int))]; struct cmsghdr align; } cm;
    memset(&cm, 0, sizeof cm);
    struct msghdr m = {0};
    m.msg_iov = &iov;
    m.msg_iovlen = 1;
    m.msg_control = cm.buf;
    m.msg_controllen = sizeof cm.buf;
    struct cmsghdr *h = CMSG_FIRSTHDR(&m);
    h->cmsg_level = SOL_SOCKET;
    h->cmsg_type = SCM_RIGHTS;
    h->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(h), &fd, sizeof fd);
    return sendmsg(u, &m, 0);
}

/* The same with sendmmsg (one message). */
static int send_fd_mm(int u, int fd)
{
    char c = 'F';
    struct iovec iov = {&c, 1};
    union { char buf[CMSG_SPACE(sizeof(int))]; struct cmsghdr align; } cm;
    memset(&cm, 0, sizeof cm);
    struct mmsghdr mm;
    memset(&mm, 0, sizeof mm);
    struct msghdr *m = &mm.msg_hdr;
    m->msg_iov = &iov;
    m->msg_iovlen = 1;
    m->msg_control = cm.buf;
    m->msg_controllen = sizeof cm.buf;
    struct cmsghdr *h = CMSG_FIRSTHDR(m);
    h->cmsg_level = SOL_SOCKET;
    h->cmsg_type = SCM_RIGHTS;
    h->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(h), &fd, sizeof fd);
    return sendmmsg(u, &mm, 1, 0);
}

/* Receives one fd (-1 if none); `flags` for recvmsg (recvmmsg with
 * `mm`). */
static int recv_fd_how(int u, int flags, int mm)
{
    char c;
    struct iovec iov = {&c, 1};
    union { char buf[CMSG_SPACE(sizeof(int))]; struct cmsghdr align; } cm;
    struct mmsghdr v;
    memset(&v, 0, sizeof v);
    struct msghdr m = {0};
    m.msg_iov = &iov;
    m.msg_iovlen = 1;
    m.msg_control = cm.buf;
    m.msg_controllen = sizeof cm.buf;
    if (mm) {
        v.msg_hdr = m;
        if (recvmmsg(u, &v, 1, flags, NULL) != 1 || v.msg_len != 1) return -1;
        m = v.msg_hdr;
    } else if (recvmsg(u, &m, flags) != 1) {
        return -1;
    }
    struct cmsghdr *h = CMSG_FIRSTHDR(&m);
    if (!h || h->cmsg_type != SCM_RIGHTS) return -1;
    int fd;
    memcpy(&fd, CMSG_DATA(h), sizeof fd);
    return fd;
}

static int recv_fd(int u, int flags) { return recv_fd_how(u, flags, 0); }

/* The receiving side of the third case, in an exec'ed image: argv
 * "scmrecv UNIXFD". */
static int scm_receiver(int u)
{
    int s = recv_fd_how(u, MSG_CMSG_CLOEXEC, 1);
    int cloexec = s >= 0 ? (fcntl(s, F_GETFD) & FD_CLOEXEC) != 0 : -1;
    int ok1 = s >= 0 && echo_once(s, "exec-one");
    char go;
    if (read(u, &go, 1) != 1) return 1; /* the sender closed its copy */
    int ok2 = s >= 0 && echo_once(s, "exec-two");
    int c = close(s);
    char r[64];
    int n = snprintf(r, sizeof r, "%d %d %d %d", cloexec, ok1, ok2, c);
    if (write(u, r, n) != n) return 1;
    return 0;
}

/* Accepts one connection on listener l (inherited or received), reads two
 * bytes and reports on p; 0 when the report was written. The child of the
 * SCM_RIGHTS listener case, and the spawned side of the second `spawn`
 * case (argv "spawnaccept LFD PIPEFD"). */
static int report_accept(int l, int p)
{
    int c = accept(l, NULL, NULL);
    int e = errno;
    char got[16] = {0};
    int k = 0;
    long end = now_ms() + 5000;
    while (c >= 0 && k < 2 && now_ms() < end) {
        int r = read(c, got + k, 2 - k);
        if (r <= 0) break;
        k += r;
    }
    char rr[96];
    int m = snprintf(rr, sizeof rr, "acceptconn %d, accept %s, read %d \"%s\"",
                     getint(l, SOL_SOCKET, SO_ACCEPTCONN), c >= 0 ? "ok" : ename(e), k, got);
    if (c >= 0) close(c);
    close(l);
    return write(p, rr, m) == m ? 0 : 1;
}

static void case_scm_rights(void)
{
    out("# SCM_RIGHTS: a connection passed to a child forked before it existed");
    int sp[2];
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sp) != 0) return;
    pid_t pid = fork();
    if (pid == 0) {
        close(sp[0]);
        int s = recv_fd(sp[1], 0);
        int ok1 = s >= 0 && echo_once(s, "passed-one");
        char go;
        if (read(sp[1], &go, 1) != 1) _exit(1);
        int ok2 = s >= 0 && echo_once(s, "passed-two");
        int c = close(s);
        char r[64];
        int n = snprintf(r, sizeof r, "%d %d %d", ok1, ok2, c);
        if (write(sp[1], r, n) != n) _exit(1);
        _exit(0);
    }
    close(sp[1]);
    int s = conn_to(7001);
    out("  parent echo before = %d", echo_once(s, "before"));
    R("sendmsg SCM_RIGHTS", send_fd(sp[0], s));
    R("parent: close its copy", close(s));
    R("go", write(sp[0], "g", 1));
    char b[64] = {0};
    int n = 0, r;
    while (n < (int)sizeof b - 1 && (r = read(sp[0], b + n, sizeof b - 1 - n)) > 0) n += r;
    int st = 0;
    waitpid(pid, &st, 0);
    close(sp[0]);
    out("  child: echo, echo after the parent's close, close = %s", b);
    out("  child exit = %d", WIFEXITED(st) ? WEXITSTATUS(st) : -1);

    out("# SCM_RIGHTS: an AF_INET6 connection (IPv4-mapped peer) passed to a child");
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sp) != 0) return;
    pid = fork();
    if (pid == 0) {
        close(sp[0]);
        int s6 = recv_fd(sp[1], 0);
        struct sockaddr_in6 pn;
        socklen_t pl = sizeof pn;
        memset(&pn, 0, sizeof pn);
        int g = getpeername(s6, (struct sockaddr *)&pn, &pl);
        char r6[160];
        int n6 = snprintf(r6, sizeof r6, "getpeername %d, peer %s len %d, domain %s, echo %d",
                          g, g == 0 ? saddr6(&pn, 0) : ename(errno), (int)pl,
                          getint(s6, SOL_SOCKET, SO_DOMAIN) == AF_INET6 ? "AF_INET6" : "other",
                          echo_once(s6, "passed-six"));
        close(s6);
        if (write(sp[1], r6, n6) != n6) _exit(1);
        _exit(0);
    }
    close(sp[1]);
    {
        char mapped[64];
        snprintf(mapped, sizeof mapped, "::ffff:%s", peer_ip);
        struct sockaddr_in6 a6 = addr6(mapped, 7001);
        int s6 = socket(AF_INET6, SOCK_STREAM, 0);
        R("connect ::ffff:peer", connect(s6, (struct sockaddr *)&a6, sizeof a6));
        R("sendmsg SCM_RIGHTS AF_INET6", send_fd(sp[0], s6));
        R("parent: close its AF_INET6 copy", close(s6));
    }
    memset(b, 0, sizeof b);
    char b6[160] = {0};
    n = 0;
    while (n < (int)sizeof b6 - 1 && (r = read(sp[0], b6 + n, sizeof b6 - 1 - n)) > 0) n += r;
    waitpid(pid, &st, 0);
    close(sp[0]);
    out("  child: %s", b6);
    out("  child exit = %d", WIFEXITED(st) ? WEXITSTATUS(st) : -1);

    out("# SCM_RIGHTS: a listener passed to a child, which accepts on it");
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sp) != 0) return;
    pid = fork();
    if (pid == 0) {
        close(sp[0]);
        _exit(report_accept(recv_fd(sp[1], 0), sp[1]));
    }
    close(sp[1]);
    int l = socket(AF_INET, SOCK_STREAM, 0);
    setint(l, SOL_SOCKET, SO_REUSEADDR, 1);
    struct sockaddr_in a = addr("0.0.0.0", 8011);
    R("bind", bind(l, (struct sockaddr *)&a, sizeof a));
    R("listen", listen(l, 16));
    R("sendmsg SCM_RIGHTS listener", send_fd(sp[0], l));
    R("parent: close the listener", close(l));
    partner_connect(8011, "hi");
    memset(b, 0, sizeof b);
    n = 0;
    while (n < (int)sizeof b - 1 && (r = read(sp[0], b + n, sizeof b - 1 - n)) > 0) n += r;
    waitpid(pid, &st, 0);
    close(sp[0]);
    out("  child: %s", b);
    out("  child exit = %d", WIFEXITED(st) ? WEXITSTATUS(st) : -1);

    out("# SCM_RIGHTS: a connection passed to an exec'ed program (sendmmsg, recvmmsg, MSG_CMSG_CLOEXEC)");
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sp) != 0) return;
    pid = fork();
    if (pid == 0) {
        close(sp[0]);
        char fdarg[16];
        snprintf(fdarg, sizeof fdarg, "%d", sp[1]);
        char *argv[] = {"conform", "scmrecv", fdarg, NULL};
        execv("/proc/self/exe", argv);
        _exit(127);
    }
    close(sp[1]);
    s = conn_to(7001);
    R("sendmmsg SCM_RIGHTS", send_fd_mm(sp[0], s));
    R("parent: close its copy", close(s));
    R("go", write(sp[0], "g", 1));
    memset(b, 0, sizeof b);
    n = 0;
    while (n < (int)sizeof b - 1 && (r = read(sp[0], b + n, sizeof b - 1 - n)) > 0) n += r;
    waitpid(pid, &st, 0);
    close(sp[0]);
    out("  receiver: cloexec, echo, echo after the sender's close, close = %s", b);
    out("  receiver exit = %d", WIFEXITED(st) ? WEXITSTATUS(st) : -1);
}

extern char **environ;

/* posix_spawn: glibc's child runs no interposed function (clone with
 * CLONE_VM|CLONE_VFORK, internal dup2/close/execve); the spawned program
 * must still be able to use the TAS sockets it inherits. */
static void case_spawn(void)
{
    out("# posix_spawn: a connection on fds 0 and 1 of a spawned sh (adddup2), the parent's copy closed");
    int s = conn_to(7001);
    R("write ping", write(s, "ping\n", 5));
    int pp[2];
    if (pipe2(pp, O_CLOEXEC) != 0) return;
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, s, 0);
    posix_spawn_file_actions_adddup2(&fa, s, 1);
    posix_spawn_file_actions_adddup2(&fa, pp[1], 2);
    posix_spawn_file_actions_addclose(&fa, s);
    char *av[] = {"sh", "-c", "read x; echo \"got-$x\"; read y; echo \"$y\" >&2", NULL};
    pid_t pid = -1;
    int r = posix_spawn(&pid, "/bin/sh", &fa, NULL, av, environ);
    posix_spawn_file_actions_destroy(&fa);
    out("posix_spawn = %s, pid set = %d", r == 0 ? "0" : ename(r), pid > 0);
    close(pp[1]);
    R("parent: close its copy", close(s));
    char b[256] = {0};
    int n = 0;
    while (n < (int)sizeof b - 1 && (r = read(pp[0], b + n, sizeof b - 1 - n)) > 0) n += r;
    close(pp[0]);
    int st = 0;
    waitpid(pid, &st, 0);
    if (n > 0 && b[n - 1] == '\n') b[n - 1] = 0;
    out("  child's stderr (the echo of its reply) = %s", b);
    out("  child exit = %d", WIFEXITED(st) ? WEXITSTATUS(st) : -1);

    out("# posix_spawnp: a listener inherited as it is, the spawned program accepts");
    int l = socket(AF_INET, SOCK_STREAM, 0);
    setint(l, SOL_SOCKET, SO_REUSEADDR, 1);
    struct sockaddr_in a = addr("0.0.0.0", 8012);
    R("bind", bind(l, (struct sockaddr *)&a, sizeof a));
    R("listen", listen(l, 16));
    if (pipe(pp) != 0) return;
    fcntl(pp[0], F_SETFD, FD_CLOEXEC);
    char lfd[16], pfd[16];
    snprintf(lfd, sizeof lfd, "%d", l);
    snprintf(pfd, sizeof pfd, "%d", pp[1]);
    char *av2[] = {"conform", "spawnaccept", lfd, pfd, NULL};
    pid = -1;
    r = posix_spawnp(&pid, "/proc/self/exe", NULL, NULL, av2, environ);
    out("posix_spawnp = %s, pid set = %d", r == 0 ? "0" : ename(r), pid > 0);
    close(pp[1]);
    partner_connect(8012, "hi");
    memset(b, 0, sizeof b);
    n = 0;
    while (n < (int)sizeof b - 1 && (r = read(pp[0], b + n, sizeof b - 1 - n)) > 0) n += r;
    close(pp[0]);
    waitpid(pid, &st, 0);
    out("  spawned: %s", b);
    out("  spawned exit = %d", WIFEXITED(st) ? WEXITSTATUS(st) : -1);
    R("parent: close the listener", close(l));

    out("# posix_spawnp (PATH search): the parent keeps its copy and uses it after the child");
    s = conn_to(7001);
    R("write ping", write(s, "ping\n", 5));
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, s, 0);
    posix_spawn_file_actions_adddup2(&fa, s, 1);
    char *av3[] = {"sh", "-c", "read x; echo \"kid-$x\"", NULL};
    pid = -1;
    r = posix_spawnp(&pid, "sh", &fa, NULL, av3, environ);
    posix_spawn_file_actions_destroy(&fa);
    out("posix_spawnp sh = %s, pid set = %d", r == 0 ? "0" : ename(r), pid > 0);
    waitpid(pid, &st, 0);
    out("  child exit = %d", WIFEXITED(st) ? WEXITSTATUS(st) : -1);
    memset(b, 0, sizeof b);
    n = 0;
    long end = now_ms() + 5000;
    while (n < 9 && now_ms() < end && (r = read(s, b + n, 9 - n)) > 0) n += r;
    out("  parent reads the echo of the child's answer = %s", b);
    out("  parent echo after = %d", echo_once(s, "after"));

    out("# posix_spawn that fails: the parent's connection is unchanged");
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, s, 0);
    pid = -1;
    r = posix_spawn(&pid, "/nonexistent/program", &fa, NULL, av3, environ);
    posix_spawn_file_actions_destroy(&fa);
    out("posix_spawn /nonexistent = %s, pid unchanged = %d", r == 0 ? "0" : ename(r), pid == -1);
    out("  parent echo after = %d", echo_once(s, "still"));
    R("close", close(s));

    /* The shim's read looked at its own view of the connection before
     * taking it back from the child: the bytes the child read still
     * counted as readable, the takeover found none, and read failed with
     * EIO (or, with nothing counted, waited on notifications the stale
     * view found implausible: for good). */
    out("# posix_spawnp: the child reads what the parent had not; the parent's read finds nothing");
    s = conn_to(7001);
    R("write ping", write(s, "ping\n", 5));
    out("  readable before the spawn = %d", (wait_in(s, 5000) & POLLIN) != 0);
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, s, 0);
    char *av4[] = {"sh", "-c", "read x; test \"$x\" = ping", NULL};
    pid = -1;
    r = posix_spawnp(&pid, "sh", &fa, NULL, av4, environ);
    posix_spawn_file_actions_destroy(&fa);
    out("posix_spawnp sh = %s, pid set = %d", r == 0 ? "0" : ename(r), pid > 0);
    st = 0;
    waitpid(pid, &st, 0);
    out("  child read ping = %d", WIFEXITED(st) && WEXITSTATUS(st) == 0);
    set_nonblock(s, 1);
    R("parent read (the child took the data)", read(s, b, sizeof b));
    set_nonblock(s, 0);
    out("  parent echo after = %d", echo_once(s, "mine"));
    R("close", close(s));
}

/* The exec'ed side of the `vfork` case: argv "vforkkid FD" — reads the
 * echo of the parent's "ping\n" on the inherited connection FD and
 * answers "kid\n". */
static int vfork_kid(int s)
{
    char b[8] = {0};
    int k = 0;
    long end = now_ms() + 5000;
    while (k < 5 && now_ms() < end) {
        int r = read(s, b + k, 5 - k);
        if (r <= 0) break;
        k += r;
    }
    if (k != 5 || memcmp(b, "ping\n", 5) != 0) return 2;
    return write(s, "kid\n", 4) == 4 ? 0 : 3;
}

/* vfork: the child runs in the parent's memory and calls only execve
 * (which the shim interposes, working on the parent's state); the new
 * program uses the connection it inherited, and the parent carries on
 * with it after the child exits. */
static void case_vfork(void)
{
    out("# vfork + execve: the new program uses the inherited connection, the parent carries on");
    int s = conn_to(7001);
    R("write ping", write(s, "ping\n", 5));
    char fd[16];
    snprintf(fd, sizeof fd, "%d", s);
    char *av[] = {"conform", "vforkkid", fd, NULL};
    pid_t pid = vfork();
    if (pid == 0) {
        execve("/proc/self/exe", av, environ);
        _exit(127);
    }
    out("vfork pid set = %d", pid > 0);
    int st = 0;
    waitpid(pid, &st, 0);
    out("  child exit = %d", WIFEXITED(st) ? WEXITSTATUS(st) : -1);
    char b[16] = {0};
    int n = 0, r;
    long end = now_ms() + 5000;
    while (n < 4 && now_ms() < end && (r = read(s, b + n, 4 - n)) > 0) n += r;
    out("  parent reads the echo of the vfork child's answer = %s",
        n == 4 && memcmp(b, "kid\n", 4) == 0 ? "kid" : "?");
    out("  parent echo after = %d", echo_once(s, "after"));
    R("close", close(s));
}

/* posix_spawn of a shell that runs a program (dash: vfork + execve)
 * before it uses the connection it inherited on fds 0 and 1. The vfork
 * child's execve ran the shim on the shell's memory as another pid: it
 * tried to take the shell's inherited connection over for itself, which
 * tasd refused once the spawner had named the shell (and the shell had
 * lost the connection: it read a bare Unix socket) and allowed before
 * (then the program got the connection and a second grant). The shell is
 * killed if it hangs. */
static void case_spawn_vfork(void)
{
    out("# posix_spawnp: sh runs a program (vfork + execve) before it uses the connection");
    int s = conn_to(7001);
    R("write ping", write(s, "ping\n", 5));
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, s, 0);
    posix_spawn_file_actions_adddup2(&fa, s, 1);
    char *av[] = {"sh", "-c", "/bin/true; read x; echo \"kid-$x\"", NULL};
    pid_t pid = -1;
    int r = posix_spawnp(&pid, "sh", &fa, NULL, av, environ);
    posix_spawn_file_actions_destroy(&fa);
    out("posix_spawnp sh = %s, pid set = %d", r == 0 ? "0" : ename(r), pid > 0);
    int st = 0;
    long end = now_ms() + 10000;
    while (pid > 0 && waitpid(pid, &st, WNOHANG) == 0) {
        if (now_ms() > end) {
            kill(pid, SIGKILL);
            waitpid(pid, &st, 0);
            break;
        }
        usleep(10000);
    }
    out("  child exit = %d", WIFEXITED(st) ? WEXITSTATUS(st) : -1);
    char b[16] = {0};
    int n = 0;
    end = now_ms() + 5000;
    while (n < 9 && now_ms() < end) {
        if (!(wait_in(s, 100) & POLLIN)) continue;
        if ((r = read(s, b + n, 9 - n)) <= 0) break;
        n += r;
    }
    if (n > 0 && b[n - 1] == '\n') b[n - 1] = 0;
    out("  parent reads the echo of the child's answer = %s", b);
    out("  parent echo after = %d", echo_once(s, "after"));
    R("close", close(s));
}

/* ------------------------------------------------------------------ */
/* TAS-only cases (behaviour that differs from Linux by design, or that is
 * about the shim itself). Checked line by line by tests/tests/preload.rs. */

static int echo_once(int s, const char *msg)
{
    int n = strlen(msg);
    if (write(s, msg, n) != n) return 0;
    char b[256];
    int got = 0;
    long end = now_ms() + 5000;
    while (got < n && now_ms() < end) {
        int r = read(s, b + got, n - got);
        if (r <= 0) return 0;
        got += r;
    }
    return got == n && memcmp(b, msg, n) == 0;
}

static void tas_fork(void)
{
    int s = conn_to(7001);
    pid_t pid = fork();
    if (pid == 0) {
        char b[4];
        R("child: write inherited", write(s, "x", 1));
        R("child: read inherited", read(s, b, 1));
        R("child: close inherited", close(s));
        
        int c = conn_to(7001);
        out("child: own connection echo = %s", echo_once(c, "kid") ? "ok" : "FAILED");
        close(c);
        out("child: exit 0");
        _exit(0);
    }
    int st = 0;
    close(s);
    waitpid(pid, &st, 0);
    int p = conn_to(7001);
    out("parent after child = %s", echo_once(p, "parent") ? "ok" : "FAILED");
    close(p);
}

static void tas_exec(void)
{
    int plain = conn_to(7001);
    int cx = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = addr(peer_ip, 7001);
    connect(cx, (struct sockaddr *)&a, sizeof a);
    int pp[2];
    pipe(pp);
    pid_t pid = fork();
    if (pid == 0) {
        dup2(pp[1], 1);
        close(pp[0]);
        char cmd[256];
        snprintf(cmd, sizeof cmd,
                 "if [ -e /proc/self/fd/%d ]; then echo cx-open; else echo cx-closed; fi; "
                 "if [ -e /proc/self/fd/%d ]; then echo plain-open; else echo plain-closed; fi",
                 cx, plain);
        execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
        _exit(127);
    }
    close(pp[1]);
    char b[256] = {0};
    int n = 0, r;
    while (n < (int)sizeof b - 1 && (r = read(pp[0], b + n, sizeof b - 1 - n)) > 0) n += r;
    close(pp[0]);
    waitpid(pid, NULL, 0);
    if (strstr(b, "cx-closed") && strstr(b, "plain-open"))
        out("exec: cloexec socket closed, plain socket open");
    else
        out("exec: unexpected: %s", b);
    out("exec: parent echo after = %s", echo_once(plain, "after") && echo_once(cx, "cx") ? "ok" : "FAILED");
    close(plain);
    close(cx);
}

/* inetd/sshd style: the connection on fds 0 and 1 of an exec'ed program,
 * the parent's copy closed. */
static void tas_exec_stdio(void)
{
    int s = conn_to(7001);
    if (write(s, "ping\n", 5) != 5) out("exec stdio: write failed");
    int pp[2];
    if (pipe(pp) != 0) return;
    pid_t pid = fork();
    if (pid == 0) {
        dup2(s, 0);
        dup2(s, 1);
        dup2(pp[1], 2);
        close(s);
        close(pp[0]);
        close(pp[1]);
        char *av[] = {"sh", "-c", "read x; echo \"got-$x\"; read y; echo \"$y\" >&2", NULL};
        execv("/bin/sh", av);
        _exit(127);
    }
    close(pp[1]);
    close(s);
    char b[256] = {0};
    int n = 0, r;
    while (n < (int)sizeof b - 1 && (r = read(pp[0], b + n, sizeof b - 1 - n)) > 0) n += r;
    close(pp[0]);
    int st = 0;
    waitpid(pid, &st, 0);
    if (n > 0 && b[n - 1] == '\n') b[n - 1] = 0;
    out("exec stdio: %s (exit %d)", b, WIFEXITED(st) ? WEXITSTATUS(st) : -1);
}

static volatile int thread_fail;
static void *echo_thread(void *arg)
{
    (void)arg;
    int s = conn_to(7001);
    char msg[65];
    for (int i = 0; i < 200; i++) {
        snprintf(msg, sizeof msg, "%064d", i);
        if (!echo_once(s, msg)) {
            thread_fail = 1;
            break;
        }
    }
    close(s);
    return NULL;
}

static void tas_threads(void)
{
    pthread_t th[8];
    for (int i = 0; i < 8; i++) pthread_create(&th[i], NULL, echo_thread, NULL);
    for (int i = 0; i < 8; i++) pthread_join(th[i], NULL);
    out("threads: 8 x 200 echoes %s", thread_fail ? "FAILED" : "ok");
}

static long cpu_ms(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1000 + (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1000;
}

static void tas_idle(void)
{
    int s = conn_to(7001);
    int ep = epoll_create1(0);
    struct epoll_event ev = {.events = EPOLLIN, .data.u32 = 1};
    epoll_ctl(ep, EPOLL_CTL_ADD, s, &ev);
    struct epoll_event got[2];
    long c0 = cpu_ms(), t0 = now_ms();
    int n = epoll_wait(ep, got, 2, 1000);
    struct timeval tv = {1, 0};
    setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    char b[4];
    int r = read(s, b, 1);
    long c1 = cpu_ms(), t1 = now_ms();
    long cpu = c1 - c0, wall = t1 - t0;
    /* 2 s of waiting (epoll_wait, then a blocking read): allow 10 %. */
    if (n == 0 && r < 0 && wall >= 1800 && cpu < 200)
        out("idle: cpu ok");
    else
        out("idle: cpu BAD n=%d r=%d wall=%ld ms cpu=%ld ms", n, r, wall, cpu);
    close(ep);
    close(s);
}

/* SO_RCVBUF / SO_SNDBUF become the connection's ring sizes. */
static void tas_bufsizes(void)
{
    int s = socket(AF_INET, SOCK_STREAM, 0);
    setint(s, SOL_SOCKET, SO_RCVBUF, 4096); /* reported (and used) as 8192 */
    struct sockaddr_in a = addr(peer_ip, 7008);
    connect(s, (struct sockaddr *)&a, sizeof a);
    msleep(500); /* the peer blasts 1 MB; we do not read */
    int q = -1;
    ioctl(s, FIONREAD, &q);
    out("rcvbuf: queued %s (%d)", q > 0 && q <= 8192 ? "<= 8192" : "WRONG", q);
    char b[65536];
    /* Every byte read counts once (the queued ones are read here too). */
    long total = 0;
    long end = now_ms() + 10000;
    while (total < 1048576 && now_ms() < end) {
        int r = read(s, b, sizeof b);
        if (r <= 0) break;
        total += r;
    }
    out("rcvbuf: all %s", total == 1048576 ? "received" : "NOT received");
    close(s);

    s = socket(AF_INET, SOCK_STREAM, 0);
    setint(s, SOL_SOCKET, SO_SNDBUF, 4096); /* ring of 8192 */
    a = addr(peer_ip, 7004);
    connect(s, (struct sockaddr *)&a, sizeof a);
    set_nonblock(s, 1);
    static char big[65536];
    int r, maxq = 0;
    end = now_ms() + 2000;
    while (now_ms() < end) {
        r = write(s, big, sizeof big);
        int o = 0;
        ioctl(s, TIOCOUTQ, &o);
        if (o > maxq) maxq = o;
        if (r < 0) break;
    }
    out("sndbuf: unsent+unacked %s (%d)", maxq > 0 && maxq <= 8192 ? "<= 8192" : "WRONG", maxq);
    close(s);
}

/* A TAS socket passed to a process of another user is refused: its use
 * fails with EACCES (the sender's connection is unaffected). The attach
 * socket must let that user in (the test makes it 0666). */
static void tas_scm_other_user(void)
{
    int sp[2];
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sp) != 0) return;
    pid_t pid = fork();
    if (pid == 0) {
        close(sp[0]);
        if (setgid(65534) != 0 || setuid(65534) != 0) {
            out("scm other user: setuid failed");
            _exit(1);
        }
        int s = recv_fd(sp[1], 0);
        char b[8];
        errno = 0;
        int r = read(s, b, sizeof b);
        int e = errno;
        out("scm other user: read = %d %s", r, ename(e));
        _exit(0);
    }
    close(sp[1]);
    int s = conn_to(7001);
    send_fd(sp[0], s);
    int st = 0;
    waitpid(pid, &st, 0);
    close(sp[0]);
    out("scm other user: sender echo after = %s", echo_once(s, "mine") ? "ok" : "FAILED");
    close(s);
}

/* posix_spawn of a program that is (shim = 1: environ) or is not
 * (shim = 0: an environment without LD_PRELOAD, and a NULL one) under the
 * shim, inheriting a connection it never uses; the parent closes its copy
 * while the child lives. tests/tests/preload.rs checks tasd's counters:
 * no grant without the shim; with it, one grant, which goes (and closes
 * the connection) when the child exits. */
static void tas_spawn_plain(int shim)
{
    int s = conn_to(7001);
    char *env[] = {"PATH=/usr/bin:/bin", NULL};
    char *av[] = {"sh", "-c", "sleep 0.3; exit 3", NULL};
    pid_t pid = -1;
    int st = 0;
    int r = posix_spawn(&pid, "/bin/sh", NULL, NULL, av, shim ? environ : env);
    R("spawn plain: parent echo", echo_once(s, "mine"));
    R("spawn plain: parent close", close(s));
    waitpid(pid, &st, 0);
    out("spawn plain: posix_spawn = %s, exit %d", r == 0 ? "0" : ename(r), WIFEXITED(st) ? WEXITSTATUS(st) : -1);
    if (!shim) {
        s = conn_to(7001);
        r = posix_spawn(&pid, "/bin/sh", NULL, NULL, av, NULL);
        waitpid(pid, &st, 0);
        out("spawn plain: NULL envp = %s, exit %d", r == 0 ? "0" : ename(r), WIFEXITED(st) ? WEXITSTATUS(st) : -1);
        R("spawn plain: parent echo after", echo_once(s, "mine"));
        close(s);
    }
    out("# done");
}

static int tasonly(void)
{
    tas_bufsizes();
    tas_fork();
    tas_exec_stdio();
    tas_exec();
    tas_threads();
    tas_idle();
    out("# done");
    return 0;
}

/* ------------------------------------------------------------------ */
/* Partner. */

static int listen_on(int port)
{
    int l = socket(AF_INET, SOCK_STREAM, 0);
    setint(l, SOL_SOCKET, SO_REUSEADDR, 1);
    struct sockaddr_in a = addr("0.0.0.0", port);
    if (bind(l, (struct sockaddr *)&a, sizeof a) != 0 || listen(l, 64) != 0) {
        perror("partner listen");
        exit(1);
    }
    return l;
}

static void drain_eof(int c)
{
    char b[65536];
    long end = now_ms() + 10000;
    while (now_ms() < end) {
        struct pollfd p = {c, POLLIN, 0};
        if (poll(&p, 1, 500) <= 0) continue;
        int r = read(c, b, sizeof b);
        if (r <= 0) break;
    }
}

static void serve(int port, int c)
{
    char b[65536];
    switch (port) {
    case 7001: {
        long end = now_ms() + 30000;
        while (now_ms() < end) {
            int r = read(c, b, sizeof b);
            if (r <= 0) break;
            write(c, b, r);
        }
        break;
    }
    case 7002:
        write(c, "hello", 5);
        shutdown(c, SHUT_WR);
        drain_eof(c);
        break;
    case 7003: {
        msleep(100);
        struct linger lg = {1, 0};
        setsockopt(c, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
        break;
    }
    case 7004:
        msleep(1500);
        drain_eof(c);
        break;
    case 7005:
        write(c, "0123456789", 10);
        drain_eof(c);
        break;
    case 7006: {
        unsigned long n = 0;
        unsigned sum = 0;
        long end = now_ms() + 20000;
        while (now_ms() < end) {
            int r = read(c, b, sizeof b);
            if (r <= 0) break;
            for (int i = 0; i < r; i++) sum = sum * 31 + (unsigned char)b[i];
            n += r;
        }
        int k = snprintf(b, sizeof b, "%lu %u", n, sum);
        write(c, b, k);
        break;
    }
    case 7007:
        write(c, "a", 1);
        msleep(300);
        write(c, "b", 1);
        msleep(300);
        write(c, "c", 1);
        drain_eof(c);
        break;
    case 7008: {
        memset(b, 'z', sizeof b);
        long sent = 0;
        while (sent < 1048576) {
            int r = write(c, b, sizeof b < 1048576 - sent ? sizeof b : 1048576 - sent);
            if (r <= 0) break;
            sent += r;
        }
        drain_eof(c);
        break;
    }
    case 7099: {
        int n = 0;
        while (n < (int)sizeof b - 1) {
            int r = read(c, b + n, 1);
            if (r <= 0 || b[n] == '\n') break;
            n++;
        }
        b[n] = 0;
        char ip[64], mode[32];
        int p;
        if (sscanf(b, "CONNECT %63s %d %31s", ip, &p, mode) == 3) {
            int s = socket(AF_INET, SOCK_STREAM, 0);
            struct sockaddr_in a = addr(ip, p);
            if (connect(s, (struct sockaddr *)&a, sizeof a) == 0) {
                write(s, mode, strlen(mode));
                drain_eof(s);
            }
            close(s);
        }
        break;
    }
    }
    close(c);
}

static int partner(void)
{
    int ports[] = {7001, 7002, 7003, 7004, 7005, 7006, 7007, 7008, 7099};
    int n = sizeof ports / sizeof ports[0];
    int ls[16];
    for (int i = 0; i < n; i++) ls[i] = listen_on(ports[i]);
    signal(SIGCHLD, SIG_IGN);
    printf("partner listening\n");
    fflush(stdout);
    for (;;) {
        struct pollfd p[16];
        for (int i = 0; i < n; i++) p[i] = (struct pollfd){ls[i], POLLIN, 0};
        if (poll(p, n, -1) <= 0) continue;
        for (int i = 0; i < n; i++) {
            if (!(p[i].revents & POLLIN)) continue;
            int c = accept(ls[i], NULL, NULL);
            if (c < 0) continue;
            if (fork() == 0) {
                for (int j = 0; j < n; j++) close(ls[j]);
                alarm(60);
                serve(ports[i], c);
                _exit(0);
            }
            close(c);
        }
    }
}

int main(int argc, char **argv)
{
    if (argc >= 2 && strcmp(argv[1], "partner") == 0)
        return partner();
    if (argc >= 3 && strcmp(argv[1], "vforkkid") == 0) {
        alarm(30);
        return vfork_kid(atoi(argv[2]));
    }
    if (argc >= 4 && strcmp(argv[1], "spawnaccept") == 0) {
        alarm(30);
        return report_accept(atoi(argv[2]), atoi(argv[3]));
    }
    if (argc >= 3 && strcmp(argv[1], "scmrecv") == 0) {
        alarm(30);
        return scm_receiver(atoi(argv[2]));
    }
    if (argc < 4 || (strcmp(argv[1], "run") != 0 && strcmp(argv[1], "tasonly") != 0 &&
                     strcmp(argv[1], "scmuser") != 0 && strcmp(argv[1], "spawnplain") != 0)) {
        fprintf(stderr, "usage: conform partner | conform run|tasonly|scmuser PEER_IP OWN_IP [CASE]\n");
        return 2;
    }
    peer_ip = argv[2];
    own_ip = argv[3];
    if (strcmp(argv[1], "tasonly") == 0) {
        alarm(120);
        return tasonly();
    }
    if (strcmp(argv[1], "spawnplain") == 0) {
        alarm(60);
        tas_spawn_plain(argc > 4 && atoi(argv[4]) != 0);
        return 0;
    }
    if (strcmp(argv[1], "scmuser") == 0) {
        alarm(60);
        tas_scm_other_user();
        return 0;
    }
    const char *only = argc > 4 ? argv[4] : NULL;
    alarm(120);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_sigpipe;
    sigaction(SIGPIPE, &sa, NULL);
    struct { const char *name; void (*f)(void); } cases[] = {
        {"basics", case_basics}, {"options", case_options}, {"refused", case_connect_refused},
        {"connect", case_connect_ok}, {"accept", case_listen_accept}, {"partial", case_partial_reads},
        {"halfclose", case_half_close}, {"reset", case_reset}, {"epoll", case_epoll},
        {"mixed", case_mixed}, {"dup", case_dup}, {"vectors", case_vectors},
        {"sendfile", case_sendfile}, {"blocking", case_blocking}, {"unread", case_close_unread},
        {"loopback", case_loopback}, {"dualstack", case_dualstack}, {"fork", case_fork},
        {"forkhandoff", case_fork_handoff}, {"scm", case_scm_rights}, {"spawn", case_spawn},
        {"vfork", case_vfork}, {"spawnvfork", case_spawn_vfork},
        {"epollonly", case_epoll_only}, {"lazy", case_lazy},
        {"restart", case_restart},
    };
    for (unsigned i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        if (only && strcmp(only, cases[i].name) != 0) continue;
        cases[i].f();
    }
    out("# done");
    return 0;
}
