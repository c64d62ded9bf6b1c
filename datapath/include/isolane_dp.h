/*
 * isolane_dp.h - the contract between Python (cffi) and the C fast path.
 *
 * This file is read by cffi as its cdef, so it holds only plain types,
 * integer constants and prototypes: no includes, no macros with bodies.
 * Handles are opaque; every function returns 0 or -errno unless it says
 * otherwise. Internal headers (datapath/src/) never reach cffi.
 */
#ifndef ISOLANE_DP_H
#define ISOLANE_DP_H

#include <stdint.h> /* dropped from the cdef: cffi knows these types */

#define DP_ABI_VERSION 1

#define DP_MAX_TENANTS 256
#define DP_MAX_RULES 4096
#define DP_MAX_FLOWS 256
#define DP_MAX_FRAME_LEN 1728    /* bytes of packet a frame holds (2 KiB less headroom) */
#define DP_QUEUE_SLOTS 65536     /* sum of all tenants' queue capacities */
#define DP_SPIN_MAX_NS 100000000 /* spin: the most one packet may ask for */

/* Latency histogram: log-linear over TSC cycles, <= 0.4% relative error
 * (bucket midpoint) from 0 to 2^45 cycles; 256 linear buckets, then 128
 * per octave. */
#define DP_HIST_BUCKETS 4992

typedef struct dp dp_t;

/* The probe header that isolane's generators put at the start of a UDP
 * payload (little endian): the spin handler burns cost_ns when the magic
 * matches; seq and t_send let a load generator match replies. */
#define DP_PROBE_MAGIC 0x4e4c5349
struct dp_probe {
	uint32_t magic;
	uint32_t cost_ns;
	uint64_t seq;
	uint64_t t_send;
};

enum dp_policy {
	DP_POLICY_FIFO = 0,      /* one arrival-order queue: no isolation */
	DP_POLICY_PKT_RATE = 1,  /* per-tenant packet-rate token buckets */
	DP_POLICY_BYTE_RATE = 2, /* per-tenant byte-rate token buckets */
	DP_POLICY_CYCLES = 3,    /* per-tenant CPU-cycle budgets: time protection */
};

enum dp_handler_kind {
	DP_HANDLER_DROP = 0,  /* drops every packet (a tenant with no program) */
	DP_HANDLER_ECHO = 1,  /* swaps L2/L3/L4 addresses and transmits */
	DP_HANDLER_SPIN = 2,  /* burns the packet's or the tenant's cost, then echoes */
	DP_HANDLER_UDP_ECHO = 5, /* the C twin of tenants/udp_echo (same fixtures) */
	DP_HANDLER_EBPF = 3,  /* the tenant's eBPF program (dp_tenant_set_prog) */
	DP_HANDLER_AOT = 4,   /* the tenant's program compiled with the datapath */
};

enum dp_verdict {
	DP_XDP_ABORTED = 0,
	DP_XDP_DROP = 1,
	DP_XDP_PASS = 2,
	DP_XDP_TX = 3,
	DP_XDP_REDIRECT = 4,
};

/* Why a tenant's packet was dropped by the datapath (not by its handler). */
enum dp_drop_reason {
	DP_DROP_QUEUE_FULL = 0,  /* the tenant's own queue was full */
	DP_DROP_FAULT = 1,       /* the handler faulted or gave a verdict
				    this datapath cannot carry out */
	DP_DROP_TX_FULL = 2,     /* the backend could not take the reply */
	DP_DROP_NO_SLOWPATH = 3, /* XDP_PASS with no slow path attached */
	DP_DROP_SLOWPATH_FULL = 4, /* XDP_PASS while the tenant's slow-path
				      ring was full (its reader lags) */
	DP_DROP_REASONS = 5,
};

/* Why a packet could not be given to any tenant. */
enum dp_global_drop {
	DP_GDROP_MALFORMED = 0, /* truncated or inconsistent headers */
	DP_GDROP_UNKNOWN = 1,   /* no rule matched, or its tenant is not there */
	DP_GDROP_REASONS = 2,
};

struct dp_config {
	uint32_t policy;          /* enum dp_policy */
	uint32_t work_conserving; /* budget policies: lend idle time to broke tenants */
	uint32_t accounting;      /* time each handler with rdtsc and charge it */
	uint32_t refill_us;       /* budget refill period */
	uint32_t quantum_ns;      /* cycles policy: a turn; with accounting also
				     the most time a run stage takes before RX
				     is polled again (without, nothing is timed
				     and a stage is RUN_BATCH packets) */
	uint32_t rx_batch;        /* packets per rx_burst (<= 64) */
	int32_t core;             /* CPU to pin the fast-path thread to, -1: none */
};

