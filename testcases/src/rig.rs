//! A case's setup (programs, map, four sockets) and the actions a case takes on it. Every wait is
//! bounded by [`STALL`] of no progress in time the guest ran ([`Patience`]), so a broken kernel
//! fails a case instead of hanging the suite, and a host too busy to run the guest does not fail it.

use std::collections::{BTreeMap, BTreeSet};
use std::mem::MaybeUninit;
use std::sync::{Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crate::accounting::Ledger;
use crate::bpf::{Action, Bpf, Config, Counter, Hook, MapKind, F_INGRESS};
use crate::family::Family;
use crate::observation::{
    Content, Delivered, Observation, Outcome, Programs, Pulled, Role, Sent, Side, Status, Step, Unsupported,
    WokenByData,
};
use crate::patience::{self, Patience};
use crate::payload::pattern;
use crate::sys::{self, errno_name, Errno, Sock, Wakeup, POLL_ALL};

/// How long any wait goes on without progress before the case gives up on it: guest run time,
/// times LAB_WAIT_SCALE ([`Patience`]).
pub const STALL: Duration = Duration::from_secs(2);

/// On the RX paths the psock backlog worker delivers after the sender is done: the other roles are
/// only read once they have been quiet this long (bounded by [`STALL`]), not at one instant.
pub const SETTLE: Duration = Duration::from_millis(100);

pub const KEY_A: u32 = 0;
pub const KEY_B: u32 = 1;

/// Polls `done` until it holds (true) or [`STALL`] of guest run time passed without it (false).
fn wait_until(mut done: impl FnMut() -> bool) -> bool {
    let mut wait = Patience::new(STALL);
    while !done() {
        if wait.exhausted() {
            return false;
        }
        wait.sleep(|slice| thread::sleep(slice.min(Duration::from_millis(10))));
    }
    true
}

/// Datagrams in flight at once: enough to keep the path busy, few enough that no receive queue
/// overflows (even of 16-byte datagrams, each of which costs a whole skb), since datagram families
/// drop rather than push back.
const DATAGRAM_WINDOW: usize = 4;

const RECV_CHUNK: usize = 64 * 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Path {
    /// sk_msg redirect with BPF_F_INGRESS: A's sends land in B's receive queue.
    TxToRx,
    /// sk_skb redirect with BPF_F_INGRESS: what A receives lands in B's receive queue.
    RxToRx,
    /// sk_msg redirect to egress: A's sends go out of B, to B's peer.
    TxToTx,
    /// sk_skb redirect to egress: what A receives goes out of B, to B's peer.
    RxToTx,
}

impl Path {
    pub fn name(self) -> &'static str {
        match self {
            Self::TxToRx => "tx_to_rx",
            Self::RxToRx => "rx_to_rx",
            Self::TxToTx => "tx_to_tx",
            Self::RxToTx => "rx_to_tx",
        }
    }

    pub fn is_tx(self) -> bool {
        matches!(self, Self::TxToRx | Self::TxToTx)
    }

    pub fn is_ingress(self) -> bool {
        matches!(self, Self::TxToRx | Self::RxToRx)
    }

    /// Who writes the data the redirect acts on.
    pub fn sender(self) -> Role {
        if self.is_tx() {
            Role::A
        } else {
            Role::APeer
        }
    }

    /// Who should read it after the redirect.
    pub fn receiver(self) -> Role {
        if self.is_ingress() {
            Role::B
        } else {
            Role::BPeer
        }
    }
}

#[derive(Clone, Copy, Debug)]
pub struct Scenario {
    pub path: Path,
    /// The map A is in, with the path's programs attached.
    pub map: MapKind,
    pub family: Family,
    /// rx paths: sk_skb stream parser + stream verdict instead of the parser-less sk_skb verdict.
    pub strparser: bool,
    /// The loopback MTU the case sets before it connects anything (see guest::set_loopback_mtu).
    pub loopback_mtu: Option<i32>,
    /// The map B is in and the programs redirect through: `map` unless the case crosses maps (then
    /// nothing is attached to it).
    pub target_map: MapKind,
    /// B's family: `family` unless the case crosses families.
    pub target_family: Family,
    /// One more program, attached to this map before anything joins it (both maps' programs then
    /// meet on a socket that is in both).
    pub extra: Option<(Hook, MapKind)>,
    /// The path's program is attached through a bpf_link (tx paths only).
    pub by_link: bool,
}

