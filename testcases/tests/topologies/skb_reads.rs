//! UDP over IPv6, and MSG_PEEK / FIONREAD on the sk_skb paths of every family that has them (issue
//! 13, family 11; TCP's are in mixed.rs). Runs only inside a lab guest.
//!
//! Names: "<path>_via_sockmap_over_<family>_<what>".

use rstest::rstest;
use testcases::Family::{self, Udp, Udp6, UnixDgram, UnixStream};
use testcases::MapKind::Sockmap;
use testcases::Path::{self, RxToRx, RxToTx, TxToRx, TxToTx};
use testcases::Payload::{self, OneKib, SixtyFourKib, ThousandSmall};
use testcases::{pattern, run_case, Scenario};

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
