/*
 * plain: a program that never touches /dev/liveupdate. It must behave the
 * same with libluo_preload.so preloaded as without it: every line it prints
 * (results, errnos, its threads and descriptors) and its exit status.
 *
 * Built with -D_FORTIFY_SOURCE=2 -O2 so that glibc's fortified __open_2
 * forms are called where the flags are not constant.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <termios.h>
#include <unistd.h>

static void show(const char *what, int ret)
{
	if (ret < 0)
		printf("%s: -1 %s\n", what, strerrorname_np(errno) ? strerrorname_np(errno) : "?");
	else
		printf("%s: ok\n", what);
}

/* The open flags, not constant to the compiler. */
static int flags_of(const char *s)
{
	return atoi(s);
}

static void descriptors(void)
{
	DIR *d = opendir("/proc/self/fd");
	if (!d) {
		printf("fds: cannot list\n");
		return;
	}
	int self = dirfd(d);
	struct dirent *e;
	int n = 0;
	while ((e = readdir(d))) {
		if (e->d_name[0] == '.' || atoi(e->d_name) == self)
			continue;
		char path[300], target[256];
		snprintf(path, sizeof(path), "/proc/self/fd/%s", e->d_name);
		ssize_t len = readlink(path, target, sizeof(target) - 1);
		target[len < 0 ? 0 : len] = 0;
		/* Pipes and sockets carry inode numbers: print the kind only. */
		char *bracket = strchr(target, '[');
		if (bracket)
			*bracket = 0;
		printf("fd %s: %s\n", e->d_name, target);
		n++;
	}
	closedir(d);
	printf("fds: %d\n", n);
}

static void threads(void)
{
	FILE *f = fopen("/proc/self/status", "r");
	char line[256];
	while (f && fgets(line, sizeof(line), f))
		if (strncmp(line, "Threads:", 8) == 0)
			printf("%s", line);
	if (f)
		fclose(f);
}

int main(int argc, char **argv)
{
	(void)argc;
	const char *dir = argv[1];
	char path[4096];
	snprintf(path, sizeof(path), "%s/file", dir);
	int rdwr_creat = flags_of("66"); /* O_RDWR | O_CREAT */

	errno = 1234;
	int fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
	show("open /dev/null", fd);
	printf("errno kept across a successful open: %s\n", errno == 1234 ? "yes" : "no");
	close(fd);

	show("open a missing file", open("/nonexistent/luo", O_RDONLY));
	show("open64 a missing file", open64("/nonexistent/luo", O_RDONLY));
	show("openat a missing file", openat(AT_FDCWD, "/nonexistent/luo", O_RDONLY));
	show("open a missing file, flags not constant", open("/nonexistent/luo", flags_of("0")));
	show("openat a missing file, flags not constant",
	     openat(AT_FDCWD, "/nonexistent/luo", flags_of("0")));
	show("open a directory for writing", open("/", O_WRONLY));
	show("open a NULL path", open(NULL, O_RDONLY));

	fd = open(path, rdwr_creat, 0600);
	show("create a file", fd);
	struct stat st;
	show("its mode", fstat(fd, &st));
	printf("mode: %o\n", st.st_mode & 0777);
	show("write", (int)write(fd, "hello", 5));
	show("ioctl TCGETS on a file", ioctl(fd, TCGETS, &(struct termios){ 0 }));
	int n = -1;
	show("ioctl FIONREAD on a file", ioctl(fd, FIONREAD, &n));
	show("ioctl 0xBA00 (a LUO number) on a file", ioctl(fd, 0xBA00, &n));
	show("ioctl FIOCLEX", ioctl(fd, FIOCLEX));
	printf("close-on-exec: %s\n", fcntl(fd, F_GETFD) & FD_CLOEXEC ? "yes" : "no");
	close(fd);
	show("ioctl on a closed fd", ioctl(fd, FIONREAD, &n));
	show("ioctl 0xBA40 on a closed fd", ioctl(fd, 0xBA40, &n));

	int p[2];
	show("pipe", pipe(p));
	show("write to the pipe", (int)write(p[1], "abc", 3));
	show("ioctl FIONREAD on the pipe", ioctl(p[0], FIONREAD, &n));
	printf("bytes waiting: %d\n", n);
	show("ioctl 0xBA41 on the pipe", ioctl(p[0], 0xBA41, &n));

	int sp[2];
	show("socketpair", socketpair(AF_UNIX, SOCK_STREAM, 0, sp));
	show("ioctl FIONREAD on a socket", ioctl(sp[0], FIONREAD, &n));
	printf("bytes waiting: %d\n", n);

	threads();
	descriptors();
	return 3;
}
