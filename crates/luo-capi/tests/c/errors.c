/* Every error path of libluo returns the errno the Rust client returns,
 * with a message, and leaks no descriptor.
 *
 * Usage: errors SOCKET. Prints one line per check and "N passed, N failed". */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <luo.h>

static int passed, failed;

static void check(const char *what, int got, int want)
{
	if (got == want) {
		passed++;
		printf("ok: %s = %d\n", what, got);
	} else {
		failed++;
		printf("FAIL: %s = %d, want %d (%s)\n", what, got, want, luo_last_error());
	}
}

static int fd_count(void)
{
	DIR *d = opendir("/proc/self/fd");
	int n = 0;
	struct dirent *e;
	while ((e = readdir(d)))
		if (e->d_name[0] != '.')
			n++;
	closedir(d);
	return n - 1; /* the directory's own */
}

int main(int argc, char **argv)
{
	if (argc != 2) {
		fprintf(stderr, "usage: errors SOCKET\n");
		return 2;
	}
	const char *sock = argv[1];
	int before = fd_count();
	struct luo_client *c = NULL, *none = NULL;
	struct luo_session *s = NULL, *t = NULL, *x = NULL;

	check("connect_to a missing socket", luo_connect_to("/nonexistent/luod.sock", &none), -ENOENT);
	check("the message names the path", strstr(luo_last_error(), "/nonexistent/luod.sock") != NULL, 1);
	check("connect_to NULL path", luo_connect_to(NULL, &none), -EINVAL);
	check("connect_to", luo_connect_to(sock, &c), 0);

	/* Creating. */
	check("create an empty name", luo_create_session(c, "", &s), -EINVAL);
	check("create NULL client", luo_create_session(NULL, "a", &s), -EINVAL);
	check("create NULL out", luo_create_session(c, "a", NULL), -EINVAL);
	check("create", luo_create_session(c, "errs", &s), 0);
	check("create the same name", luo_create_session(c, "errs", &t), -EEXIST);
	check("the message says EEXIST", strstr(luo_last_error(), "EEXIST") != NULL, 1);

	/* Preserving. */
	int m1 = luo_memfd_create("one"), m2 = luo_memfd_create("two");
	check("memfd", m1 >= 0 && m2 >= 0, 1);
	check("preserve", luo_session_preserve(s, 1, m1), 0);
	check("preserve a used token", luo_session_preserve(s, 1, m2), -EEXIST);
	check("preserve a closed fd", luo_session_preserve(s, 2, 999), -EBADF);
	check("preserve -1", luo_session_preserve(s, 2, -1), -EBADF);
	check("create another", luo_create_session(c, "errs2", &t), 0);
	check("preserve a file in two sessions", luo_session_preserve(t, 1, m1), -EBUSY);
	int p[2];
	check("pipe", pipe2(p, O_CLOEXEC), 0);
	uint64_t tokens[] = {10, 11, 1, 12};
	int fds[] = {m2, p[0], p[1], m2};
	uint64_t tok = 0;
	check("a batch refused at its third file", luo_session_preserve_batch(s, tokens, fds, 4), -EEXIST);
	check("the refused token is named", luo_last_error_token(&tok), 1);
	check("  and it is 1", (int)tok, 1);
	check("an empty batch", luo_session_preserve_batch(s, NULL, NULL, 0), 0);
	check("a NULL batch", luo_session_preserve_batch(s, NULL, NULL, 2), -EINVAL);
	check("retrieve from an outgoing session", luo_session_retrieve(s, 1), -EINVAL);
	check("finish an outgoing session", luo_session_finish(s), -EINVAL);

	/* Listing. */
	struct luo_session_info *info = NULL;
	size_t n = 0;
	check("sessions", luo_sessions(c, &info, &n), 0);
	check("  two of them", (int)n, 2);
	luo_session_info_free(info, n);
	check("show", luo_show(c, "errs", LUO_OWNER_SELF, &info, &n), 0);
	check("  one, with three files", n == 1 ? (int)info[0].files_len : -1, 3);
	check("  token 1 first", n == 1 && info[0].files_len ? (int)info[0].files[0].token : -1, 1);
	luo_session_info_free(info, n);
	check("show a missing name", luo_show(c, "nope", LUO_OWNER_SELF, &info, &n), -ENOENT);
	char *json = NULL;
	check("status_json", luo_status_json(c, &json), 0);
	check("  is an object", json && json[0] == '{', 1);
	luo_string_free(json);
	struct luo_status st;
	check("status", luo_status(c, &st), 0);
	check("  counts two outgoing", (int)st.outgoing, 2);
	check("session_info", luo_session_info(s, &info), 0);
	check("  is open", info->state == LUO_SESSION_OPEN, 1);
	luo_session_info_free(info, 1);
	char *name = NULL;
	check("session_name", luo_session_name(s, &name), 0);
	check("  is errs", name && strcmp(name, "errs") == 0, 1);
	luo_string_free(name);

	/* Handing over, stale handles. */
	check("retrieve a session that is outgoing", luo_retrieve_session(c, "errs", &x), -ENOENT);
	check("handover", luo_session_handover(s), 0);
	check("preserve on the stale handle", luo_session_preserve(s, 5, m2), -ESTALE);
	check("handover again", luo_session_handover(s), -ESTALE);
	check("dup", luo_session_dup(s, &x), 0);
	luo_session_close(x);
	luo_session_close(s);
	s = NULL;
	check("retrieve", luo_retrieve_session(c, "errs", &s), 0);
	check("retrieve it twice", luo_retrieve_session(c, "errs", &x), -EINVAL);
	check("finish it while held", luo_finish(c, "errs", LUO_OWNER_SELF), -EINVAL);
	check("retrieve an unknown token", luo_session_retrieve(s, 77), -ENOENT);
	int got[3] = {0, 0, 0};
	uint64_t want[] = {1, 77, 10};
	check("a batch with an unknown token", luo_session_retrieve_batch(s, want, got, 3), -ENOENT);
	check("  leaves no descriptor", got[0] == -1 && got[1] == -1 && got[2] == -1, 1);
	int fd = luo_session_retrieve(s, 1);
	check("retrieve token 1", fd >= 0, 1);
	close(fd);
	check("preserve on a retrieved session", luo_session_preserve(s, 9, m2), -EINVAL);

	/* A handle passed on by its descriptor. */
	int raw = luo_session_into_fd(s);
	s = NULL;
	check("into_fd", raw >= 0, 1);
	check("from_fd a pipe", luo_session_from_fd(p[0], &s), -ENOTSOCK);
	check("from_fd -1", luo_session_from_fd(-1, &s), -EBADF);
	check("from_fd", luo_session_from_fd(raw, &s), 0);
	check("finish", luo_session_finish(s), 0);
	luo_session_close(s);
	check("finish by name: gone", luo_finish(c, "errs", LUO_OWNER_SELF), -ENOENT);
	check("handover by name", luo_handover(c, "errs2", LUO_OWNER_SELF), 0);
	check("handover a missing name", luo_handover(c, "errs2", LUO_OWNER_SELF), -ENOENT);
	check("owner out of range", luo_finish(c, "errs2", 1LL << 40), -EINVAL);
	uint64_t epoch = 0;
	check("update", luo_update(c, &epoch), 0);
	check("  a new epoch", epoch >= 2, 1);
	check("stale after update", luo_session_name(t, &name), -ESTALE);
	luo_session_close(t);
	check("finish by name", luo_finish(c, "errs2", LUO_OWNER_SELF), 0);

	/* A persistent session outlives its handles. */
	struct luo_session *ps = NULL;
	int m3 = luo_memfd_create("three"), f[1] = {0};
	uint64_t one[] = {1}, two[] = {2};
	check("persist", luo_persist_session(c, "pers", &ps), 0);
	check("preserve in it", luo_session_preserve(ps, 1, m3), 0);
	luo_session_close(ps);
	close(m3);
	check("persist again: the same session", luo_persist_session(c, "pers", &ps), 0);
	check("  is persistent", (luo_session_info(ps, &info) == 0 && info->persistent && info->files_len == 1), 1);
	luo_session_info_free(info, 1);
	check("fetch", luo_session_fetch(ps, one, f, 1), 0);
	close(f[0]);
	check("fetch an unknown token", luo_session_fetch(ps, two, f, 1), -ENOENT);
	check("  leaves -1", f[0], -1);
	check("unpreserve", luo_session_unpreserve(ps, one, 1), 0);
	check("unpreserve it again", luo_session_unpreserve(ps, one, 1), -ENOENT);
	check("  names the token", luo_last_error_token(&tok) == 1 && tok == 1, 1);
	luo_session_close(ps);
	check("create a plain session", luo_create_session(c, "plain", &x), 0);
	check("persist its name", luo_persist_session(c, "plain", &ps), -EEXIST);
	check("fetch from a plain session", luo_session_fetch(x, one, f, 1), -EINVAL);
	luo_session_close(x);

	/* Another uid may not act on root's sessions. */
	if (geteuid() == 0) {
		pid_t pid = fork();
		if (pid == 0) {
			struct luo_client *u;
			if (setgid(65534) || setuid(65534) || luo_connect_to(sock, &u))
				_exit(3);
			int a = luo_update(u, NULL);
			int b = luo_show(u, "errs", 0, &info, &n);
			int d = luo_retrieve_session_of(u, 0, "errs", &x);
			luo_client_close(u);
			_exit(a == -EPERM && b == -EPERM && d == -EPERM ? 0 : 4);
		}
		int ws = 0;
		waitpid(pid, &ws, 0);
		check("EPERM for another uid (update, show, retrieve_of)", WIFEXITED(ws) ? WEXITSTATUS(ws) : -1, 0);
	}

	check("no error token now", (luo_session_finish(NULL), luo_last_error_token(&tok)), 0);
	luo_client_close(c);
	close(m1);
	close(m2);
	close(p[0]);
	close(p[1]);
	check("no descriptor leaked", fd_count(), before);
	printf("%d passed, %d failed\n", passed, failed);
	return failed ? 1 : 0;
}
