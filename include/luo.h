/* SPDX-License-Identifier: Apache-2.0 OR MIT */
/* luo.h: the C API of libluo, the luo client library (docs/c-api.md). */

#ifndef LUO_H
#define LUO_H

/* Generated from crates/luo-capi by cbindgen: do not edit. */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

// `owner` argument meaning "the caller's own uid".
#define LUO_OWNER_SELF -1

// Bytes of `luo_status.agent`, `luo_status.backend` and
// `luo_status.store`, NUL included (longer values are cut).
#define LUO_STATUS_TEXT 64

// Where a session is in its life.
enum luo_session_state {
  // Outgoing: accepting files.
  LUO_SESSION_OPEN = 0,
  // Handed over, waiting for the next process.
  LUO_SESSION_INCOMING = 1,
  // Retrieved by the next process.
  LUO_SESSION_RETRIEVED = 2,
  // Finished.
  LUO_SESSION_FINISHED = 3,
};

// An agent connection (`struct luo_client` in C: opaque).
struct luo_client;

// A session handle (`struct luo_session` in C: opaque).
struct luo_session;

// The agent's state, as `luoctl status` shows it (filled by
// `luo_status`; nothing to free).
struct luo_status {
  // The agent's name and version, e.g. `"luod 0.2.0"`.
  char agent[LUO_STATUS_TEXT];
  // `"emulated"` or `"kernel"`.
  char backend[LUO_STATUS_TEXT];
  // Where the agent keeps its state across its own restarts.
  char store[LUO_STATUS_TEXT];
  // Protocol version.
  uint64_t protocol;
  // The agent's pid.
  uint32_t pid;
  // The agent's uid.
  uint32_t uid;
  // Live-update epoch.
  uint64_t epoch;
  // Outgoing sessions the caller may see.
  uint64_t outgoing;
  // Incoming sessions the caller may see.
  uint64_t incoming;
  // Preserved files.
  uint64_t files;
  // Bytes pinned by preserved files.
  uint64_t pinned_bytes;
  // Connections to the agent.
  uint64_t connections;
  // The agent's open descriptors.
  uint64_t open_fds;
  // The agent's `RLIMIT_NOFILE`, soft.
  uint64_t nofile_soft;
  // The agent's `RLIMIT_NOFILE`, hard.
  uint64_t nofile_hard;
  // Per-uid quota on sessions (`UINT64_MAX`: none).
  uint64_t quota_sessions;
  // Per-uid quota on files (`UINT64_MAX`: none).
  uint64_t quota_files;
  // Per-uid quota on pinned bytes (`UINT64_MAX`: none).
  uint64_t quota_pinned_bytes;
  // The caller's sessions counted against the quota.
  uint64_t usage_sessions;
  // The caller's files counted against the quota.
  uint64_t usage_files;
  // The caller's pinned bytes counted against the quota.
  uint64_t usage_pinned_bytes;
};

// One preserved file of a session (in `luo_session_info.files`).
struct luo_file_info {
  // The token it was preserved under.
  uint64_t token;
  // The handler that keeps it, e.g. `"memfd-v2"`.
  char *handler;
  // What it is, e.g. `"memfd"`, `"socket"`.
  char *kind;
  // Device of the file's identity.
  uint64_t dev;
  // Inode of the file's identity.
  uint64_t ino;
  // Its size in bytes.
  uint64_t size;
  // Bytes it pins.
  uint64_t pinned;
  // Whether it crosses a kexec.
  bool kexec_safe;
  // Whether a handler manages its contents.
  bool managed;
  // `0` not retrieved, `1` retrieved, a negative errno: its retrieval
  // failed.
  int retrieved;
};

// A session, in the arrays `luo_sessions` and `luo_show` return and
// `luo_session_info_free` frees (with every string and file in it).
struct luo_session_info {
  // The name (NUL-terminated; a name with bytes that are not UTF-8 is
  // given as is).
  char *name;
  // The owner's uid.
  uint32_t owner;
  // Where it is in its life.
  enum luo_session_state state;
  // Open handles on it.
  size_t handles;
  // Files in it.
  size_t file_count;
  // Bytes its files pin.
  uint64_t pinned_bytes;
  // Whether every file crosses a kexec.
  bool kexec_safe;
  // Whether it is a persistent outgoing session (`luo_persist_session`).
  bool persistent;
  // Its files (`luo_show` and `luo_session_info`; `NULL` in
  // `luo_sessions`' summaries).
  struct luo_file_info *files;
  // Entries in `files`.
  size_t files_len;
};