struct dp_tenant_config {
	uint32_t queue_cap;   /* bounded per-tenant queue, power of two */
	uint32_t handler;     /* enum dp_handler_kind */
	uint32_t spin_ns;     /* spin: cost when the packet does not carry one */
	uint32_t _pad;
	double share;         /* cycles: fraction of the core, 0..1 */
	double cap_us;        /* cycles: most credit a tenant may hold */
	double pkt_rate;      /* pkt_rate: packets per second */
	double pkt_burst;     /* pkt_rate: bucket depth in packets */
	double byte_rate;     /* byte_rate: bytes per second */
	double byte_burst;    /* byte_rate: bucket depth in bytes */
};

/* A classifier rule; a zero field (or proto 0) is a wildcard.
 * The most specific matching rule wins (see classify.c). */
struct dp_rule {
	uint32_t ip_dst; /* IPv4 destination, host byte order */
	uint16_t dport;  /* UDP/TCP destination port */
	uint16_t vlan;   /* 802.1Q VLAN id */
	uint8_t proto;   /* 17 UDP, 6 TCP, 0 any */
	uint8_t _pad;
	uint16_t tenant;
};

struct dp_tenant_stats {
	uint64_t rx;              /* classified to this tenant */
	uint64_t tx;              /* handler said XDP_TX and the reply went out */
	uint64_t passed;          /* handler said XDP_PASS */
	uint64_t drop_verdict;    /* handler said XDP_DROP / ABORTED */
	uint64_t completed;       /* handler finished (any verdict) */
	uint64_t drops[5];        /* by enum dp_drop_reason */
	uint64_t cycles;          /* cycles charged (handler + share of batch work) */
	uint64_t lent_cycles;     /* cycles run on lent (idle) time, not charged */
	uint64_t throttles;       /* times the tenant was found broke with backlog */
	int64_t balance;          /* budget balance in the policy's currency
				     (cycles, packets or bytes; < 0: debt) */
	uint64_t forfeited;       /* credit refused at refill: over the cap */
	uint64_t queue_len;
	uint64_t sp_delivered;    /* passed packets put in the slow-path ring */
	uint64_t sp_sent;         /* slow-path frames the backend took for TX */
};

struct dp_global_stats {
	uint64_t loops;
	uint64_t busy_loops;
	uint64_t rx;
	uint64_t drops[2];  /* by enum dp_global_drop */
	uint64_t busy_cycles;
	uint64_t total_cycles;
	uint64_t stalls;          /* with accounting: loop iterations 20 us
				     longer than their handlers took: time
				     the core was taken away (host, kernel,
				     other tasks) */
	uint64_t stall_cycles;
};

/* mem backend: open-loop arrivals generated in C on another core. */
enum dp_arrival {
	DP_ARRIVAL_POISSON = 0,
	DP_ARRIVAL_ONOFF = 1,    /* Poisson while on, silent while off */
	DP_ARRIVAL_UNIFORM = 2,  /* constant spacing */
	DP_ARRIVAL_SATURATE = 3, /* as fast as the ring takes them */
};

struct dp_mem_flow {
	const uint8_t *frame; /* Ethernet frame template, copied at setup */
	uint32_t len;
	uint32_t arrival;     /* enum dp_arrival */
	double rate_pps;      /* mean rate (while on, for ONOFF) */
	double on_us;
	double off_us;
};

#define DP_MEM_MAX_DURATION_S 1000000000 /* ~31 years: the end fits in 64-bit TSC */

struct dp_mem_config {
	uint32_t ring_size;   /* rx/tx ring entries, power of two */
	uint32_t n_frames;    /* frames in the pool, power of two */
	int32_t core;         /* generator core, -1: none */
	uint32_t _pad;
	double duration_s;    /* generator stops after this long */
	uint64_t seed;
};

struct dp_flow_stats {
	uint64_t sent;      /* arrivals generated (intended sends) */
	uint64_t dropped;   /* rx ring full or no free frame: lost at the "NIC" */
	uint64_t late;      /* emitted more than 20 us after their intended time */
};

