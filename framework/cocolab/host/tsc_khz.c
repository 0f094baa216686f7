/*
 * tsc-khz: this host's TSC frequency in kHz, measured against CLOCK_MONOTONIC_RAW, on stdout.
 *
 * Under TCG a guest's RDTSC reads the host's TSC, so this is the guest's TSC frequency too: a
 * guest that cannot calibrate it (microvm has no HPET and no ACPI PM timer, and its PIT
 * calibration fails on a busy host) is told it with tsc_early_khz=. Each sample brackets one
 * RDTSC between two clock reads and keeps the tightest pair, so a preemption does not skew it.
 */
#include <stdint.h>
#include <stdio.h>
#include <time.h>
#include <x86intrin.h>

static uint64_t ns(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC_RAW, &t);
	return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

/* A (time, tsc) pair read as close together as the 20 best of 200 tries allow. */
static void pair(uint64_t *when, uint64_t *tsc)
{
	uint64_t best = UINT64_MAX;

	for (int i = 0; i < 200; i++) {
		uint64_t before = ns(), t = __rdtsc(), after = ns();

		if (after - before < best) {
			best = after - before;
			*when = before + (after - before) / 2;
			*tsc = t;
		}
	}
}

int main(void)
{
	struct timespec wait = { 0, 200 * 1000 * 1000 };
	uint64_t t0, c0, t1, c1;

	pair(&t0, &c0);
	nanosleep(&wait, NULL);
	pair(&t1, &c1);
	printf("%llu\n", (unsigned long long)((c1 - c0) * 1000000u / (t1 - t0)));
	return 0;
}
