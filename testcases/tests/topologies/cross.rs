//! Redirects across socket families and across maps (issue 13, family 2). Runs only inside a lab
//! guest.
//!
//! Across families, A (the source) and B (the target) are of different families, both in the
//! sockmap; whatever the kernel refuses shows in the snapshot as `unsupported` with the step and
//! the answer (the map update's errno, a verdict program the family never runs, or a redirect
//! helper that will not take the target), never as a pass. Across maps, A is in the map the path's
//! programs are attached to and B only in the other one, which has no programs: the redirect
//! helper looks B up there, and B's psock runs nothing of its own.
//!
//! What 6.12 and 7.3 refuse, by design (net/core/sock_map.c): the sk_msg hook exists for TCP only
//! (UDP, unix and vsock sources never run the program); bpf_msg_redirect_map() takes an egress
//! target only if it is TCP, and a vsock target never; bpf_sk_redirect_map() takes a vsock target
//! for egress only.
//!
//! Names: "<path>_via_<map>_over_<source family>_to_<target family or target map>".

use rstest::rstest;
use testcases::Family::{self, Ipv4, Udp, UnixStream, Vsock, VsockSeqpacket};
use testcases::MapKind::{self, Sockhash, Sockmap};
use testcases::Path::{self, RxToRx, RxToTx, TxToRx, TxToTx};
use testcases::{pattern, run_case, Scenario};

/// Sends of a size every family takes in one datagram, several so that the path repeats.
const MESSAGES: [usize; 4] = [1000; 4];

/// The sender's messages reach the path's receiver whole and in order, and nobody else a byte.
fn cross_case(scenario: Scenario, what: &str) {
    run_case(&scenario.case_name(what), scenario, scenario.config(), |rig| {
        let total = MESSAGES.iter().sum();
        rig.expect(scenario.path.receiver(), &pattern(0, total));
        rig.transfer(scenario.path.sender(), &MESSAGES);
    });
}

/// TCP to every other family (TCP->UDP/unix/vsock ingress, egress across families), and every
/// other family to TCP. vsock SEQPACKET as well as stream: TCP's bytes sent out of a SEQPACKET B
/// become messages at B's peer, which reads them in order like any other target.
#[rstest]
fn cross_family(
    #[values(TxToRx, RxToRx, TxToTx, RxToTx)] path: Path,
    #[values(
        (Ipv4, Udp),
        (Ipv4, UnixStream),
        (Ipv4, Vsock),
        (Ipv4, VsockSeqpacket),
        (Udp, Ipv4),
        (UnixStream, Ipv4),
        (Vsock, Ipv4),
        (VsockSeqpacket, Ipv4)
    )]
    families: (
        Family,
        Family,
    ),
) {
    let (source, target) = families;
    let scenario = Scenario::new(path, Sockmap, source).with_target_family(target);
    cross_case(scenario, &format!("to_{}", target.name()));
}

/// Source and target in different maps, the target's without programs.
#[rstest]
fn cross_map(#[values(TxToRx, RxToRx, TxToTx, RxToTx)] path: Path, #[values(Sockmap, Sockhash)] map: MapKind) {
    let other = if map == Sockmap { Sockhash } else { Sockmap };
    let scenario = Scenario::new(path, map, Ipv4).with_target_map(other);
    cross_case(scenario, &format!("to_target_in_{}", other.name()));
}
