//! Teardown with redirected data still queued, at every role and on every path (issue 13, family
//! 10). The redirect target is closed, removed from the map, or the map itself freed, while data it
//! never read waits for it (in its psock queue, in its backlog, or in the sender's cork); the source
//! is closed with data in flight; or both are closed at once. Whatever the kernel does with the data
//! (delivers it, keeps it, drops it), every socket must die with clean counters: the accounting and
//! splat checks of every case do that part. Runs only inside a lab guest (`lab test`).
//!
//! Names: "<path>_via_<map>_over_ipv4_when_<teardown>_with_data_in_<queue>".

use rstest::rstest;
use testcases::Family::Ipv4;
use testcases::MapKind::{self, Sockhash, Sockmap};
use testcases::Path::{self, RxToRx, RxToTx, TxToRx, TxToTx};
use testcases::{pattern, run_case, Config, Rig, Role, Scenario, KEY_B};

/// How much the sender moves before the teardown: several skbs on the rx paths.
const QUEUED: usize = 16 * 1024;
/// The backlog cases' buffers (doubled by the kernel): small enough that most of QUEUED waits.
const TINY: usize = 2048;
/// The cork cases: the program asks for CORK bytes, the sender sends CORKED of them.
const CORK: usize = 4096;
const CORKED: usize = 1024;

#[derive(Clone, Copy, Debug)]
enum Teardown {
    TargetClosed,
    TargetRemoved,
    MapFreed,
    SourceClosed,
    BothClosed,
}

impl Teardown {
    fn name(self) -> &'static str {
        match self {
            Self::TargetClosed => "target_closed",
            Self::TargetRemoved => "target_removed",
            Self::MapFreed => "map_freed",
            Self::SourceClosed => "source_closed",
            Self::BothClosed => "both_closed",
        }
    }

    fn apply(self, rig: &mut Rig<'_>) {
        match self {
            Self::TargetClosed => rig.close(Role::B),
            Self::TargetRemoved => rig.map_delete(KEY_B),
            // The map outlives its descriptors while its sockets hold its programs (see
            // Rig::free_map): the redirect goes on, and the data waits until the sockets close.
            Self::MapFreed => rig.free_map(),
            Self::SourceClosed => rig.close(Role::A),
            Self::BothClosed => {
                rig.close(Role::A);
                rig.close(Role::B);
            }
        }
    }

    fn closes(self, role: Role) -> bool {
        match self {
            Self::TargetClosed => role == Role::B,
            Self::SourceClosed => role == Role::A,
            Self::BothClosed => matches!(role, Role::A | Role::B),
            Self::TargetRemoved | Self::MapFreed => false,
        }
    }
}

/// Where the redirected data waits when the teardown comes.
#[derive(Clone, Copy, Debug)]
enum Queue {
    /// Delivered, unread: in B's psock queue (ingress) or on its way out of B to B's peer (egress).
    Target,
    /// rx paths: in B's psock backlog, which cannot deliver (B's, or B's peer's, buffers are tiny
    /// and nobody reads), the worker retrying on EAGAIN.
    Backlog,
    /// tx paths: in A's cork (the program asked for more bytes than were sent).
    Cork,
}

impl Queue {
    fn name(self) -> &'static str {
        match self {
            Self::Target => "target_queue",
            Self::Backlog => "backlog",
            Self::Cork => "cork",
        }
    }
}

fn teardown_case(path: Path, map: MapKind, teardown: Teardown, queue: Queue) {
    let scenario = Scenario::new(path, map, Ipv4);
    // Tiny buffers only work below one segment's size (see guest::set_loopback_mtu).
    let scenario = if let Queue::Backlog = queue { scenario.with_loopback_mtu(1500) } else { scenario };
    let name = scenario.case_name(&format!("when_{}_with_data_in_{}", teardown.name(), queue.name()));
    let config = match queue {
        Queue::Cork => Config { cork_bytes: CORK as u32, ..scenario.config() },
        _ => scenario.config(),
    };
    run_case(&name, scenario, config, |rig| {
        // The teardown takes the target out of reach on purpose.
        rig.redirect_may_miss();
        queue_data(rig, path, teardown, queue);
        teardown.apply(rig);
        after(rig, path, teardown, queue);
    });
}

