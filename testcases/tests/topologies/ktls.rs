//! kTLS with sockmap (issue 13, family 8): sockets with the TLS ULP (TCP_ULP "tls") and TLS 1.2
//! AES-GCM-128 keys (SOL_TLS TLS_TX / TLS_RX), set before or after the socket joins the map, with
//! the sk_msg verdict and its cork, apply, push and pop helpers on a TLS_TX socket (test_sockmap's
//! `--ktls` runs), the sk_skb verdict on a TLS_RX socket, the kernel's answers to a map update of a
//! socket with the ULP and to keys on a socket in a map (prog_tests/sockmap_ktls.c), and teardown
//! with data held on such a socket.
//!
//! Kernels that support the combination redirect the plaintext: the sk_msg verdict runs on what the
//! application wrote before tls_sw encrypts it, and on the receive side on the decrypted record; a
//! receiver outside the map with keys of its own decrypts what its TLS peer sent. Since the 2026
//! fix that made TLS and sockmap mutually exclusive (tls_main.c: keys on a socket with a psock are
//! EINVAL; sk_psock_init() refuses a socket with any ULP, since 2020), the data-path cases end
//! unsupported at the refused step. The ULP alone (no keys) is allowed on a socket in a map: it
//! wraps the sockmap proto, and the data path must work through it.
//!
//! Names: "<path>_via_<map>_over_ipv4_ktls_<what>".

use rstest::rstest;
use testcases::MapKind::{self, Sockhash, Sockmap};
use testcases::Path::{self, RxToRx, TxToRx, TxToTx};
use testcases::{pattern, run_case, Config, Family, Rig, Role, Scenario, TlsDir, KEY_A, PUSH_FILL};

/// One TLS record's worth of plaintext at most (16 KiB): what the data-path cases send.
const LEN: usize = 8 * 1024;
const CHUNK: usize = 1024;

