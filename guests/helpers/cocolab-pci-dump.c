/*
 * cocolab-pci-dump
 *
 * One line per PCI function, in the order of /sys/bus/pci/devices:
 *
 *     BDF bound|free HEX
 *
 * bound when a driver holds the function, HEX the first 64 bytes of its config space. The
 * host reads it from a guest it is about to save, and again from each restore of it, and
 * compares (framework/cocolab/vm/snapshot.py). One program rather than a shell loop: an od
 * and a tr per function cost a fork and an exec each under TCG. Exit 1 when a function
 * cannot be read.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define DEVICES "/sys/bus/pci/devices"
#define CONFIG_BYTES 64

static int by_name(const struct dirent **a, const struct dirent **b)
{
	return strcmp((*a)->d_name, (*b)->d_name);
}

int main(int argc, char **argv)
{
	struct dirent **names;
	char path[512];
	unsigned char config[CONFIG_BYTES];
	int n, i, j, fd, status = 0;

	(void)argc;
	(void)argv;
	n = scandir(DEVICES, &names, NULL, by_name);
	if (n < 0) {
		printf("cocolab-pci-dump: %s: %s\n", DEVICES, strerror(errno));
		return 1;
	}
	for (i = 0; i < n; i++) {
		const char *bdf = names[i]->d_name;

		if (bdf[0] == '.')
			continue;
		snprintf(path, sizeof(path), DEVICES "/%s/driver", bdf);
		int bound = access(path, F_OK) == 0;

		snprintf(path, sizeof(path), DEVICES "/%s/config", bdf);
		fd = open(path, O_RDONLY);
		if (fd < 0 || pread(fd, config, CONFIG_BYTES, 0) != CONFIG_BYTES) {
			printf("cocolab-pci-dump: %s: %s\n", path, strerror(errno));
			status = 1;
		} else {
			printf("%s %s ", bdf, bound ? "bound" : "free");
			for (j = 0; j < CONFIG_BYTES; j++)
				printf("%02x", config[j]);
			printf("\n");
		}
		if (fd >= 0)
			close(fd);
	}
	return status;
}