/* lifecycle */
int dp_create(const struct dp_config *cfg, dp_t **out);
void dp_destroy(dp_t *dp);
int dp_start(dp_t *dp);
int dp_stop(dp_t *dp);
int dp_running(dp_t *dp);

/* configuration: applied directly when stopped, through the command ring
 * when running (the call waits until the loop has applied it). */
int dp_tenant_add(dp_t *dp, uint32_t id, const struct dp_tenant_config *cfg);
int dp_tenant_set(dp_t *dp, uint32_t id, const struct dp_tenant_config *cfg);
int dp_rules_set(dp_t *dp, const struct dp_rule *rules, uint32_t n);
/* removes tenant id, also while running: its queued packets go back to the
 * backend unsent, its slow path (if any) is dropped, its queue slots return
 * to the budget, and the id may be added again. -EBUSY while a rule of the
 * installed classifier names it (withdraw its rules first), -ENOENT when
 * there is no such tenant. */
int dp_tenant_del(dp_t *dp, uint32_t id);

/* backends */
int dp_backend_mem(dp_t *dp, const struct dp_mem_config *cfg,
		   const struct dp_mem_flow *flows, uint32_t n_flows);
int dp_mem_done(dp_t *dp);  /* 1 once the generator has finished */
int dp_flow_stats(dp_t *dp, uint32_t flow, struct dp_flow_stats *out);
/* where the mem backend's frames are, read while the loop is stopped
 * (-EBUSY while running): every frame is free, waiting in the RX ring, or
 * (spare frames) handed out; frames minus those is what leaked */
struct dp_mem_pool {
	uint32_t frames;    /* n_frames: the generator's pool */
	uint32_t free;      /* back with the generator (or on its way) */
	uint32_t in_rx;     /* generated, not yet received by the loop */
	uint32_t spares;    /* spare frames (the datapath's own packets) */
	uint32_t spare_free;
};
int dp_mem_pool(dp_t *dp, struct dp_mem_pool *out);

/* stats (safe to call while running) */
int dp_tenant_stats(dp_t *dp, uint32_t id, struct dp_tenant_stats *out);
int dp_tenant_hist(dp_t *dp, uint32_t id, uint64_t *buckets, uint32_t n);
int dp_global_stats(dp_t *dp, struct dp_global_stats *out);
int dp_reset_stats(dp_t *dp);

/* one packet through the classifier and a tenant's handler, synchronously
 * (the loop must be stopped): for tests and tools. Returns the verdict,
 * -ENOENT when no rule matches, -EBADMSG when malformed. */
int dp_process_one(dp_t *dp, uint8_t *frame, uint32_t *len, uint32_t cap,
		   uint32_t *tenant_out);

/* a native handler run `repeat` times on one packet, in place: total
 * TSC cycles, or -errno (the programmability-tax reference) */
int64_t dp_handler_bench(uint32_t kind, const uint8_t *pkt, uint32_t len, uint64_t repeat);
/* a native handler once on frame[0..*len) (no classifier): its verdict;
 * the frame and *len are updated in place (cap: the frame's size) */
int dp_handler_run(uint32_t kind, uint8_t *frame, uint32_t *len, uint32_t cap);

/* time */
double dp_tsc_hz(void);
uint64_t dp_rdtsc(void);

/* histogram primitives, exported for tests */
uint32_t dp_hist_index(uint64_t value);
uint64_t dp_hist_lower(uint32_t index);
uint64_t dp_hist_upper(uint32_t index);

/* Scheduler simulation on a virtual clock: the real policy code driven
 * without packets, for property tests. Tenant i is backlogged from tick
 * backlog_from[i] to backlog_until[i] (64 packets queued); one of its
 * packets costs exactly cost_cycles[i], which is also its handler's static
 * bound, so a slice is max(1, quantum_cycles / cost) packets, and a turn
 * runs slices, as the loop does, while the policy's take() lets it and
 * it has run fewer than 32 packets (see datapath/src/policy.h). Packets are 64 bytes. Returns the number of
 * trace entries written, one per turn or idle gap, or -errno. */
