/*
 * Opens /dev/liveupdate and creates a session on it, waits for a line on
 * stdin (while holding the device), then opens the device a second time.
 * Prints each result: "ok" or the errno's name.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "luo_uapi.h"

static const char *result(int r)
{
	if (r >= 0)
		return "ok";
	switch (errno) {
	case EBUSY: return "EBUSY";
	case ENOENT: return "ENOENT";
	case EACCES: return "EACCES";
	case EPERM: return "EPERM";
	default: return strerror(errno);
	}
}

int main(int argc, char **argv)
{
	const char *name = argc > 1 ? argv[1] : "two-uids";
	int dev = open("/dev/liveupdate", O_RDWR);
	printf("open: %s\n", result(dev));
	if (dev >= 0) {
		struct luo_session_arg a = { .size = sizeof(a) };
		strncpy((char *)a.name, name, LUO_NAME_LENGTH - 1);
		printf("create session: %s\n", result(ioctl(dev, LUO_CREATE_SESSION, &a)));
	}
	fflush(stdout);
	char line[16];
	if (read(0, line, sizeof(line)) < 0)
		return 1;
	int again = open("/dev/liveupdate", O_RDWR);
	printf("second open: %s\n", result(again));
	return 0;
}
