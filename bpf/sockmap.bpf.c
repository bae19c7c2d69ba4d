// SPDX-License-Identifier: GPL-2.0
/* Verdict programs for the redirect-path suite.
 *
 * One object serves every case: what a program does is read from the `config` map, which the
 * test fills in before any data moves, and what it did is added up in `counters`. A case attaches
 * only the programs its path needs, usually to the one map (sock_map or sock_hash) it redirects
 * through; the cases on one psock shared by several programs or maps attach to both.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "sockmap.h"

char LICENSE[] SEC("license") = "GPL";

struct {
	__uint(type, BPF_MAP_TYPE_SOCKMAP);
	__uint(max_entries, 8);
	__type(key, __u32);
	__type(value, __u32);
} sock_map SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_SOCKHASH);
	__uint(max_entries, 8);
	__type(key, __u32);
	__type(value, __u32);
} sock_hash SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct config);
} config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, CNT_MAX);
	__type(key, __u32);
	__type(value, __u64);
} counters SEC(".maps");

static __always_inline const struct config *get_config(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&config, &zero);
}

static __always_inline __u64 bump(enum counter idx)
{
	__u32 key = idx;
	__u64 *value = bpf_map_lookup_elem(&counters, &key);

	return value ? __sync_add_and_fetch(value, 1) : 0;
}

static __always_inline void store(enum counter idx, __u64 to)
{
	__u32 key = idx;
	__u64 *value = bpf_map_lookup_elem(&counters, &key);

	if (value)
		*value = to;
}

static __always_inline void pull(struct sk_msg_md *msg, const struct config *cfg)
{
	__u8 *data, *data_end;

	if (bpf_msg_pull_data(msg, cfg->pull_start, cfg->pull_end, 0)) {
		bump(CNT_HELPER_ERRORS);
		return;
	}
	data = msg->data;
	data_end = msg->data_end;
	store(CNT_PULLED_LEN, data_end - data);
	if (data + 1 <= data_end)
		store(CNT_PULLED_FIRST_BYTE, data[0]);
}

/* bpf_msg_push_data() leaves the new bytes uninitialised; fill them so the content is stable. */
static __always_inline void push(struct sk_msg_md *msg, const struct config *cfg)
{
	__u32 len = cfg->push_len;
	__u8 *data, *data_end;

	if (len > PUSH_MAX || bpf_msg_push_data(msg, cfg->push_start, len, 0) ||
	    bpf_msg_pull_data(msg, cfg->push_start, cfg->push_start + len, 0)) {
		bump(CNT_HELPER_ERRORS);
		return;
	}
	data = msg->data;
	data_end = msg->data_end;
#pragma unroll
	for (int i = 0; i < PUSH_MAX; i++) {
		if (i >= len || data + i + 1 > data_end)
			break;
		data[i] = PUSH_FILL;
	}
}

/* The errno a failing pop returns is what a program sees: keep it for the observation. */
static __always_inline void pop(struct sk_msg_md *msg, const struct config *cfg)
{
	long err = bpf_msg_pop_data(msg, cfg->pop_start, cfg->pop_len, 0);

	if (err) {
		bump(CNT_HELPER_ERRORS);
		store(CNT_HELPER_ERRNO, -err);
	}
}

SEC("sk_msg")
int msg_verdict(struct sk_msg_md *msg)
{
	const struct config *cfg = get_config();
	__u64 run = bump(CNT_MSG_RUNS);
	__u32 key;
	long verdict;

	if (!cfg)
		return SK_DROP;
	if (cfg->apply_bytes)
		bpf_msg_apply_bytes(msg, cfg->apply_bytes);
	if (cfg->cork_bytes)
		bpf_msg_cork_bytes(msg, cfg->cork_bytes);
	/* Push first: the element it adds gives pull and pop a known boundary to cross. */
	if (cfg->push_len)
		push(msg, cfg);
	if (cfg->pull_end)
		pull(msg, cfg);
	if (cfg->pop_len)
		pop(msg, cfg);

	if (cfg->action == ACT_PASS)
		return SK_PASS;
	if (cfg->action == ACT_DROP)
		return SK_DROP;

	key = cfg->action == ACT_ALTERNATE && run % 2 == 0 ? cfg->alt_key : cfg->target_key;
	if (cfg->use_hash)
		verdict = bpf_msg_redirect_hash(msg, &sock_hash, &key, cfg->flags);
	else
		verdict = bpf_msg_redirect_map(msg, &sock_map, key, cfg->flags);
	if (verdict != SK_PASS)
		bump(CNT_REDIRECT_MISSES);
	return verdict;
}

/* The program a case swaps in through bpf_link_update(): lets everything pass, and counts apart
 * from msg_verdict so that which of the two a socket runs shows in the counters. */
SEC("sk_msg")
int msg_pass(struct sk_msg_md *msg)
{
	bump(CNT_MSG_PASS_RUNS);
	return SK_PASS;
}

static __always_inline int skb_decide(struct __sk_buff *skb)
{
	const struct config *cfg = get_config();
	__u32 key;
	long verdict;

	if (!cfg)
		return SK_DROP;
	if (cfg->action == ACT_PASS)
		return SK_PASS;
	if (cfg->action == ACT_DROP)
		return SK_DROP;

	key = cfg->target_key;
	if (cfg->use_hash)
		verdict = bpf_sk_redirect_hash(skb, &sock_hash, &key, cfg->flags);
	else
		verdict = bpf_sk_redirect_map(skb, &sock_map, key, cfg->flags);
	if (verdict != SK_PASS)
		bump(CNT_REDIRECT_MISSES);
	return verdict;
}

/* Every skb is a whole message (the suite checks the byte stream, not framing), unless the case
 * frames its messages: then a message is its header and the body length the header gives, which
 * strparser waits for (0: not even a whole header yet) across skbs or cuts out of one.
 * bpf_skb_load_bytes() reads from the skb's start: the program is not told where in the skb
 * strparser's message starts (strp_msg(skb)->offset). */
SEC("sk_skb/stream_parser")
int skb_parser(struct __sk_buff *skb)
{
	const struct config *cfg = get_config();
	__u32 body;

	bump(CNT_PARSER_RUNS);
	if (!cfg || !cfg->framed)
		return skb->len;
	if (skb->len < FRAME_HEADER)
		return 0;
	if (bpf_skb_load_bytes(skb, 0, &body, sizeof(body))) {
		bump(CNT_HELPER_ERRORS);
		return skb->len;
	}
	return FRAME_HEADER + bpf_ntohl(body);
}

SEC("sk_skb/stream_verdict")
int skb_stream_verdict(struct __sk_buff *skb)
{
	bump(CNT_STREAM_VERDICT_RUNS);
	return skb_decide(skb);
}

SEC("sk_skb/verdict")
int skb_verdict(struct __sk_buff *skb)
{
	bump(CNT_SKB_VERDICT_RUNS);
	return skb_decide(skb);
}
