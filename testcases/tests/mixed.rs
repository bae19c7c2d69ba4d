//! One receiver, two sources; a target reused after it left the map; MSG_PEEK and FIONREAD on the
//! sk_skb paths (issue 13, families 3 and 11). Runs only inside a lab guest.
//!
//! Names: "<path>_via_sockmap[_strparser]_over_ipv4_<what>".

use rstest::rstest;
use testcases::Family::Ipv4;
use testcases::MapKind::Sockmap;
use testcases::Path::{RxToRx, TxToRx};
use testcases::{pattern, run_case, Rig, Role, Scenario, KEY_B};

/// Where A's stream starts, so that B can tell A's bytes from its peer's (which start at 0).
const A_OFFSET: usize = 100_000;

fn mixed_case(scenario: Scenario, what: &str, body: impl FnOnce(&mut Rig<'_>)) {
    run_case(&scenario.case_name(what), scenario, scenario.config(), body);
}

/// B's peer sends natively, then A's redirected bytes land on B: FIONREAD counts both queues, and
/// B reads the redirected bytes first (tcp_bpf_recvmsg() serves the psock queue before the
/// socket's own), each source whole and in order.
#[rstest]
fn mixed_native_and_redirected_to_one_receiver() {
    mixed_case(Scenario::new(TxToRx, Sockmap, Ipv4), "native_and_redirected_to_one_receiver", |rig| {
        rig.next_offset(Role::A, A_OFFSET);
        rig.expect(Role::B, &pattern(A_OFFSET, 200));
        rig.expect(Role::B, &pattern(0, 100));
        rig.send(Role::BPeer, 100);
        rig.send(Role::A, 200);
        rig.wait_readable(Role::B);
        rig.fionread(Role::B);
        rig.recv(Role::B, 1000);
        rig.fionread(Role::B);
        rig.recv(Role::B, 1000);
        rig.recv_now(Role::B, 1000, 0);
    });
}

/// B reads part of the redirected data, leaves the map (the rest goes with its psock), reads its
/// own peer's data at the right sequence, joins again and gets redirected data again.
fn target_reused(scenario: Scenario) {
    mixed_case(scenario, "target_reused_after_map_delete", |rig| {
        let sender = scenario.path.sender();
        rig.expect(Role::B, &pattern(0, 500));
        rig.send(sender, 1000);
        rig.recv(Role::B, 500);
        rig.map_delete(KEY_B);
        rig.recv_now(Role::B, 1000, 0);
        // B's peer starts at the same offset as the sender's stream: mark it apart.
        rig.next_offset(Role::BPeer, A_OFFSET);
        rig.expect(Role::B, &pattern(A_OFFSET, 100));
        rig.send(Role::BPeer, 100);
        rig.recv(Role::B, 1000);
        rig.map_insert(KEY_B, Role::B);
        rig.expect(Role::B, &pattern(1000, 300));
        rig.send(sender, 300);
        rig.recv(Role::B, 1000);
    });
}

#[rstest]
fn mixed_target_reused_after_map_delete() {
    target_reused(Scenario::new(TxToRx, Sockmap, Ipv4));
}

#[rstest]
fn mixed_rx_target_reused_after_map_delete(#[values(false, true)] strparser: bool) {
    let scenario = Scenario::new(RxToRx, Sockmap, Ipv4);
    target_reused(if strparser { scenario.with_strparser() } else { scenario });
}

/// MSG_PEEK and FIONREAD on data an sk_skb program redirected: a peek returns without consuming,
/// FIONREAD counts what is queued, then a read takes it all.
#[rstest]
fn mixed_skb_peek_and_fionread(#[values(false, true)] strparser: bool) {
    let scenario = Scenario::new(RxToRx, Sockmap, Ipv4);
    let scenario = if strparser { scenario.with_strparser() } else { scenario };
    mixed_case(scenario, "msg_peek_and_fionread", |rig| {
        rig.peek_twice_then_read();
    });
}
