// SPDX-License-Identifier: GPL-2.0
/* Socket accounting for the redirect-path suite.
 *
 * Every socket a case creates dies through its family's destructor: inet_sock_destruct() (AF_INET and
 * AF_INET6, also reached through inet6_sock_destruct() and the UDP destructors), unix_sock_destructor()
 * or vsock_sk_destruct(). When the destructor returns, the socket's memory counters are reported
 * through the `destroyed` ring buffer. It has to be on return: inet_sock_destruct() purges the receive
 * queue and reclaims forward-allocated memory before it checks the counters, so at entry they are
 * not yet final. The socket itself is only freed after its destructor returns.
 *
 * The fexit programs are used where the kernel has BTF and trampolines; elsewhere the kprobe entry
 * programs remember the socket per thread and the kretprobe programs report it.
 *
 * Only sockets whose cookie was asked for are reported: the suite asks for the cookie of every socket
 * it creates, and nothing else in the guest does, so that keeps the ring to the suite's sockets.
 */
#include <linux/bpf.h>
#include <linux/ptrace.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>

#include "accounting.h"

char LICENSE[] SEC("license") = "GPL";

/* Just the fields read here, relocated against the running kernel's BTF (CO-RE). */
#pragma clang attribute push(__attribute__((preserve_access_index)), apply_to = record)
struct sock_common {
	unsigned short skc_family;
	volatile unsigned char skc_state;
	struct {
		long long counter;
	} skc_cookie;
};

struct sock {
	struct sock_common __sk_common;
	struct {
		struct {
			int counter;
		} rmem_alloc;
	} sk_backlog;
	int sk_forward_alloc;
	int sk_wmem_queued;
	struct {
		struct {
			int counter;
		} refs;
	} sk_wmem_alloc;
	unsigned short sk_type;
};
#pragma clang attribute pop

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 256 * 1024);
} destroyed SEC(".maps");

/* kprobe fallback: the socket whose destructor a thread is in, keyed as in thread_key(). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, __u64);
	__type(value, __u64);
} dying SEC(".maps");

static __always_inline int report(struct sock *sk)
{
	__u64 cookie = BPF_CORE_READ(sk, __sk_common.skc_cookie.counter);
	struct destroyed *event;

	if (!cookie)
		return 0;
	event = bpf_ringbuf_reserve(&destroyed, sizeof(*event), 0);
	if (!event)
		return 0;
	event->cookie = cookie;
	event->family = BPF_CORE_READ(sk, __sk_common.skc_family);
	event->type = BPF_CORE_READ(sk, sk_type);
	event->state = BPF_CORE_READ(sk, __sk_common.skc_state);
	event->rmem_alloc = BPF_CORE_READ(sk, sk_backlog.rmem_alloc.counter);
	event->wmem_alloc = BPF_CORE_READ(sk, sk_wmem_alloc.refs.counter);
	event->wmem_queued = BPF_CORE_READ(sk, sk_wmem_queued);
	event->forward_alloc = BPF_CORE_READ(sk, sk_forward_alloc);
	event->pad = 0;
	bpf_ringbuf_submit(event, 0);
	return 0;
}

/* A trampoline skips a program that is already running on this CPU (prog->active, counted in the
 * program's recursion_misses): a destructor run from softirq (an RCU callback freeing a listener)
 * that interrupts this program on the same CPU is not reported. Each destructor therefore gets two
 * programs: the interrupted context is inside at most one of them, so the other reports the socket,
 * and user space keeps the first report per cookie. */
#define REPORT_AT_RETURN(func, name)				\
	SEC("fexit/" #func)					\
	int BPF_PROG(name, struct sock *sk)			\
	{							\
		return report(sk);				\
	}							\
	SEC("fexit/" #func)					\
	int BPF_PROG(name##_twin, struct sock *sk)		\
	{							\
		return report(sk);				\
	}

REPORT_AT_RETURN(inet_sock_destruct, inet_destructed)
REPORT_AT_RETURN(unix_sock_destructor, unix_destructed)
REPORT_AT_RETURN(vsock_sk_destruct, vsock_destructed)

/* Destructors also run from softirq (RCU callbacks, the TCP receive path); when that interrupts the
 * idle task, its pid is 0 on every CPU, so the CPU tells those apart.
 *
 * The kprobe fallback can miss a destructor, and the socket then shows up as leaked: a kprobe program
 * is skipped while the CPU runs another tracing program or a bpf() map operation (bpf_prog_active),
 * and a destructor that interrupts another one on the same thread overwrites its entry here. The
 * fexit pair above has neither limit, which is why it is preferred. */
static __always_inline __u64 thread_key(void)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();

	return (__u32)pid_tgid ? pid_tgid : bpf_get_smp_processor_id();
}

static __always_inline int remember(struct sock *sk)
{
	__u64 key = thread_key();
	__u64 value = (__u64)sk;

	bpf_map_update_elem(&dying, &key, &value, BPF_ANY);
	return 0;
}

static __always_inline int report_remembered(void)
{
	__u64 key = thread_key();
	__u64 *sk = bpf_map_lookup_elem(&dying, &key);

	if (!sk)
		return 0;
	report((struct sock *)*sk);
	bpf_map_delete_elem(&dying, &key);
	return 0;
}

SEC("kprobe/inet_sock_destruct")
int BPF_KPROBE(inet_destructing, struct sock *sk)
{
	return remember(sk);
}

SEC("kretprobe/inet_sock_destruct")
int BPF_KRETPROBE(inet_destructed_ret)
{
	return report_remembered();
}

SEC("kprobe/unix_sock_destructor")
int BPF_KPROBE(unix_destructing, struct sock *sk)
{
	return remember(sk);
}

SEC("kretprobe/unix_sock_destructor")
int BPF_KRETPROBE(unix_destructed_ret)
{
	return report_remembered();
}

SEC("kprobe/vsock_sk_destruct")
int BPF_KPROBE(vsock_destructing, struct sock *sk)
{
	return remember(sk);
}

SEC("kretprobe/vsock_sk_destruct")
int BPF_KRETPROBE(vsock_destructed_ret)
{
	return report_remembered();
}