struct dp_sim_event {
	uint32_t tenant;   /* index into the tenant arrays; UINT32_MAX = idle */
	uint32_t lent;     /* the turn ran on lent (idle) time, uncharged */
	uint32_t pkts;     /* packets the turn ran */
	uint32_t _pad;
	uint64_t start;
	uint64_t end;
};
int dp_sched_simulate(uint32_t policy, uint32_t work_conserving,
		      uint32_t quantum_cycles, uint32_t refill_cycles,
		      const struct dp_tenant_config *tenants, uint32_t n,
		      const uint64_t *cost_cycles,
		      const uint64_t *backlog_from, const uint64_t *backlog_until,
		      uint64_t horizon, struct dp_sim_event *trace,
		      uint32_t trace_cap);

/* ---- eBPF engine ---- */
/* Tenant XDP programs run in userspace (datapath/src/ebpf_vm.c, maps.c):
 * the kernel's instruction set, helpers and map semantics, every memory
 * access bounds-checked at run time. */
#define DP_BPF_STACK 512            /* bytes per frame */
#define DP_BPF_MAX_CALL_DEPTH 8
#define DP_BPF_MAX_INSNS 65536
#define DP_BPF_MAX_MAPS 64

enum dp_map_type { /* the kernel's ids */
	DP_MAP_HASH = 1,
	DP_MAP_ARRAY = 2,
	DP_MAP_DEVMAP = 14,
	DP_MAP_XSKMAP = 17,
	DP_MAP_RINGBUF = 27,
};

typedef struct dp_map dp_map_t;
typedef struct dp_prog dp_prog_t;

struct dp_map_def {
	uint32_t type;        /* enum dp_map_type */
	uint32_t key_size;
	uint32_t value_size;
	uint32_t max_entries; /* RINGBUF: ring bytes, a power of two >= 16 */
};

/* The context a program gets: struct xdp_md with 64-bit pointers. The
 * toolchain rewrites the program's 32-bit xdp_md loads to this layout:
 * data (xdp_md off 0) -> 0 as a 64-bit load, data_end (4) -> 8,
 * data_meta (8) -> 16, ingress_ifindex (12) -> 24, rx_queue_index (16) ->
 * 28, egress_ifindex (20) -> 32 (32-bit loads). Read-only, whole fields. */
struct dp_xdp_ctx {
	uint64_t data;
	uint64_t data_end;
	uint64_t data_meta;
	uint32_t ingress_ifindex;
	uint32_t rx_queue_index;
	uint32_t egress_ifindex;
	uint32_t _pad;
};

struct dp_prog_result {
	uint64_t r0;
	uint64_t insns;      /* instructions executed */
	int32_t fault;       /* 0, or -EFAULT (out-of-bounds/forbidden access),
				-E2BIG (instruction budget spent), -EINVAL (bad
				call at run time), -ENOSPC (call depth) */
	uint32_t fault_pc;   /* instruction index of the fault */
	uint32_t data_off;   /* XDP mode: packet start within the buffer after the run */
	uint32_t len;        /* XDP mode: packet length after the run */
	uint32_t redirect;   /* bpf_redirect_map: the target (the map slot's value) */
	uint32_t _pad;
};

/* maps: -EINVAL on bad sizes/types */
int dp_map_create(const struct dp_map_def *def, dp_map_t **out);
void dp_map_free(dp_map_t *m);
int dp_map_lookup(dp_map_t *m, const void *key, void *value_out); /* 0 / -ENOENT */
/* flags BPF_ANY 0 / BPF_NOEXIST 1 / BPF_EXIST 2 -> 0, -EEXIST, -ENOENT,
 * -E2BIG (full, or index out of range), -EINVAL */
int dp_map_update(dp_map_t *m, const void *key, const void *value, uint64_t flags);
int dp_map_delete(dp_map_t *m, const void *key); /* 0 / -ENOENT; ARRAY: -EINVAL */
int dp_map_next_key(dp_map_t *m, const void *key, void *next_out); /* key NULL: first; -ENOENT at the end */
/* one message: its length, 0 when empty, -ENOSPC if cap is too small */
int dp_ringbuf_read(dp_map_t *m, void *buf, uint32_t cap);

/* insns: 8-byte little-endian instructions, relocated: LD_IMM64 with
 * src_reg 1 (BPF_PSEUDO_MAP_FD) has imm = index into maps[]; src_reg 2
 * (BPF_PSEUDO_MAP_VALUE) has imm = map index and the second half's imm =
 * offset into an ARRAY map's value area. insn_budget: instructions a run
 * may execute, 0 = 1<<20. On error writes a message naming the
 * instruction ("invalid jump target at insn 17") into err. The maps must
 * outlive the program. */
