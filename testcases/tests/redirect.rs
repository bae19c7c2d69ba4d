//! The sockmap redirect-path suite. Runs only inside a lab guest (`lab test`): every case panics on a
//! host. Each case is named "<path>_via_<map>_over_<family>_<what>" and compared with the snapshot of
//! that name in the top-level snapshots/ folder.
//!
//! Paths: tx_to_rx (sk_msg, BPF_F_INGRESS), rx_to_rx (sk_skb, BPF_F_INGRESS), tx_to_tx (sk_msg to
//! egress), rx_to_tx (sk_skb to egress). A and B sit in the map; A's traffic is redirected to B.

use rstest::rstest;
use testcases::Family::{Ipv4, Ipv6, Udp, UnixDgram, UnixStream, Vsock};
use testcases::MapKind::{Sockhash, Sockmap};
use testcases::Path::{RxToRx, RxToTx, TxToRx, TxToTx};
use testcases::Payload::{OneByte, OneKib, OneMib, SixtyFourKib, ThousandSmall};
use testcases::{
    pattern, run_case, Action, Config, Family, MapKind, Path, Payload, Rig, Role, Scenario, KEY_A, KEY_B, PUSH_FILL,
};

/// Every payload reaches the redirect target whole and in order, and no other socket sees a byte.
fn data_path(scenario: Scenario, payload: Payload) {
    let messages = payload.messages(scenario.family);
    run_case(&scenario.case_name(payload.name()), scenario, scenario.config(), |rig| {
        let total = messages.iter().sum();
        rig.expect(scenario.path.receiver(), &pattern(0, total));
        rig.transfer(scenario.path.sender(), &messages);
    });
}

#[rstest]
fn tx_to_rx(
    #[values(Sockmap, Sockhash)] map: MapKind,
    #[values(Ipv4, Ipv6, Udp, UnixStream, UnixDgram, Vsock)] family: Family,
    #[values(OneByte, OneKib, SixtyFourKib, OneMib, ThousandSmall)] payload: Payload,
) {
    data_path(Scenario::new(TxToRx, map, family), payload);
}

#[rstest]
fn rx_to_rx(
    #[values(Sockmap, Sockhash)] map: MapKind,
    #[values(Ipv4, Ipv6, Udp, UnixStream, UnixDgram, Vsock)] family: Family,
    #[values(OneByte, OneKib, SixtyFourKib, OneMib, ThousandSmall)] payload: Payload,
) {
    data_path(Scenario::new(RxToRx, map, family), payload);
}

#[rstest]
fn tx_to_tx(
    #[values(Sockmap, Sockhash)] map: MapKind,
    #[values(Ipv4, Ipv6, Udp, UnixStream, UnixDgram, Vsock)] family: Family,
    #[values(OneByte, OneKib, SixtyFourKib, OneMib, ThousandSmall)] payload: Payload,
) {
    data_path(Scenario::new(TxToTx, map, family), payload);
}

#[rstest]
fn rx_to_tx(
    #[values(Sockmap, Sockhash)] map: MapKind,
    #[values(Ipv4, Ipv6, Udp, UnixStream, UnixDgram, Vsock)] family: Family,
    #[values(OneByte, OneKib, SixtyFourKib, OneMib, ThousandSmall)] payload: Payload,
) {
    data_path(Scenario::new(RxToTx, map, family), payload);
}

/// The rx paths again with the classic stream parser + stream verdict pair, which only TCP has.
#[rstest]
fn rx_to_rx_strparser(
    #[values(Sockmap, Sockhash)] map: MapKind,
    #[values(Ipv4, Ipv6)] family: Family,
    #[values(OneByte, OneKib, SixtyFourKib, OneMib, ThousandSmall)] payload: Payload,
) {
    data_path(Scenario::new(RxToRx, map, family).with_strparser(), payload);
}

#[rstest]
fn rx_to_tx_strparser(
    #[values(Sockmap, Sockhash)] map: MapKind,
    #[values(Ipv4, Ipv6)] family: Family,
    #[values(OneByte, OneKib, SixtyFourKib, OneMib, ThousandSmall)] payload: Payload,
) {
    data_path(Scenario::new(RxToTx, map, family).with_strparser(), payload);
}

