/* SPDX-License-Identifier: GPL-2.0 */
/* The contract between bpf/sockmap.bpf.c and testcases/src/bpf.rs: keep both sides in step. */
#ifndef SOCKMAP_LAB_H
#define SOCKMAP_LAB_H

enum action {
	ACT_REDIRECT = 0,
	ACT_PASS = 1,
	ACT_DROP = 2,
	/* Redirect to target_key on odd runs and to alt_key on even ones: makes bpf_msg_apply_bytes()'s
	 * reach visible. (Not redirect/pass: within one sendmsg the kernel keeps the previous run's
	 * redirect target, so a later SK_PASS still redirects.) */
	ACT_ALTERNATE = 3,
};

/* All fields are __u32 so the layout has no padding and mirrors a #[repr(C)] Rust struct. */
struct config {
	__u32 action;
	__u32 use_hash;
	__u32 target_key;
	__u32 alt_key;
	__u32 flags;
	__u32 apply_bytes;
	__u32 cork_bytes;
	__u32 pull_start;
	__u32 pull_end;
	__u32 push_start;
	__u32 push_len;
	__u32 pop_start;
	__u32 pop_len;
	/* The stream parser frames messages by a header (FRAME_HEADER bytes, the body's length, big
	 * endian) instead of taking each skb whole. */
	__u32 framed;
};

#define FRAME_HEADER 4

/* The pushed bytes are filled with this so the receiver can tell them from the payload. */
#define PUSH_FILL 0xee
#define PUSH_MAX 8

enum counter {
	CNT_MSG_RUNS,
	CNT_PARSER_RUNS,
	CNT_STREAM_VERDICT_RUNS,
	CNT_SKB_VERDICT_RUNS,
	CNT_REDIRECT_MISSES,
	CNT_HELPER_ERRORS,
	CNT_PULLED_LEN,
	CNT_PULLED_FIRST_BYTE,
	/* The errno (positive) of the last failing bpf_msg_pop_data(). */
	CNT_HELPER_ERRNO,
	/* Runs of msg_pass, the program a bpf_link is updated to. */
	CNT_MSG_PASS_RUNS,
	CNT_MAX,
};

#endif
