//! What a case does to its rig beyond moving data: free the map under the sockets, shrink their
//! buffers, send from a thread of its own (a fresh page fragment, or a send that blocks for memory
//! while the case acts). The teardown, helper and memory-pressure cases are built from these.

use std::collections::BTreeMap;
use std::os::fd::AsRawFd;
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use crate::bpf::{self, Counter, MapKind};
use crate::observation::{Delivered, Role, Step};
use crate::patience::{self, Patience};
use crate::payload::pattern;
use crate::rig::{Rig, STALL};
use crate::sys;

/// Every counter the programs keep (enum counter in bpf/sockmap.h).
const COUNTERS: [Counter; 10] = [
    Counter::MsgRuns,
    Counter::ParserRuns,
    Counter::StreamVerdictRuns,
    Counter::SkbVerdictRuns,
    Counter::RedirectMisses,
    Counter::HelperErrors,
    Counter::PulledLen,
    Counter::PulledFirstByte,
    Counter::HelperErrno,
    Counter::MsgPassRuns,
];

/// How long a send that blocks for memory may wait in all (SO_SNDTIMEO counts the whole call):
/// long enough for a reader under TCG on a busy host to make room, short enough to end a case
/// on a kernel that never wakes the sender.
const BLOCKED_SEND_TIMEOUT: Duration = Duration::from_secs(20);

