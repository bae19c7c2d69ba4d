//! Memory pressure (issue 13, family 7): tiny SO_SNDBUF/SO_RCVBUF, a receiver that stops reading
//! while the sender goes on (on the rx paths the backlog worker retries on EAGAIN: no byte may be
//! lost or repeated), the target closed while the sender waits for memory, a cork that can never
//! fill. Every socket must still die clean. Runs only inside a lab guest.
//!
//! Names: "<path>_via_sockmap_over_ipv4_<what>".

use std::time::Duration;

use rstest::rstest;
use testcases::Family::Ipv4;
use testcases::MapKind::Sockmap;
use testcases::Path::{self, RxToRx, RxToTx, TxToRx, TxToTx};
use testcases::{pattern, run_case, Config, Rig, Role, Scenario};

/// What the sender moves in one blocking send: many times the tiny buffers.
const BULK: usize = 64 * 1024;
/// Asked of SO_SNDBUF/SO_RCVBUF; the kernel doubles it (and raises it to its own minimum).
const TINY: usize = 2048;
/// A send that leaves a page part-charged.
const ODD: usize = 1000;
/// Small windows only work below one segment's size (see guest::set_loopback_mtu).
const ETHERNET_MTU: i32 = 1500;

fn pressure_case(path: Path, what: &str, config: impl FnOnce(Config) -> Config, body: impl FnOnce(&mut Rig<'_>)) {
    let scenario = Scenario::new(path, Sockmap, Ipv4).with_loopback_mtu(ETHERNET_MTU);
    run_case(&scenario.case_name(what), scenario, config(scenario.config()), body);
}

/// Every buffer between the sender and the receiver made tiny.
fn shrink(rig: &mut Rig<'_>, path: Path) {
    let sender = path.sender();
    rig.set_buffer(sender, libc::SO_SNDBUF, TINY);
    if path.is_ingress() {
        rig.set_buffer(Role::B, libc::SO_RCVBUF, TINY);
    } else {
        rig.set_buffer(Role::B, libc::SO_SNDBUF, TINY);
        rig.set_buffer(Role::BPeer, libc::SO_RCVBUF, TINY);
    }
}

/// The receiver reads nothing until the sender is blocked (or done: where nothing pushes back),
/// then everything: every byte exactly once, in order. `blocked` in the snapshot says where the
/// kernel pushes back on the sender; on tx_to_rx FIONREAD says how much B held at that moment
/// (bpf_tcp_ingress() charges B with __sk_rmem_schedule() and never looks at its SO_RCVBUF).
#[rstest]
fn pressure_receiver_stops_reading(#[values(TxToRx, RxToRx, TxToTx, RxToTx)] path: Path) {
    pressure_case(path, "when_the_receiver_stops_reading", |c| c, |rig| {
        shrink(rig, path);
        let receiver = path.receiver();
        rig.expect(receiver, &pattern(0, BULK));
        rig.send_blocking(path.sender(), BULK, |rig| {
            if path == TxToRx {
                rig.fionread(receiver);
            }
            rig.receive(receiver);
        });
        rig.recv_now(receiver, 1, 0);
    });
}

/// B closed while A's send waits for B's memory (tx_to_tx pushes into B in A's own send call): the
/// close must wake the sender, whose send returns what went out before (a partial count); B's peer
/// reads a prefix, then B's end of stream. Kernels up to 7.3.4 leave the sender asleep until its
/// SO_SNDTIMEO: known finding tcp-bpf-egress-sender-not-woken-by-target-close (FINDINGS.toml).
#[rstest]
fn pressure_target_closed_while_the_sender_waits() {
    pressure_case(TxToTx, "when_target_closed_while_the_sender_waits_for_memory", |c| c, |rig| {
        shrink(rig, TxToTx);
        rig.expect_prefix(Role::BPeer, &pattern(0, BULK));
        rig.send_blocking_for(Role::A, BULK, Duration::from_secs(4), |rig| rig.close(Role::B));
        rig.read_to_end(Role::BPeer);
    });
}

/// A cork that never fills: the corked bytes are charged to A, but neither SO_SNDBUF (a corked
/// sk_msg is charged with sk_mem_charge(), not to sk_wmem_queued, which is what
/// sk_stream_memory_free() looks at) nor anything else stops A from piling bytes into it, up to
/// MAX_MSG_FRAGS elements. Nothing reaches the receiver; the corked bytes are freed with A.
#[rstest]
fn pressure_cork_never_fills(#[values(TxToRx, TxToTx)] path: Path) {
    let cork = |c: Config| Config { cork_bytes: (4 * BULK) as u32, ..c };
    pressure_case(path, "when_a_cork_never_fills", cork, |rig| {
        rig.set_buffer(Role::A, libc::SO_SNDBUF, TINY);
        rig.pin_verdict_runs();
        rig.send(Role::A, BULK);
        // Not a whole number of pages: a charge the kernel forgets then shows in sk_forward_alloc,
        // where whole pages would only show in the protocol's per-CPU-batched memory count.
        rig.send(Role::A, ODD);
        rig.readiness(path.receiver());
        rig.fionread(path.receiver());
    });
}
