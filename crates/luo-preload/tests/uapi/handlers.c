/*
 * handlers: which file types a session created through /dev/liveupdate
 * takes. The kernel's (memfd) by default; with LUO_PRELOAD_HANDLERS=all
 * also luo's userspace ones. Never luo's own session fds or the device.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include "luo_uapi.h"

static int token;

static void preserve(int s, const char *what, int fd)
{
	struct luo_fd_arg a = { .size = sizeof(a), .fd = fd, .token = ++token };
	int r = ioctl(s, LUO_PRESERVE_FD, &a) < 0 ? errno : 0;
	printf("%s: %s\n", what, r == 0 ? "ok" : r == ENOENT ? "ENOENT" : strerror(r));
}

int main(void)
{
	int dev = open("/dev/liveupdate", O_RDWR | O_CLOEXEC);
	struct luo_session_arg c = { .size = sizeof(c) };
	strcpy((char *)c.name, "uapi-handlers");
	if (dev < 0 || ioctl(dev, LUO_CREATE_SESSION, &c) < 0) {
		perror("setup");
		return 2;
	}
	int sp[2], pp[2];
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sp) || pipe2(pp, O_CLOEXEC))
		return 2;
	preserve(c.fd, "memfd", memfd_create("m", MFD_CLOEXEC));
	preserve(c.fd, "eventfd", eventfd(0, EFD_CLOEXEC));
	preserve(c.fd, "unix socket", sp[0]);
	preserve(c.fd, "pipe", pp[0]);
	preserve(c.fd, "the session fd", c.fd);
	preserve(c.fd, "the device fd", dev);
	return 0;
}
