//! What a case saw, in a form that is the same on every run of a healthy kernel: byte counts, content
//! checks, errno names, readiness, and program run counts only where a case pins them down. No timings.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::sys::{errno_name, Errno};

/// The sockets of a case. A is in the map and its traffic is redirected; B is the redirect target,
/// also in the map. Each has a connected peer outside the map. On stream families each peer was
/// accepted from a listener, which is closed right after; listeners only show up in the accounting.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    A,
    APeer,
    B,
    BPeer,
    AListener,
    BListener,
    /// A listener a case puts in the map itself (tests/listener.rs), a client connected to it and
    /// the child accepted for that client.
    Listener,
    Client,
    Child,
}

impl Role {
    /// The sockets that stay open through the case.
    pub const CONNECTED: [Role; 4] = [Role::A, Role::APeer, Role::B, Role::BPeer];

    /// As the observations name it.
    pub fn name(self) -> &'static str {
        match self {
            Self::A => "a",
            Self::APeer => "a_peer",
            Self::B => "b",
            Self::BPeer => "b_peer",
            Self::AListener => "a_listener",
            Self::BListener => "b_listener",
            Self::Listener => "listener",
            Self::Client => "client",
            Self::Child => "child",
        }
    }
}

/// One of a case's two connected pairs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    A,
    B,
}

impl Side {
    /// (the socket that goes in the map, its peer, the listener the peer is accepted from).
    pub fn roles(self) -> (Role, Role, Role) {
        match self {
            Self::A => (Role::A, Role::APeer, Role::AListener),
            Self::B => (Role::B, Role::BPeer, Role::BListener),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Supported,
    /// The kernel turned the setup down, never ran the verdict program for this family, or its
    /// redirect helper refused the target.
    Unsupported,
}

#[derive(Debug, Serialize)]
pub struct Unsupported {
    pub step: &'static str,
    /// An errno name; "never_ran" when the kernel accepted everything but never ran the program;
    /// "target_refused" when the redirect helper returned SK_DROP for a target that is in the map.
    pub error: String,
}

#[derive(Debug, Serialize)]
pub struct Observation {
    pub status: Status,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unsupported: Option<Unsupported>,
    /// The scripted steps of a lifecycle case, in order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub steps: Vec<Step>,
    /// The bulk transfer of a data-path case.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sent: Option<Sent>,
    /// Everything each socket received over the whole case.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub delivered: BTreeMap<Role, Delivered>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub programs: Option<Programs>,
    /// A kernel feature the case needs and this kernel was built without: nothing of the case's
    /// subject could be observed, so no snapshot judges it (it is never written into one).
    #[serde(skip)]
    pub lacks: Option<&'static str>,
}

impl Observation {
    pub fn refused(step: &'static str, errno: Errno) -> Self {
        Self {
            status: Status::Unsupported,
            unsupported: Some(Unsupported { step, error: errno_name(errno) }),
            steps: Vec::new(),
            sent: None,
            delivered: BTreeMap::new(),
            programs: None,
            lacks: None,
        }
    }
}

/// The result of a call as the user sees it: a byte count (or 0 for calls without one), or an errno.
#[derive(Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Ok(usize),
    Err(String),
}

impl From<Result<usize, Errno>> for Outcome {
    fn from(result: Result<usize, Errno>) -> Self {
        match result {
            Ok(n) => Self::Ok(n),
            Err(errno) => Self::Err(errno_name(errno)),
        }
    }
}

impl From<Result<(), Errno>> for Outcome {
    fn from(result: Result<(), Errno>) -> Self {
        result.map(|()| 0).into()
    }
}

#[derive(Debug, Serialize)]
pub struct Sent {
    pub from: Role,
    /// Bytes the send calls accepted.
    pub bytes: usize,
    /// Send calls that returned, successfully, out of all planned.
    pub messages: usize,
    pub planned_messages: usize,
    /// Why sending stopped early: the errno of the failing send, or "stalled" when a datagram
    /// family's window never drained.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stopped_by: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct Delivered {
    pub expected: usize,
    /// Left out where the case allows any prefix (then `content` says "prefix" or what went wrong).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub received: Option<usize>,
    pub content: Content,
    /// A read error that ended reading (an end of stream is not recorded here: when it shows up
    /// relative to the data is up to timing, so cases check for it with an explicit recv step).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Delivered {
    /// `got` against `expected`; with `prefix_ok` any prefix of it (none, some or all) is "prefix".
    pub fn new(expected: &[u8], got: &[u8], prefix_ok: bool) -> Self {
        let content = Content::compare(expected, got);
        if prefix_ok && matches!(content, Content::Matches | Content::Truncated) {
            return Self { expected: expected.len(), received: None, content: Content::Prefix, error: None };
        }
        Self { expected: expected.len(), received: Some(got.len()), content, error: None }
    }

