/* tsc.c - calibrate the TSC rate against the kernel's raw monotonic clock. */
#include <pthread.h>
#include <time.h>

#include "isolane_dp.h"
#include "tsc.h"

static double calibrated_hz;
static pthread_once_t calibrate_once = PTHREAD_ONCE_INIT;

static uint64_t mono_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC_RAW, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + ts.tv_nsec;
}

static void calibrate(void)
{
	const uint64_t window_ns = 20 * 1000 * 1000;
	uint64_t ns0 = mono_ns(), tsc0 = rdtsc(), ns1, tsc1;

	do {
		ns1 = mono_ns();
		tsc1 = rdtsc();
	} while (ns1 - ns0 < window_ns);
	calibrated_hz = (double)(tsc1 - tsc0) * 1e9 / (double)(ns1 - ns0);
}

double tsc_hz(void)
{
	pthread_once(&calibrate_once, calibrate);
	return calibrated_hz;
}

double dp_tsc_hz(void)
{
	return tsc_hz();
}

uint64_t dp_rdtsc(void)
{
	return rdtsc();
}
