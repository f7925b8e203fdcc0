/* getsockopt(TCP_INFO) as tools read it.
 *
 *   tas-tcpinfo sink PORT
 *       accepts one connection on 0.0.0.0:PORT, reads until EOF, prints
 *       "received N".
 *   tas-tcpinfo send IP PORT BYTES
 *       prints the TCP_INFO state of a listening socket, connects to
 *       IP:PORT, writes BYTES, waits until every byte is acknowledged (at
 *       most 5 s, watching tcpi_unacked and tcpi_notsent_bytes), prints
 *       the fields below as key=value lines, checks that a short buffer
 *       gets a short copy, closes.
 *
 * Exit 0 unless a call fails (then the errno is printed, exit 1). */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <linux/tcp.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static int fail(const char *what) {
    fprintf(stderr, "%s: %s\n", what, strerror(errno));
    return 1;
}

static int info(int fd, struct tcp_info *ti) {
    socklen_t len = sizeof *ti;
    memset(ti, 0, sizeof *ti);
    return getsockopt(fd, IPPROTO_TCP, TCP_INFO, ti, &len);
}

static int sink(int port) {
    int l = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(port)};
    if (l < 0 || setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0 ||
        bind(l, (struct sockaddr *)&sa, sizeof sa) != 0 || listen(l, 4) != 0)
        return fail("listen");
    printf("listening\n");
    fflush(stdout);
    int c = accept(l, NULL, NULL);
    if (c < 0)
        return fail("accept");
    static char buf[1 << 16];
    long total = 0, n;
    while ((n = read(c, buf, sizeof buf)) > 0)
        total += n;
    if (n < 0)
        return fail("read");
    printf("received %ld\n", total);
    return 0;
}

static int send_side(const char *ip, int port, long bytes) {
    struct tcp_info ti;
    int l = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in la = {.sin_family = AF_INET};
    if (l < 0 || inet_pton(AF_INET, "0.0.0.0", &la.sin_addr) != 1 ||
        bind(l, (struct sockaddr *)&la, sizeof la) != 0 || listen(l, 1) != 0)
        return fail("listen");
    if (info(l, &ti) != 0)
        return fail("TCP_INFO on a listener");
    printf("listen_state=%u\n", ti.tcpi_state);
    close(l);

    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(port)};
    if (fd < 0 || inet_pton(AF_INET, ip, &sa.sin_addr) != 1)
        return fail("socket");
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0)
        return fail("connect");
    static char buf[1 << 16];
    memset(buf, 'x', sizeof buf);
    for (long left = bytes; left > 0;) {
        ssize_t n = write(fd, buf, left < (long)sizeof buf ? (size_t)left : sizeof buf);
        if (n <= 0)
            return fail("write");
        left -= n;
    }
    /* Everything acknowledged, or 5 s. */
    for (int i = 0; i < 500; i++) {
        if (info(fd, &ti) != 0)
            return fail("TCP_INFO");
        if (ti.tcpi_unacked == 0 && ti.tcpi_notsent_bytes == 0 && ti.tcpi_bytes_acked >= (unsigned long long)bytes)
            break;
        struct timespec ts = {0, 10 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    printf("state=%u\n", ti.tcpi_state);
    printf("options=%u\n", ti.tcpi_options);
    printf("snd_wscale=%u\n", ti.tcpi_snd_wscale);
    printf("rcv_wscale=%u\n", ti.tcpi_rcv_wscale);
    printf("rto=%u\n", ti.tcpi_rto);
    printf("snd_mss=%u\n", ti.tcpi_snd_mss);
    printf("rcv_mss=%u\n", ti.tcpi_rcv_mss);
    printf("unacked=%u\n", ti.tcpi_unacked);
    printf("pmtu=%u\n", ti.tcpi_pmtu);
    printf("rtt=%u\n", ti.tcpi_rtt);
    printf("rttvar=%u\n", ti.tcpi_rttvar);
    printf("snd_cwnd=%u\n", ti.tcpi_snd_cwnd);
    printf("advmss=%u\n", ti.tcpi_advmss);
    printf("rcv_space=%u\n", ti.tcpi_rcv_space);
    printf("total_retrans=%u\n", ti.tcpi_total_retrans);
    printf("bytes_acked=%llu\n", (unsigned long long)ti.tcpi_bytes_acked);
    printf("notsent_bytes=%u\n", ti.tcpi_notsent_bytes);
    printf("snd_wnd=%u\n", ti.tcpi_snd_wnd);

    /* A buffer shorter than struct tcp_info gets that many bytes. */
    unsigned char small[8];
    socklen_t len = sizeof small;
    memset(small, 0xee, sizeof small);
    if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, small, &len) != 0)
        return fail("TCP_INFO into 8 bytes");
    printf("short_len=%u short_state=%u\n", (unsigned)len, small[0]);
    close(fd);
    return 0;
}

int main(int argc, char **argv) {
    if (argc == 3 && strcmp(argv[1], "sink") == 0)
        return sink(atoi(argv[2]));
    if (argc == 5 && strcmp(argv[1], "send") == 0)
        return send_side(argv[2], atoi(argv[3]), atol(argv[4]));
    fprintf(stderr, "usage: %s sink PORT | send IP PORT BYTES\n", argv[0]);
    return 2;
}