impl Scenario {
    pub fn new(path: Path, map: MapKind, family: Family) -> Self {
        Self {
            path,
            map,
            family,
            strparser: false,
            loopback_mtu: None,
            target_map: map,
            target_family: family,
            extra: None,
            by_link: false,
        }
    }

    /// B in `map` instead, which has no programs.
    pub fn with_target_map(self, map: MapKind) -> Self {
        Self { target_map: map, ..self }
    }

    /// B of `family` instead.
    pub fn with_target_family(self, family: Family) -> Self {
        Self { target_family: family, ..self }
    }

    /// `hook`'s programs attached to `map` too.
    pub fn with_extra(self, hook: Hook, map: MapKind) -> Self {
        Self { extra: Some((hook, map)), ..self }
    }

    pub fn by_link(self) -> Self {
        assert!(self.path.is_tx(), "only the sk_msg program is attached through a link");
        Self { by_link: true, ..self }
    }

    pub fn with_loopback_mtu(self, mtu: i32) -> Self {
        Self { loopback_mtu: Some(mtu), ..self }
    }

    pub fn with_strparser(self) -> Self {
        assert!(!self.path.is_tx(), "the stream parser only sees received data");
        Self { strparser: true, ..self }
    }

    pub fn hook(&self) -> Hook {
        match (self.path.is_tx(), self.strparser) {
            (true, _) => Hook::Msg,
            (false, false) => Hook::SkbVerdict,
            (false, true) => Hook::StreamParser,
        }
    }

    /// "<path>_via_<map>[_strparser]_over_<family>_<what>", e.g. tx_to_rx_via_sockhash_over_ipv6_64kib.
    pub fn case_name(&self, what: &str) -> String {
        let parser = if self.strparser { "_strparser" } else { "" };
        format!("{}_via_{}{parser}_over_{}_{what}", self.path.name(), self.map.name(), self.family.name())
    }

    /// Redirect everything to B, through this scenario's map, in this path's direction.
    pub fn config(&self) -> Config {
        Config {
            action: Action::Redirect as u32,
            use_hash: u32::from(self.target_map == MapKind::Sockhash),
            target_key: KEY_B,
            flags: if self.path.is_ingress() { F_INGRESS } else { 0 },
            ..Config::default()
        }
    }
}

#[derive(Default)]
pub(crate) struct Inbox {
    pub(crate) data: Vec<u8>,
    pub(crate) eof: bool,
    pub(crate) error: Option<Errno>,
}

impl Inbox {
    pub(crate) fn open(&self) -> bool {
        !self.eof && self.error.is_none()
    }

    /// Reads whatever is queued without waiting; returns the byte count.
    pub(crate) fn take_queued(&mut self, sock: &Sock) -> usize {
        self.take_up_to(sock, usize::MAX)
    }

    /// Reads what is queued, up to `limit` bytes, without waiting; returns the byte count.
    fn take_up_to(&mut self, sock: &Sock, limit: usize) -> usize {
        let mut buf = vec![0; RECV_CHUNK.min(limit)];
        let mut total = 0;
        while self.open() && total < limit {
            let want = buf.len().min(limit - total);
            match sock.recv(&mut buf[..want], libc::MSG_DONTWAIT) {
                Ok(0) => self.eof = true,
                Ok(n) => {
                    self.data.extend_from_slice(&buf[..n]);
                    total += n;
                }
                Err(Errno::EAGAIN) => break,
                Err(errno) => self.error = Some(errno),
            }
        }
        total
    }
}

#[derive(Default)]
struct Counts {
    accepted: usize,
    received: usize,
    done: bool,
}

/// Shared between the sender thread and the reader, which wake each other through it.
#[derive(Default)]
struct Progress {
    counts: Mutex<Counts>,
    changed: Condvar,
}

impl Progress {
    fn update(&self, f: impl FnOnce(&mut Counts)) {
        f(&mut self.counts.lock().unwrap());
        self.changed.notify_all();
    }
}

