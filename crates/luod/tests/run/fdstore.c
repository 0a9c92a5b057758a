/* A service that keeps its state in a memfd in its service manager's fd
 * store, written against libsystemd's public API only (sd-daemon.h), the way
 * a service under systemd would be:
 *
 *   cc -O2 -o fdstore fdstore.c $(pkg-config --cflags --libs libsystemd)
 *   fdstore REPORT-FILE
 *
 * At start it looks for a stored fd named "state" (sd_listen_fds_with_names).
 * When there is none it creates a memfd of SIZE bytes of a known pattern,
 * with a start counter in its first 8 bytes, and stores it with
 * FDSTORE=1/FDNAME=state. When there is one it checks every pattern byte and
 * increments the counter. Then READY=1 with a STATUS= naming the start, one
 * line appended to REPORT-FILE (and printed), and it waits for SIGTERM.
 *
 * The report line is "start N: created" or "start N: intact SIZE bytes" or
 * "start N: BAD ..." (then it exits 2 without READY=1).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#include <systemd/sd-daemon.h>

#define SIZE (4u << 20) /* 4 MiB */

static unsigned char pattern_byte(size_t i) {
    uint64_t z = (uint64_t)(i / 4096) * 0x9e3779b97f4a7c15ull + 0x5eed;
    z = (z ^ (z >> 31)) * 0xbf58476d1ce4e5b9ull;
    return (unsigned char)((z >> ((i % 8) * 8)) ^ (i & 0xff));
}

static void report(const char *path, const char *line) {
    FILE *f = fopen(path, "a");
    if (f) {
        fprintf(f, "%s\n", line);
        fclose(f);
    }
    printf("%s\n", line);
    fflush(stdout);
}

static volatile sig_atomic_t stop;
static void on_term(int sig) { (void)sig; stop = 1; }

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: %s REPORT-FILE\n", argv[0]);
        return 64;
    }
    const char *out = argv[1];
    char line[256];
    char **names = NULL;
    int n = sd_listen_fds_with_names(1, &names);
    if (n < 0) {
        fprintf(stderr, "sd_listen_fds_with_names: %s\n", strerror(-n));
        return 1;
    }
    int fd = -1;
    for (int i = 0; i < n; i++) {
        if (names && names[i] && strcmp(names[i], "state") == 0)
            fd = SD_LISTEN_FDS_START + i;
    }
    unsigned char *p;
    uint64_t start;
    if (fd < 0) {
        fd = memfd_create("state", MFD_CLOEXEC);
        if (fd < 0 || ftruncate(fd, SIZE) < 0) {
            perror("memfd");
            return 1;
        }
        p = mmap(NULL, SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
        if (p == MAP_FAILED) {
            perror("mmap");
            return 1;
        }
        for (size_t i = 8; i < SIZE; i++)
            p[i] = pattern_byte(i);
        start = 1;
        memcpy(p, &start, 8);
        int r = sd_pid_notify_with_fds(0, 0, "FDSTORE=1\nFDNAME=state", &fd, 1);
        if (r <= 0) {
            fprintf(stderr, "FDSTORE=1 not sent: %s\n", r < 0 ? strerror(-r) : "no NOTIFY_SOCKET");
            return 1;
        }
        snprintf(line, sizeof line, "start 1: created %u bytes", SIZE);
    } else {
        off_t size = lseek(fd, 0, SEEK_END);
        if (size != SIZE) {
            snprintf(line, sizeof line, "start ?: BAD size %lld, expected %u", (long long)size, SIZE);
            report(out, line);
            return 2;
        }
        p = mmap(NULL, SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
        if (p == MAP_FAILED) {
            perror("mmap");
            return 1;
        }
        memcpy(&start, p, 8);
        for (size_t i = 8; i < SIZE; i++) {
            if (p[i] != pattern_byte(i)) {
                snprintf(line, sizeof line, "start %llu: BAD byte at offset %zu",
                         (unsigned long long)start + 1, i);
                report(out, line);
                return 2;
            }
        }
        start++;
        memcpy(p, &start, 8);
        snprintf(line, sizeof line, "start %llu: intact %u bytes", (unsigned long long)start, SIZE);
    }
    struct sigaction sa = {0};
    sa.sa_handler = on_term;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    report(out, line);
    sd_notifyf(0, "READY=1\nSTATUS=start %llu", (unsigned long long)start);
    while (!stop)
        pause();
    sd_notify(0, "STOPPING=1");
    return 0;
}
