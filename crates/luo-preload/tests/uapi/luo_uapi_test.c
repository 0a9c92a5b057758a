/*
 * luo_uapi_test: the kernel's /dev/liveupdate uAPI, exercised from C alone,
 * in two stages around a live update.
 *
 *   luo_uapi_test --stage 1   every errno case that needs no incoming
 *                             session; then prepares sessions for stage 2,
 *                             leaves a background process holding their fds
 *                             and exits 0
 *   (live update: kexec on a LUO kernel, `luoctl update` under luo)
 *   luo_uapi_test --stage 2   retrieves, checks the bytes and the cases that
 *                             need an incoming session, finishes, exits 0
 *
 * The same source runs against the real kernel (built with cc -static) and
 * under libluo_preload.so against luod; the output of stage 1 followed by
 * that of stage 2 must equal expected.txt in both places. It holds no fd
 * numbers, pids or addresses. Any mismatch is printed on its line and makes
 * the exit status 1; a setup failure exits 2.
 *
 * Session names start with "uapi-test-" so that they do not collide with
 * other users of the device. $LUO_UAPI_TEST_PIDFILE, if set, receives the
 * pid of stage 1's background process.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

#include "luo_uapi.h"

#ifndef MFD_HUGETLB
#define MFD_HUGETLB 0x0004U
#endif

static int failures;
static const char *stage_name = "stage ?";

static const char *ename(int e)
{
	static char buf[32];
	switch (e) {
	case 0: return "ok";
	case EPERM: return "EPERM";
	case ENOENT: return "ENOENT";
	case EIO: return "EIO";
	case E2BIG: return "E2BIG";
	case EBADF: return "EBADF";
	case EAGAIN: return "EAGAIN";
	case ENOMEM: return "ENOMEM";
	case EACCES: return "EACCES";
	case EFAULT: return "EFAULT";
	case EBUSY: return "EBUSY";
	case EEXIST: return "EEXIST";
	case ENOTDIR: return "ENOTDIR";
	case EINVAL: return "EINVAL";
	case EMFILE: return "EMFILE";
	case ENOTTY: return "ENOTTY";
	case ENOSPC: return "ENOSPC";
	case EDEADLK: return "EDEADLK";
	case EOPNOTSUPP: return "EOPNOTSUPP";
	case ESTALE: return "ESTALE";
	case EDQUOT: return "EDQUOT";
	}
	snprintf(buf, sizeof(buf), "errno %d", e);
	return buf;
}

/* One line: what was done and what came of it (an errno name or "ok"). */
static void check(const char *what, int got, int want)
{
	printf("%s: %s: %s", stage_name, what, ename(got));
	if (got != want) {
		printf("  MISMATCH (expected %s)", ename(want));
		failures++;
	}
	printf("\n");
}

/* One line for a fact that is true or not. */
static void check_true(const char *what, int ok)
{
	printf("%s: %s: %s\n", stage_name, what, ok ? "ok" : "MISMATCH");
	if (!ok)
		failures++;
}

static void fatal(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	printf("%s: FATAL: ", stage_name);
	vprintf(fmt, ap);
	printf(" (%s)\n", ename(errno));
	va_end(ap);
	fflush(stdout);
	exit(2);
}

static int xioctl(int fd, unsigned long cmd, void *arg)
{
	return ioctl(fd, cmd, arg) < 0 ? errno : 0;
}

/* Copies a name into a zeroed name field, at most its 64 bytes. */
static void set_name(uint8_t *field, const char *name)
{
	size_t n = strlen(name);
	memcpy(field, name, n < LUO_NAME_LENGTH ? n : LUO_NAME_LENGTH);
}

static int create_session(int dev, const char *name, int *out)
{
	struct luo_session_arg a;
	memset(&a, 0, sizeof(a));
	a.size = sizeof(a);
	set_name(a.name, name);
	int e = xioctl(dev, LUO_CREATE_SESSION, &a);
	*out = e ? -1 : a.fd;
	return e;
}

static int retrieve_session(int dev, const char *name, int *out)
{
	struct luo_session_arg a;
	memset(&a, 0, sizeof(a));
	a.size = sizeof(a);
	set_name(a.name, name);
	int e = xioctl(dev, LUO_RETRIEVE_SESSION, &a);
	*out = e ? -1 : a.fd;
	return e;
}

static int preserve(int s, int fd, uint64_t token)
{
	struct luo_fd_arg a = { .size = sizeof(a), .fd = fd, .token = token };
	return xioctl(s, LUO_PRESERVE_FD, &a);
}

