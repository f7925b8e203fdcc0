/* A client that does its socket I/O through syscall(2), as libuv does for
 * close: connect to HOST:PORT (an echo server) COUNT times, each time
 * write and read back a message with syscall(SYS_write/SYS_read) and close
 * with syscall(SYS_close). Prints "ok N" and exits 0 when every round trip
 * matched; any failure prints the errno and exits 1.
 * usage: tas-rawsys HOST PORT COUNT */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: %s HOST PORT COUNT\n", argv[0]);
        return 2;
    }
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[2]))};
    if (inet_pton(AF_INET, argv[1], &sa.sin_addr) != 1) {
        fprintf(stderr, "bad address %s\n", argv[1]);
        return 2;
    }
    int count = atoi(argv[3]);
    for (int i = 0; i < count; i++) {
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
            fprintf(stderr, "round %d: socket/connect: %s\n", i, strerror(errno));
            return 1;
        }
        char msg[64], got[64];
        int len = snprintf(msg, sizeof msg, "raw system call round %d\n", i);
        if (syscall(SYS_write, fd, msg, (size_t)len) != len) {
            fprintf(stderr, "round %d: SYS_write: %s\n", i, strerror(errno));
            return 1;
        }
        int have = 0;
        while (have < len) {
            long n = syscall(SYS_read, fd, got + have, (size_t)(len - have));
            if (n <= 0) {
                fprintf(stderr, "round %d: SYS_read returned %ld: %s\n", i, n, strerror(errno));
                return 1;
            }
            have += (int)n;
        }
        if (memcmp(msg, got, (size_t)len) != 0) {
            fprintf(stderr, "round %d: echoed bytes differ\n", i);
            return 1;
        }
        if (syscall(SYS_close, fd) != 0) {
            fprintf(stderr, "round %d: SYS_close: %s\n", i, strerror(errno));
            return 1;
        }
    }
    /* An unknown descriptor still gets the kernel's answer. */
    errno = 0;
    if (syscall(SYS_close, 987654) != -1 || errno != EBADF) {
        fprintf(stderr, "SYS_close of a bad fd: expected EBADF, got errno %d\n", errno);
        return 1;
    }
    printf("ok %d\n", count);
    fflush(stdout);
    /* Let the last close finish before the process goes: tasd resets the
     * connections of an app that has exited (see the closing notes). */
    usleep(300 * 1000);
    return 0;
}