    pub fn with_error(self, error: Option<String>) -> Self {
        Self { error, ..self }
    }
}

/// How received bytes compare with what the case expected at that socket.
#[derive(Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Content {
    Matches,
    /// A strict prefix of what was expected arrived.
    Truncated,
    /// Everything expected arrived, followed by more.
    Extra,
    /// Some prefix of what was expected (possibly none or all of it), where the case allows that.
    Prefix,
    DiffersAt {
        offset: usize,
        expected: u8,
        got: u8,
    },
}

impl Content {
    pub fn compare(expected: &[u8], got: &[u8]) -> Self {
        match expected.iter().zip(got).position(|(e, g)| e != g) {
            Some(offset) => Self::DiffersAt { offset, expected: expected[offset], got: got[offset] },
            None if got.len() < expected.len() => Self::Truncated,
            None if got.len() > expected.len() => Self::Extra,
            None => Self::Matches,
        }
    }
}

/// What the BPF programs reported through the counters map.
#[derive(Debug, Serialize)]
pub struct Programs {
    pub verdict_ran: bool,
    /// Exact run count, only where the case makes it deterministic.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verdict_runs: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parser_ran: Option<bool>,
    /// Whether the case's extra program (attached beside the path's own) ever ran.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub extra_verdict_ran: Option<bool>,
    /// Runs of msg_pass, the program a case updates its bpf_link to (one per send it saw).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub msg_pass_runs: Option<u64>,
    /// The redirect helper found no socket at the target key.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub redirect_missed: bool,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub helper_failed: bool,
    /// The errno of the last failing bpf_msg_pop_data().
    #[serde(skip_serializing_if = "Option::is_none")]
    pub helper_errno: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pulled: Option<Pulled>,
}

/// The window bpf_msg_pull_data() left in msg->data..msg->data_end.
#[derive(Debug, Serialize)]
pub struct Pulled {
    pub len: u64,
    pub first_byte: u64,
}

/// A blocking call of `role` that was already asleep when `from` sent `send`, and whether the
/// data woke it: the fields of [`Step::RecvWhileAsleep`] and [`Step::SpliceWhileAsleep`].
#[derive(Debug, Serialize)]
pub struct WokenByData {
    pub role: Role,
    /// The caller was seen asleep before the send; if not, the step proves nothing.
    pub asleep: bool,
    pub from: Role,
    pub send: Outcome,
    /// The call returned within the bound.
    pub woken: bool,
    pub result: Outcome,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content: Option<Content>,
}