#ifdef __cplusplus
extern "C" {
#endif // __cplusplus

// The library's version, e.g. `"0.2.0"`. A static string: never freed.
const char *luo_version(void);

// The message of the last call that failed on this thread (`""` if none
// did), e.g. `"an outgoing session named 'kv' already exists (EEXIST)"`.
// Owned by the library: valid until the thread's next failing call.
const char *luo_last_error(void);

// The token the last failed call on this thread named (a batch preserve's
// first file not preserved, a batch retrieve's failing token): stores it
// at `token` and returns 1, or returns 0 when the error named none.
//
// # Safety
//
// `token` is NULL or valid for writing.
int luo_last_error_token(uint64_t *token);

// Writes the socket path `luo_connect` uses (`$LUOD_SOCKET` if set and
// not empty; else `/run/luod/luod.sock` for root; else
// `$XDG_RUNTIME_DIR/luod.sock`; else `/run/user/<euid>/luod.sock`) into
// `buf` of `len` bytes, NUL-terminated. Returns its length, or `-ERANGE`
// when `buf` is too small.
//
// # Safety
//
// `buf` is valid for writing `len` bytes.
int luo_default_socket_path(char *buf, size_t len);

// Connects to luod at the default socket (see `luo_default_socket_path`)
// and stores the new client at `*out`. Close it with `luo_client_close`.
//
// Errors: `connect(2)`'s: `-ENOENT` (luod is not running there),
// `-ECONNREFUSED` (a stale socket), `-EACCES`.
//
// # Safety
//
// `out` is valid for writing.
int luo_connect(struct luo_client **out);

// As `luo_connect`, to the socket at `path`.
//
// # Safety
//
// `path` is a NUL-terminated string; `out` is valid for writing.
int luo_connect_to(const char *path, struct luo_client **out);

// Closes the connection and frees the client. Sessions created or
// retrieved through it live on in their handles. NULL is ignored.
//
// # Safety
//
// `client` is NULL or a live handle, not used again.
void luo_client_close(struct luo_client *client);

// Creates an outgoing session named `name` (1 to 63 bytes), owned by the
// caller, and stores its handle at `*out`. Closing the handle before
// `luo_session_handover` aborts the session.
//
// Errors: `-EINVAL` a bad name, `-EEXIST` an outgoing session of that
// name exists, `-ENOSPC` too many sessions, `-EDQUOT` over quota.
//
// # Safety
//
// `client` is a live handle, `name` a NUL-terminated string, `out` valid
// for writing.
int luo_create_session(const struct luo_client *client, const char *name, struct luo_session **out);

// Opens the caller's persistent outgoing session named `name`, or creates
// it persistent when the caller has no outgoing session of that name, and
// stores a handle at `*out`. Closing the last handle does not abort a
// persistent session: it keeps every file until it is opened again, for
// a supervisor that may die at any moment. Its files are taken back with
// `luo_session_fetch` and let go with `luo_session_unpreserve`.
//
// Errors: `-EINVAL` a bad name, `-EEXIST` an outgoing session of that name
// that is not persistent, `-ENOSPC`, `-EDQUOT`; `-EOPNOTSUPP` from an
// agent without persistent sessions (luod 0.1.0).
//
// # Safety
//
// As `luo_create_session`.
int luo_persist_session(const struct luo_client *client,
                        const char *name,
                        struct luo_session **out);

// Retrieves the caller's incoming session named `name` and stores its
// handle at `*out`.
//
// Errors: `-ENOENT` no incoming session of that name, `-EINVAL` it is
// already retrieved (a handle on it is open).
//
// # Safety
//
// As `luo_create_session`.
int luo_retrieve_session(const struct luo_client *client,
                         const char *name,
                         struct luo_session **out);

// As `luo_retrieve_session`, for the session of uid `owner`: only root
// may name another uid (`-EPERM`).
//
// # Safety
//
// As `luo_create_session`.
int luo_retrieve_session_of(const struct luo_client *client,
                            uint32_t owner,
                            const char *name,
                            struct luo_session **out);

// Hands over the outgoing session named `name` of uid `owner`
// (`LUO_OWNER_SELF` for the caller's) without holding its handle.
//
// Errors: `-ENOENT` no such outgoing session, `-EEXIST` an incoming
// session of that name is unfinished, `-EPERM` another uid's for a caller
// other than root, or a handler's errno.
//
// # Safety
//
// `client` is a live handle, `name` a NUL-terminated string.
int luo_handover(const struct luo_client *client, const char *name, int64_t owner);

// Retrieves and finishes the incoming session named `name` of uid `owner`
// (`LUO_OWNER_SELF` for the caller's) in one step; files never retrieved
// are discarded.
//
// Errors: `-ENOENT` no such incoming session, `-EINVAL` a process holds it,
// `-EBUSY` a handler cannot finish, `-EPERM`.
//
// # Safety
//
// As `luo_handover`.
int luo_finish(const struct luo_client *client, const char *name, int64_t owner);

// An emulated live update: every outgoing session crosses at once. Stores
// the new epoch at `*epoch` unless `epoch` is NULL. Handles on crossed
// sessions become stale (`-ESTALE`).
//
// Errors: `-EPERM` unless root or the agent's uid, `-EEXIST` an incoming
// session of the same name and owner is unfinished, a handler's errno.
//
// # Safety
//
// `client` is a live handle; `epoch` is NULL or writable.
int luo_update(const struct luo_client *client, uint64_t *epoch);

// Upgrades the agent in place to `binary` (NULL: the binary at its own
// path). Stores the agent's pid at `*pid` unless `pid` is NULL.
//
// Errors: `-EPERM` unless root or the agent's uid, `-ENOEXEC` not a luod,
// `-EOPNOTSUPP` it cannot read this agent's state, `exec`'s errno.
//
// # Safety
//
// `client` is a live handle; `binary` is NULL or a NUL-terminated string;
// `pid` is NULL or writable.
int luo_upgrade_agent(const struct luo_client *client, const char *binary, uint32_t *pid);

// The preflight of a kernel live update of the kernel image open at
// `kernel_fd`, the initramfs at `initrd_fd` (-1: none) and `cmdline`, as a
// JSON object (docs/protocol.md, `kexec`) stored at `*json`; free it with
// `luo_string_free`. Root only (`-EPERM`). luod sends a large preflight in
// pages; this reads them all (`-EAGAIN` when the sessions kept changing
// meanwhile).
//
// # Safety
//
// `client` is a live handle, `cmdline` a NUL-terminated string, `json`
// writable.
int luo_preflight_json(const struct luo_client *client,
                       int kernel_fd,
                       int initrd_fd,
                       const char *cmdline,
                       char **json);

// A kernel live update: load the kernel at `kernel_fd` (and the initramfs
// at `initrd_fd`, -1 for none) with `cmdline` and reboot into it; on
// success this does not return. Root only.
//
// Errors: `-ECANCELED` the preflight found problems and `force` is false,
// `-EOPNOTSUPP` on the emulated backend, `kexec_file_load`'s errno.
//
// # Safety
//
// `client` is a live handle, `cmdline` a NUL-terminated string.
int luo_kexec(const struct luo_client *client,
              int kernel_fd,
              int initrd_fd,
              const char *cmdline,
              bool force);

// Fills `*status` with the agent's state (nothing to free).
//
// # Safety
//
// `client` is a live handle, `status` writable.
int luo_status(const struct luo_client *client, struct luo_status *status);

// The agent's state as the JSON object `luoctl status --json` prints,
// stored at `*json`; free it with `luo_string_free`.
//
// # Safety
//
// `client` is a live handle, `json` writable.
int luo_status_json(const struct luo_client *client, char **json);

// Summaries (no files) of the caller's sessions, or every session for
// root: an array of `*count` entries stored at `*sessions` (NULL when
// there are none). Free it with `luo_session_info_free(*sessions, *count)`.
//
// # Safety
//
// `client` is a live handle; `sessions` and `count` writable.
int luo_sessions(const struct luo_client *client,
                 struct luo_session_info **sessions,
                 size_t *count);

// The sessions `luo_sessions` lists, as a JSON array stored at `*json`;
// free it with `luo_string_free`.
//
// # Safety
//
// `client` is a live handle, `json` writable.
int luo_sessions_json(const struct luo_client *client, char **json);

// Details, with files, of the sessions named `name` of uid `owner`
// (`LUO_OWNER_SELF` for the caller's): one, or two when an outgoing and an
// incoming session share the name. Stored as for `luo_sessions`; free with
// `luo_session_info_free`.
//
// Errors: `-ENOENT` no session of that name, `-EPERM` another uid's for a
// caller other than root.
//
// # Safety
//
// `client` is a live handle, `name` a NUL-terminated string, `sessions`
// and `count` writable.
int luo_show(const struct luo_client *client,
             const char *name,
             int64_t owner,
             struct luo_session_info **sessions,
             size_t *count);

// What `luo_show` gives, as a JSON array stored at `*json`; free it with
// `luo_string_free`.
//
// # Safety
//
// As `luo_show`, with `json` writable.
int luo_show_json(const struct luo_client *client, const char *name, int64_t owner, char **json);

// Frees an array of `count` session infos from `luo_sessions`,
// `luo_show` or `luo_session_info` with everything in it. NULL is
// ignored.
//
// # Safety
//
// `sessions` is NULL or an array this library returned with exactly
// `count` entries, not used again.
void luo_session_info_free(struct luo_session_info *sessions, size_t count);

// Frees a string this library returned (the `_json` functions,
// `luo_session_name`). NULL is ignored.
//
// # Safety
//
// `s` is NULL or a string this library returned, not used again.
void luo_string_free(char *s);

// Adopts the session handle descriptor `fd` (inherited across `exec`,
// received over `SCM_RIGHTS`, or from `luo_session_into_fd`): stores a new
// handle at `*out` that owns `fd` from now on (`luo_session_close` closes
// it). On failure `fd` is left alone.
//
// Errors: `-EBADF` `fd` is not open, `-ENOTSOCK` it is not a session
// handle.
//
// # Safety
//
// `out` is writable; nothing else owns `fd` once this returns 0.
int luo_session_from_fd(int fd, struct luo_session **out);

// The session handle's descriptor, still owned by `session` (to pass it
// to a child across `exec`, clear its `FD_CLOEXEC`; to send it over
// `SCM_RIGHTS`, send it as is). `-EINVAL` for NULL.
//
// # Safety
//
// `session` is NULL or a live handle.
int luo_session_fd(const struct luo_session *session);

// Frees `session` and returns its descriptor, now the caller's: the
// session stays alive as long as the descriptor (or another copy) is open.
//
// # Safety
//
// `session` is NULL or a live handle, not used again after success.
int luo_session_into_fd(struct luo_session *session);

// A second handle on the same session (`dup`), stored at `*out`: the
// session lives until both are closed.
//
// # Safety
//
// `session` is a live handle, `out` writable.
int luo_session_dup(const struct luo_session *session, struct luo_session **out);

// Closes the handle and frees it. Closing the last handle on an outgoing
// session aborts it (its files are let go); on a retrieved, unfinished
// session it goes back to waiting. NULL is ignored.
//
// # Safety
//
// `session` is NULL or a live handle, not used again.
void luo_session_close(struct luo_session *session);

// The session's name, stored at `*name`; free it with `luo_string_free`.
//
// Errors: `-ESTALE` once the session has crossed.
//
// # Safety
//
// `session` is a live handle, `name` writable.
int luo_session_name(const struct luo_session *session, char **name);

// The session's detail with its files: one `luo_session_info` stored at
// `*info`; free it with `luo_session_info_free(*info, 1)`.
//
// Errors: `-ESTALE` once the session has crossed.
//
// # Safety
//
// `session` is a live handle, `info` writable.
int luo_session_info(const struct luo_session *session, struct luo_session_info **info);

// Preserves the file open at `fd` under `token`. The agent keeps its own
// reference: the caller may close `fd` afterwards.
//
// Errors (the kernel's, in its order): `-EINVAL` the session is not
// outgoing, `-EEXIST` the token is in use, `-ENOSPC` the session is full,
// `-EBADF` a bad or `O_PATH` descriptor, `-ENOENT` no handler for this kind
// of file, `-EDQUOT` over quota, `-EBUSY` the file is in a session
// already; then the handler's errno. `-ESTALE` once the session crossed.
//
// # Safety
//
// `session` is a live handle.
int luo_session_preserve(const struct luo_session *session, uint64_t token, int fd);

// Preserves `count` files, `fds[i]` under `tokens[i]`, in order. Stops at
// the first refusal; the files before it stay preserved, and
// `luo_last_error_token` names the first that was not.
//
// # Safety
//
// `session` is a live handle; `tokens` and `fds` hold `count` entries.
int luo_session_preserve_batch(const struct luo_session *session,
                               const uint64_t *tokens,
                               const int *fds,
                               size_t count);

// A new descriptor (the caller's, `O_CLOEXEC`) of the file preserved
// under `token` in a retrieved session: returns it (`>= 0`).
//
// Errors: `-EINVAL` an outgoing session, `-ENOENT` an unknown token, the
// handler's errno, `-ESTALE` once the session crossed.
//
// # Safety
//
// `session` is a live handle.
int luo_session_retrieve(const struct luo_session *session, uint64_t token);

// New descriptors of the files under `tokens`, stored in `fds` (both of
// `count` entries), in order. On failure no descriptor is left open, every
// entry of `fds` is -1, and `luo_last_error_token` names the failing token.
//
// # Safety
//
// `session` is a live handle; `tokens` holds `count` entries and `fds`
// has room for `count`.
int luo_session_retrieve_batch(const struct luo_session *session,
                               const uint64_t *tokens,
                               int *fds,
                               size_t count);

// Lets go of the files preserved under `tokens` (`count` of them) in an
// outgoing session. Stops at the first refusal; the files before it are
// let go, and `luo_last_error_token` names the refused token.
//
// Errors: `-EINVAL` not outgoing, `-ENOENT` a token it does not hold,
// `-ESTALE`, `-EOPNOTSUPP` from an agent without persistent sessions.
//
// # Safety
//
// `session` is a live handle; `tokens` holds `count` entries.
int luo_session_unpreserve(const struct luo_session *session, const uint64_t *tokens, size_t count);

// New descriptors of the files under `tokens` in a persistent session,
// without retrieving them (they stay preserved), stored in `fds` (both of
// `count` entries). On failure no descriptor is left open, every entry of
// `fds` is -1, and `luo_last_error_token` names the failing token.
//
// Errors: `-EINVAL` a session that is not persistent, `-ENOENT` an
// unknown token, `-ESTALE`, `-EOPNOTSUPP`.
//
// # Safety
//
// As `luo_session_retrieve_batch`.
int luo_session_fetch(const struct luo_session *session,
                      const uint64_t *tokens,
                      int *fds,
                      size_t count);

// Hands the outgoing session over: it waits for the next process to
// retrieve it by name. This handle is stale from now on (close it).
//
// Errors: `-EINVAL` not outgoing, `-EEXIST` an incoming session of that
// name is unfinished, a handler's errno (the session stays outgoing).
//
// # Safety
//
// `session` is a live handle.
int luo_session_handover(const struct luo_session *session);

// Finishes the retrieved session: the agent lets go of every file (the
// descriptors retrieved stay open).
//
// Errors: `-EINVAL` an outgoing session, `-EBUSY` a handler cannot finish
// yet, `-ESTALE`.
//
// # Safety
//
// `session` is a live handle.
int luo_session_finish(const struct luo_session *session);

// A new memfd (`MFD_CLOEXEC`) named `name`: returns its descriptor.
//
// # Safety
//
// `name` is a NUL-terminated string.
int luo_memfd_create(const char *name);

#ifdef __cplusplus
}  // extern "C"
#endif  // __cplusplus

#endif  /* LUO_H */