static int retrieve_fd(int s, uint64_t token, int *out)
{
	struct luo_fd_arg a = { .size = sizeof(a), .fd = -1, .token = token };
	int e = xioctl(s, LUO_RETRIEVE_FD, &a);
	*out = e ? -1 : a.fd;
	return e;
}

static int finish(int s)
{
	struct luo_finish_arg a = { .size = sizeof(a), .reserved = 0 };
	return xioctl(s, LUO_FINISH, &a);
}

static int get_name(int s, char *name)
{
	struct luo_get_name_arg a;
	memset(&a, 0, sizeof(a));
	a.size = sizeof(a);
	int e = xioctl(s, LUO_GET_NAME, &a);
	if (!e)
		memcpy(name, a.name, LUO_NAME_LENGTH);
	return e;
}

static int has_name(int s, const char *want)
{
	char name[LUO_NAME_LENGTH];
	return get_name(s, name) == 0 && strncmp(name, want, LUO_NAME_LENGTH) == 0;
}

static int must_create(int dev, const char *name)
{
	int s;
	if (create_session(dev, name, &s))
		fatal("creating session %s", name);
	return s;
}

static int memfd_with(const char *data, size_t len, unsigned flags)
{
	int fd = memfd_create("luo-uapi-test", flags);
	if (fd < 0)
		fatal("memfd_create");
	if (len && pwrite(fd, data, len, 0) != (ssize_t)len)
		fatal("writing a memfd");
	return fd;
}

static int memfd_str(const char *s)
{
	return memfd_with(s, strlen(s), 0);
}

/* The whole of a file from offset 0, NUL-terminated; its length or -1. */
static ssize_t read_all(int fd, char *buf, size_t cap)
{
	size_t got = 0;
	while (got < cap - 1) {
		ssize_t n = pread(fd, buf + got, cap - 1 - got, got);
		if (n < 0)
			return -1;
		if (n == 0)
			break;
		got += n;
	}
	buf[got] = 0;
	return got;
}

static int holds(int fd, const char *want)
{
	char buf[256];
	return read_all(fd, buf, sizeof(buf)) == (ssize_t)strlen(want) && strcmp(buf, want) == 0;
}

static int is_cloexec(int fd)
{
	int f = fcntl(fd, F_GETFD);
	return f >= 0 && (f & FD_CLOEXEC);
}

#define BIG_SIZE (1024 * 1024)
static unsigned char pattern(size_t i)
{
	return (unsigned char)((i * 2654435761u) >> 13);
}

/* Runs `fn` in a child process; returns its exit status (255 on a crash). */
static int in_child(int (*fn)(void *), void *arg)
{
	fflush(stdout);
	pid_t p = fork();
	if (p < 0)
		fatal("fork");
	if (p == 0)
		_exit(fn(arg));
	int st;
	if (waitpid(p, &st, 0) != p)
		fatal("waitpid");
	return WIFEXITED(st) ? WEXITSTATUS(st) : 255;
}

static int child_open(void *arg)
{
	(void)arg;
	int fd = open("/dev/liveupdate", O_RDWR);
	return fd < 0 ? errno : 0;
}

static int child_create(void *arg)
{
	int s;
	return create_session(*(int *)arg, "uapi-test-child", &s);
}

static int child_get_name(void *arg)
{
	return has_name(*(int *)arg, "uapi-test-inherit") ? 0 : 1;
}

/* --get-name FD NAME: exits 0 if the inherited session fd FD is NAME. */
static int get_name_mode(int argc, char **argv)
{
	if (argc != 4)
		return 2;
	return has_name(atoi(argv[2]), argv[3]) ? 0 : 1;
}

static void stage1_device(void)
{
	int dev = open("/dev/liveupdate", O_RDWR);
	if (dev < 0)
		fatal("open /dev/liveupdate");
	check("open /dev/liveupdate", 0, 0);
	check_true("the device fd is not close-on-exec without O_CLOEXEC", !is_cloexec(dev));
	int again = open("/dev/liveupdate", O_RDWR);
	check("open it a second time", again < 0 ? errno : 0, EBUSY);
	check("open it from a forked child", in_child(child_open, NULL), EBUSY);
	check("create a session through the device fd inherited by fork",
	      in_child(child_create, &dev), 0);
	int s;
	check("the child's session is gone with the child", create_session(dev, "uapi-test-child", &s), 0);
	close(s);
	close(dev);
	dev = open("/dev/liveupdate", O_RDWR | O_CLOEXEC);
	check("open it again after close", dev < 0 ? errno : 0, 0);
	check_true("O_CLOEXEC is honoured", is_cloexec(dev));
	close(dev);
}