impl Rig<'_> {
    /// A program counter, read from the map, or as it was when the case freed the map.
    pub(crate) fn counter(&self, counter: Counter) -> u64 {
        match (&self.bpf, &self.freed_counters) {
            (Some(bpf), _) => bpf.counter(counter),
            (None, Some(saved)) => saved.get(&(counter as u32)).copied().unwrap_or(0),
            (None, None) => unreachable!("the map is only freed through free_map, which saves the counters"),
        }
    }

    /// `from` sends the next `len` bytes of its stream, and `to` must read exactly those, next.
    pub fn next_chunk(&mut self, from: Role, to: Role, len: usize) {
        let offset = self.next_offset(from, 0);
        self.expect(to, &pattern(offset, len));
        self.send(from, len);
        self.receive(to);
    }

    /// A_peer sends 1024 bytes that land on B; B peeks twice without consuming them (the same bytes
    /// each time), FIONREAD still counts them, a read takes them, and FIONREAD is 0 after it.
    pub fn peek_twice_then_read(&mut self) {
        self.expect(Role::B, &pattern(0, 1024));
        self.send(Role::APeer, 1024);
        self.wait_readable(Role::B);
        self.fionread(Role::B);
        self.recv_now(Role::B, 100, libc::MSG_PEEK);
        self.recv_now(Role::B, 100, libc::MSG_PEEK);
        self.fionread(Role::B);
        self.recv(Role::B, 2048);
        self.fionread(Role::B);
    }

    /// Closes every descriptor of the map and its programs. The kernel frees the map only once
    /// nothing holds it: the map lets go of the programs attached to it (sock_map_release_progs()),
    /// but every psock holds its own copies of them, and they hold the map (their used maps). So a
    /// map with sockets in it outlives its last descriptor, and goes (taking the sockets' data
    /// with it) only when the last of them closes or leaves. `programs_left` records that.
    pub fn free_map(&mut self) {
        let bpf = self.bpf.take().expect("free_map twice");
        self.freed_counters = Some(COUNTERS.iter().map(|c| (*c as u32, bpf.counter(*c))).collect::<BTreeMap<_, _>>());
        let ids = bpf.prog_ids();
        drop(bpf);
        let programs_left = ids.iter().any(|id| bpf::prog_exists(*id));
        self.steps.push(Step::FreeMap { programs_left });
    }

    /// `role` may end the case with any prefix of `bytes` (appended to what it already expects):
    /// how much got through before a teardown is up to timing.
    pub fn expect_prefix(&mut self, role: Role, bytes: &[u8]) {
        self.expect(role, bytes);
        self.prefix_ok.insert(role);
    }

    /// SO_SNDBUF (`libc::SO_SNDBUF`) or SO_RCVBUF of `role`.
    pub fn set_buffer(&mut self, role: Role, which: i32, bytes: usize) {
        let result = self.sock(role).set_buffer(which, bytes).into();
        let which = if which == libc::SO_SNDBUF { "sndbuf" } else { "rcvbuf" };
        self.steps.push(Step::SetBuffer { role, which, bytes, result });
    }

    /// One sendmsg of the next bytes of `role`'s stream, cut into iovecs of `lens`, from a fresh
    /// thread: its page fragment is new, so the sk_msg's scatterlist starts at a fragment boundary
    /// (where its elements split is then the same on every run of a healthy kernel).
    pub fn send_iovecs(&mut self, role: Role, lens: &[usize]) {
        let total = lens.iter().sum();
        let data = pattern(self.next_offset(role, total), total);
        let sock = self.sock(role);
        let result = thread::scope(|scope| {
            scope
                .spawn(|| {
                    let mut rest = &data[..];
                    let bufs: Vec<&[u8]> = lens
                        .iter()
                        .map(|len| {
                            let (one, more) = rest.split_at(*len);
                            rest = more;
                            one
                        })
                        .collect();
                    sock.send_iovecs(&bufs)
                })
                .join()
                .expect("sending thread")
        });
        self.steps.push(Step::SendIovecs { role, iovecs: lens.to_vec(), result: result.into() });
    }

    /// Sends the next `len` bytes of `role`'s stream from a thread of its own; once that thread is
    /// asleep in the send (blocked for memory) or done, runs `then` (which may read, close, remove
    /// or free: the sender holds a duplicate descriptor), and waits for the send to return.
    pub fn send_blocking(&mut self, role: Role, len: usize, then: impl FnOnce(&mut Self)) {
        self.send_blocking_for(role, len, BLOCKED_SEND_TIMEOUT, then);
    }

    /// [`Rig::send_blocking`] with every socket's SO_SNDTIMEO at `timeout` (scaled) meanwhile: a
    /// case whose `then` must wake the sender at once need not wait long for a kernel that does not.
    pub fn send_blocking_for(&mut self, role: Role, len: usize, timeout: Duration, then: impl FnOnce(&mut Self)) {
        let data = pattern(self.next_offset(role, len), len);
        let sock = self.sock(role).duplicate().expect("dup");
        for sock in self.socks.values() {
            sock.set_send_timeout(patience::scaled(timeout)).expect("SO_SNDTIMEO");
        }
        let (tid_tx, tid_rx) = mpsc::channel();
        let sending = thread::spawn(move || {
            tid_tx.send(sys::gettid()).expect("the case waits for the sender's id");
            sock.send(&data)
        });
        let tid = tid_rx.recv().expect("the sender's id");
        let mut wait = Patience::new(STALL);
        while !sending.is_finished() && !sys::thread_asleep(tid) && !wait.exhausted() {
            wait.sleep(|slice| thread::sleep(slice.min(Duration::from_millis(10))));
        }
        let blocked = !sending.is_finished() && sys::thread_asleep(tid);
        // The step goes before what `then` does; its result is filled in once the send returned.
        let index = self.steps.len();
        self.steps.push(Step::SendBlocking { role, len, blocked, returned: false, result: String::new() });
        then(self);
        // Whether what `then` did let the send return (within STALL), or only its SO_SNDTIMEO did.
        let mut wait = Patience::new(STALL);
        while !sending.is_finished() && !wait.exhausted() {
            wait.sleep(|slice| thread::sleep(slice.min(Duration::from_millis(10))));
        }
        let returned = sending.is_finished();
        // Bounded by the socket's SO_SNDTIMEO: the thread holds a descriptor, so it must end here.
        let outcome = match sending.join().expect("sending thread") {
            Ok(n) if n == len => "all".to_string(),
            Ok(_) => "partial".to_string(),
            Err(errno) => sys::errno_name(errno),
        };
        for sock in self.socks.values() {
            sock.set_send_timeout(patience::scaled(STALL)).expect("SO_SNDTIMEO");
        }
        if let Step::SendBlocking { result, returned: done, .. } = &mut self.steps[index] {
            (*result, *done) = (outcome, returned);
        }
    }

    /// Reads `role` until the end of stream or an error, waiting at most [`STALL`] without
    /// progress; compares what came with what `role` still expects (any prefix where allowed).
    pub fn read_to_end(&mut self, role: Role) {
        let sock = self.socks.get(&role).expect("read_to_end on a closed role");
        let inbox = self.inbox.get_mut(&role).expect("every role has an inbox");
        let before = inbox.data.len();
        let mut wait = Patience::new(STALL);
        while inbox.open() && !wait.exhausted() {
            wait.sleep(|slice| sys::poll(&[(sock.raw(), libc::POLLIN)], slice).expect("poll"));
            if inbox.take_queued(sock) > 0 {
                wait.progress();
            }
        }
        let end = match (inbox.eof, inbox.error) {
            (true, _) => "eof".to_string(),
            (_, Some(errno)) => sys::errno_name(errno),
            _ => "stalled".to_string(),
        };
        let expected = self.expected.get(&role).map_or(&[][..], Vec::as_slice);
        let got = &inbox.data[before..];
        let seen = Delivered::new(&expected[before.min(expected.len())..], got, self.prefix_ok.contains(&role));
        self.steps.push(Step::ReadToEnd { role, received: seen.received, content: seen.content, end });
    }

    /// Puts `role` (back) into the map at `key`: it picks up the map's programs again.
    pub fn map_insert(&mut self, key: u32, role: Role) {
        let bpf = self.bpf.as_ref().expect("map_insert after free_map");
        let result = bpf.insert(key, self.sock(role)).into();
        self.steps.push(Step::MapInsert { key, role, map: None, result });
    }

    /// Puts `role` at `key` of `map`, which need not be the map under test (BPF_ANY).
    pub fn map_insert_into(&mut self, map: MapKind, key: u32, role: Role) {
        let bpf = self.bpf.as_ref().expect("map_insert_into after free_map");
        let result = bpf.insert_into(map, key, self.sock(role)).into();
        self.steps.push(Step::MapInsert { key, role, map: Some(map.name()), result });
    }

    pub fn map_delete_from(&mut self, map: MapKind, key: u32) {
        let result = self.bpf.as_ref().expect("map_delete_from after free_map").remove_from(map, key).into();
        self.steps.push(Step::MapDeleteFrom { map: map.name(), key, result });
    }

    /// Attaches the path's program to the map under test once more (BPF_PROG_ATTACH).
    pub fn prog_attach(&mut self) {
        let bpf = self.bpf.as_ref().expect("prog_attach after free_map");
        let result = bpf.attach(self.scenario().hook()).map_err(|refused| refused.errno).into();
        self.steps.push(Step::ProgAttach { result });
    }

    /// Points the case's bpf_link at msg_pass: the map hands that to sockets that join from now on.
    pub fn link_update(&mut self) {
        let (bpf, link) = (self.bpf.as_ref().expect("link_update after free_map"), self.link.as_ref());
        let result = bpf.link_update_to_msg_pass(link.expect("link_update without a link")).into();
        self.steps.push(Step::LinkUpdate { result });
    }

    /// BPF_LINK_DETACH of the case's link: the map loses the program, the descriptor stays valid.
    pub fn link_detach(&mut self) {
        let link = self.link.as_ref().expect("link_detach without a link");
        // SAFETY: plain syscall wrapper on a descriptor we own.
        let ret = unsafe { libbpf_rs::libbpf_sys::bpf_link_detach(link.as_raw_fd()) };
        let result = if ret < 0 { Err(sys::Errno::from_raw(-ret)) } else { Ok(()) };
        self.steps.push(Step::LinkDetach { result: result.into() });
    }
}
