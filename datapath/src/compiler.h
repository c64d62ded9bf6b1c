/* compiler.h - the few compiler hints the fast path uses, in one place. */
#ifndef ISOLANE_COMPILER_H
#define ISOLANE_COMPILER_H

#define likely(x) __builtin_expect(!!(x), 1)
#define unlikely(x) __builtin_expect(!!(x), 0)
#define prefetch(p) __builtin_prefetch(p)
#define prefetchw(p) __builtin_prefetch(p, 1)
#define always_inline inline __attribute__((always_inline))
#define noinline __attribute__((noinline))
#define cacheline_aligned __attribute__((aligned(64)))

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
#define MIN(a, b) ((a) < (b) ? (a) : (b))
#define MAX(a, b) ((a) > (b) ? (a) : (b))

#endif