/// What an sk_msg program can do besides a plain redirect, each checked on one 1 KiB send (a single
/// sk_msg, so the program's run count is exact) unless noted.
#[derive(Clone, Copy, Debug)]
enum MsgVerdict {
    /// SK_PASS: the data goes out of A as if there were no program.
    Pass,
    /// SK_DROP: the send fails with EACCES and nothing moves.
    Drop,
    /// apply_bytes 100 with a verdict alternating between B and A itself per run: proves each 100-byte
    /// slice got its own verdict.
    ApplyBytes,
    /// cork_bytes 256 on 16-byte sends: nothing moves until 256 bytes are queued.
    CorkBytes,
    /// Pull bytes 10..20 into the linear window: the program sees exactly that window.
    Pull,
    /// Push 4 bytes at offset 10, filled by the program.
    Push,
    /// Pop 4 bytes at offset 10.
    Pop,
}

const MSG_LEN: usize = 1024;
const APPLY: usize = 100;
const CORK: usize = 256;
const SMALL: usize = 16;
const EDIT_AT: usize = 10;
const EDIT_LEN: usize = 4;

impl MsgVerdict {
    fn name(self) -> &'static str {
        match self {
            Self::Pass => "pass",
            Self::Drop => "drop",
            Self::ApplyBytes => "apply_bytes",
            Self::CorkBytes => "cork_bytes",
            Self::Pull => "pull_data",
            Self::Push => "push_data",
            Self::Pop => "pop_data",
        }
    }

    fn config(self, base: Config) -> Config {
        match self {
            Self::Pass => Config { action: Action::Pass as u32, ..base },
            Self::Drop => Config { action: Action::Drop as u32, ..base },
            Self::ApplyBytes => {
                Config { action: Action::Alternate as u32, alt_key: KEY_A, apply_bytes: APPLY as u32, ..base }
            }
            Self::CorkBytes => Config { cork_bytes: CORK as u32, ..base },
            Self::Pull => Config { pull_start: EDIT_AT as u32, pull_end: (EDIT_AT + 10) as u32, ..base },
            Self::Push => Config { push_start: EDIT_AT as u32, push_len: EDIT_LEN as u32, ..base },
            Self::Pop => Config { pop_start: EDIT_AT as u32, pop_len: EDIT_LEN as u32, ..base },
        }
    }

    fn run(self, rig: &mut Rig<'_>) {
        let receiver = rig.scenario().path.receiver();
        let sent = pattern(0, MSG_LEN);
        rig.pin_verdict_runs();
        match self {
            Self::Pass => rig.expect(Role::APeer, &sent),
            Self::Drop => {}
            Self::ApplyBytes => {
                // Redirected to A itself, a slice lands where A's own redirected data would.
                let to_a = if receiver == Role::B { Role::A } else { Role::APeer };
                for (index, slice) in sent.chunks(APPLY).enumerate() {
                    rig.expect(if index % 2 == 0 { receiver } else { to_a }, slice);
                }
            }
            Self::CorkBytes => return cork(rig, receiver),
            Self::Pull => rig.expect(receiver, &sent),
            Self::Push => {
                let mut edited = sent[..EDIT_AT].to_vec();
                edited.extend([PUSH_FILL; EDIT_LEN]);
                edited.extend(&sent[EDIT_AT..]);
                rig.expect(receiver, &edited);
            }
            Self::Pop => {
                let mut edited = sent[..EDIT_AT].to_vec();
                edited.extend(&sent[EDIT_AT + EDIT_LEN..]);
                rig.expect(receiver, &edited);
            }
        }
        rig.transfer(Role::A, &[MSG_LEN]);
    }
}

/// One byte short of the cork, the receiver must see nothing; at the cork, all of it at once.
fn cork(rig: &mut Rig<'_>, receiver: Role) {
    let sends = 2 * CORK / SMALL;
    rig.expect(receiver, &pattern(0, sends * SMALL));
    for _ in 0..CORK / SMALL - 1 {
        rig.send(Role::A, SMALL);
    }
    rig.readiness(receiver);
    rig.send(Role::A, SMALL);
    rig.wait_readable(receiver);
    rig.fionread(receiver);
    for _ in 0..CORK / SMALL {
        rig.send(Role::A, SMALL);
    }
    rig.receive(receiver);
}