pub struct Rig<'obj> {
    scenario: Scenario,
    /// None once the case freed the map (and its programs) on purpose: see [`Rig::free_map`].
    pub(crate) bpf: Option<Bpf<'obj>>,
    /// The bpf_link the path's program is attached through, while the case has not detached it.
    pub(crate) link: Option<std::os::fd::OwnedFd>,
    /// The programs' counters as they were when the map was freed.
    pub(crate) freed_counters: Option<BTreeMap<u32, u64>>,
    pub(crate) socks: BTreeMap<Role, Sock>,
    pub(crate) inbox: BTreeMap<Role, Inbox>,
    pub(crate) expected: BTreeMap<Role, Vec<u8>>,
    /// Roles that may end with any prefix of what they expect (how much got through before a
    /// teardown is up to timing; that nothing else arrived is not).
    pub(crate) prefix_ok: BTreeSet<Role>,
    send_offset: BTreeMap<Role, usize>,
    pub(crate) steps: Vec<Step>,
    sent: Option<Sent>,
    pin_verdict_runs: bool,
    redirect_may_miss: bool,
    /// What each wait that gave up waited for: printed with the case's failure.
    pub(crate) stalls: Vec<String>,
    /// The sockets the case's body made (see listener.rs), for the accounting.
    pub(crate) ledger: Ledger,
    /// A setup step the body needed and the kernel refused (ktls.rs): the case is unsupported.
    pub(crate) refused: Option<Unsupported>,
    /// The case does not need the verdict program to run (ktls.rs).
    pub(crate) lifecycle_only: bool,
    /// A feature the kernel was built without (see [`Observation::lacks`]).
    pub(crate) lacks: Option<&'static str>,
}

