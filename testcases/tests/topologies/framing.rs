//! Stream-parser framing (issue 13, family 5): the parser reads each message's length from a
//! 4-byte header (bpf/sockmap.bpf.c, `framed`), so strparser must hold a partial message (even a
//! partial header) until the rest comes, cut several messages out of one skb, join one message
//! from several skbs, pick up data that was queued on A before A joined the map, and carry
//! messages above 100 KB. Every message must reach the receiver whole, once, in order, and the
//! verdict must run once per message (pinned). Runs only inside a lab guest.
//!
//! Names: "<path>_via_sockmap_strparser_over_ipv4_framed_<what>".

use rstest::rstest;
use testcases::Family::Ipv4;
use testcases::MapKind::Sockmap;
use testcases::Path::{self, RxToRx, RxToTx};
use testcases::{pattern, run_case, Config, Rig, Role, Scenario, KEY_A};

const HEADER: usize = 4;
/// Above 100 KB, below A's default receive buffer (tcp_rmem[1], 128 KiB): strparser refuses a
/// message larger than the socket's sk_rcvbuf (EMSGSIZE).
const LARGE: usize = 110_000;

/// Messages with these body lengths, each its header (the body's length, big endian) and then the
/// next bytes of the pattern, starting at `offset`.
fn framed(offset: usize, bodies: &[usize]) -> Vec<u8> {
    let mut stream = Vec::new();
    let mut at = offset;
    for &body in bodies {
        stream.extend((body as u32).to_be_bytes());
        stream.extend(pattern(at, body));
        at += body;
    }
    stream
}

fn framing_case(path: Path, what: &str, body: impl FnOnce(&mut Rig<'_>)) {
    let scenario = Scenario::new(path, Sockmap, Ipv4).with_strparser();
    let config = Config { framed: 1, ..scenario.config() };
    run_case(&scenario.case_name(&format!("framed_{what}")), scenario, config, |rig| {
        rig.pin_verdict_runs();
        body(rig);
    });
}

/// A's peer sends `stream` cut at `cuts` (one send per piece); the receiver must read all of it.
fn send_in_pieces(rig: &mut Rig<'_>, stream: &[u8], cuts: &[usize]) {
    let path = rig.scenario().path;
    rig.expect(path.receiver(), stream);
    let mut start = 0;
    for &end in cuts.iter().chain([&stream.len()]) {
        rig.send_bytes(Role::APeer, &stream[start..end]);
        start = end;
    }
    rig.receive(path.receiver());
}

/// Half a header, then the rest of the header and half the body, then the rest: after each of the
/// first two sends B has nothing to read (the message is not whole yet), then the whole message.
#[rstest]
fn framing_partial_message() {
    framing_case(RxToRx, "partial_message", |rig| {
        let stream = framed(0, &[1000]);
        rig.expect(Role::B, &stream);
        for piece in [&stream[..2], &stream[2..HEADER + 500]] {
            rig.send_bytes(Role::APeer, piece);
            rig.readiness(Role::B);
            rig.fionread(Role::B);
        }
        rig.send_bytes(Role::APeer, &stream[HEADER + 500..]);
        rig.receive(Role::B);
    });
}

/// Three messages of different lengths in one send (one skb on loopback): strparser cuts each out
/// of the same skb, at an offset into it. 6.12 and 7.3 run the parser on the skb from its start,
/// so it reads the first header for every message (finding
/// sk-skb-stream-parser-cannot-find-the-message).
#[rstest]
fn framing_several_messages_in_one_skb() {
    framing_case(RxToRx, "three_messages_in_one_skb", |rig| {
        send_in_pieces(rig, &framed(0, &[100, 300, 50]), &[]);
    });
}

/// One message of 20000 bytes in five sends, the first cutting its header in two.
#[rstest]
fn framing_message_across_skbs() {
    framing_case(RxToRx, "one_message_across_five_skbs", |rig| {
        send_in_pieces(rig, &framed(0, &[20_000]), &[3, 4000, 8000, 12_000]);
    });
}

/// Two messages reach A while it is out of the map (they wait in its receive queue), then A joins
/// and two more come: strparser reads the socket from the start of its queue, so all four reach
/// B, in order. All four are of one length: TCP coalesces queued skbs, and messages that share an
/// skb are the three-messages case's finding, not this case's.
#[rstest]
fn framing_data_queued_before_insert() {
    framing_case(RxToRx, "data_queued_before_insert", |rig| {
        let early = framed(0, &[250, 250]);
        let late = framed(500, &[250, 250]);
        rig.map_delete(KEY_A);
        rig.send_bytes(Role::APeer, &early);
        rig.map_insert(KEY_A, Role::A);
        rig.expect(Role::B, &early);
        send_in_pieces(rig, &late, &[]);
    });
}

/// A message above 100 KB in one send: TCP hands it to A in several skbs (64 KiB at most each on
/// loopback), strparser joins them into one.
#[rstest]
fn framing_message_above_100kb(#[values(RxToRx, RxToTx)] path: Path) {
    framing_case(path, "message_of_110000_bytes", |rig| {
        send_in_pieces(rig, &framed(0, &[LARGE]), &[]);
    });
}