/// One scripted action of a lifecycle case and what it returned.
#[derive(Debug, Serialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Step {
    Send {
        role: Role,
        len: usize,
        result: Outcome,
    },
    /// One recv(2); `{"ok": 0}` on a stream socket is the end of stream.
    Recv {
        role: Role,
        len: usize,
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        peek: bool,
        result: Outcome,
        /// The returned bytes against what the role should read next.
        #[serde(skip_serializing_if = "Option::is_none")]
        content: Option<Content>,
    },
    /// One blocking recv(2) that was already asleep when `from` sent: a reader the kernel fails to
    /// wake stays asleep with the data queued (which a poll loop would never notice).
    RecvWhileAsleep(WokenByData),
    /// Reads exactly what the role still expects (waiting for it, bounded).
    Receive {
        role: Role,
        received: usize,
        content: Content,
    },
    Fionread {
        role: Role,
        result: Outcome,
    },
    /// poll(2) right now, without waiting.
    Readiness {
        role: Role,
        ready: Vec<&'static str>,
    },
    /// poll(2) until the socket is readable (or gives up).
    WaitReadable {
        role: Role,
        ready: Vec<&'static str>,
    },
    Epoll {
        role: Role,
        ready: Vec<&'static str>,
    },
    MapDelete {
        key: u32,
        result: Outcome,
    },
    /// `role` put (back) into the map at `key` (the other map, where `map` is named).
    MapInsert {
        key: u32,
        role: Role,
        #[serde(skip_serializing_if = "Option::is_none")]
        map: Option<&'static str>,
        result: Outcome,
    },
    /// The entry at `key` of `map` deleted (cases with two maps; else [`Step::MapDelete`]).
    MapDeleteFrom {
        map: &'static str,
        key: u32,
        result: Outcome,
    },
    /// BPF_PROG_ATTACH of the path's program to the map, again.
    ProgAttach {
        result: Outcome,
    },
    /// BPF_LINK_UPDATE of the case's link to msg_pass.
    LinkUpdate {
        result: Outcome,
    },
    /// BPF_LINK_DETACH of the case's link (its descriptor stays open).
    LinkDetach {
        result: Outcome,
    },
    Shutdown {
        role: Role,
        how: &'static str,
        result: Outcome,
    },
    Close {
        role: Role,
    },
    /// A TCP listener on 127.0.0.1 made (bound and listening).
    Listen {
        result: Outcome,
    },
    /// The client connected to the listener (the connection now waits in its accept queue).
    Connect {
        result: Outcome,
    },
    /// The listener's accept(2): the child.
    Accept {
        result: Outcome,
    },
    /// `connections` clients connected and accepted one after another while a thread put the
    /// listener into the map and took it out again without pause; each child sent `len` bytes to
    /// its client. `churned`: the thread's inserts and deletes both succeeded at least once
    /// meanwhile (else the race was not run).
    AcceptWhileChurned {
        connections: usize,
        accepted: usize,
        /// Clients that read exactly their child's bytes.
        delivered: usize,
        churned: bool,
    },
    /// One sendmsg(2) of several iovecs (their lengths), from a thread of its own.
    SendIovecs {
        role: Role,
        iovecs: Vec<usize>,
        result: Outcome,
    },
    /// `len` bytes of `role`'s stream handed to the kernel by `call` (sendfile, vmsplice + splice,
    /// many iovecs; see sending.rs), from a thread of its own while the receiver was read: the
    /// bytes the calls accepted, or the errno of the first that failed.
    SendBy {
        role: Role,
        call: String,
        len: usize,
        result: Outcome,
    },
    /// `role` read through splice(2) into a pipe (then read from the pipe): what came through,
    /// and the errno that ended it while `role` was readable (EAGAIN: poll said readable, splice
    /// found nothing).
    SpliceOut {
        role: Role,
        received: usize,
        content: Content,
        #[serde(skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
    /// `role` asleep in a blocking splice(2) into a pipe when `from` sent `send` bytes: whether
    /// the splice returned within the bound, and what it moved (as RecvWhileAsleep).
    SpliceWhileAsleep(WokenByData),
    /// A send of `len` bytes from a thread of its own, which was seen asleep (blocked for memory)
    /// or not before `then` ran; "all", "partial" or an errno.
    SendBlocking {
        role: Role,
        len: usize,
        blocked: bool,
        /// The send returned within STALL of what the case did meanwhile (else only its
        /// SO_SNDTIMEO ended it).
        returned: bool,
        result: String,
    },
    /// Two threads sent `messages` messages each, at once, on `from` (concurrent.rs): what each
    /// send loop accepted, what `to` read, and each thread's stream as `to` got it (thread 0's
    /// with the flush).
    TwoSenders {
        from: Role,
        to: Role,
        messages: usize,
        sent: [Outcome; 2],
        /// The send after both, with the program no longer corking, that pushes a cork out.
        flushed: Outcome,
        received: usize,
        content: [Content; 2],
    },
    /// SO_SNDBUF / SO_RCVBUF set to `bytes` (the kernel doubles it).
    SetBuffer {
        role: Role,
        which: &'static str,
        bytes: usize,
        result: Outcome,
    },
    /// Every descriptor of the map and its programs closed. `programs_left`: the programs (and so
    /// the map) are still alive, held by the psocks of the sockets in it.
    FreeMap {
        programs_left: bool,
    },
    /// setsockopt(IPPROTO_TCP, TCP_ULP, "tls") on `role` (ktls.rs).
    TcpUlp {
        role: Role,
        result: Outcome,
    },
    /// setsockopt(SOL_TLS, TLS_TX or TLS_RX) on `role`: `dir` is "tls_tx" or "tls_rx".
    TlsKey {
        role: Role,
        dir: &'static str,
        result: Outcome,
    },
    /// setsockopt(IPPROTO_TCP, TCP_NODELAY, 1) on `role`.
    TcpNodelay {
        role: Role,
        result: Outcome,
    },
    /// connect(AF_UNSPEC) on `role`: tcp_disconnect() through its proto.
    Disconnect {
        role: Role,
        result: Outcome,
    },
    /// Reads until the end of stream, an error, or [`STALL`](crate::rig::STALL) without progress;
    /// how many bytes is left out where the case allows any prefix.
    ReadToEnd {
        role: Role,
        #[serde(skip_serializing_if = "Option::is_none")]
        received: Option<usize>,
        content: Content,
        /// "eof", an errno name, or "stalled".
        end: String,
    },
}

#[cfg(test)]
mod tests {
    use super::Content;

    #[test]
    fn content_comparison_names_the_first_difference() {
        assert_eq!(Content::compare(b"abc", b"abc"), Content::Matches);
        assert_eq!(Content::compare(b"abc", b"ab"), Content::Truncated);
        assert_eq!(Content::compare(b"", b"x"), Content::Extra);
        assert_eq!(Content::compare(b"abc", b"axc"), Content::DiffersAt { offset: 1, expected: b'b', got: b'x' });
    }
}