/// Sets the scenario up with `config` in the config map, runs `body` on it and returns what was
/// observed, with the stalls of the waits that gave up. A setup step the kernel refuses ends the
/// case as unsupported. Every socket created is recorded in `ledger`, and closed by the time this
/// returns.
pub fn observe(
    scenario: Scenario,
    config: Config,
    ledger: &mut Ledger,
    body: impl FnOnce(&mut Rig<'_>),
) -> (Observation, Vec<String>) {
    let mut object = MaybeUninit::uninit();
    let hooks: Vec<Hook> = [scenario.hook()].into_iter().chain(scenario.extra.map(|(hook, _)| hook)).collect();
    let bpf = Bpf::load(&mut object, scenario.map, &hooks, scenario.by_link).expect("loading bpf/sockmap.bpf.c");
    bpf.configure(&config);
    let link =
        if scenario.by_link { bpf.link_msg_verdict().map(Some) } else { bpf.attach(scenario.hook()).map(|()| None) };
    let link = match link {
        Ok(link) => link,
        Err(refused) => return (Observation::refused(refused.step, refused.errno), vec![]),
    };
    if let Some((hook, map)) = scenario.extra {
        if let Err(refused) = bpf.attach_to(map, hook) {
            return (Observation::refused(refused.step, refused.errno), vec![]);
        }
    }
    if let Some(mtu) = scenario.loopback_mtu {
        crate::guest::set_loopback_mtu(mtu).expect("setting the loopback MTU");
    }
    let ((a, a_peer), (b, b_peer)) =
        match (scenario.family.pair(Side::A, ledger), scenario.target_family.pair(Side::B, ledger)) {
            (Ok(a), Ok(b)) => (a, b),
            (Err(errno), _) | (_, Err(errno)) => return (Observation::refused("socket", errno), vec![]),
        };
    for (map, key, sock) in [(scenario.map, KEY_A, &a), (scenario.target_map, KEY_B, &b)] {
        if let Err(errno) = bpf.insert_into(map, key, sock) {
            return (Observation::refused("map_update", errno), vec![]);
        }
    }
    let socks = BTreeMap::from([(Role::A, a), (Role::APeer, a_peer), (Role::B, b), (Role::BPeer, b_peer)]);
    for sock in socks.values() {
        // The kernel's own bound on a blocked send: wall time, so only scaled.
        sock.set_send_timeout(patience::scaled(STALL)).expect("SO_SNDTIMEO");
    }
    let mut rig = Rig {
        scenario,
        bpf: Some(bpf),
        link,
        freed_counters: None,
        prefix_ok: BTreeSet::new(),
        inbox: Role::CONNECTED.into_iter().map(|role| (role, Inbox::default())).collect(),
        socks,
        expected: BTreeMap::new(),
        send_offset: BTreeMap::new(),
        steps: Vec::new(),
        sent: None,
        pin_verdict_runs: false,
        redirect_may_miss: false,
        stalls: Vec::new(),
        ledger: Ledger::default(),
        refused: None,
        lifecycle_only: false,
        lacks: None,
    };
    body(&mut rig);
    ledger.extend(std::mem::take(&mut rig.ledger));
    let stalls = std::mem::take(&mut rig.stalls);
    (rig.finish(), stalls)
}

impl Rig<'_> {
    pub fn scenario(&self) -> Scenario {
        self.scenario
    }

    /// `role` should end the case having read `bytes` (appended to what it already expects).
    pub fn expect(&mut self, role: Role, bytes: &[u8]) {
        self.expected.entry(role).or_default().extend_from_slice(bytes);
    }

    /// Report the verdict program's exact run count: only for cases whose sends make it deterministic.
    pub fn pin_verdict_runs(&mut self) {
        self.pin_verdict_runs = true;
    }

    /// The case takes the redirect target away on purpose; otherwise a redirect helper that finds no
    /// usable target means the kernel refuses this family as a target on this path.
    pub fn redirect_may_miss(&mut self) {
        self.redirect_may_miss = true;
    }

    /// Where `role`'s next `len` bytes start in its pattern stream; every role sends its own stream.
    pub fn next_offset(&mut self, role: Role, len: usize) -> usize {
        let offset = self.send_offset.entry(role).or_default();
        let start = *offset;
        *offset += len;
        start
    }

    pub(crate) fn sock(&self, role: Role) -> &Sock {
        self.socks.get(&role).unwrap_or_else(|| panic!("{role:?} was closed earlier in the case"))
    }

    /// Sends `messages` (one send call each) from `from` while reading every socket, until all of it
    /// is accounted for or nothing moves for [`STALL`].
    pub fn transfer(&mut self, from: Role, messages: &[usize]) {
        let total: usize = messages.iter().sum();
        let data = pattern(self.next_offset(from, total), total);
        // Either end keeping datagrams is enough for a receive queue to drop rather than push back.
        let datagrams = self.scenario.family.datagram_limit().or(self.scenario.target_family.datagram_limit());
        let window = datagrams.map(|_| DATAGRAM_WINDOW);
        let progress = Progress::default();
        let wakeup = Wakeup::new().expect("eventfd");
        let (socks, inbox, expected) = (&self.socks, &mut self.inbox, &self.expected);
        let sender = socks.get(&from).unwrap_or_else(|| panic!("{from:?} was closed earlier in the case"));
        // On rx paths each skb sits in A's receive queue for a moment before the verdict program
        // takes it, and a read of A in that moment wins it. So A is only read during the transfer
        // when it is meant to receive; otherwise by finish(), after the data has settled elsewhere.
        let racy = !self.scenario.path.is_tx() && !expected.contains_key(&Role::A);
        let watched: Vec<Role> =
            socks.keys().copied().filter(|role| inbox.contains_key(role) && !(racy && *role == Role::A)).collect();
        let ((messages_sent, stopped_by, send_stall), read_stall) = thread::scope(|scope| {
            let sending = scope.spawn(|| send_all(sender, &data, messages, window, &progress, &wakeup));
            let read_stall = read_until_settled(socks, &watched, inbox, expected, &progress, &wakeup);
            (sending.join().expect("sender thread"), read_stall)
        });
        let what = |stall: String| stall.replacen("stalled: ", &format!("stalled: transfer of {total} bytes from {}: ", from.name()), 1);
        self.stalls.extend(send_stall.into_iter().chain(read_stall).map(what));
        self.sent = Some(Sent {
            from,
            bytes: progress.counts.lock().unwrap().accepted,
            messages: messages_sent,
            planned_messages: messages.len(),
            stopped_by,
        });
    }

    /// One blocking send of the next `len` bytes of `role`'s stream.
    pub fn send(&mut self, role: Role, len: usize) {
        let data = pattern(self.next_offset(role, len), len);
        let result = self.sock(role).send(&data).into();
        self.steps.push(Step::Send { role, len, result });
    }

    /// Waits (bounded) until `role` is readable, then one recv of up to `len` bytes.
    pub fn recv(&mut self, role: Role, len: usize) {
        self.wait_for_pollin(role, "before a recv");
        self.recv_now(role, len, 0);
    }

    /// poll(2) for POLLIN (an error or hang-up also ends the wait), at most [`STALL`] of guest run
    /// time; a wait that runs out is noted as a stall.
    pub(crate) fn wait_for_pollin(&mut self, role: Role, why: &str) {
        let fd = self.sock(role).raw();
        let mut wait = Patience::new(STALL);
        while !wait.exhausted() {
            if wait.sleep(|slice| sys::poll(&[(fd, libc::POLLIN)], slice).expect("poll"))[0] != 0 {
                return;
            }
        }
        self.stalls.push(wait.stalled(&format!("{} to become readable {why}", role.name())));
    }

    /// One non-blocking recv of up to `len` bytes: EAGAIN when nothing is queued.
    pub fn recv_now(&mut self, role: Role, len: usize, flags: i32) {
        let mut buf = vec![0; len];
        let result = self.sock(role).recv(&mut buf, flags | libc::MSG_DONTWAIT);
        let peek = flags & libc::MSG_PEEK != 0;
        let content = result.ok().map(|n| self.take(role, &buf[..n], peek));
        self.steps.push(Step::Recv { role, len, peek, result: result.into(), content });
    }

    /// `read` against what `role` should read next; unless peeked, it is now read.
    fn take(&mut self, role: Role, read: &[u8], peek: bool) -> Content {
        let inbox = &mut self.inbox.get_mut(&role).expect("every role has an inbox");
        let expected = self.expected.get(&role).map_or(&[][..], Vec::as_slice);
        let from = inbox.data.len().min(expected.len());
        let to = (from + read.len()).min(expected.len());
        let content = Content::compare(&expected[from..to], read);
        if !peek {
            inbox.data.extend_from_slice(read);
        }
        content
    }

    /// `reader` goes to sleep in a blocking recv of up to `len` bytes; once it is seen asleep,
    /// `from` sends `send` bytes. The reader must be woken: one that is not within [`STALL`] of guest
    /// run time is recorded as not woken (its SO_RCVTIMEO lets the thread go later).
    pub fn recv_while_asleep(&mut self, reader: Role, len: usize, from: Role, send: usize) {
        let recv = move |sock: &Sock| {
            let mut buf = vec![0; len];
            let result = sock.recv(&mut buf, 0);
            (result, buf)
        };
        let step = self.asleep_when_sent(reader, from, send, recv, |rig, (result, buf)| {
            let content = result.ok().map(|n| rig.take(reader, &buf[..n], false));
            (result.into(), content)
        });
        self.steps.push(Step::RecvWhileAsleep(step));
    }

    /// `reader` goes to sleep in a blocking splice(2) of up to a pipe's worth into a pipe (the
    /// socket blocking, no SPLICE_F_NONBLOCK); once it is seen asleep, `from` sends `send` bytes.
    /// The splice must return them: one that does not within [`STALL`] of guest run time is
    /// recorded as not woken (its SO_RCVTIMEO, which tcp_splice_read() honours, lets it go later).
    pub fn splice_while_asleep(&mut self, reader: Role, from: Role, send: usize) {
        const PIPE_CAPACITY: usize = 64 * 1024;
        let (from_pipe, into_pipe) = sys::Fd::pipe().expect("pipe");
        let into_pipe = &into_pipe;
        let splice = move |sock: &Sock| sys::splice(sock.raw(), into_pipe.raw(), PIPE_CAPACITY, 0);
        let step = self.asleep_when_sent(reader, from, send, splice, |rig, result| {
            let content = result.ok().map(|spliced| {
                let mut buf = vec![0; spliced];
                let mut got = 0;
                while got < spliced {
                    got += from_pipe.read(&mut buf[got..]).expect("reading the pipe");
                }
                rig.take(reader, &buf, false)
            });
            (result.into(), content)
        });
        self.steps.push(Step::SpliceWhileAsleep(step));
    }

    /// Runs the blocking `call` on `reader` in a thread of its own and, once that thread is seen
    /// asleep, sends `send` bytes from `from`; `finish` turns what `call` returned into the step's
    /// result and content. SO_RCVTIMEO lets a call that is never woken go at last.
    fn asleep_when_sent<T: Send>(
        &mut self,
        reader: Role,
        from: Role,
        send: usize,
        call: impl FnOnce(&Sock) -> T + Send,
        finish: impl FnOnce(&mut Self, T) -> (Outcome, Option<Content>),
    ) -> WokenByData {
        let data = pattern(self.next_offset(from, send), send);
        let sock = self.sock(reader);
        sock.set_recv_timeout(patience::scaled(STALL * 10)).expect("SO_RCVTIMEO");
        let (asleep, sent, woken, returned) = thread::scope(|scope| {
            let (tid_tx, tid_rx) = std::sync::mpsc::channel();
            let calling = scope.spawn(move || {
                tid_tx.send(sys::gettid()).expect("the case waits for the caller's id");
                call(sock)
            });
            let tid = tid_rx.recv().expect("the caller's id");
            let asleep = wait_until(|| sys::thread_asleep(tid));
            (asleep, self.sock(from).send(&data), wait_until(|| calling.is_finished()), calling.join().expect("caller"))
        });
        sock.set_recv_timeout(Duration::ZERO).expect("SO_RCVTIMEO");
        let (result, content) = finish(self, returned);
        WokenByData { role: reader, asleep, from, send: sent.into(), woken, result, content }
    }

    /// Reads exactly what `role` still expects, waiting for it at most [`STALL`] without progress.
    /// Reads no further, so what follows (an end of stream, say) is left for the next step to see.
    pub fn receive(&mut self, role: Role) {
        let sock = self.socks.get(&role).unwrap_or_else(|| panic!("{role:?} was closed earlier in the case"));
        let inbox = self.inbox.get_mut(&role).expect("every role has an inbox");
        let expected = self.expected.get(&role).map_or(&[][..], Vec::as_slice);
        let before = inbox.data.len();
        let mut wait = Patience::new(STALL);
        while inbox.open() && inbox.data.len() < expected.len() {
            if wait.exhausted() {
                let what = format!("{} to receive {} bytes (got {})", role.name(), expected.len() - before, inbox.data.len() - before);
                self.stalls.push(wait.stalled(&what));
                break;
            }
            wait.sleep(|slice| sys::poll(&[(sock.raw(), libc::POLLIN)], slice).expect("poll"));
            if inbox.take_up_to(sock, expected.len() - inbox.data.len()) > 0 {
                wait.progress();
            }
        }
        self.steps.push(Step::Receive {
            role,
            received: inbox.data.len() - before,
            content: Content::compare(&expected[before.min(expected.len())..], &inbox.data[before..]),
        });
    }

    pub fn fionread(&mut self, role: Role) {
        let result = self.sock(role).fionread().into();
        self.steps.push(Step::Fionread { role, result });
    }

    /// poll(2) with a zero timeout: the readiness right now.
    pub fn readiness(&mut self, role: Role) {
        let ready = self.poll_names(role, Duration::ZERO);
        self.steps.push(Step::Readiness { role, ready });
    }

    /// poll(2) for POLLIN (an error or hang-up also ends the wait), bounded by [`STALL`], then the
    /// full readiness.
    pub fn wait_readable(&mut self, role: Role) {
        self.wait_for_pollin(role, "(wait_readable)");
        let ready = self.poll_names(role, Duration::ZERO);
        self.steps.push(Step::WaitReadable { role, ready });
    }

    fn poll_names(&self, role: Role, timeout: Duration) -> Vec<&'static str> {
        let revents = sys::poll(&[(self.sock(role).raw(), POLL_ALL)], timeout).expect("poll");
        sys::readiness_names(revents[0])
    }

    /// epoll_wait with a zero timeout, on a fresh epoll instance.
    pub fn epoll(&mut self, role: Role) {
        let ready = sys::epoll_once(self.sock(role), Duration::ZERO).expect("epoll");
        self.steps.push(Step::Epoll { role, ready });
    }

    pub fn map_delete(&mut self, key: u32) {
        let result = self.bpf.as_ref().expect("map_delete after free_map").remove(key).into();
        self.steps.push(Step::MapDelete { key, result });
    }

    pub fn shutdown(&mut self, role: Role, how: i32) {
        let name = match how {
            libc::SHUT_RD => "read",
            libc::SHUT_WR => "write",
            _ => "both",
        };
        let result = self.sock(role).shutdown(how).into();
        self.steps.push(Step::Shutdown { role, how: name, result });
    }

    pub fn close(&mut self, role: Role) {
        self.socks.remove(&role);
        self.steps.push(Step::Close { role });
    }

    /// RX paths: read every open role but A until none has been readable for [`SETTLE`], so that
    /// bytes the backlog worker moves late land where they land before the observation is taken.
    /// A is left to the final read: a read of A while the verdict may still take an skb wins it.
    fn settle(&mut self) {
        if self.scenario.path.is_tx() {
            return;
        }
        let quiet = patience::scaled(SETTLE);
        // Bounds the whole settle (data that keeps coming), in guest run time.
        let mut wait = Patience::new(STALL);
        loop {
            let open: Vec<Role> = self
                .socks
                .keys()
                .copied()
                .filter(|r| *r != Role::A && self.inbox.get(r).is_some_and(Inbox::open))
                .collect();
            if open.is_empty() || wait.exhausted() {
                return;
            }
            let fds: Vec<_> = open.iter().map(|r| (self.socks[r].raw(), libc::POLLIN)).collect();
            let started = Instant::now();
            let slice = quiet.min(wait.left());
            let revents = sys::poll(&fds, slice).expect("poll");
            wait.spent(slice, started.elapsed());
            if revents.iter().all(|r| *r == 0) {
                return;
            }
            for (role, _) in open.iter().zip(&revents).filter(|(_, r)| **r != 0) {
                self.inbox.get_mut(role).expect("every role has an inbox").take_queued(&self.socks[role]);
            }
        }
    }

    fn finish(mut self) -> Observation {
        self.settle();
        // Every role but a listener has an inbox.
        for (role, sock) in &self.socks {
            if let Some(inbox) = self.inbox.get_mut(role) {
                inbox.take_queued(sock);
            }
        }
        let runs = self.counter(self.scenario.hook().verdict_counter());
        let redirect_missed = self.counter(Counter::RedirectMisses) > 0;
        let pulled_len = self.counter(Counter::PulledLen);
        let helper_errno = self.counter(Counter::HelperErrno);
        let extra_runs = self.scenario.extra.map(|(hook, _)| self.counter(hook.verdict_counter()));
        let programs = Programs {
            verdict_ran: runs > 0,
            verdict_runs: self.pin_verdict_runs.then_some(runs),
            parser_ran: self.scenario.strparser.then(|| self.counter(Counter::ParserRuns) > 0),
            extra_verdict_ran: extra_runs.map(|runs| runs > 0),
            msg_pass_runs: self.scenario.by_link.then(|| self.counter(Counter::MsgPassRuns)),
            redirect_missed,
            helper_failed: self.counter(Counter::HelperErrors) > 0,
            helper_errno: (helper_errno > 0).then(|| errno_name(Errno::from_raw(helper_errno as i32))),
            pulled: (pulled_len > 0)
                .then(|| Pulled { len: pulled_len, first_byte: self.counter(Counter::PulledFirstByte) }),
        };
        let delivered = self
            .inbox
            .iter()
            .map(|(role, inbox)| {
                let expected = self.expected.get(role).map_or(&[][..], Vec::as_slice);
                let delivered = Delivered::new(expected, &inbox.data, self.prefix_ok.contains(role))
                    .with_error(inbox.error.map(errno_name));
                (*role, delivered)
            })
            .collect();
        // The kernel took the sockets into the map, but has no hook for this family on this path, or
        // its redirect helper will not take this family as a target in this direction.
        let unsupported = if let Some(refused) = self.refused.take() {
            Some(refused)
        } else if self.lifecycle_only {
            None
        } else if runs == 0 {
            Some(Unsupported { step: "verdict_program", error: "never_ran".into() })
        } else if redirect_missed && !self.redirect_may_miss {
            Some(Unsupported { step: "redirect_helper", error: "target_refused".into() })
        } else {
            None
        };
        let status = if unsupported.is_some() { Status::Unsupported } else { Status::Supported };
        Observation {
            status,
            unsupported,
            steps: self.steps,
            sent: self.sent,
            delivered,
            programs: Some(programs),
            lacks: self.lacks,
        }
    }
}