static void stage1_dispatch(int dev)
{
	struct luo_session_arg a;
	memset(&a, 0, sizeof(a));
	a.size = sizeof(a);
	strcpy((char *)a.name, "uapi-test-dispatch");
	char buf[128];
	memset(buf, 0, sizeof(buf));
	buf[0] = 72;

	check("device: unknown number 0x02", xioctl(dev, _IO(LUO_IOCTL_TYPE, 0x02), &a), EINVAL);
	check("device: a session command (PRESERVE_FD)", xioctl(dev, LUO_PRESERVE_FD, &a), EINVAL);
	check("device: number 0 encoded _IOW", xioctl(dev, _IOW(LUO_IOCTL_TYPE, 0, int), &a), ENOTTY);
	check("device: number 0 encoded _IOW, NULL argument",
	      xioctl(dev, _IOW(LUO_IOCTL_TYPE, 0, int), NULL), EFAULT);
	check("device: CREATE_SESSION, NULL argument", xioctl(dev, LUO_CREATE_SESSION, NULL), EFAULT);
	check("device: TCGETS (number 1, another type)", xioctl(dev, TCGETS, buf), ENOTTY);
	check("device: FIONREAD", xioctl(dev, FIONREAD, buf), EINVAL);

	a.size = 71;
	check("CREATE_SESSION, size 71", xioctl(dev, LUO_CREATE_SESSION, &a), EINVAL);
	a.size = 0;
	check("CREATE_SESSION, size 0", xioctl(dev, LUO_CREATE_SESSION, &a), EINVAL);

	/* A larger struct: accepted when its tail is zero. */
	struct {
		struct luo_session_arg a;
		uint8_t tail[8];
	} big;
	memset(&big, 0, sizeof(big));
	big.a.size = sizeof(big);
	strcpy((char *)big.a.name, "uapi-test-big");
	check("CREATE_SESSION, size 80, zero tail", xioctl(dev, LUO_CREATE_SESSION, &big), 0);
	check_true("the struct is written back (size and name echoed)",
		   big.a.size == 80 && strcmp((char *)big.a.name, "uapi-test-big") == 0 && big.a.fd >= 0);
	close(big.a.fd);
	big.tail[7] = 1;
	strcpy((char *)big.a.name, "uapi-test-big2");
	check("CREATE_SESSION, size 80, non-zero tail", xioctl(dev, LUO_CREATE_SESSION, &big), E2BIG);

	/* A struct at the end of a page, the next page unreadable. */
	long page = sysconf(_SC_PAGESIZE);
	char *m = mmap(NULL, 2 * page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (m == MAP_FAILED || mprotect(m + page, page, PROT_NONE))
		fatal("mapping pages");
	struct luo_session_arg *edge = (struct luo_session_arg *)(m + page - sizeof(*edge));
	memset(edge, 0, sizeof(*edge));
	edge->size = 0xffffffffu;
	strcpy((char *)edge->name, "uapi-test-edge");
	check("CREATE_SESSION, tail runs into an unmapped page", xioctl(dev, LUO_CREATE_SESSION, edge), EFAULT);
	/* The struct readable but not writable: created, then the copy-out fails. */
	edge->size = sizeof(*edge);
	if (mprotect(m, page, PROT_READ))
		fatal("mprotect");
	check("CREATE_SESSION into read-only memory", xioctl(dev, LUO_CREATE_SESSION, edge), EFAULT);
	int s;
	check("the session whose copy-out failed is gone (create it again)",
	      create_session(dev, "uapi-test-edge", &s), 0);
	close(s);
	munmap(m, 2 * page);
}

static void stage1_names(int dev)
{
	int s, s2;
	check("create a session with an empty name", create_session(dev, "", &s), EINVAL);

	struct luo_session_arg a;
	memset(&a, 'X', sizeof(a));
	a.size = sizeof(a);
	check("create a session whose name has no NUL in 64 bytes", xioctl(dev, LUO_CREATE_SESSION, &a), EINVAL);

	char n63[64];
	memset(n63, 'A', 63);
	n63[63] = 0;
	check("create a session with a 63-byte name", create_session(dev, n63, &s), 0);
	check_true("GET_NAME returns the 63-byte name", has_name(s, n63));
	close(s);

	memset(&a, 0, sizeof(a));
	a.size = sizeof(a);
	memcpy(a.name, "uapi-test-nul\0garbage", 21);
	check("create a session with bytes after the NUL", xioctl(dev, LUO_CREATE_SESSION, &a), 0);
	check_true("its name ends at the NUL", has_name(a.fd, "uapi-test-nul"));
	close(a.fd);

	check("create uapi-test-dup", create_session(dev, "uapi-test-dup", &s), 0);
	check("create uapi-test-dup again", create_session(dev, "uapi-test-dup", &s2), EEXIST);
	check_true("a session fd is close-on-exec", is_cloexec(s));
	close(s);
	check("create uapi-test-dup after closing the first", create_session(dev, "uapi-test-dup", &s), 0);
	close(s);
	check("RETRIEVE_SESSION of a name that only exists outgoing",
	      retrieve_session(dev, "uapi-test-dup", &s), ENOENT);
	check("no incoming uapi-test-state before the update",
	      retrieve_session(dev, "uapi-test-state", &s), ENOENT);
}

static void stage1_session_dispatch(int dev)
{
	int s = must_create(dev, "uapi-test-kinds");
	struct luo_get_name_arg g;
	memset(&g, 0xAA, sizeof(g));
	g.size = sizeof(g);
	g.reserved = 0;
	check("GET_NAME on an outgoing session", xioctl(s, LUO_GET_NAME, &g), 0);
	check_true("GET_NAME writes the name and a NUL and leaves the rest",
		   strcmp((char *)g.name, "uapi-test-kinds") == 0 && g.name[16] == 0xAA && g.name[63] == 0xAA);
	g.reserved = 1;
	check("GET_NAME, reserved not 0", xioctl(s, LUO_GET_NAME, &g), EINVAL);

	struct luo_fd_arg r = { .size = sizeof(r), .fd = -1, .token = 1 };
	check("RETRIEVE_FD on an outgoing session", xioctl(s, LUO_RETRIEVE_FD, &r), EINVAL);
	r.size = 4;
	check("RETRIEVE_FD on an outgoing session, size 4 (kind before size)",
	      xioctl(s, LUO_RETRIEVE_FD, &r), EINVAL);
	check("FINISH on an outgoing session", finish(s), EINVAL);

	struct luo_session_arg c;
	memset(&c, 0, sizeof(c));
	c.size = sizeof(c);
	strcpy((char *)c.name, "uapi-test-nested");
	check("session: CREATE_SESSION", xioctl(s, LUO_CREATE_SESSION, &c), EINVAL);
	check("session: unknown number 0x44", xioctl(s, _IO(LUO_IOCTL_TYPE, 0x44), &r), EINVAL);
	check("session: number 0x40 encoded _IOR", xioctl(s, _IOR(LUO_IOCTL_TYPE, 0x40, int), &r), ENOTTY);
	check("session: PRESERVE_FD, NULL argument", xioctl(s, LUO_PRESERVE_FD, NULL), EFAULT);
	check("session: TCGETS", xioctl(s, TCGETS, &c), EINVAL);

	int m = memfd_str("size rules");
	struct {
		struct luo_fd_arg a;
		uint8_t tail[8];
	} p;
	memset(&p, 0, sizeof(p));
	p.a.fd = m;
	p.a.token = 10;
	p.a.size = 15;
	check("PRESERVE_FD, size 15", xioctl(s, LUO_PRESERVE_FD, &p), EINVAL);
	p.a.size = 24;
	p.tail[0] = 1;
	check("PRESERVE_FD, size 24, non-zero tail", xioctl(s, LUO_PRESERVE_FD, &p), E2BIG);
	p.tail[0] = 0;
	check("PRESERVE_FD, size 24, zero tail", xioctl(s, LUO_PRESERVE_FD, &p), 0);
	check_true("PRESERVE_FD writes the struct back unchanged",
		   p.a.size == 24 && p.a.fd == m && p.a.token == 10);
	close(m);
	close(s);
}

static int child_get_name_exec(int s)
{
	fflush(stdout);
	pid_t p = fork();
	if (p < 0)
		fatal("fork");
	if (p == 0) {
		char fd[16];
		snprintf(fd, sizeof(fd), "%d", s);
		execl("/proc/self/exe", "luo_uapi_test", "--get-name", fd, "uapi-test-inherit", (char *)NULL);
		_exit(127);
	}
	int st;
	if (waitpid(p, &st, 0) != p)
		fatal("waitpid");
	return WIFEXITED(st) ? WEXITSTATUS(st) : 255;
}

static void stage1_preserve(int dev)
{
	int s = must_create(dev, "uapi-test-preserve");
	int m = memfd_str("one");
	check("preserve a memfd", preserve(s, m, 1), 0);
	int other = memfd_str("other");
	check("preserve another memfd under the same token", preserve(s, other, 1), EEXIST);
	check("preserve fd -1 under a used token (token checked first)", preserve(s, -1, 1), EEXIST);
	check("preserve fd -1", preserve(s, -1, 2), EBADF);
	check("preserve a closed fd number", preserve(s, 1000, 2), EBADF);
	int opath = open("/", O_PATH | O_CLOEXEC);
	check("preserve an O_PATH fd", preserve(s, opath, 2), EBADF);
	close(opath);

	int null = open("/dev/null", O_RDWR | O_CLOEXEC);
	check("preserve /dev/null", preserve(s, null, 2), ENOENT);
	close(null);
	int ev = eventfd(0, EFD_CLOEXEC);
	check("preserve an eventfd", preserve(s, ev, 2), ENOENT);
	close(ev);
	int sp[2];
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sp))
		fatal("socketpair");
	check("preserve a socket", preserve(s, sp[0], 2), ENOENT);
	int pp[2];
	if (pipe2(pp, O_CLOEXEC))
		fatal("pipe");
	check("preserve a pipe", preserve(s, pp[0], 2), ENOENT);
	close(pp[0]);
	close(pp[1]);
	int exe = open("/proc/self/exe", O_RDONLY | O_CLOEXEC);
	check("preserve a linked regular file", preserve(s, exe, 2), ENOENT);
	close(exe);
	check("preserve the session fd itself", preserve(s, s, 2), ENOENT);
	check("preserve the device fd", preserve(s, dev, 2), ENOENT);
	int huge = memfd_create("luo-uapi-test-huge", MFD_HUGETLB | MFD_CLOEXEC);
	int huge_ok = huge < 0 || preserve(s, huge, 2) == ENOENT;
	check_true("preserve a hugetlb memfd (ENOENT where hugetlbfs exists)", huge_ok);
	if (huge >= 0)
		close(huge);

	check("preserve the same memfd under another token", preserve(s, m, 2), EBUSY);
	int d = dup(m);
	check("preserve a dup of it", preserve(s, d, 2), EBUSY);
	close(d);
	char path[64];
	snprintf(path, sizeof(path), "/proc/self/fd/%d", m);
	int re = open(path, O_RDWR | O_CLOEXEC);
	if (re < 0)
		fatal("re-opening a memfd");
	check("preserve it re-opened through /proc/self/fd", preserve(s, re, 2), EBUSY);
	close(re);

	int s2 = must_create(dev, "uapi-test-preserve2");
	check("preserve it in another session", preserve(s2, m, 5), EBUSY);
	check("the same token in another session", preserve(s2, other, 1), 0);
	close(other);
	close(m);
	check_true("preserve leaves the caller's fds alone (socket still open)",
		   fcntl(sp[0], F_GETFD) >= 0);
	close(sp[0]);
	close(sp[1]);
	close(s2);
	close(s);

	/* Abort: closing an outgoing session unpreserves its files. */
	s = must_create(dev, "uapi-test-abort");
	m = memfd_str("abort data");
	check("preserve into uapi-test-abort", preserve(s, m, 1), 0);
	close(s);
	check_true("after the abort the memfd still holds its data", holds(m, "abort data"));
	s = must_create(dev, "uapi-test-abort");
	check("after the abort the memfd can be preserved again", preserve(s, m, 1), 0);
	s2 = must_create(dev, "uapi-test-abort-2");
	close(s);
	check("once its session is closed it can be preserved in another at once",
	      preserve(s2, m, 1), 0);
	close(s2);
	close(m);

	/* A session fd is a file: dup, SCM_RIGHTS, fork and exec copies. */
	s = must_create(dev, "uapi-test-inherit");
	d = dup(s);
	close(s);
	check_true("GET_NAME through a dup after closing the original", has_name(d, "uapi-test-inherit"));
	m = memfd_str("through a dup");
	check("preserve through the dup", preserve(d, m, 1), 0);
	close(m);

	int u[2];
	if (socketpair(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0, u))
		fatal("socketpair");
	char byte = 0;
	struct iovec iov = { .iov_base = &byte, .iov_len = 1 };
	union {
		struct cmsghdr h;
		char b[CMSG_SPACE(sizeof(int))];
	} ctl;
	memset(&ctl, 0, sizeof(ctl));
	struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.b, .msg_controllen = sizeof(ctl.b) };
	struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
	c->cmsg_level = SOL_SOCKET;
	c->cmsg_type = SCM_RIGHTS;
	c->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(c), &d, sizeof(int));
	if (sendmsg(u[0], &msg, 0) != 1)
		fatal("sendmsg");
	close(d);
	memset(&ctl, 0, sizeof(ctl));
	msg.msg_controllen = sizeof(ctl.b);
	if (recvmsg(u[1], &msg, MSG_CMSG_CLOEXEC) != 1 || !CMSG_FIRSTHDR(&msg))
		fatal("recvmsg");
	int got;
	memcpy(&got, CMSG_DATA(CMSG_FIRSTHDR(&msg)), sizeof(int));
	close(u[0]);
	close(u[1]);
	check_true("GET_NAME through a copy passed over SCM_RIGHTS", has_name(got, "uapi-test-inherit"));
	check("GET_NAME in a forked child", in_child(child_get_name, &got), 0);
	int fl = fcntl(got, F_GETFD);
	if (fl < 0 || fcntl(got, F_SETFD, fl & ~FD_CLOEXEC))
		fatal("clearing FD_CLOEXEC");
	check("GET_NAME in a child after exec", child_get_name_exec(got), 0);
	close(got);
	int again;
	check("the last copy closed: the session is gone (create it again)",
	      create_session(dev, "uapi-test-inherit", &again), 0);
	close(again);
}

