//! UDP over IPv6, vsock SEQPACKET, and MSG_PEEK / FIONREAD on the sk_skb paths of every family that
//! has them (issue 13, family 11; TCP's are in mixed.rs). Runs only inside a lab guest.
//!
//! Names: "<path>_via_sockmap_over_<family>_<what>".

use rstest::rstest;
use testcases::Family::{self, Udp, Udp6, UnixDgram, UnixStream, VsockSeqpacket};
use testcases::MapKind::Sockmap;
use testcases::Path::{self, RxToRx, RxToTx, TxToRx, TxToTx};
use testcases::Payload::{self, OneKib, SixtyFourKib, ThousandSmall};
use testcases::{pattern, run_case, Role, Scenario};

/// The redirect-path matrix's data path (tests/redirect.rs) over UDP on ::1: the UDP code is shared
/// with IPv4, but the socket is an IPv6 one (udpv6_prot, its own bpf proto in udp_bpf.c).
#[rstest]
fn skb_reads_udp6_data_path(
    #[values(RxToRx, RxToTx)] path: Path,
    #[values(OneKib, SixtyFourKib, ThousandSmall)] payload: Payload,
) {
    udp6_data_path(path, payload);
}

/// UDP has no sk_msg hook, over IPv6 as over IPv4: once each that the tx paths stay unsupported.
#[rstest]
fn skb_reads_udp6_tx_paths(#[values(TxToRx, TxToTx)] path: Path) {
    udp6_data_path(path, OneKib);
}

fn udp6_data_path(path: Path, payload: Payload) {
    let scenario = Scenario::new(path, Sockmap, Udp6);
    let messages = payload.messages(Udp6);
    run_case(&scenario.case_name(payload.name()), scenario, scenario.config(), |rig| {
        let total = messages.iter().sum();
        rig.expect(path.receiver(), &pattern(0, total));
        rig.transfer(path.sender(), &messages);
    });
}

/// Messages of a size one vsock packet carries whole, several so that the path repeats.
const SEQPACKETS: [usize; 4] = [1000; 4];

/// AF_VSOCK SOCK_SEQPACKET on every path, A and B both seqpacket: whether the map takes the socket
/// (sock_map_sk_state_allowed() names vsock stream and seqpacket), where a redirect through it goes,
/// and that every socket dies clean. What the kernel refuses is `unsupported` with its answer, as
/// for vsock stream in the matrix (the sk_msg hook is TCP's only; an ingress vsock target is refused).
#[rstest]
fn skb_reads_vsock_seqpacket(#[values(TxToRx, RxToRx, TxToTx, RxToTx)] path: Path) {
    let scenario = Scenario::new(path, Sockmap, VsockSeqpacket);
    run_case(&scenario.case_name("4x1000b"), scenario, scenario.config(), |rig| {
        rig.expect(path.receiver(), &pattern(0, SEQPACKETS.iter().sum()));
        rig.transfer(path.sender(), &SEQPACKETS);
    });
}

/// A seqpacket message larger than one vsock packet (the loopback transport carries at most 64 KiB
/// a packet) reaches the sk_skb verdict packet by packet. On rx_to_tx (the one path the kernel takes)
/// B's peer must still read each message A's peer sent whole: first 1000 bytes, then 96 KiB, one
/// recv each (a recv returns one message; the buffer is larger than either).
#[rstest]
fn skb_reads_vsock_seqpacket_message_boundaries() {
    const SMALL: usize = 1000;
    const LARGE: usize = 96 * 1024;
    let scenario = Scenario::new(RxToTx, Sockmap, VsockSeqpacket);
    run_case(&scenario.case_name("message_boundaries"), scenario, scenario.config(), |rig| {
        rig.expect(Role::BPeer, &pattern(0, SMALL + LARGE));
        rig.send(Role::APeer, SMALL);
        rig.send(Role::APeer, LARGE);
        rig.recv(Role::BPeer, 2 * LARGE);
        rig.recv(Role::BPeer, 2 * LARGE);
    });
}

/// A datagram the sk_skb verdict redirected into B: FIONREAD counts it, a peek returns it without
/// consuming it (twice the same bytes), FIONREAD still counts it, a read takes it, FIONREAD is 0.
/// (vsock is left out: bpf_sk_redirect_map() refuses a vsock target for ingress.)
#[rstest]
fn skb_reads_peek_and_fionread(#[values(Udp, Udp6, UnixStream, UnixDgram)] family: Family) {
    let scenario = Scenario::new(RxToRx, Sockmap, family);
    run_case(&scenario.case_name("msg_peek_and_fionread"), scenario, scenario.config(), |rig| {
        rig.peek_twice_then_read();
    });
}