/// The sender side of [`Rig::transfer`]: returns the send calls completed, why it stopped early,
/// and the stall, if it gave up on one. With a `window`, no message goes out while that many
/// messages' worth of bytes are unaccounted for.
fn send_all(
    sock: &Sock,
    data: &[u8],
    messages: &[usize],
    window: Option<usize>,
    progress: &Progress,
    wakeup: &Wakeup,
) -> (usize, Option<String>, Option<String>) {
    let mut offset = 0;
    let mut outcome = (messages.len(), None, None);
    'messages: for (index, &len) in messages.iter().enumerate() {
        if let Some(window) = window {
            if let Err(stall) = wait_for_window(progress, |c| c.accepted + len <= c.received + window * len) {
                let what = format!("the receivers to drain the window before message {index} of {}", messages.len());
                outcome = (index, Some("stalled".to_string()), Some(stall.stalled(&what)));
                break;
            }
        }
        let mut rest = &data[offset..offset + len];
        while !rest.is_empty() {
            match sock.send(rest) {
                Ok(n) => {
                    rest = &rest[n..];
                    progress.update(|c| c.accepted += n);
                    wakeup.wake();
                }
                Err(errno) => {
                    outcome = (index, Some(errno_name(errno)), None);
                    break 'messages;
                }
            }
        }
        offset += len;
    }
    progress.update(|c| c.done = true);
    wakeup.wake();
    outcome
}