/* The sessions stage 2 retrieves. Their fds stay open in the background. */
static void stage1_prepare(int dev)
{
	int st = must_create(dev, "uapi-test-state");
	int m = memfd_str("2");
	check("preserve the state memfd", preserve(st, m, 999), 0);
	close(m);

	int s = must_create(dev, "uapi-test-data");
	long page = sysconf(_SC_PAGESIZE);
	m = memfd_create("luo-uapi-test-page", 0);
	if (m < 0 || ftruncate(m, page))
		fatal("a one-page memfd");
	char *p = mmap(NULL, page, PROT_READ | PROT_WRITE, MAP_SHARED, m, 0);
	if (p == MAP_FAILED)
		fatal("mmap");
	snprintf(p, page, "hello kexec world");
	munmap(p, page);
	check("preserve a one-page memfd written through mmap (token 1)", preserve(s, m, 1), 0);
	close(m);

	char *big = malloc(BIG_SIZE);
	if (!big)
		fatal("malloc");
	for (size_t i = 0; i < BIG_SIZE; i++)
		big[i] = pattern(i);
	m = memfd_with(big, BIG_SIZE, 0);
	free(big);
	check("preserve a 1 MiB memfd (token 2)", preserve(s, m, 2), 0);
	close(m);

	m = memfd_with("", 0, 0);
	check("preserve an empty memfd (token 3)", preserve(s, m, 3), 0);
	close(m);

	m = memfd_str("0123456789");
	if (lseek(m, 3, SEEK_SET) != 3)
		fatal("lseek");
	check("preserve a memfd at offset 3 (token 4)", preserve(s, m, 4), 0);
	close(m);

	m = memfd_with("sealed", 6, MFD_ALLOW_SEALING);
	if (fcntl(m, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW))
		fatal("F_ADD_SEALS");
	check("preserve a memfd sealed against shrink and grow (token 5)", preserve(s, m, 5), 0);
	close(m);

	m = memfd_str("token zero");
	check("preserve under token 0", preserve(s, m, 0), 0);
	close(m);
	m = memfd_str("token max");
	check("preserve under token 2^64-1", preserve(s, m, UINT64_MAX), 0);
	close(m);

	const struct {
		const char *name;
		const char *data[2];
	} more[] = {
		{ "uapi-test-twice", { "twice", NULL } },
		{ "uapi-test-partial", { "first", "second" } },
		{ "uapi-test-implicit", { "implicit", "never retrieved" } },
		{ "uapi-test-busy", { "busy", NULL } },
		{ "uapi-test-empty", { NULL, NULL } },
	};
	for (size_t i = 0; i < sizeof(more) / sizeof(more[0]); i++) {
		int x = must_create(dev, more[i].name);
		for (int t = 0; t < 2 && more[i].data[t]; t++) {
			m = memfd_str(more[i].data[t]);
			char what[96];
			snprintf(what, sizeof(what), "preserve token %d into %s", t + 1, more[i].name);
			check(what, preserve(x, m, t + 1), 0);
			close(m);
		}
		/* Left open on purpose: this process's fds go to the background. */
	}
	(void)s;
	(void)st;
}