int dp_prog_load(const uint64_t *insns, uint32_t n, dp_map_t *const *maps, uint32_t n_maps,
		 uint64_t insn_budget, char *err, uint32_t err_len, dp_prog_t **out);
void dp_prog_free(dp_prog_t *p);
/* XDP mode: the packet is buf[headroom .. headroom+len) of a buf_len-byte
 * buffer; bpf_xdp_adjust_head/tail may move its start and end within the
 * buffer. Returns the verdict (XDP_ABORTED after a fault or for an unknown
 * action) or -EINVAL. */
int dp_prog_run_xdp(dp_prog_t *p, uint8_t *buf, uint32_t buf_len, uint32_t headroom,
		    uint32_t len, uint32_t ingress_ifindex, uint32_t rx_queue,
		    struct dp_prog_result *res);
/* raw mode, as uBPF-style tests expect: r1 = mem, r2 = len; mem is
 * readable and writable. Returns 0, or the fault. */
int dp_prog_run_raw(dp_prog_t *p, uint8_t *mem, uint32_t len, struct dp_prog_result *res);
/* timing: runs XDP mode `repeat` times in place on one copy of pkt (256 B
 * head- and tailroom; start and length reset every run, as the kernel's
 * BPF_PROG_TEST_RUN does); returns the total TSC cycles or -errno */
int64_t dp_prog_bench_xdp(dp_prog_t *p, const uint8_t *pkt, uint32_t len, uint64_t repeat,
			  struct dp_prog_result *last);

/* fuzzing (datapath/src/ebpf_fuzz.c): generates n_programs random
 * programs from seed (a mix of raw random words and structured programs
 * that use the context, packet, stack and maps), loads each and runs the
 * ones that load on random packets, checking guard bytes around every
 * buffer. Fills out; returns 0 or -errno. */
struct dp_fuzz_stats {
	uint64_t programs;
	uint64_t loaded;
	uint64_t runs;
	uint64_t insns;          /* executed, all runs */
	uint64_t ok;             /* runs that ended with EXIT */
	uint64_t fault_efault;
	uint64_t fault_e2big;
	uint64_t fault_einval;
	uint64_t fault_enospc;
	uint64_t guard_violations; /* bytes outside the allowed regions changed: must be 0 */
	uint64_t bad_results;    /* inconsistent results (len/off out of the buffer): must be 0 */
};
int dp_fuzz_batch(uint64_t seed, uint32_t n_programs, uint32_t max_insns,
		  struct dp_fuzz_stats *out);

/* ---- eBPF handlers in the fast path ---- */

/* Makes prog the tenant's handler, run by the interpreter (also while the
 * loop runs: the swap happens between two packets, never halfway).
 * bound_ns is the program's static worst case per packet (0: unknown; it
 * is then timed after every packet). The previous program, if any, is no
 * longer used when this returns: its owner may free it. */
int dp_tenant_set_prog(dp_t *dp, uint32_t id, dp_prog_t *prog, uint32_t bound_ns);
/* back to the native handler of the tenant's config (the program is no
 * longer used when this returns) */
int dp_tenant_clear_prog(dp_t *dp, uint32_t id);

/* ---- jointly compiled (aot) handlers ---- */

/* What a compiled handler calls back into the datapath for: helpers that
 * touch isolane's maps (kernel ids and signatures), and the maps. */
struct dp_aot_env {
	void *(*map_lookup)(dp_map_t *m, const void *key);
	int64_t (*map_update)(dp_map_t *m, const void *key, const void *value, uint64_t flags);
	int64_t (*map_delete)(dp_map_t *m, const void *key);
	int64_t (*ringbuf_output)(dp_map_t *m, const void *data, uint64_t size, uint64_t flags);
	int64_t (*redirect_map)(dp_map_t *m, uint64_t key, uint64_t flags, uint32_t *target);
	uint64_t (*csum_diff)(const uint8_t *from, uint32_t from_size, const uint8_t *to,
			      uint32_t to_size, uint32_t seed);
	uint64_t (*ktime_get_ns)(void);
	dp_map_t *maps[64];
	uint32_t n_maps;
	uint32_t _pad;
};

/* The lowest a compiled handler may move the packet's start to with
 * bpf_xdp_adjust_head: below are the fast path's 64 bytes of metadata. */
#define DP_AOT_HEADROOM_FLOOR 64

