/*
 * cocolab-probe: make one exact system call sequence on a device file and report what the
 * kernel answered, as one JSON line per result on stdout.
 *
 *   cocolab-probe open  PATH [rw]
 *   cocolab-probe read  PATH OFFSET LENGTH
 *   cocolab-probe write PATH OFFSET HEXBYTES
 *   cocolab-probe mmap  PATH OFFSET LENGTH            map shared, read with 32-bit loads
 *   cocolab-probe hold  PATH OFFSET LENGTH            map and read, report, wait for a line on
 *                                                     stdin, read the same mapping again, report
 *   cocolab-probe poke  PATH OFFSET VALUE32           map read-write, store VALUE32 at OFFSET,
 *                                                     load it back
 *   cocolab-probe ioperm FROM NUM
 *   cocolab-probe iopl LEVEL
 *
 * Every result has "op" and "ok". A failed call adds "stage" (the call that failed), "errno"
 * and "errname". A load that faults is caught and reported as "signal": "SIGBUS"/"SIGSEGV".
 * Data is reported as "count" (bytes transferred), "nonzero" (how many of them are not 0) and
 * "hex" (the first 64 bytes). Numbers on the command line take any strtoull base (0x...).
 * Exit status: 0 when the result was reported, 2 on bad usage. The kernel's answer is in the
 * JSON, never in the exit status.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/io.h>
#include <sys/mman.h>
#include <unistd.h>

#define HEX_MAX 64

static sigjmp_buf fault_jmp;
static volatile sig_atomic_t fault_sig;

static void on_fault(int sig)
{
	fault_sig = sig;
	siglongjmp(fault_jmp, 1);
}

static void catch_faults(void)
{
	struct sigaction sa;

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_fault;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGBUS, &sa, NULL);
	sigaction(SIGSEGV, &sa, NULL);
}

static unsigned long long number(const char *s)
{
	char *end;
	unsigned long long v;

	errno = 0;
	v = strtoull(s, &end, 0);
	if (errno || *end || end == s) {
		fprintf(stderr, "cocolab-probe: not a number: %s\n", s);
		exit(2);
	}
	return v;
}

static void json_str(const char *key, const char *value)
{
	const char *p;

	printf(",\"%s\":\"", key);
	for (p = value; *p; p++) {
		if (*p == '"' || *p == '\\')
			putchar('\\');
		putchar(*p);
	}
	putchar('"');
}

static void begin(const char *op, const char *path)
{
	printf("{\"op\":\"%s\"", op);
	if (path)
		json_str("path", path);
}

static void end(void)
{
	printf("}\n");
	fflush(stdout);
}

static void failed(const char *stage, int err)
{
	printf(",\"ok\":false");
	json_str("stage", stage);
	printf(",\"errno\":%d", err);
	json_str("errname", strerrorname_np(err) ? strerrorname_np(err) : "?");
}

static void data(const unsigned char *buf, size_t count)
{
	size_t i, nonzero = 0;

	for (i = 0; i < count; i++)
		nonzero += buf[i] != 0;
	printf(",\"ok\":true,\"count\":%zu,\"nonzero\":%zu,\"hex\":\"", count, nonzero);
	for (i = 0; i < count && i < HEX_MAX; i++)
		printf("%02x", buf[i]);
	putchar('"');
}

static void offsets(unsigned long long off, unsigned long long len)
{
	printf(",\"offset\":%llu,\"length\":%llu", off, len);
}

/* Copy `len` bytes out of a mapping with aligned 32-bit loads (MMIO wants them). */
static int load(const volatile unsigned char *map, unsigned char *buf, size_t len)
{
	size_t i;

	if (sigsetjmp(fault_jmp, 1))
		return fault_sig;
	for (i = 0; i + 4 <= len; i += 4) {
		uint32_t v = *(const volatile uint32_t *)(map + i);
		memcpy(buf + i, &v, 4);
	}
	for (; i < len; i++)
		buf[i] = map[i];
	return 0;
}

static void signal_result(int sig)
{
	printf(",\"ok\":false");
	json_str("stage", "load");
	json_str("signal", sig == SIGBUS ? "SIGBUS" : "SIGSEGV");
}

/* Load the whole mapping and report its bytes, or the signal a load raised. */
static void load_and_report(const volatile unsigned char *m, unsigned char *buf, size_t len)
{
	int sig = load(m, buf, len);

	if (sig)
		signal_result(sig);
	else
		data(buf, len);
}

static int do_open(const char *path, int rw)
{
	int fd = open(path, rw ? O_RDWR : O_RDONLY);

	begin("open", path);
	if (fd < 0)
		failed("open", errno);
	else
		printf(",\"ok\":true");
	end();
	return 0;
}

static int do_read(const char *path, unsigned long long off, unsigned long long len)
{
	unsigned char *buf = calloc(1, len ? len : 1);
	int fd = open(path, O_RDONLY);
	ssize_t n;

	begin("read", path);
	offsets(off, len);
	if (fd < 0) {
		failed("open", errno);
	} else if ((n = pread(fd, buf, len, off)) < 0) {
		failed("read", errno);
	} else {
		data(buf, n);
	}
	end();
	return 0;
}