/// Moves data into `queue` and waits until it is there (bounded), reading nothing. Only where the
/// backlog worker sends out of B (rx_to_tx) is how much B's peer gets up to timing: a teardown
/// stops it part-way, and with the map freed and the backlog full it keeps sending through B's
/// tiny buffers at the pace of TCP's window probes, past the rig's no-progress bound (5968 of
/// 16384 bytes once, all of them another time); everywhere else the snapshot pins every byte.
fn queue_data(rig: &mut Rig<'_>, path: Path, teardown: Teardown, queue: Queue) {
    let (sender, receiver) = (path.sender(), path.receiver());
    let data = pattern(0, QUEUED);
    let cut = matches!(teardown, Teardown::TargetClosed | Teardown::TargetRemoved | Teardown::BothClosed);
    let probed = matches!((teardown, queue), (Teardown::MapFreed, Queue::Backlog));
    if path == RxToTx && (cut || probed) {
        rig.expect_prefix(receiver, &data);
    } else if !matches!(queue, Queue::Cork) {
        rig.expect(receiver, &data);
    }
    match queue {
        Queue::Target => {
            rig.send(sender, QUEUED);
            rig.wait_readable(receiver);
        }
        Queue::Backlog => {
            if path == RxToRx {
                rig.set_buffer(Role::B, libc::SO_RCVBUF, TINY);
            } else {
                rig.set_buffer(Role::B, libc::SO_SNDBUF, TINY);
                rig.set_buffer(Role::BPeer, libc::SO_RCVBUF, TINY);
            }
            // One skb per send: the first fills the target, the others wait in the backlog.
            for _ in 0..QUEUED / 1024 {
                rig.send(sender, 1024);
            }
            rig.wait_readable(receiver);
        }
        Queue::Cork => {
            rig.pin_verdict_runs();
            rig.send(sender, CORKED);
            rig.readiness(receiver);
        }
    }
}

/// What is left to see after the teardown: what the receiver can still read, whether the source
/// still works. The final read of every open socket (and the accounting) follows in any case.
fn after(rig: &mut Rig<'_>, path: Path, teardown: Teardown, queue: Queue) {
    let receiver = path.receiver();
    if path.is_ingress() && !teardown.closes(receiver) && !matches!(queue, Queue::Cork) {
        // Non-blocking: one byte of what the teardown left readable, or EAGAIN.
        rig.recv_now(receiver, 1, 0);
    }
    match (teardown, queue) {
        // The source is gone, the target is not: all of it must still arrive (from the backlog
        // too, once the target reads and makes room).
        (Teardown::SourceClosed, Queue::Target | Queue::Backlog) => rig.receive(receiver),
        (Teardown::SourceClosed | Teardown::BothClosed, Queue::Cork) => {}
        // The rest of the cork: the verdict runs on the whole message and finds no target, or
        // (map freed, which leaves the sockets in it) redirects it as before.
        (_, Queue::Cork) => {
            if let Teardown::MapFreed = teardown {
                rig.expect(receiver, &pattern(0, CORK));
            }
            rig.send(Role::A, CORK - CORKED);
        }
        // B's peer sees what B got out, then the end of B's stream.
        (Teardown::TargetClosed | Teardown::BothClosed, _) if !path.is_ingress() => rig.read_to_end(Role::BPeer),
        _ => {}
    }
}

#[rstest]
fn teardown_target_queue(
    #[values(TxToRx, RxToRx, TxToTx, RxToTx)] path: Path,
    #[values(Teardown::TargetClosed, Teardown::TargetRemoved, Teardown::MapFreed, Teardown::SourceClosed, Teardown::BothClosed)]
    teardown: Teardown,
) {
    teardown_case(path, Sockmap, teardown, Queue::Target);
}

#[rstest]
fn teardown_backlog(
    #[values(RxToRx, RxToTx)] path: Path,
    #[values(Teardown::TargetClosed, Teardown::TargetRemoved, Teardown::MapFreed, Teardown::SourceClosed, Teardown::BothClosed)]
    teardown: Teardown,
) {
    teardown_case(path, Sockmap, teardown, Queue::Backlog);
}

#[rstest]
fn teardown_cork(
    #[values(TxToRx, TxToTx)] path: Path,
    #[values(Teardown::TargetClosed, Teardown::TargetRemoved, Teardown::MapFreed, Teardown::SourceClosed, Teardown::BothClosed)]
    teardown: Teardown,
) {
    teardown_case(path, Sockmap, teardown, Queue::Cork);
}

/// sock_hash frees its sockets through its own code (sock_hash_free): the map-freed teardowns once
/// more through it.
#[rstest]
fn teardown_sockhash_freed(#[values(TxToRx, RxToRx, TxToTx, RxToTx)] path: Path) {
    teardown_case(path, Sockhash, Teardown::MapFreed, Queue::Target);
}