/* Like the kernel selftests' daemonize_and_wait: the session fds live on. */
static void daemonize(void)
{
	fflush(stdout);
	pid_t p = fork();
	if (p < 0)
		fatal("fork");
	if (p == 0) {
		setsid();
		close(0);
		close(1);
		close(2);
		if (chdir("/"))
			_exit(1);
		for (;;)
			pause();
	}
	const char *pidfile = getenv("LUO_UAPI_TEST_PIDFILE");
	if (pidfile && *pidfile) {
		FILE *f = fopen(pidfile, "w");
		if (f) {
			fprintf(f, "%d\n", (int)p);
			fclose(f);
		}
	}
}

static int stage1(void)
{
	stage1_device();
	int dev = open("/dev/liveupdate", O_RDWR | O_CLOEXEC);
	if (dev < 0)
		fatal("open /dev/liveupdate");
	stage1_dispatch(dev);
	stage1_names(dev);
	stage1_session_dispatch(dev);
	stage1_preserve(dev);
	stage1_prepare(dev);
	close(dev);
	printf("%s: sessions ready; a background process holds them: perform the live update now\n",
	       stage_name);
	daemonize();
	return failures ? 1 : 0;
}

static void stage2_data(int dev)
{
	int s, f;
	check("retrieve uapi-test-data", retrieve_session(dev, "uapi-test-data", &s), 0);
	check_true("the retrieved session fd is close-on-exec", is_cloexec(s));
	check_true("GET_NAME on an incoming session", has_name(s, "uapi-test-data"));
	int m = memfd_str("new");
	check("PRESERVE_FD on an incoming session", preserve(s, m, 9), EINVAL);
	close(m);

	long page = sysconf(_SC_PAGESIZE);
	check("retrieve token 1", retrieve_fd(s, 1, &f), 0);
	check_true("the retrieved fd is close-on-exec", is_cloexec(f));
	char *p = mmap(NULL, page, PROT_READ, MAP_SHARED, f, 0);
	check_true("token 1 reads \"hello kexec world\" through mmap",
		   p != MAP_FAILED && strcmp(p, "hello kexec world") == 0);
	if (p != MAP_FAILED)
		munmap(p, page);
	struct stat sb;
	check_true("token 1 is one page", fstat(f, &sb) == 0 && sb.st_size == page);
	close(f);

	check("retrieve token 2", retrieve_fd(s, 2, &f), 0);
	char *big = malloc(BIG_SIZE + 1);
	int same = big && fstat(f, &sb) == 0 && sb.st_size == BIG_SIZE &&
		   pread(f, big, BIG_SIZE + 1, 0) == BIG_SIZE;
	for (size_t i = 0; same && i < BIG_SIZE; i++)
		same = (unsigned char)big[i] == pattern(i);
	free(big);
	check_true("token 2 holds the 1 MiB pattern", same);
	close(f);

	check("retrieve token 3", retrieve_fd(s, 3, &f), 0);
	check_true("token 3 is empty", fstat(f, &sb) == 0 && sb.st_size == 0);
	close(f);

	check("retrieve token 4", retrieve_fd(s, 4, &f), 0);
	check_true("token 4 is at offset 3 and holds \"0123456789\"",
		   lseek(f, 0, SEEK_CUR) == 3 && holds(f, "0123456789"));
	close(f);

	check("retrieve token 5", retrieve_fd(s, 5, &f), 0);
	check_true("token 5 is sealed against shrink and grow and holds \"sealed\"",
		   fcntl(f, F_GET_SEALS) == (F_SEAL_SHRINK | F_SEAL_GROW) && holds(f, "sealed"));
	close(f);

	int z, x;
	check("retrieve token 0", retrieve_fd(s, 0, &z), 0);
	check_true("token 0 holds \"token zero\"", holds(z, "token zero"));
	check("retrieve token 2^64-1", retrieve_fd(s, UINT64_MAX, &x), 0);
	check_true("token 2^64-1 holds \"token max\"", holds(x, "token max"));
	check("retrieve an unknown token", retrieve_fd(s, 77, &f), ENOENT);

	struct {
		struct luo_fd_arg a;
		uint8_t tail[8];
	} r;
	memset(&r, 0, sizeof(r));
	r.a.token = 1;
	r.a.size = 15;
	check("RETRIEVE_FD, size 15", xioctl(s, LUO_RETRIEVE_FD, &r), EINVAL);
	r.a.size = 24;
	r.tail[3] = 7;
	check("RETRIEVE_FD, size 24, non-zero tail", xioctl(s, LUO_RETRIEVE_FD, &r), E2BIG);

	struct luo_finish_arg fa = { .size = sizeof(fa), .reserved = 1 };
	check("FINISH, reserved not 0", xioctl(s, LUO_FINISH, &fa), EINVAL);
	check("FINISH", finish(s), 0);
	check("FINISH again", finish(s), 0);
	check("RETRIEVE_FD after FINISH", retrieve_fd(s, 1, &f), ENOENT);
	check_true("retrieved fds keep their data after FINISH", holds(z, "token zero") && holds(x, "token max"));
	close(z);
	close(x);
	int s2;
	check("RETRIEVE_SESSION while finished but still open",
	      retrieve_session(dev, "uapi-test-data", &s2), EINVAL);
	close(s);
	check("RETRIEVE_SESSION after finish and close", retrieve_session(dev, "uapi-test-data", &s2), ENOENT);
}