static int do_write(const char *path, unsigned long long off, const char *hex)
{
	size_t len = strlen(hex) / 2, i;
	unsigned char *buf = calloc(1, len ? len : 1);
	int fd;
	ssize_t n;

	for (i = 0; i < len; i++) {
		unsigned int b;

		if (sscanf(hex + 2 * i, "%2x", &b) != 1) {
			fprintf(stderr, "cocolab-probe: bad hex: %s\n", hex);
			return 2;
		}
		buf[i] = b;
	}
	fd = open(path, O_WRONLY);
	begin("write", path);
	offsets(off, len);
	if (fd < 0)
		failed("open", errno);
	else if ((n = pwrite(fd, buf, len, off)) < 0)
		failed("write", errno);
	else
		printf(",\"ok\":true,\"count\":%zd", n);
	end();
	return 0;
}

static volatile unsigned char *map(const char *path, unsigned long long off,
				   unsigned long long len, int prot, const char *op)
{
	int fd = open(path, (prot & PROT_WRITE) ? O_RDWR : O_RDONLY);
	void *m;

	begin(op, path);
	offsets(off, len);
	if (fd < 0) {
		failed("open", errno);
		return NULL;
	}
	m = mmap(NULL, len, prot, MAP_SHARED, fd, off);
	if (m == MAP_FAILED) {
		failed("mmap", errno);
		return NULL;
	}
	return m;
}

static int do_mmap(const char *path, unsigned long long off, unsigned long long len)
{
	volatile unsigned char *m = map(path, off, len, PROT_READ, "mmap");

	if (m)
		load_and_report(m, malloc(len), len);
	end();
	return 0;
}

static int do_hold(const char *path, unsigned long long off, unsigned long long len)
{
	volatile unsigned char *m = map(path, off, len, PROT_READ, "hold");
	unsigned char *buf;
	char line[64];

	if (!m) {
		end();
		return 0;
	}
	buf = malloc(len);
	load_and_report(m, buf, len);
	end();
	if (!fgets(line, sizeof(line), stdin))
		return 0;
	begin("hold-again", path);
	offsets(off, len);
	load_and_report(m, buf, len);
	end();
	return 0;
}

static int do_poke(const char *path, unsigned long long off, unsigned long long value)
{
	long page = sysconf(_SC_PAGESIZE);
	unsigned long long base = off & ~(unsigned long long)(page - 1);
	volatile unsigned char *m = map(path, base, page, PROT_READ | PROT_WRITE, "poke");
	uint32_t back;

	if (m) {
		if (sigsetjmp(fault_jmp, 1)) {
			signal_result(fault_sig);
		} else {
			*(volatile uint32_t *)(m + (off - base)) = (uint32_t)value;
			back = *(volatile uint32_t *)(m + (off - base));
			printf(",\"ok\":true,\"wrote\":%u,\"readback\":%u", (uint32_t)value, back);
		}
	}
	end();
	return 0;
}

static int do_ioperm(unsigned long long from, unsigned long long num)
{
	begin("ioperm", NULL);
	if (ioperm(from, num, 1))
		failed("ioperm", errno);
	else
		printf(",\"ok\":true");
	end();
	return 0;
}

static int do_iopl(unsigned long long level)
{
	begin("iopl", NULL);
	if (iopl(level))
		failed("iopl", errno);
	else
		printf(",\"ok\":true");
	end();
	return 0;
}

static int usage(void)
{
	fprintf(stderr, "usage: cocolab-probe open|read|write|mmap|hold|poke|ioperm|iopl ...\n"
		"(see the comment at the top of guests/helpers/cocolab-probe.c)\n");
	return 2;
}

int main(int argc, char **argv)
{
	const char *op = argc > 1 ? argv[1] : "";

	catch_faults();
	if (!strcmp(op, "open") && (argc == 3 || argc == 4))
		return do_open(argv[2], argc == 4 && !strcmp(argv[3], "rw"));
	if (!strcmp(op, "read") && argc == 5)
		return do_read(argv[2], number(argv[3]), number(argv[4]));
	if (!strcmp(op, "write") && argc == 5)
		return do_write(argv[2], number(argv[3]), argv[4]);
	if (!strcmp(op, "mmap") && argc == 5)
		return do_mmap(argv[2], number(argv[3]), number(argv[4]));
	if (!strcmp(op, "hold") && argc == 5)
		return do_hold(argv[2], number(argv[3]), number(argv[4]));
	if (!strcmp(op, "poke") && argc == 5)
		return do_poke(argv[2], number(argv[3]), number(argv[4]));
	if (!strcmp(op, "ioperm") && argc == 4)
		return do_ioperm(number(argv[2]), number(argv[3]));
	if (!strcmp(op, "iopl") && argc == 3)
		return do_iopl(number(argv[2]));
	return usage();
}