/* A compiled handler (ebpf/aot.py) runs on a frame in place: the packet is
 * frame[*off .. *off + *len); it may move *off down to the floor and the end
 * up to frame_len; it returns the XDP verdict, or 255 on a fault. */
typedef uint32_t (*dp_aot_fn)(uint8_t *frame, uint32_t frame_len, uint32_t *off, uint32_t *len,
			      const struct dp_aot_env *env, uint32_t *redirect);

int dp_aot_env_init(struct dp_aot_env *env, dp_map_t *const *maps, uint32_t n_maps);

/* The fast path's own calling convention, for a compiled handler built
 * against datapath/src/handler.h and pkt.h (same build, same ABI): it is
 * installed as the handler itself, with no glue call in between.
 * run is `uint32_t (*)(const struct handler *h, struct pkt *p)` and finds
 * its env in h->aot_env. */
int dp_tenant_set_aot_run(dp_t *dp, uint32_t id, void *run, const struct dp_aot_env *env,
			  uint32_t bound_ns);
int64_t dp_aot_run_bench(void *run, const struct dp_aot_env *env, const uint8_t *pkt,
			 uint32_t len, uint64_t repeat, uint32_t *verdict);
/* makes fn the tenant's handler (as dp_tenant_set_prog); env must outlive it */
int dp_tenant_set_aot(dp_t *dp, uint32_t id, dp_aot_fn fn, const struct dp_aot_env *env,
		      uint32_t bound_ns);
/* fn run `repeat` times in place on one packet (as dp_handler_bench):
 * total TSC cycles or -errno; *verdict gets the last run's verdict */
int64_t dp_aot_bench(dp_aot_fn fn, const struct dp_aot_env *env, const uint8_t *pkt,
		     uint32_t len, uint64_t repeat, uint32_t *verdict);

/* ---- afxdp backend ---- */
/* Packets from one or several queues of a real interface, one AF_XDP socket
 * per queue, all sharing one UMEM (datapath/src/backend_afxdp.c). libxdp's
 * XDP program is never loaded: the steering program (ebpf/steer.py)
 * redirects into its XSKMAP, where the caller puts each socket's fd
 * (dp_afxdp_socket_fd) at its queue index, and attaches in the XDP mode
 * the backend chose (dp_afxdp_socket_stats: DP_AFXDP_SKB or _NATIVE). The
 * interface is looked up in the network namespace of the calling thread.
 * Errors: -ENODEV (no such interface), -EBUSY (a queue already has a
 * socket, or the loop runs), -ENOBUFS / -ENOMEM (UMEM could not be
 * locked), -ERANGE (no such queue), -EOPNOTSUPP (the driver lacks native
 * XDP or zero-copy), -EPERM, -EINVAL; the calling thread's
 * dp_afxdp_last_error() says what happened and what to do. */
#define DP_AFXDP_COPY 1        /* XDP_COPY */
#define DP_AFXDP_ZEROCOPY 2    /* XDP_ZEROCOPY: needs native XDP and driver support */
#define DP_AFXDP_NEED_WAKEUP 4 /* XDP_USE_NEED_WAKEUP: kick only when asked */
#define DP_AFXDP_SKB 8         /* the XDP program runs in SKB (generic) mode */
#define DP_AFXDP_NATIVE 16     /* ... in the driver: needs native XDP */
/* neither COPY nor ZEROCOPY: zero-copy where the driver has it, else copy;
 * neither SKB nor NATIVE: native where the driver has it, else SKB */
#define DP_AFXDP_MAX_QUEUES 64 /* sockets per backend (the XSKMAP's size) */

struct dp_afxdp_config {
	const char *ifname;
	uint32_t queue;     /* the one queue, when n_queues is 0 */
	uint32_t n_frames;  /* UMEM frames of 2048 bytes, power of two,
			       >= 2 * ring_size * sockets */
	uint32_t ring_size; /* each socket's fill, completion, RX and TX ring entries,
			       power of two */
	uint32_t flags;     /* DP_AFXDP_* */
	uint32_t n_queues;  /* sockets on queues[0..n_queues), distinct */
	const uint32_t *queues;
};