static void stage2_rest(int dev)
{
	int s, s2, a, b, f;

	check("retrieve uapi-test-twice", retrieve_session(dev, "uapi-test-twice", &s), 0);
	check("retrieve uapi-test-twice again", retrieve_session(dev, "uapi-test-twice", &s2), EINVAL);
	check("retrieve its token 1", retrieve_fd(s, 1, &a), 0);
	check("retrieve its token 1 again", retrieve_fd(s, 1, &b), 0);
	check_true("both are the same open file (they share the offset)",
		   lseek(a, 2, SEEK_SET) == 2 && lseek(b, 0, SEEK_CUR) == 2 && holds(b, "twice"));
	close(a);
	close(b);
	check("FINISH uapi-test-twice", finish(s), 0);
	close(s);

	check("retrieve uapi-test-partial", retrieve_session(dev, "uapi-test-partial", &s), 0);
	check("retrieve its token 1", retrieve_fd(s, 1, &a), 0);
	check("FINISH before token 2 was retrieved", finish(s), 0);
	check("retrieve token 2 after FINISH (discarded)", retrieve_fd(s, 2, &f), ENOENT);
	check_true("token 1 holds \"first\"", holds(a, "first"));
	close(a);
	close(s);

	check("retrieve uapi-test-implicit", retrieve_session(dev, "uapi-test-implicit", &s), 0);
	check("retrieve its token 1", retrieve_fd(s, 1, &a), 0);
	close(s);
	check("after close without FINISH it is finished and gone",
	      retrieve_session(dev, "uapi-test-implicit", &s), ENOENT);
	check_true("the retrieved fd keeps its data", holds(a, "implicit"));
	int out = must_create(dev, "uapi-test-implicit");
	check("the implicitly finished memfd can be preserved again", preserve(out, a, 1), 0);
	close(a);
	close(out);

	check("retrieve uapi-test-busy", retrieve_session(dev, "uapi-test-busy", &s), 0);
	check("retrieve its token 1", retrieve_fd(s, 1, &a), 0);
	check("create an outgoing session named like the incoming one",
	      create_session(dev, "uapi-test-busy", &out), 0);
	check("preserve the retrieved memfd before FINISH", preserve(out, a, 1), EBUSY);
	check("FINISH uapi-test-busy", finish(s), 0);
	check("preserve it after FINISH", preserve(out, a, 1), 0);
	close(a);
	close(out);
	close(s);

	check("retrieve uapi-test-empty", retrieve_session(dev, "uapi-test-empty", &s), 0);
	check("retrieve a token from the empty session", retrieve_fd(s, 1, &f), ENOENT);
	check("FINISH the empty session", finish(s), 0);
	close(s);
}

