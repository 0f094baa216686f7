/*
 * cocolab-restored SECONDS NANOSECONDS HEX
 *
 * Run by the host right after it restored this guest from a snapshot: every restore of one
 * snapshot resumes the same kernel state, clock and CRNG included. Sets CLOCK_REALTIME to
 * the host's time, credits HEX (64 random bytes from the host) to the input pool with
 * RNDADDENTROPY, and forces the CRNG to reseed from it with RNDRESEEDCRNG, so no two
 * restores hand out the same random numbers. Prints one line; exit 1 with errno on failure.
 */
#include <errno.h>
#include <linux/random.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <fcntl.h>
#include <time.h>
#include <unistd.h>

#define SEED_BYTES 64

static int fail(const char *what)
{
	printf("cocolab-restored: %s: %s\n", what, strerror(errno));
	return 1;
}

int main(int argc, char **argv)
{
	struct {
		struct rand_pool_info info;
		unsigned char seed[SEED_BYTES];
	} pool;
	struct timespec now;
	int fd, i;

	if (argc != 4 || strlen(argv[3]) != 2 * SEED_BYTES) {
		fprintf(stderr, "usage: cocolab-restored SECONDS NANOSECONDS HEX(%d bytes)\n",
			SEED_BYTES);
		return 2;
	}
	now.tv_sec = strtoll(argv[1], NULL, 10);
	now.tv_nsec = strtol(argv[2], NULL, 10);
	if (clock_settime(CLOCK_REALTIME, &now))
		return fail("clock_settime");

	for (i = 0; i < SEED_BYTES; i++) {
		unsigned int byte;

		if (sscanf(argv[3] + 2 * i, "%2x", &byte) != 1) {
			fprintf(stderr, "cocolab-restored: HEX is not hex\n");
			return 2;
		}
		pool.seed[i] = byte;
	}
	pool.info.entropy_count = SEED_BYTES * 8;
	pool.info.buf_size = SEED_BYTES;
	fd = open("/dev/urandom", O_WRONLY);
	if (fd < 0)
		return fail("open /dev/urandom");
	if (ioctl(fd, RNDADDENTROPY, &pool.info))
		return fail("RNDADDENTROPY");
	if (ioctl(fd, RNDRESEEDCRNG))
		return fail("RNDRESEEDCRNG");
	close(fd);
	printf("cocolab-restored: clock set, crng reseeded\n");
	return 0;
}
