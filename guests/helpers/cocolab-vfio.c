/*
 * cocolab-vfio: the VFIO group/container and iommufd calls a DMA-ownership test needs, each
 * reported as one JSON line on stdout (same conventions as cocolab-probe: "op", "ok", and on
 * failure "stage", "errno", "errname").
 *
 *   cocolab-vfio status GROUP                 open /dev/vfio/GROUP, VFIO_GROUP_GET_STATUS
 *   cocolab-vfio attach GROUP [BDF]           + open /dev/vfio/vfio, VFIO_GROUP_SET_CONTAINER,
 *                                             VFIO_SET_IOMMU (type1v2), VFIO_GROUP_GET_DEVICE_FD
 *   cocolab-vfio attach-iommufd GROUP [BDF]   the same with /dev/iommu as the container
 *   cocolab-vfio hold GROUP [BDF]             attach, report, keep everything open until a line
 *                                             arrives on stdin, close it all, report "released"
 *
 * Exit status 0 whenever a result was reported, 2 on bad usage.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>
#include <linux/vfio.h>

#ifndef VFIO_DEVICE_BIND_IOMMUFD
/* linux/vfio.h before 6.6 lacks the cdev API; the ABI is fixed (include/uapi/linux/vfio.h). */
struct vfio_device_bind_iommufd {
	uint32_t argsz;
	uint32_t flags;
	int32_t iommufd;
	uint32_t out_devid;
};
#define VFIO_DEVICE_BIND_IOMMUFD _IO(VFIO_TYPE, VFIO_BASE + 18)
#endif

static void failed(const char *stage, int err)
{
	const char *name = strerrorname_np(err);

	printf(",\"ok\":false,\"stage\":\"%s\",\"errno\":%d,\"errname\":\"%s\"}\n", stage, err,
	       name ? name : "?");
	fflush(stdout);
}

static void begin(const char *op, const char *group)
{
	printf("{\"op\":\"%s\",\"group\":\"%s\"", op, group);
}

static int open_group(const char *group)
{
	char path[64];

	snprintf(path, sizeof(path), "/dev/vfio/%s", group);
	return open(path, O_RDWR);
}

static int group_flags(int fd)
{
	struct vfio_group_status status = { .argsz = sizeof(status) };

	if (ioctl(fd, VFIO_GROUP_GET_STATUS, &status))
		return -1;
	return status.flags;
}

static void status_fields(int flags)
{
	printf(",\"flags\":%d,\"viable\":%s,\"container_set\":%s", flags,
	       flags & VFIO_GROUP_FLAGS_VIABLE ? "true" : "false",
	       flags & VFIO_GROUP_FLAGS_CONTAINER_SET ? "true" : "false");
}

static int do_status(const char *group)
{
	int fd = open_group(group), flags;

	begin("status", group);
	if (fd < 0) {
		failed("open", errno);
		return 0;
	}
	flags = group_flags(fd);
	if (flags < 0) {
		failed("get-status", errno);
		return 0;
	}
	status_fields(flags);
	printf(",\"ok\":true}\n");
	return 0;
}

/* Attach GROUP to a new container; returns 0 and leaves the fds open, or -1 after reporting. */
static int attach(const char *op, const char *group, const char *bdf, int iommufd, int fds[3])
{
	int flags;

	fds[0] = fds[1] = fds[2] = -1;
	begin(op, group);
	fds[0] = open_group(group);
	if (fds[0] < 0) {
		failed("open", errno);
		return -1;
	}
	flags = group_flags(fds[0]);
	if (flags < 0) {
		failed("get-status", errno);
		return -1;
	}
	status_fields(flags);
	fds[1] = open(iommufd ? "/dev/iommu" : "/dev/vfio/vfio", O_RDWR);
	if (fds[1] < 0) {
		failed(iommufd ? "open-iommufd" : "open-container", errno);
		return -1;
	}
	if (ioctl(fds[0], VFIO_GROUP_SET_CONTAINER, &fds[1])) {
		failed("set-container", errno);
		return -1;
	}
	if (!iommufd && ioctl(fds[1], VFIO_SET_IOMMU, VFIO_TYPE1v2_IOMMU)) {
		failed("set-iommu", errno);
		return -1;
	}
	flags = group_flags(fds[0]);
	printf(",\"flags_after\":%d", flags);
	if (bdf) {
		fds[2] = ioctl(fds[0], VFIO_GROUP_GET_DEVICE_FD, bdf);
		if (fds[2] < 0) {
			failed("get-device-fd", errno);
			return -1;
		}
		printf(",\"device\":\"%s\"", bdf);
	}
	printf(",\"ok\":true}\n");
	fflush(stdout);
	return 0;
}

static void close_all(int fds[3])
{
	for (int i = 2; i >= 0; i--)
		if (fds[i] >= 0)
			close(fds[i]);
}

static int do_attach(const char *op, const char *group, const char *bdf, int iommufd)
{
	int fds[3];

	attach(op, group, bdf, iommufd, fds);
	close_all(fds);
	return 0;
}

static int do_hold(const char *group, const char *bdf)
{
	int fds[3];
	char line[64];

	if (attach("hold", group, bdf, 0, fds)) {
		close_all(fds);
		return 0;
	}
	if (!fgets(line, sizeof(line), stdin)) {
		/* stdin closed: the test went away; release all the same */
	}
	close_all(fds);
	begin("released", group);
	printf(",\"ok\":true}\n");
	fflush(stdout);
	return 0;
}

int main(int argc, char **argv)
{
	const char *op = argc > 1 ? argv[1] : "";
	const char *bdf = argc > 3 ? argv[3] : NULL;

	if (!strcmp(op, "status") && argc == 3)
		return do_status(argv[2]);
	if (!strcmp(op, "attach") && (argc == 3 || argc == 4))
		return do_attach("attach", argv[2], bdf, 0);
	if (!strcmp(op, "attach-iommufd") && (argc == 3 || argc == 4))
		return do_attach("attach-iommufd", argv[2], bdf, 1);
	if (!strcmp(op, "hold") && (argc == 3 || argc == 4))
		return do_hold(argv[2], bdf);
	fprintf(stderr, "usage: cocolab-vfio status|attach|attach-iommufd|hold GROUP [BDF]\n");
	return 2;
}