static int stage2(void)
{
	int dev = open("/dev/liveupdate", O_RDWR | O_CLOEXEC);
	if (dev < 0)
		fatal("open /dev/liveupdate");
	check("open /dev/liveupdate", 0, 0);
	int st, f;
	if (retrieve_session(dev, "uapi-test-state", &st))
		fatal("retrieving uapi-test-state (did stage 1 run, and the live update happen?)");
	check("retrieve uapi-test-state", 0, 0);
	check("retrieve the state memfd", retrieve_fd(st, 999, &f), 0);
	check_true("the state says stage 2", f >= 0 && holds(f, "2"));
	close(f);

	int s;
	check("retrieve an unknown session", retrieve_session(dev, "uapi-test-unknown", &s), ENOENT);
	check("retrieve a session with an empty name", retrieve_session(dev, "", &s), ENOENT);
	struct luo_session_arg a;
	memset(&a, 'X', sizeof(a));
	a.size = sizeof(a);
	check("retrieve a session whose name has no NUL", xioctl(dev, LUO_RETRIEVE_SESSION, &a), ENOENT);
	check("a session ioctl on the device", xioctl(dev, LUO_FINISH, &a), EINVAL);

	stage2_data(dev);
	stage2_rest(dev);

	check("FINISH uapi-test-state", finish(st), 0);
	close(st);
	close(dev);
	printf("%s: done\n", stage_name);
	return failures ? 1 : 0;
}

int main(int argc, char **argv)
{
	if (argc >= 2 && strcmp(argv[1], "--get-name") == 0)
		return get_name_mode(argc, argv);
	int stage = 0;
	if (argc == 3 && strcmp(argv[1], "--stage") == 0)
		stage = atoi(argv[2]);
	setvbuf(stdout, NULL, _IOLBF, 0);
	if (stage == 1) {
		stage_name = "stage 1";
		return stage1();
	}
	if (stage == 2) {
		stage_name = "stage 2";
		return stage2();
	}
	fprintf(stderr, "usage: %s --stage 1|2\n", argv[0]);
	return 2;
}
