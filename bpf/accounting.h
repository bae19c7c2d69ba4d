/* SPDX-License-Identifier: GPL-2.0 */
/* The contract between bpf/accounting.bpf.c and testcases/src/accounting.rs: keep both sides in step. */
#ifndef SOCKMAP_LAB_ACCOUNTING_H
#define SOCKMAP_LAB_ACCOUNTING_H

/* One dying socket, read when its family's destructor returns. All fields are 64 or 32 bits wide and
 * in that order, so the layout has no padding and mirrors a #[repr(C)] Rust struct. */
struct destroyed {
	__u64 cookie;
	__u32 family;
	__u32 type;
	__u32 state;
	/* The counters inet_sock_destruct() warns about; the kernel expects all four to be zero. */
	__s32 rmem_alloc;
	__s32 wmem_alloc;
	__s32 wmem_queued;
	__s32 forward_alloc;
	__u32 pad;
};

#endif
