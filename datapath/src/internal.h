/* internal.h - the datapath's private state (never seen by cffi). */
#ifndef ISOLANE_INTERNAL_H
#define ISOLANE_INTERNAL_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "backend.h"
#include "budget.h"
#include "classify.h"
#include "handler.h"
#include "isolane_dp.h"
#include "policy.h"
#include "slowpath.h"
#include "tqueue.h"

#define RX_BATCH_MAX 64u
#define RUN_BATCH 32u /* packets per dequeue phase at most */
#define STALL_NS 20000 /* time beyond the work it did that makes a stall */

struct tenant {
	uint32_t id;
	struct dp_tenant_config cfg;
	struct handler handler;
	uint32_t slice_pkts;       /* most packets a slice runs (handler_slice_pkts) */
	struct tqueue q;
	struct budget_shared bucket;
	struct budget_cache cache; /* the (single) fast-path core's cache */
	bool listed;               /* in the scheduler's active or broke ring */
	struct dp_tenant_stats st;
	uint64_t *hist;            /* DP_HIST_BUCKETS completion latencies, cycles */
	struct slowpath *sp;       /* the loop's view of its slow path, NULL: none */
};

/* Control-to-loop commands. Control callers are serialised by ctl_lock and
 * wait for each command, so the single-producer ring is one slot deep. */
enum dp_cmd_op {
	CMD_TENANT_ADD,
	CMD_TENANT_SET,
	CMD_RULES_SET,
	CMD_RESET_STATS,
	CMD_SET_HANDLER,
	CMD_SLOWPATH_SET,
	CMD_TENANT_DEL, /* tenant: out of the loop's reach (tenant_unlink) */
};

struct dp_cmd {
	uint32_t op;
	int32_t result;
	struct tenant *tenant;       /* ADD: fully built, SET: new config in cfg,
					DEL: the one to unlink (control frees it) */
	struct dp_tenant_config cfg;
	struct classifier *cls;      /* RULES_SET: the new one in, the old one out */
	struct handler handler;      /* SET_HANDLER: the tenant's new handler */
	struct slowpath *sp;         /* SLOWPATH_SET: the new one, NULL to detach */
	uint32_t done;               /* set by the loop (release) */
};

struct dp {
	struct dp_config cfg;
	uint64_t quantum_cycles;
	uint64_t stall_cycles;      /* longer than its work by this: a stall */
	uint64_t tx_cycles_per_pkt; /* last flush's cost per packet (accounting) */
	uint64_t rx_cycles_per_pkt; /* running estimate of RX cost per packet */
	uint64_t rx_bursts;
	struct tenant *tenants[DP_MAX_TENANTS];
	uint32_t queue_slots; /* sum of queue capacities, <= SCHED_ORDER_CAP */
	/* rules of the installed classifier that name each tenant id (control
	 * side, under ctl_lock): a tenant is deleted only when none does, so
	 * the classifier never returns the id of a tenant that was deleted */
	uint32_t rule_refs[DP_MAX_TENANTS];
	/* held by stats readers while they copy a tenant's counters: a deleted
	 * tenant is freed only once no reader can still hold its pointer */
	pthread_mutex_t stats_lock;
	struct classifier *cls;
	struct sched sched;
	struct backend *be;
	struct dp_global_stats gst;

	pthread_t thread;
	bool running;
	uint32_t stop;              /* set by control, read by the loop */
	pthread_mutex_t ctl_lock;
	struct dp_cmd *cmd;         /* the command slot: NULL or pending */

	/* slow paths: the loop's list of tenants with one (it sends their
	 * frames), and control's table, under sp_lock, that readers and
	 * senders go through so a detach never frees rings in use */
	struct tenant *sp_tenants[DP_MAX_TENANTS];
	uint32_t n_sp;
	pthread_mutex_t sp_lock;
	struct slowpath *sp[DP_MAX_TENANTS];
};

/* loop.c */
void *dp_loop(void *arg);
void dp_apply_cmd(struct dp *dp, struct dp_cmd *cmd);
int dp_handle_one(struct dp *dp, struct pkt *p, uint32_t *tenant);

/* dp.c: installs a handler built by the caller (an engine's program) as
 * tenant id's; when it returns the old one is no longer in use */
int dp_set_handler(struct dp *dp, uint32_t id, const struct handler *h);

/* tenant.c */
struct tenant *tenant_new(uint32_t id, const struct dp_tenant_config *cfg, int *err);
void tenant_free(struct tenant *t);
/* the loop's side of a delete (CMD_TENANT_DEL): takes t out of the
 * scheduler and the slow-path list, gives its queued packets back to the
 * backend and clears its slot; control frees t afterwards */
void tenant_unlink(struct dp *dp, struct tenant *t);
int tenant_config_check(const struct dp_tenant_config *cfg);

/* dp.c */
int dp_pin_thread(pthread_t thread, int core);

#endif