fn msg_verdict_case(scenario: Scenario, verdict: MsgVerdict) {
    let config = verdict.config(scenario.config());
    run_case(&scenario.case_name(verdict.name()), scenario, config, |rig| verdict.run(rig));
}

#[rstest]
fn tx_to_rx_verdict(
    #[values(Sockmap, Sockhash)] map: MapKind,
    #[values(Ipv4, Ipv6)] family: Family,
    #[values(
        MsgVerdict::Pass,
        MsgVerdict::Drop,
        MsgVerdict::ApplyBytes,
        MsgVerdict::CorkBytes,
        MsgVerdict::Pull,
        MsgVerdict::Push,
        MsgVerdict::Pop
    )]
    verdict: MsgVerdict,
) {
    msg_verdict_case(Scenario::new(TxToRx, map, family), verdict);
}

#[rstest]
fn tx_to_tx_verdict(
    #[values(Sockmap, Sockhash)] map: MapKind,
    #[values(Ipv4, Ipv6)] family: Family,
    #[values(
        MsgVerdict::Pass,
        MsgVerdict::Drop,
        MsgVerdict::ApplyBytes,
        MsgVerdict::CorkBytes,
        MsgVerdict::Pull,
        MsgVerdict::Push,
        MsgVerdict::Pop
    )]
    verdict: MsgVerdict,
) {
    msg_verdict_case(Scenario::new(TxToTx, map, family), verdict);
}

/// sk_skb pass hands the data to A as if there were no program; drop loses it after TCP acked it.
fn skb_verdict_case(scenario: Scenario, action: Action) {
    let name = scenario.case_name(if action == Action::Pass { "pass" } else { "drop" });
    run_case(&name, scenario, Config { action: action as u32, ..scenario.config() }, |rig| {
        if action == Action::Pass {
            rig.expect(Role::A, &pattern(0, MSG_LEN));
        }
        rig.transfer(Role::APeer, &[MSG_LEN]);
    });
}

#[rstest]
fn rx_to_rx_verdict(#[values(Sockmap, Sockhash)] map: MapKind, #[values(Action::Pass, Action::Drop)] action: Action) {
    skb_verdict_case(Scenario::new(RxToRx, map, Ipv4), action);
}

#[rstest]
fn rx_to_tx_verdict(#[values(Sockmap, Sockhash)] map: MapKind, #[values(Action::Pass, Action::Drop)] action: Action) {
    skb_verdict_case(Scenario::new(RxToTx, map, Ipv4), action);
}

