/* A service restart that keeps its state and its listening socket, with
 * libluo (include/luo.h):
 *
 *   cc -o restart restart.c $(pkg-config --cflags --libs luo)
 *   ./restart     # first run: state in a memfd, a listener; hands over
 *   ./restart     # next run: takes both back, checks them, finishes
 *
 * luod must be running (LUOD_SOCKET names its socket if not the default).
 * Exit status 0 on success; each run says what it did on stdout. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <luo.h>

enum { STATE = 1, LISTENER = 2 };
#define SIZE (1 << 20)

static int fail(const char *what, int r)
{
	fprintf(stderr, "restart: %s: %s (%s)\n", what, luo_last_error(), strerror(-r));
	return 1;
}

/* Byte i of the state: a pattern the next process can check. */
static unsigned char pattern(size_t i) { return (unsigned char)(i * 31 + (i >> 12)); }

static int first_run(struct luo_client *c, const char *name)
{
	struct luo_session *s;
	int r = luo_create_session(c, name, &s);
	if (r < 0)
		return fail("create", r);

	int state = luo_memfd_create("state");
	unsigned char *buf = malloc(SIZE);
	for (size_t i = 0; i < SIZE; i++)
		buf[i] = pattern(i);
	if (state < 0 || write(state, buf, SIZE) != SIZE)
		return fail("state", state < 0 ? state : -EIO);
	free(buf);

	int l = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t al = sizeof a;
	if (l < 0 || bind(l, (struct sockaddr *)&a, sizeof a) || listen(l, 8) ||
	    getsockname(l, (struct sockaddr *)&a, &al))
		return fail("listener", -errno);

	uint64_t tokens[] = {STATE, LISTENER};
	int fds[] = {state, l};
	if ((r = luo_session_preserve_batch(s, tokens, fds, 2)) < 0)
		return fail("preserve", r);
	if ((r = luo_session_handover(s)) < 0)
		return fail("handover", r);
	printf("handed over: %d bytes of state, listening on port %u\n", SIZE, ntohs(a.sin_port));
	luo_session_close(s);
	close(state);
	close(l);
	return 0;
}

static int next_run(struct luo_session *s)
{
	uint64_t tokens[] = {STATE, LISTENER};
	int fds[2];
	int r = luo_session_retrieve_batch(s, tokens, fds, 2);
	if (r < 0)
		return fail("retrieve", r);
	if ((r = luo_session_finish(s)) < 0)
		return fail("finish", r);

	unsigned char *buf = malloc(SIZE);
	if (pread(fds[0], buf, SIZE, 0) != SIZE)
		return fail("read state", -EIO);
	for (size_t i = 0; i < SIZE; i++)
		if (buf[i] != pattern(i)) {
			fprintf(stderr, "restart: state differs at byte %zu\n", i);
			return 1;
		}
	free(buf);

	/* The listener still listens: connect to it and accept. */
	struct sockaddr_in a;
	socklen_t al = sizeof a;
	int c = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (getsockname(fds[1], (struct sockaddr *)&a, &al) || connect(c, (struct sockaddr *)&a, al))
		return fail("connect to the listener", -errno);
	int acc = accept4(fds[1], NULL, NULL, SOCK_CLOEXEC);
	if (acc < 0)
		return fail("accept", -errno);
	printf("took over: %d bytes of state intact, still listening on port %u\n", SIZE,
	       ntohs(a.sin_port));
	close(acc);
	close(c);
	close(fds[0]);
	close(fds[1]);
	return 0;
}

int main(int argc, char **argv)
{
	const char *name = argc > 1 ? argv[1] : "restart-example";
	struct luo_client *c;
	int r = luo_connect(&c);
	if (r < 0)
		return fail("connect", r);

	struct luo_session *s;
	r = luo_retrieve_session(c, name, &s);
	int rc;
	if (r == -ENOENT) {
		rc = first_run(c, name);
	} else if (r < 0) {
		rc = fail("retrieve session", r);
	} else {
		rc = next_run(s);
		luo_session_close(s);
	}
	luo_client_close(c);
	return rc;
}