struct dp_afxdp_stats {
	uint64_t rx;            /* descriptors received by the datapath */
	uint64_t tx;            /* descriptors put on the TX ring */
	uint64_t kicks;         /* sendto/recvfrom wakeups */
	uint64_t kick_errors;   /* wakeups that failed (other than EAGAIN/EBUSY/ENOBUFS) */
	/* the kernel's XDP_STATISTICS */
	uint64_t rx_dropped;    /* dropped for reasons other than invalid descriptors */
	uint64_t rx_invalid;
	uint64_t tx_invalid;
	uint64_t rx_ring_full;  /* dropped: the RX ring was full */
	uint64_t fill_empty;    /* dropped: the fill ring was empty */
	uint64_t tx_ring_empty;
	/* the fill and completion rings */
	uint64_t filled;        /* frames put on the fill ring */
	uint64_t completed;     /* TX completions taken off the completion ring */
	uint32_t fill_ring;     /* frames on the fill ring now (the kernel's to fill) */
	uint32_t comp_ring;     /* completions waiting to be reaped now */
	/* the socket (dp_afxdp_socket_stats only) */
	uint32_t queue;
	uint32_t mode;          /* DP_AFXDP_SKB or _NATIVE (the backend's choice) |
				   DP_AFXDP_ZEROCOPY or _COPY (the kernel's bind) */
	int32_t xdp_attached;   /* the interface's XDP program now: 0 none,
				   1 native, 2 skb, 3 offload, 4 several; -errno */
	uint32_t _pad;
};

int dp_backend_afxdp(dp_t *dp, const struct dp_afxdp_config *cfg);
int dp_afxdp_fd(dp_t *dp);  /* the first socket's fd, or -ENODEV */
int dp_afxdp_n_sockets(dp_t *dp); /* sockets, or -ENODEV */
int dp_afxdp_socket_fd(dp_t *dp, uint32_t i);  /* socket i's fd (XSKMAP), or -errno */
/* socket i's figures; dp_afxdp_stats: the sums over all sockets */
int dp_afxdp_socket_stats(dp_t *dp, uint32_t i, struct dp_afxdp_stats *out);
int dp_afxdp_stats(dp_t *dp, struct dp_afxdp_stats *out);
/* the calling thread's last afxdp error message ("" if none) */
const char *dp_afxdp_last_error(void);

/* ---- slow path ---- */
/* A tenant's slow path (datapath/src/slowpath.c): a packet its handler
 * passes (XDP_PASS) is copied into a bounded ring that a reader outside the
 * loop drains with dp_slowpath_read (full: dropped, DP_DROP_SLOWPATH_FULL;
 * none attached: DP_DROP_NO_SLOWPATH); a frame given to dp_slowpath_send
 * waits in a second ring until the loop transmits it through the backend,
 * charging the time it took to the tenant's budget (an intervention point:
 * under a budget policy a broke tenant's frames wait for credit). Counted
 * in dp_tenant_stats (sp_delivered, sp_sent, drops). Read and send may be
 * called from any thread, also while the loop runs. */
/* a passed packet's most bytes: it may have grown into the headroom */
#define DP_SLOWPATH_FRAME_MAX 1984
#define DP_SLOWPATH_MAX_DEPTH 65536

/* depth: frames each way, a power of two in 2..DP_SLOWPATH_MAX_DEPTH;
 * -ENOENT (no tenant), -EEXIST (already attached), -EINVAL */
int dp_slowpath_attach(dp_t *dp, uint32_t tenant, uint32_t depth);
/* frames still in the rings are discarded; -ENOENT when none is attached */
int dp_slowpath_detach(dp_t *dp, uint32_t tenant);
/* the oldest passed packet into buf (cap >= DP_SLOWPATH_FRAME_MAX): its
 * length, 0 when none waits; -ENOENT (no slow path), -EINVAL (cap) */
int dp_slowpath_read(dp_t *dp, uint32_t tenant, uint8_t *buf, uint32_t cap);
/* queues frame[0..len) for transmission: 0, -EAGAIN (the ring is full),
 * -EMSGSIZE (len < 14 or > DP_MAX_FRAME_LEN), -ENOENT (no slow path),
 * -EOPNOTSUPP (the backend cannot send frames of its own) */
int dp_slowpath_send(dp_t *dp, uint32_t tenant, const uint8_t *frame, uint32_t len);
/* frames waiting in the tenant's rings: passed (to read) and to send */
int dp_slowpath_pending(dp_t *dp, uint32_t tenant, uint32_t *to_read, uint32_t *to_send);

#endif /* ISOLANE_DP_H */
