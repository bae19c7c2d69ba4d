//! One psock, several programs or maps (issue 13, family 6): a socket in two maps, in two entries
//! of one map, replaced in place by an update; sk_msg and sk_skb programs on one socket; the sk_msg
//! program attached through a bpf_link, updated and detached. Runs only inside a lab guest.
//!
//! A socket has one psock however many map entries hold it (each entry is a link of it and holds a
//! reference), and the psock keeps its own copies of the programs it picked up when it joined
//! (sock_map_link() in net/core/sock_map.c): a second program of a kind the psock already runs is
//! refused with EBUSY, whichever map or entry it comes from.
//!
//! Names: "<path>_via_<map>_over_ipv4_<what>".

use rstest::rstest;
use testcases::Family::Ipv4;
use testcases::Hook::SkbVerdict;
use testcases::MapKind::{self, Sockhash, Sockmap};
use testcases::Path::{self, RxToRx, TxToRx};
use testcases::{run_case, Rig, Role, Scenario, KEY_A, KEY_B};

/// A key nothing else uses: the second entry of a socket that is already in the map.
const KEY_SPARE: u32 = 2;
/// Each step's send: small enough to be one skb and one sk_msg.
const CHUNK: usize = 500;

fn shared_case(scenario: Scenario, what: &str, body: impl FnOnce(&mut Rig<'_>)) {
    run_case(&scenario.case_name(what), scenario, scenario.config(), body);
}

/// `from` sends the next CHUNK of its stream, and `to` must read exactly that, next.
fn one_chunk(rig: &mut Rig<'_>, from: Role, to: Role) {
    rig.next_chunk(from, to, CHUNK);
}

/// Where the data a path's sender sends ends up when the source has no program: its own peer
/// (tx) or the source itself (rx).
fn native_receiver(path: Path) -> Role {
    if path.is_tx() {
        Role::APeer
    } else {
        Role::A
    }
}

/// A is in the sockhash too (no programs there), then leaves the sockmap whose program it runs;
/// the sockhash entry keeps its psock alive. The two paths part here: leaving the map stops the
/// sk_skb verdict and drops it from the psock (sock_map_del_link() -> sk_psock_stop_verdict()), so
/// A keeps what it receives and may rejoin; nothing stops the sk_msg program, which stays with the
/// psock: A's sends are still redirected, and rejoining is EBUSY (the psock has that program)
/// until A has left the sockhash too and its psock is gone.
#[rstest]
fn shared_source_also_in_sockhash(#[values(TxToRx, RxToRx)] path: Path) {
    let scenario = Scenario::new(path, Sockmap, Ipv4);
    shared_case(scenario, "source_also_in_sockhash", |rig| {
        let (sender, receiver, native) = (path.sender(), path.receiver(), native_receiver(path));
        rig.map_insert_into(Sockhash, KEY_A, Role::A);
        one_chunk(rig, sender, receiver);
        rig.map_delete(KEY_A);
        one_chunk(rig, sender, if path.is_tx() { receiver } else { native });
        rig.map_insert(KEY_A, Role::A);
        one_chunk(rig, sender, receiver);
        rig.map_delete_from(Sockhash, KEY_A);
        one_chunk(rig, sender, if path.is_tx() { native } else { receiver });
    });
}

/// A at a second key of its map: its psock already runs the map's programs, so EBUSY. B, in the
/// sockhash, which has none, takes two entries there; deleting one leaves the psock to the other,
/// and the redirect to B goes on.
#[rstest]
fn shared_in_two_entries(#[values(TxToRx, RxToRx)] path: Path) {
    let scenario = Scenario::new(path, Sockmap, Ipv4).with_target_map(Sockhash);
    shared_case(scenario, "in_two_entries", |rig| {
        let (sender, receiver) = (path.sender(), path.receiver());
        rig.map_insert(KEY_SPARE, Role::A);
        rig.map_insert_into(Sockhash, KEY_SPARE, Role::B);
        one_chunk(rig, sender, receiver);
        rig.map_delete_from(Sockhash, KEY_SPARE);
        one_chunk(rig, sender, receiver);
    });
}

/// An update of B's key with B's peer replaces B in place: B leaves (its psock goes), B's peer
/// joins and gets the redirected data; B put back replaces its peer. B at its own key once more is
/// EBUSY: the entry's old link would go only after the new one, and the new one brings a program
/// the psock already has.
#[rstest]
fn shared_target_replaced_in_place(#[values(TxToRx, RxToRx)] path: Path) {
    let scenario = Scenario::new(path, Sockmap, Ipv4);
    shared_case(scenario, "target_replaced_in_place", |rig| {
        let sender = path.sender();
        one_chunk(rig, sender, Role::B);
        rig.map_insert(KEY_B, Role::BPeer);
        one_chunk(rig, sender, Role::BPeer);
        rig.map_insert(KEY_B, Role::B);
        rig.map_insert(KEY_B, Role::B);
        one_chunk(rig, sender, Role::B);
    });
}

/// A runs the sk_msg program for what it sends and the sk_skb verdict for what it receives, both
/// redirecting to B's ingress. From one map: leaving it stops both. From two maps (the verdict
/// from the sockhash, which A is in too): leaving the sockhash stops the verdict only.
#[rstest]
fn shared_msg_and_skb_programs(#[values(Sockmap, Sockhash)] verdict_map: MapKind) {
    let scenario = Scenario::new(TxToRx, Sockmap, Ipv4).with_extra(SkbVerdict, verdict_map);
    let what = format!("with_skb_verdict_from_{}", verdict_map.name());
    shared_case(scenario, &what, |rig| {
        if verdict_map == Sockhash {
            rig.map_insert_into(Sockhash, KEY_A, Role::A);
        }
        one_chunk(rig, Role::A, Role::B);
        one_chunk(rig, Role::APeer, Role::B);
        if verdict_map == Sockhash {
            rig.map_delete_from(Sockhash, KEY_A);
            one_chunk(rig, Role::A, Role::B);
        } else {
            rig.map_delete(KEY_A);
            one_chunk(rig, Role::A, Role::APeer);
        }
        one_chunk(rig, Role::APeer, Role::A);
    });
}

/// The sk_msg program through a bpf_link: BPF_PROG_ATTACH beside it is EBUSY; an update changes
/// what the map hands to sockets that join later (A, already in, keeps the program it has); a
/// detach leaves the map without a program, so A rejoining gets none.
#[rstest]
fn shared_msg_verdict_by_link() {
    let scenario = Scenario::new(TxToRx, Sockmap, Ipv4).by_link();
    shared_case(scenario, "attached_by_link", |rig| {
        rig.pin_verdict_runs();
        one_chunk(rig, Role::A, Role::B);
        rig.prog_attach();
        rig.link_update();
        one_chunk(rig, Role::A, Role::B);
        rig.map_delete(KEY_A);
        rig.map_insert(KEY_A, Role::A);
        one_chunk(rig, Role::A, Role::APeer);
        rig.link_detach();
        rig.map_delete(KEY_A);
        rig.map_insert(KEY_A, Role::A);
        one_chunk(rig, Role::A, Role::APeer);
    });
}