fn ktls_case(scenario: Scenario, what: &str, config: impl FnOnce(Config) -> Config, body: impl FnOnce(&mut Rig<'_>)) {
    let name = scenario.case_name(&format!("ktls_{what}"));
    run_case(&name, scenario, config(scenario.config()), body);
}

fn over(path: Path) -> Scenario {
    Scenario::new(path, Sockmap, Family::Ipv4)
}

/// A, already in the map with the sk_msg verdict, gets TLS_TX (test_sockmap's order); then sends.
/// The path's receiver must read the plaintext once.
#[rstest]
fn ktls_tx_set_after_insert(#[values(TxToRx, TxToTx)] path: Path) {
    ktls_case(over(path), "tx_set_after_insert", |c| c, |rig| {
        if !rig.require_tls(Role::A, TlsDir::Tx) {
            return;
        }
        rig.expect(path.receiver(), &pattern(0, LEN));
        rig.transfer(Role::A, &[LEN]);
    });
}

#[derive(Clone, Copy, Debug)]
enum Helper {
    /// bpf_msg_cork_bytes() of three sends' worth: nothing moves until the third.
    Cork,
    /// bpf_msg_apply_bytes() of one chunk: the verdict runs again every chunk.
    Apply,
    /// bpf_msg_push_data() of 4 bytes at 100.
    Push,
    /// bpf_msg_pop_data() of 50 bytes at 100.
    Pop,
}

/// test_sockmap's ktls tx runs: the helpers on a TLS_TX socket, on an ingress redirect.
#[rstest]
fn ktls_tx_helpers(#[values(Helper::Cork, Helper::Apply, Helper::Push, Helper::Pop)] helper: Helper) {
    let (what, config): (&str, fn(Config) -> Config) = match helper {
        Helper::Cork => ("tx_with_cork_bytes", |c| Config { cork_bytes: 3 * CHUNK as u32, ..c }),
        Helper::Apply => ("tx_with_apply_bytes", |c| Config { apply_bytes: CHUNK as u32, ..c }),
        Helper::Push => ("tx_with_push_data", |c| Config { push_start: 100, push_len: 4, ..c }),
        Helper::Pop => ("tx_with_pop_data", |c| Config { pop_start: 100, pop_len: 50, ..c }),
    };
    ktls_case(over(TxToRx), what, config, |rig| {
        if !rig.require_tls(Role::A, TlsDir::Tx) {
            return;
        }
        let sends: Vec<usize> = match helper {
            Helper::Cork => vec![CHUNK; 3],
            _ => vec![4 * CHUNK],
        };
        let sent = pattern(0, sends.iter().sum());
        let expected = match helper {
            Helper::Cork | Helper::Apply => sent,
            Helper::Push => [&sent[..100], &[PUSH_FILL; 4][..], &sent[100..]].concat(),
            Helper::Pop => [&sent[..100], &sent[150..]].concat(),
        };
        rig.expect(Role::B, &expected);
        rig.transfer(Role::A, &sends);
    });
}

/// The receive side: A's peer sends TLS records (TLS_TX), A decrypts them (TLS_RX) and its sk_skb
/// verdict (parser-less, or behind the stream parser) redirects them into B. A gets TLS_RX after
/// joining the map, or before (taken out and put back in). B must read the plaintext once.
#[rstest]
fn ktls_rx(#[values((false, true), (false, false), (true, true))] how: (bool, bool)) {
    let (strparser, after_insert) = how;
    let scenario = if strparser { over(RxToRx).with_strparser() } else { over(RxToRx) };
    let what = if after_insert { "rx_set_after_insert" } else { "rx_set_before_insert" };
    ktls_case(scenario, what, |c| c, |rig| {
        if !rig.require_tls(Role::APeer, TlsDir::Tx) {
            return;
        }
        if !after_insert {
            rig.map_delete(KEY_A);
        }
        if !rig.require_tls(Role::A, TlsDir::Rx) {
            return;
        }
        if !after_insert && !rig.require_insert(KEY_A, Role::A) {
            return;
        }
        rig.expect(Role::B, &pattern(0, LEN));
        rig.transfer(Role::APeer, &[LEN]);
    });
}

/// prog_tests/sockmap_ktls.c's update_fails_when_sock_has_ulp: A, out of the map, gets the ULP
/// (and, with `keys`, TLS_TX), then the map update; whatever it answers, A's own proto must still
/// work (TCP_NODELAY through the ULP's setsockopt) and A must still talk TLS to its peer, which gets
/// TLS_RX and reads the plaintext.
#[rstest]
fn ktls_ulp_then_insert(#[values((Sockmap, false), (Sockhash, false), (Sockmap, true))] how: (MapKind, bool)) {
    let (map, keys) = how;
    let what = if keys { "tx_then_insert" } else { "ulp_then_insert" };
    ktls_case(Scenario::new(TxToRx, map, Family::Ipv4), what, |c| c, |rig| {
        rig.lifecycle_only();
        rig.map_delete(KEY_A);
        if rig.tls_ulp(Role::A).is_err() {
            return;
        }
        if keys {
            let _ = rig.tls_key(Role::A, TlsDir::Tx);
        }
        rig.map_insert(KEY_A, Role::A);
        rig.nodelay(Role::A);
        if !keys {
            let _ = rig.tls_key(Role::A, TlsDir::Tx);
        }
        if !rig.require_tls(Role::APeer, TlsDir::Rx) {
            return;
        }
        rig.expect(Role::APeer, &pattern(0, CHUNK));
        rig.send(Role::A, CHUNK);
        rig.receive(Role::APeer);
    });
}

/// prog_tests/sockmap_ktls.c's enable_fails_when_in_sockmap: A, in the map, gets the ULP (allowed:
/// it wraps the sockmap proto), then TLS_TX and TLS_RX (the kernel's answers recorded); then A
/// sends, and the path's receiver must read every byte once, through the ULP.
#[rstest]
fn ktls_ulp_set_in_map(#[values(TxToRx, TxToTx)] path: Path) {
    ktls_case(over(path), "ulp_set_in_map", |c| c, |rig| {
        if rig.tls_ulp(Role::A).is_err() {
            return;
        }
        let _ = rig.tls_key(Role::A, TlsDir::Tx);
        let _ = rig.tls_key(Role::A, TlsDir::Rx);
        rig.expect(path.receiver(), &pattern(0, LEN));
        rig.transfer(Role::A, &[LEN]);
    });
}

/// The same with a cork of three sends' worth: the cork's sk_msg is kept by the sockmap proto under
/// the ULP's.
#[rstest]
fn ktls_ulp_set_in_map_with_cork() {
    let cork = |c: Config| Config { cork_bytes: 3 * CHUNK as u32, ..c };
    ktls_case(over(TxToRx), "ulp_set_in_map_with_cork_bytes", cork, |rig| {
        if rig.tls_ulp(Role::A).is_err() {
            return;
        }
        rig.expect(Role::B, &pattern(0, 3 * CHUNK));
        rig.transfer(Role::A, &[CHUNK; 3]);
    });
}

/// A sends through the verdict, gets the ULP in the map, and is taken out of the map (the psock's
/// proto restore goes through the ULP: tcp_update_ulp()); then TLS_TX, and A talks TLS to its peer
/// (TLS_RX), which must read the plaintext once. B has the first chunk only.
#[rstest]
fn ktls_ulp_in_map_then_deleted() {
    ktls_case(over(TxToRx), "ulp_in_map_deleted_then_tls_tx", |c| c, |rig| {
        rig.expect(Role::B, &pattern(0, CHUNK));
        rig.send(Role::A, CHUNK);
        rig.receive(Role::B);
        if rig.tls_ulp(Role::A).is_err() {
            return;
        }
        rig.map_delete(KEY_A);
        if !rig.require_key(Role::A, TlsDir::Tx) || !rig.require_tls(Role::APeer, TlsDir::Rx) {
            return;
        }
        rig.expect(Role::APeer, &pattern(CHUNK, CHUNK));
        rig.send(Role::A, CHUNK);
        rig.receive(Role::APeer);
    });
}

/// prog_tests/sockmap_ktls.c's old disconnect_after_delete: the ULP set in the map, A taken out,
/// then connect(AF_UNSPEC) (the ULP's proto keeps tls_disconnect(), which refuses it: EOPNOTSUPP).
#[rstest]
fn ktls_ulp_in_map_deleted_then_disconnected() {
    ktls_case(over(TxToRx), "ulp_in_map_deleted_then_disconnected", |c| c, |rig| {
        rig.lifecycle_only();
        if rig.tls_ulp(Role::A).is_err() {
            return;
        }
        rig.map_delete(KEY_A);
        rig.disconnect(Role::A);
    });
}

/// Teardown with data held: A (the ULP set in the map) has a chunk in an sk_msg cork that asks for
/// far more, then is closed (or taken out of the map first). Nothing may arrive anywhere, and every
/// socket must die clean.
#[rstest]
fn ktls_ulp_in_map_corked_teardown(#[values(false, true)] delete_first: bool) {
    let cork = |c: Config| Config { cork_bytes: 64 * CHUNK as u32, ..c };
    let what = if delete_first { "ulp_in_map_corked_then_deleted_and_closed" } else { "ulp_in_map_corked_then_closed" };
    ktls_case(over(TxToRx), what, cork, |rig| {
        if rig.tls_ulp(Role::A).is_err() {
            return;
        }
        rig.send(Role::A, CHUNK);
        rig.readiness(Role::B);
        if delete_first {
            rig.map_delete(KEY_A);
        }
        rig.close(Role::A);
        rig.readiness(Role::B);
    });
}

/// Teardown with data held on a TLS_TX socket in the map: a chunk in the cork, then close.
#[rstest]
fn ktls_tx_corked_then_closed() {
    let cork = |c: Config| Config { cork_bytes: 64 * CHUNK as u32, ..c };
    ktls_case(over(TxToRx), "tx_corked_then_closed", cork, |rig| {
        if !rig.require_tls(Role::A, TlsDir::Tx) {
            return;
        }
        rig.send(Role::A, CHUNK);
        rig.readiness(Role::B);
        rig.close(Role::A);
        rig.readiness(Role::B);
    });
}
