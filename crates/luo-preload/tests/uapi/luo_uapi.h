/*
 * The kernel's Live Update Orchestrator uAPI (/dev/liveupdate), declared
 * from the specification in kernel-luo.md section 2, not copied from the
 * kernel's header: ioctl numbers, struct layouts and sizes as documented.
 *
 * Every command is _IO(0xBA, nr): the size travels in the struct's first
 * u32, not in the command. A struct may be larger than these if the bytes
 * past them are zero (forward compatibility); smaller is EINVAL.
 */
#ifndef LUO_UAPI_H
#define LUO_UAPI_H

#include <stdint.h>
#include <sys/ioctl.h>

#define LUO_IOCTL_TYPE 0xBA
/* The name field, its NUL included: names are 1 to 63 bytes. */
#define LUO_NAME_LENGTH 64

/* On /dev/liveupdate. */
#define LUO_CREATE_SESSION _IO(LUO_IOCTL_TYPE, 0x00)
#define LUO_RETRIEVE_SESSION _IO(LUO_IOCTL_TYPE, 0x01)
/* On a session fd. */
#define LUO_PRESERVE_FD _IO(LUO_IOCTL_TYPE, 0x40)  /* outgoing only */
#define LUO_RETRIEVE_FD _IO(LUO_IOCTL_TYPE, 0x41)  /* incoming only */
#define LUO_FINISH _IO(LUO_IOCTL_TYPE, 0x42)       /* incoming only */
#define LUO_GET_NAME _IO(LUO_IOCTL_TYPE, 0x43)     /* any session */

/* CREATE_SESSION and RETRIEVE_SESSION: 72 bytes. */
struct luo_session_arg {
	uint32_t size;                 /* in: sizeof */
	int32_t fd;                    /* out: the session fd, O_CLOEXEC */
	uint8_t name[LUO_NAME_LENGTH]; /* in: NUL-terminated */
};

/* PRESERVE_FD and RETRIEVE_FD: 16 bytes. */
struct luo_fd_arg {
	uint32_t size;                          /* in: sizeof */
	int32_t fd;                             /* preserve: in; retrieve: out, O_CLOEXEC */
	uint64_t token __attribute__((aligned(8))); /* in */
};

/* FINISH: 8 bytes. */
struct luo_finish_arg {
	uint32_t size;     /* in: sizeof */
	uint32_t reserved; /* in: must be 0 */
};

/* GET_NAME: 72 bytes. */
struct luo_get_name_arg {
	uint32_t size;                 /* in: sizeof */
	uint32_t reserved;             /* in: must be 0 */
	uint8_t name[LUO_NAME_LENGTH]; /* out: the name and a NUL */
};

_Static_assert(sizeof(struct luo_session_arg) == 72, "session struct");
_Static_assert(sizeof(struct luo_fd_arg) == 16, "fd struct");
_Static_assert(sizeof(struct luo_finish_arg) == 8, "finish struct");
_Static_assert(sizeof(struct luo_get_name_arg) == 72, "get_name struct");
_Static_assert(LUO_CREATE_SESSION == 0xBA00 && LUO_RETRIEVE_SESSION == 0xBA01, "device numbers");
_Static_assert(LUO_PRESERVE_FD == 0xBA40 && LUO_RETRIEVE_FD == 0xBA41, "session numbers");
_Static_assert(LUO_FINISH == 0xBA42 && LUO_GET_NAME == 0xBA43, "session numbers");

#endif
