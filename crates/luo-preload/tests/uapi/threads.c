/*
 * threads: ioctls from several threads at once, on the device, on one
 * session shared by all, and on a session per thread, while threads fork
 * children that use their own session. Every answer is checked; the
 * program prints a summary and exits 0 when every answer was right.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "luo_uapi.h"

#define THREADS 8
#define FILES 25

static int dev, shared;
static atomic_int wrong;

static void expect(int got, int want, const char *what, int thread)
{
	if (got != want) {
		fprintf(stderr, "thread %d: %s: got %d, expected %d\n", thread, what, got, want);
		atomic_fetch_add(&wrong, 1);
	}
}

static int xioctl(int fd, unsigned long cmd, void *arg)
{
	return ioctl(fd, cmd, arg) < 0 ? errno : 0;
}

static int preserve(int s, int fd, uint64_t token)
{
	struct luo_fd_arg a = { .size = sizeof(a), .fd = fd, .token = token };
	return xioctl(s, LUO_PRESERVE_FD, &a);
}

static int is_named(int s, const char *want)
{
	struct luo_get_name_arg g;
	memset(&g, 0, sizeof(g));
	g.size = sizeof(g);
	return xioctl(s, LUO_GET_NAME, &g) == 0 && strcmp((char *)g.name, want) == 0;
}

static void *worker(void *arg)
{
	int i = (int)(long)arg;
	char name[LUO_NAME_LENGTH];
	snprintf(name, sizeof(name), "uapi-thr-%d", i);
	struct luo_session_arg c;
	memset(&c, 0, sizeof(c));
	c.size = sizeof(c);
	memcpy(c.name, name, strlen(name));
	expect(xioctl(dev, LUO_CREATE_SESSION, &c), 0, "create", i);
	int own = c.fd;
	for (int k = 0; k < FILES; k++) {
		int m = memfd_create("thr", MFD_CLOEXEC);
		char data[32];
		int len = snprintf(data, sizeof(data), "t%dk%d", i, k);
		expect(write(m, data, len), len, "write", i);
		expect(preserve(own, m, k), 0, "preserve", i);
		expect(preserve(own, m, k + 1000), EBUSY, "preserve again", i);
		expect(preserve(own, -1, k), EEXIST, "token reused", i);
		expect(preserve(own, -1, k + 2000), EBADF, "bad fd", i);
		expect(is_named(own, name), 1, "own name", i);
		expect(is_named(shared, "uapi-thr-shared"), 1, "shared name", i);
		int m2 = memfd_create("thr-shared", MFD_CLOEXEC);
		expect(preserve(shared, m2, (uint64_t)i * 1000 + k), 0, "preserve shared", i);
		close(m2);
		close(m);
		if (k % 5 == 0) {
			/* The child uses this thread's session, which no other
			 * thread touches; another thread may hold a lock at fork. */
			pid_t p = fork();
			if (p == 0)
				_exit(is_named(own, name) ? 0 : 1);
			int st = -1;
			waitpid(p, &st, 0);
			expect(WIFEXITED(st) ? WEXITSTATUS(st) : 255, 0, "child", i);
		}
	}
	return (void *)(long)own;
}

int main(void)
{
	dev = open("/dev/liveupdate", O_RDWR | O_CLOEXEC);
	if (dev < 0) {
		perror("open /dev/liveupdate");
		return 2;
	}
	struct luo_session_arg c;
	memset(&c, 0, sizeof(c));
	c.size = sizeof(c);
	strcpy((char *)c.name, "uapi-thr-shared");
	if (xioctl(dev, LUO_CREATE_SESSION, &c)) {
		perror("create");
		return 2;
	}
	shared = c.fd;
	pthread_t t[THREADS];
	for (long i = 0; i < THREADS; i++)
		pthread_create(&t[i], NULL, worker, (void *)i);
	int own[THREADS];
	for (int i = 0; i < THREADS; i++) {
		void *r;
		pthread_join(t[i], &r);
		own[i] = (int)(long)r;
	}
	/* Every file is where its thread put it: its token is taken. */
	int m = memfd_create("probe", MFD_CLOEXEC);
	for (int i = 0; i < THREADS; i++) {
		for (int k = 0; k < FILES; k++) {
			expect(preserve(own[i], m, k), EEXIST, "own token taken", i);
			expect(preserve(shared, m, (uint64_t)i * 1000 + k), EEXIST, "shared token taken", i);
		}
	}
	expect(preserve(shared, m, 999999), 0, "a fresh token", -1);
	printf("threads: %d sessions of %d files and one shared session of %d files\n", THREADS, FILES,
	       THREADS * FILES + 1);
	printf("wrong answers: %d\n", atomic_load(&wrong));
	return atomic_load(&wrong) ? 1 : 0;
}
