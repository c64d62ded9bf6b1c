/* aot.c - the datapath's side of jointly compiled handlers.
 *
 * ebpf/aot.py translates a tenant's verified bytecode into C and compiles
 * it together with the datapath's handler glue (isolane_dp.h) into a
 * shared object; the function it exports is a dp_aot_fn. Helpers that
 * touch isolane's maps are called back through a dp_aot_env, filled here
 * with the same helper code the interpreter runs. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "ebpf_vm.h"
#include "handler.h"
#include "internal.h"
#include "maps.h"
#include "tsc.h"

static void *aot_map_lookup(dp_map_t *m, const void *key)
{
	return map_lookup(m, key);
}

static int64_t aot_map_update(dp_map_t *m, const void *key, const void *value, uint64_t flags)
{
	return map_update(m, key, value, flags);
}

static int64_t aot_map_delete(dp_map_t *m, const void *key)
{
	return map_delete(m, key);
}

static int64_t aot_ringbuf_output(dp_map_t *m, const void *data, uint64_t size, uint64_t flags)
{
	return map_ringbuf_output(m, data, size);
}

static uint64_t aot_ktime_get_ns(void)
{
	return (uint64_t)((double)rdtsc() * 1e9 / tsc_hz());
}

int dp_aot_env_init(struct dp_aot_env *env, dp_map_t *const *maps, uint32_t n_maps)
{
	if (n_maps > ARRAY_SIZE(env->maps))
		return -E2BIG;
	memset(env, 0, sizeof(*env));
	env->map_lookup = aot_map_lookup;
	env->map_update = aot_map_update;
	env->map_delete = aot_map_delete;
	env->ringbuf_output = aot_ringbuf_output;
	env->redirect_map = ebpf_redirect_map;
	env->csum_diff = ebpf_csum_diff;
	env->ktime_get_ns = aot_ktime_get_ns;
	for (uint32_t i = 0; i < n_maps; i++)
		env->maps[i] = maps[i];
	env->n_maps = n_maps;
	return 0;
}

static uint32_t run_aot(const struct handler *h, struct pkt *p)
{
	uint32_t redirect = 0;

	return h->aot((uint8_t *)p, FRAME_SIZE, &p->off, &p->len, h->aot_env, &redirect);
}

int dp_tenant_set_aot(dp_t *dp, uint32_t id, dp_aot_fn fn, const struct dp_aot_env *env,
		      uint32_t bound_ns)
{
	struct handler h = {.kind = DP_HANDLER_AOT, .run = run_aot, .aot = fn, .aot_env = env};

	if (!fn || !env)
		return -EINVAL;
	h.bound_cycles = ns_to_cycles(bound_ns);
	return dp_set_handler(dp, id, &h);
}

typedef uint32_t (*handler_run_fn)(const struct handler *h, struct pkt *p);

int dp_tenant_set_aot_run(dp_t *dp, uint32_t id, void *run, const struct dp_aot_env *env,
			  uint32_t bound_ns)
{
	struct handler h = {.kind = DP_HANDLER_AOT, .run = (handler_run_fn)run, .aot_env = env};

	if (!run || !env)
		return -EINVAL;
	h.bound_cycles = ns_to_cycles(bound_ns);
	return dp_set_handler(dp, id, &h);
}

int64_t dp_aot_run_bench(void *run, const struct dp_aot_env *env, const uint8_t *pkt,
			 uint32_t len, uint64_t repeat, uint32_t *verdict)
{
	struct handler h = {.run = (handler_run_fn)run, .aot_env = env};

	return handler_bench(&h, pkt, len, repeat, verdict);
}

int64_t dp_aot_bench(dp_aot_fn fn, const struct dp_aot_env *env, const uint8_t *pkt,
		     uint32_t len, uint64_t repeat, uint32_t *verdict)
{
	struct handler h = {.run = run_aot, .aot = fn, .aot_env = env};

	return handler_bench(&h, pkt, len, repeat, verdict);
}