/// Lifecycle cases run over TCP/IPv4, through both maps.
fn lifecycle(path: Path, map: MapKind, what: &str, body: impl FnOnce(&mut Rig<'_>)) {
    lifecycle_with(path, map, what, |config| config, body);
}

fn lifecycle_with(
    path: Path,
    map: MapKind,
    what: &str,
    config: impl FnOnce(Config) -> Config,
    body: impl FnOnce(&mut Rig<'_>),
) {
    let scenario = Scenario::new(path, map, Ipv4);
    run_case(&scenario.case_name(what), scenario, config(scenario.config()), body);
}

/// Redirected data already in B's queue is still read in full, then the end of stream.
#[rstest]
fn tx_to_rx_when_peer_closes_with_data_queued(#[values(Sockmap, Sockhash)] map: MapKind) {
    lifecycle(TxToRx, map, "when_peer_closes_with_data_queued", |rig| {
        rig.expect(Role::B, &pattern(0, 4096));
        rig.send(Role::A, 4096);
        rig.close(Role::BPeer);
        rig.wait_readable(Role::B);
        rig.receive(Role::B);
        rig.recv(Role::B, 100);
    });
}

/// Data sent just before the sender closes is redirected whole and A sees the end of stream. B's peer
/// is still open, so B must not: an end of stream on B would be A's FIN carried over by the redirect,
/// telling B's reader that a connection which is still open closed. The last recv waits up to the
/// stall limit for anything at all to show up on B and finds nothing (EAGAIN). Kernels up to 7.3.4
/// hand the FIN over: known finding rx-redirect-carries-fin (snapshots/FINDINGS.toml).
#[rstest]
fn rx_to_rx_when_sender_closes_with_data_in_flight(#[values(Sockmap, Sockhash)] map: MapKind) {
    lifecycle(RxToRx, map, "when_sender_closes_with_data_in_flight", |rig| {
        rig.expect(Role::B, &pattern(0, 4096));
        rig.send(Role::APeer, 4096);
        rig.close(Role::APeer);
        rig.receive(Role::B);
        rig.recv(Role::A, 100);
        rig.recv(Role::B, 100);
    });
}

/// B's own connection is untouched by A's end of stream: once B leaves the map it is a plain TCP
/// socket again, and what B's peer sends then arrives whole. (A FIN carried over by the redirect
/// advances B's copied_seq past anything B's connection delivered: then the first byte of B's
/// peer's data would be skipped.)
#[rstest]
fn rx_to_rx_when_sender_closes_then_target_leaves_the_map(#[values(Sockmap, Sockhash)] map: MapKind) {
    lifecycle(RxToRx, map, "when_sender_closes_then_target_leaves_the_map", |rig| {
        rig.expect(Role::B, &pattern(0, 4096));
        rig.send(Role::APeer, 4096);
        rig.close(Role::APeer);
        rig.receive(Role::B);
        rig.recv(Role::B, 100);
        rig.map_delete(KEY_B);
        rig.expect(Role::B, &pattern(0, 100));
        rig.send(Role::BPeer, 100);
        rig.recv(Role::B, 200);
    });
}

/// Once A leaves the map its traffic takes the normal path again: A's sends go to A's peer, what A
/// receives stays with A.
fn source_removed_mid_stream(path: Path, map: MapKind) {
    lifecycle(path, map, "when_source_removed_mid_stream", |rig| {
        let unredirected = if path.is_tx() { Role::APeer } else { Role::A };
        rig.expect(path.receiver(), &pattern(0, 1024));
        rig.expect(unredirected, &pattern(1024, 1024));
        rig.send(path.sender(), 1024);
        rig.receive(path.receiver());
        rig.map_delete(KEY_A);
        rig.send(path.sender(), 1024);
        rig.receive(unredirected);
    });
}

#[rstest]
fn tx_to_rx_when_source_removed_mid_stream(#[values(Sockmap, Sockhash)] map: MapKind) {
    source_removed_mid_stream(TxToRx, map);
}

#[rstest]
fn rx_to_rx_when_source_removed_mid_stream(#[values(Sockmap, Sockhash)] map: MapKind) {
    source_removed_mid_stream(RxToRx, map);
}

#[rstest]
fn tx_to_tx_when_source_removed_mid_stream(#[values(Sockmap, Sockhash)] map: MapKind) {
    source_removed_mid_stream(TxToTx, map);
}

#[rstest]
fn rx_to_tx_when_source_removed_mid_stream(#[values(Sockmap, Sockhash)] map: MapKind) {
    source_removed_mid_stream(RxToTx, map);
}

/// Once B leaves the map the redirect has no target: the send fails and nothing moves.
#[rstest]
fn tx_to_rx_when_target_removed_mid_stream(#[values(Sockmap, Sockhash)] map: MapKind) {
    lifecycle(TxToRx, map, "when_target_removed_mid_stream", |rig| {
        rig.pin_verdict_runs();
        rig.redirect_may_miss();
        rig.expect(Role::B, &pattern(0, 1024));
        rig.send(Role::A, 1024);
        rig.receive(Role::B);
        rig.map_delete(KEY_B);
        rig.send(Role::A, 1024);
        rig.readiness(Role::B);
        rig.readiness(Role::APeer);
    });
}

const EMPTY_KEY: u32 = 5;

/// The redirect helper misses: on the tx paths the send fails; on the rx paths the data, which TCP
/// has already acked, is lost.
fn target_not_in_map(path: Path, map: MapKind) {
    let empty_target = |config| Config { target_key: EMPTY_KEY, ..config };
    lifecycle_with(path, map, "when_target_not_in_map", empty_target, |rig| {
        rig.redirect_may_miss();
        if path.is_tx() {
            rig.pin_verdict_runs();
        }
        rig.transfer(path.sender(), &[1024]);
    });
}

#[rstest]
fn tx_to_rx_when_target_not_in_map(#[values(Sockmap, Sockhash)] map: MapKind) {
    target_not_in_map(TxToRx, map);
}

#[rstest]
fn rx_to_rx_when_target_not_in_map(#[values(Sockmap, Sockhash)] map: MapKind) {
    target_not_in_map(RxToRx, map);
}

#[rstest]
fn tx_to_tx_when_target_not_in_map(#[values(Sockmap, Sockhash)] map: MapKind) {
    target_not_in_map(TxToTx, map);
}

#[rstest]
fn rx_to_tx_when_target_not_in_map(#[values(Sockmap, Sockhash)] map: MapKind) {
    target_not_in_map(RxToTx, map);
}

/// MSG_PEEK on redirected data returns it without consuming it.
#[rstest]
fn tx_to_rx_msg_peek(#[values(Sockmap, Sockhash)] map: MapKind) {
    lifecycle(TxToRx, map, "msg_peek", |rig| {
        rig.expect(Role::B, &pattern(0, 1024));
        rig.send(Role::A, 1024);
        rig.wait_readable(Role::B);
        rig.recv_now(Role::B, 100, libc::MSG_PEEK);
        rig.recv_now(Role::B, 100, libc::MSG_PEEK);
        rig.recv_now(Role::B, 2048, 0);
        rig.recv_now(Role::B, 100, 0);
    });
}

/// Reads that cut across the boundaries of the redirected messages lose and repeat nothing.
#[rstest]
fn tx_to_rx_partial_reads(#[values(Sockmap, Sockhash)] map: MapKind) {
    lifecycle(TxToRx, map, "partial_reads", |rig| {
        rig.expect(Role::B, &pattern(0, 600));
        rig.send(Role::A, 100);
        rig.send(Role::A, 200);
        rig.send(Role::A, 300);
        rig.recv(Role::B, 150);
        rig.recv(Role::B, 7);
        rig.recv(Role::B, 1000);
        rig.recv_now(Role::B, 1, 0);
    });
}

/// FIONREAD counts redirected bytes waiting in B's queue.
#[rstest]
fn tx_to_rx_fionread(#[values(Sockmap, Sockhash)] map: MapKind) {
    lifecycle(TxToRx, map, "fionread", |rig| {
        rig.expect(Role::B, &pattern(0, 600));
        rig.send(Role::A, 100);
        rig.send(Role::A, 200);
        rig.send(Role::A, 300);
        rig.fionread(Role::B);
        rig.recv(Role::B, 50);
        rig.fionread(Role::B);
        rig.fionread(Role::APeer);
        rig.recv(Role::B, 1000);
        rig.fionread(Role::B);
    });
}

#[rstest]
fn rx_to_rx_fionread(#[values(Sockmap, Sockhash)] map: MapKind) {
    lifecycle(RxToRx, map, "fionread", |rig| {
        rig.expect(Role::B, &pattern(0, 600));
        rig.send(Role::APeer, 600);
        rig.wait_readable(Role::B);
        rig.fionread(Role::B);
        rig.fionread(Role::A);
        rig.recv(Role::B, 50);
        rig.fionread(Role::B);
        rig.recv(Role::B, 1000);
    });
}

/// poll and epoll report B readable exactly while redirected data waits there, and never A's peer.
#[rstest]
fn tx_to_rx_poll_readiness(#[values(Sockmap, Sockhash)] map: MapKind) {
    lifecycle(TxToRx, map, "poll_readiness", |rig| {
        rig.expect(Role::B, &pattern(0, 1024));
        rig.readiness(Role::B);
        rig.epoll(Role::B);
        rig.send(Role::A, 1024);
        rig.readiness(Role::B);
        rig.epoll(Role::B);
        rig.readiness(Role::APeer);
        rig.recv(Role::B, 2048);
        rig.readiness(Role::B);
        rig.epoll(Role::B);
    });
}

/// The rx path fills B from a worker, so B becomes readable later, but still only B does.
#[rstest]
fn rx_to_rx_poll_readiness(#[values(Sockmap, Sockhash)] map: MapKind) {
    lifecycle(RxToRx, map, "poll_readiness", |rig| {
        rig.expect(Role::B, &pattern(0, 1024));
        rig.readiness(Role::B);
        rig.send(Role::APeer, 1024);
        rig.wait_readable(Role::B);
        rig.epoll(Role::B);
        rig.readiness(Role::A);
        rig.recv(Role::B, 2048);
        rig.readiness(Role::B);
    });
}

/// A reader already asleep in recv() on B is woken by one small redirected message, twice (an
/// ingress path that batches may skip the wake-up for a queue that holds data, never for an empty
/// one). Polling cases cannot see a missed wake-up: poll's own timeout hides it.
#[rstest]
fn tx_to_rx_wakes_a_sleeping_reader(#[values(Sockmap, Sockhash)] map: MapKind) {
    wakes_a_sleeping_reader(TxToRx, map, Role::A);
}

/// The same through the backlog worker: it must wake B's sleeping reader.
#[rstest]
fn rx_to_rx_wakes_a_sleeping_reader(#[values(Sockmap, Sockhash)] map: MapKind) {
    wakes_a_sleeping_reader(RxToRx, map, Role::APeer);
}

fn wakes_a_sleeping_reader(path: Path, map: MapKind, sender: Role) {
    lifecycle(path, map, "wakes_a_sleeping_reader", |rig| {
        rig.expect(Role::B, &pattern(0, 17));
        rig.recv_while_asleep(Role::B, 100, sender, 1);
        rig.recv_while_asleep(Role::B, 100, sender, 16);
    });
}

/// A non-blocking read of B says EAGAIN before and after the redirected data, never blocks.
#[rstest]
fn tx_to_rx_nonblocking_eagain(#[values(Sockmap, Sockhash)] map: MapKind) {
    lifecycle(TxToRx, map, "nonblocking_eagain", |rig| {
        rig.expect(Role::B, &pattern(0, 1024));
        rig.recv_now(Role::B, 100, 0);
        rig.send(Role::A, 1024);
        rig.recv_now(Role::B, 2048, 0);
        rig.recv_now(Role::B, 100, 0);
    });
}

/// After A shuts down writing its sends fail with EPIPE, as without a program (tcp_sendmsg_locked);
/// what was redirected before stays with B. Kernels up to 7.3.4 redirect the later send too: known
/// finding tcp-bpf-sendmsg-after-shut-wr (snapshots/FINDINGS.toml).
#[rstest]
fn tx_to_rx_when_sender_shuts_down_writing(#[values(Sockmap, Sockhash)] map: MapKind) {
    lifecycle(TxToRx, map, "when_sender_shuts_down_writing", |rig| {
        rig.expect(Role::B, &pattern(0, 1024));
        rig.send(Role::A, 1024);
        rig.shutdown(Role::A, libc::SHUT_WR);
        rig.send(Role::A, 1024);
        rig.recv(Role::B, 2048);
        rig.recv(Role::APeer, 100);
    });
}

/// A target that shut down writing cannot carry redirected data out: its peer sees only the end of
/// stream.
#[rstest]
fn tx_to_tx_when_target_shuts_down_writing(#[values(Sockmap, Sockhash)] map: MapKind) {
    lifecycle(TxToTx, map, "when_target_shuts_down_writing", |rig| {
        rig.shutdown(Role::B, libc::SHUT_WR);
        rig.send(Role::A, 1024);
        rig.recv(Role::BPeer, 2048);
    });
}

/// On the rx path the send out of B happens later, in a worker; its failure is reported on B as a
/// socket error, which the case waits for (bounded) before reading it.
#[rstest]
fn rx_to_tx_when_target_shuts_down_writing(#[values(Sockmap, Sockhash)] map: MapKind) {
    lifecycle(RxToTx, map, "when_target_shuts_down_writing", |rig| {
        rig.shutdown(Role::B, libc::SHUT_WR);
        rig.send(Role::APeer, 1024);
        rig.recv(Role::BPeer, 2048);
        rig.wait_readable(Role::B);
        rig.recv_now(Role::B, 100, 0);
    });
}