/// Waits until `open` holds of the counts, at most [`STALL`] of guest run time without a byte
/// received; gives the wait back when it ran out.
fn wait_for_window(progress: &Progress, open: impl Fn(&Counts) -> bool) -> Result<(), Patience> {
    let mut wait = Patience::new(STALL);
    let mut counts = progress.counts.lock().unwrap();
    let mut received = counts.received;
    while !open(&counts) {
        if wait.exhausted() {
            return Err(wait);
        }
        counts = wait.sleep(|slice| progress.changed.wait_timeout(counts, slice).unwrap().0);
        if counts.received != received {
            received = counts.received;
            wait.progress();
        }
    }
    Ok(())
}

/// The reader side of [`Rig::transfer`]: reads the watched sockets until the sender is done and the
/// data is accounted for (every role has what it expects, or as many bytes arrived as were sent),
/// or nothing moves for [`STALL`] of guest run time; then returns the stall.
fn read_until_settled(
    socks: &BTreeMap<Role, Sock>,
    watched: &[Role],
    inbox: &mut BTreeMap<Role, Inbox>,
    expected: &BTreeMap<Role, Vec<u8>>,
    progress: &Progress,
    wakeup: &Wakeup,
) -> Option<String> {
    let mut wait = Patience::new(STALL);
    let mut accepted_seen = 0;
    loop {
        let (accepted, received, done) = {
            let counts = progress.counts.lock().unwrap();
            (counts.accepted, counts.received, counts.done)
        };
        if accepted != accepted_seen {
            accepted_seen = accepted;
            wait.progress();
        }
        let expectations_met = expected.iter().all(|(role, bytes)| inbox[role].data.len() >= bytes.len());
        if done && (expectations_met || received >= accepted) {
            return None;
        }
        if wait.exhausted() {
            let sender = if done { "done" } else { "still sending" };
            return Some(wait.stalled(&format!("{accepted} bytes accepted, {received} read back, sender {sender}")));
        }

        let open: Vec<Role> = watched.iter().copied().filter(|role| inbox[role].open()).collect();
        let mut fds = vec![(wakeup.raw(), libc::POLLIN)];
        fds.extend(open.iter().map(|role| (socks[role].raw(), libc::POLLIN)));
        let revents = wait.sleep(|slice| sys::poll(&fds, slice).expect("poll"));
        wakeup.clear();
        for (role, revents) in open.iter().zip(&revents[1..]) {
            if *revents == 0 {
                continue;
            }
            let n = inbox.get_mut(role).expect("every role has an inbox").take_queued(&socks[role]);
            if n > 0 {
                wait.progress();
                progress.update(|c| c.received += n);
            }
        }
    }
}
