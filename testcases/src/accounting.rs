//! Socket accounting: every socket a case creates must die clean.
//!
//! bpf/accounting.bpf.c reports each dying socket through a ring buffer, with the memory counters
//! the kernel expects to be back to zero by then. A case records every socket it creates in a
//! [`Ledger`] (by SO_COOKIE, which is also what makes the probe report it). After the case has
//! closed them all, [`Audit::finish`] waits for each one's report, checks that TCP's and UDP's
//! sockets and memory in /proc/net/sockstat are back where they were, and collects any kernel
//! splat logged meanwhile.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::mem::{size_of, MaybeUninit};
use std::os::fd::AsFd;
use std::path::Path;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use libbpf_rs::skel::{OpenSkel, Skel, SkelBuilder};
use libbpf_rs::{OpenObject, RingBufferBuilder};
use serde::Serialize;

use crate::kmsg::{self, Kmsg};
use crate::observation::Role;
use crate::sys::Sock;

mod skel {
    include!(concat!(env!("OUT_DIR"), "/accounting.skel.rs"));
}

use skel::{AccountingSkel, AccountingSkelBuilder};

/// How long the sockets of a case may take to be destroyed once it closed them, in time the guest
/// ran. TCP's teardown, the sockmap's deferred free and the psock's and listeners' RCU-delayed
/// release take up to some 50 ms under TCG.
const DESTROY_WAIT: Duration = Duration::from_secs(5);

/// The bounds above hold for the lab's normal kernels. A debug kernel (KASAN, lockdep, kmemleak)
/// under TCG runs several times slower, and RCU-deferred frees (listeners) wait for grace periods
/// that stretch with it; the lab sets LAB_WAIT_SCALE for such kernels rather than loosen the
/// bound for everyone.
pub(crate) use crate::patience::scaled;
const POLL_SLICE: Duration = Duration::from_millis(100);

/// How long sockstat may take to come back to its baseline once every socket is destroyed. It is
/// polled: the kernel has no event for it.
const SETTLE: Duration = Duration::from_secs(2);
const SETTLE_POLL: Duration = Duration::from_millis(10);

/// struct destroyed in bpf/accounting.h.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
struct Destroyed {
    cookie: u64,
    family: u32,
    kind: u32,
    state: u32,
    rmem_alloc: i32,
    wmem_alloc: i32,
    wmem_queued: i32,
    forward_alloc: i32,
    pad: u32,
}

impl Destroyed {
    fn parse(bytes: &[u8]) -> Self {
        assert_eq!(bytes.len(), size_of::<Self>(), "bpf/accounting.h and Destroyed disagree");
        // SAFETY: Destroyed is plain #[repr(C)] data that any bit pattern is valid for, and the
        // length matches (asserted above).
        unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) }
    }

    fn counters(&self) -> Counters {
        Counters {
            rmem_alloc: self.rmem_alloc,
            wmem_alloc: self.wmem_alloc,
            wmem_queued: self.wmem_queued,
            forward_alloc: self.forward_alloc,
        }
    }
}

/// How the probe hooks the destructors.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Mechanism {
    /// BPF trampolines on the destructors' return: needs the kernel's BTF.
    Fexit,
    /// A kprobe at entry remembers the socket, a kretprobe reports it.
    Kprobe,
}

/// The accounting probe, loaded and attached once per test process: loading parses the kernel's
/// BTF and runs the verifier, about 0.3 s under TCG, which would be two minutes over the suite if
/// every case paid it. Each case only looks at the reports for its own sockets.
pub struct Probe {
    skel: AccountingSkel<'static>,
    pub mechanism: Mechanism,
    /// The loaded programs' ids, to read their run statistics.
    ids: Vec<u32>,
}

static PROBE: OnceLock<Probe> = OnceLock::new();

impl Probe {
    pub fn get() -> &'static Probe {
        PROBE.get_or_init(Probe::load)
    }

    /// fexit where the kernel has BTF, kprobes otherwise or if fexit fails to attach;
    /// LAB_ACCOUNTING_PROBE=fexit|kprobe picks one (to exercise the fallback on a kernel with BTF).
    fn load() -> Self {
        load_vsock();
        let forced = std::env::var("LAB_ACCOUNTING_PROBE").ok();
        let first = match forced.as_deref() {
            Some("fexit") => Mechanism::Fexit,
            Some("kprobe") => Mechanism::Kprobe,
            Some(other) => panic!("LAB_ACCOUNTING_PROBE={other}: expected fexit or kprobe"),
            None if Path::new("/sys/kernel/btf/vmlinux").exists() => Mechanism::Fexit,
            None => Mechanism::Kprobe,
        };
        let attempt = |mechanism| {
            Self::load_with(mechanism).map(|skel| {
                let ids = skel
                    .object()
                    .progs()
                    .filter(|p| p.autoload())
                    .filter_map(|p| libbpf_rs::Program::id_from_fd(p.as_fd()).ok())
                    .collect();
                Self { skel, mechanism, ids }
            })
        };
        match attempt(first) {
            Ok(probe) => probe,
            Err(fexit) if first == Mechanism::Fexit && forced.is_none() => {
                attempt(Mechanism::Kprobe).unwrap_or_else(|kprobe| {
                    panic!("accounting probe: fexit failed ({fexit:#}), kprobe failed ({kprobe:#})")
                })
            }
            Err(err) => panic!("accounting probe ({first:?}): {err:#}"),
        }
    }

    /// How many times the kernel skipped one of the probe's programs (recursion on one CPU, or a
    /// kprobe while another BPF program ran): a socket destroyed then may go unreported.
    pub fn misses(&self) -> u64 {
        libbpf_rs::query::ProgInfoIter::default()
            .filter(|info| self.ids.contains(&info.id))
            .map(|info| info.recursion_misses)
            .sum()
    }

    fn load_with(mechanism: Mechanism) -> libbpf_rs::Result<AccountingSkel<'static>> {
        // The skeleton borrows its object for as long as it lives, which is the whole process.
        let object = Box::leak(Box::new(MaybeUninit::<OpenObject>::uninit()));
        let mut open = AccountingSkelBuilder::default().open(object)?;
        let fexit = mechanism == Mechanism::Fexit;
        let progs = &mut open.progs;
        for prog in [
            &mut progs.inet_destructed,
            &mut progs.inet_destructed_twin,
            &mut progs.unix_destructed,
            &mut progs.unix_destructed_twin,
            &mut progs.vsock_destructed,
            &mut progs.vsock_destructed_twin,
        ] {
            prog.set_autoload(fexit);
        }
        for prog in [
            &mut progs.inet_destructing,
            &mut progs.inet_destructed_ret,
            &mut progs.unix_destructing,
            &mut progs.unix_destructed_ret,
            &mut progs.vsock_destructing,
            &mut progs.vsock_destructed_ret,
        ] {
            prog.set_autoload(!fexit);
        }
        let mut skel = open.load()?;
        skel.attach()?;
        Ok(skel)
    }
}

/// AF_VSOCK may be a module, which the kernel loads on the first vsock socket; its destructor can
/// only be hooked once it is loaded.
fn load_vsock() {
    drop(Sock::new(libc::AF_VSOCK, libc::SOCK_STREAM));
}

/// One protocol's line of /proc/net/sockstat.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Usage {
    inuse: i64,
    /// Pages.
    mem: i64,
}

/// TCP's and UDP's lines of the calling thread's /proc/net/sockstat ("inuse" is per network
/// namespace, and /proc/net is the main thread's, which is not where the case runs).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Sockstat {
    tcp: Usage,
    udp: Usage,
}

impl Sockstat {
    fn read() -> Self {
        let text = std::fs::read_to_string("/proc/thread-self/net/sockstat").expect("reading sockstat");
        let usage = |proto: &str| {
            let line =
                text.lines().find_map(|l| l.strip_prefix(proto)).unwrap_or_else(|| panic!("no {proto} in sockstat"));
            let words: Vec<&str> = line.split_whitespace().collect();
            let field = |name: &str| -> i64 {
                let at =
                    words.iter().position(|w| *w == name).unwrap_or_else(|| panic!("no {proto} {name} in sockstat"));
                words.get(at + 1).and_then(|n| n.parse().ok()).expect("sockstat values are numbers")
            };
            Usage { inuse: field("inuse"), mem: field("mem") }
        };
        Self { tcp: usage("TCP:"), udp: usage("UDP:") }
    }
}

/// How far sockstat's "mem" can move with no memory gained or lost, in pages.
///
/// The kernel batches protocol memory accounting per CPU (sk_memory_allocated_add/sub in
/// include/net/proto_memory.h): a CPU keeps its share to itself until it reaches
/// net.core.mem_pcpu_rsv pages (SK_MEMORY_PCPU_RESERVE, 1 MiB, on kernels without the sysctl)
/// either way, so each CPU holds back at most that less one page, in either direction, and the
/// global counter behind "mem" is off from the true total by up to that much per CPU. Between two
/// readings with the same true total it can then move by twice that per CPU. The exact total needs
/// the per-CPU counters, which BPF can only find with CONFIG_KALLSYMS_ALL, and the lab's kernels do
/// not have it. ("inuse" has no such batching: it is summed over the CPUs when read.)
fn reserve_bound() -> i64 {
    let reserve = std::fs::read_to_string("/proc/sys/net/core/mem_pcpu_rsv")
        .ok()
        .map(|text| text.trim().parse::<i64>().expect("mem_pcpu_rsv is a number"))
        .unwrap_or_else(|| {
            // SAFETY: plain libc call.
            let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
            (1 << 20) / page as i64
        });
    let cpus = libbpf_rs::num_possible_cpus().expect("counting possible CPUs") as i64;
    2 * cpus * (reserve - 1)
}

/// The sockets a case created, by cookie.
#[derive(Default)]
pub struct Ledger {
    sockets: BTreeMap<u64, Role>,
}

impl Ledger {
    /// Records `sock` as `role`. Asking for its cookie is also what makes the probe report it.
    pub fn record(&mut self, role: Role, sock: &Sock) {
        let cookie = sock.cookie().unwrap_or_else(|errno| panic!("SO_COOKIE of {role:?}: {errno}"));
        self.sockets.insert(cookie, role);
    }

    /// Takes over what `other` recorded (sockets a case made while it ran).
    pub fn extend(&mut self, other: Ledger) {
        self.sockets.extend(other.sockets);
    }
}

/// What the accounting saw of a case; part of its observation.
#[derive(Debug, Serialize)]
pub struct Accounting {
    /// How each socket the case created was destroyed.
    pub sockets: BTreeMap<Role, Ending>,
    /// TCP and UDP sockets in use and memory (in pages), after the case less before it.
    pub sockstat: SockstatChange,
    /// The kernel's reports while the case ran, first line only, without what changes between runs.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub splats: Vec<String>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Ending {
    /// Destroyed with all four counters at zero.
    Clean,
    /// Destroyed with counters the kernel expects to be zero: the socket's memory accounting lost
    /// track somewhere.
    Unclean(Counters),
    /// Not destroyed within [`DESTROY_WAIT`] of the case closing it.
    Leaked,
}

/// The counters inet_sock_destruct() warns about, as they were when the destructor returned; only
/// the non-zero ones are recorded.
#[derive(Debug, PartialEq, Eq, Serialize)]
pub struct Counters {
    #[serde(skip_serializing_if = "is_zero")]
    pub rmem_alloc: i32,
    #[serde(skip_serializing_if = "is_zero")]
    pub wmem_alloc: i32,
    #[serde(skip_serializing_if = "is_zero")]
    pub wmem_queued: i32,
    #[serde(skip_serializing_if = "is_zero")]
    pub forward_alloc: i32,
}

fn is_zero(n: &i32) -> bool {
    *n == 0
}

impl Counters {
    fn clean(&self) -> bool {
        *self == Counters { rmem_alloc: 0, wmem_alloc: 0, wmem_queued: 0, forward_alloc: 0 }
    }
}

/// /proc/net/sockstat after the case against before it.
#[derive(Debug, Default, PartialEq, Eq, Serialize)]
pub struct SockstatChange {
    pub tcp_inuse: i64,
    pub udp_inuse: i64,
    /// How far "mem" (pages) moved beyond what the CPUs' reserves can explain ([`reserve_bound`]).
    pub tcp_mem_beyond_reserves: i64,
    pub udp_mem_beyond_reserves: i64,
}

impl SockstatChange {
    fn between(before: Sockstat, after: Sockstat, bound: i64) -> Self {
        let beyond = |change: i64| change.signum() * (change.abs() - bound).max(0);
        Self {
            tcp_inuse: after.tcp.inuse - before.tcp.inuse,
            udp_inuse: after.udp.inuse - before.udp.inuse,
            tcp_mem_beyond_reserves: beyond(after.tcp.mem - before.tcp.mem),
            udp_mem_beyond_reserves: beyond(after.udp.mem - before.udp.mem),
        }
    }
}

/// A case's accounting, from before its first socket to after its last one is gone.
pub struct Audit {
    probe: &'static Probe,
    kmsg: Kmsg,
    baseline: Sockstat,
    bound: i64,
    /// The probe's skipped runs when the case began (see [`Probe::misses`]).
    misses: u64,
}

impl Audit {
    /// Call in the case's network namespace, before it creates any socket.
    pub fn begin() -> Self {
        let probe = Probe::get();
        let kmsg = Kmsg::open_at_end().expect("opening /dev/kmsg");
        Self { probe, kmsg, baseline: Sockstat::read(), bound: reserve_bound(), misses: probe.misses() }
    }

    pub fn mechanism(&self) -> Mechanism {
        self.probe.mechanism
    }

    /// Call once the case has closed every socket in `ledger`. Returns the accounting and, when it
    /// is not clean, why, with the evidence (cookies, counters, the kernel's reports in full).
    pub fn finish(self, ledger: &Ledger) -> (Accounting, Option<String>) {
        let destroyed = self.wait_destroyed(ledger);
        let mut evidence = String::new();
        let mut sockets = BTreeMap::new();
        for (cookie, role) in &ledger.sockets {
            let ending = match destroyed.get(cookie) {
                None => {
                    let _ = writeln!(
                        evidence,
                        "leaked socket: {} (cookie {cookie}) not destroyed within {:?}{}",
                        role.name(),
                        scaled(DESTROY_WAIT),
                        match self.probe.misses() - self.misses {
                            0 => String::new(),
                            n => format!(" (the probe skipped {n} destructor runs meanwhile: recursion)"),
                        }
                    );
                    Ending::Leaked
                }
                Some(event) if event.counters().clean() => Ending::Clean,
                Some(event) => {
                    let _ = writeln!(
                        evidence,
                        "{} (cookie {cookie}, {} {}, state {}) destroyed with sk_rmem_alloc {}, sk_wmem_alloc {}, \
                         sk_wmem_queued {}, sk_forward_alloc {}",
                        role.name(),
                        family_name(event.family),
                        type_name(event.kind),
                        event.state,
                        event.rmem_alloc,
                        event.wmem_alloc,
                        event.wmem_queued,
                        event.forward_alloc,
                    );
                    Ending::Unclean(event.counters())
                }
            };
            sockets.insert(*role, ending);
        }

        let (sockstat, after) = self.settle();
        if sockstat != SockstatChange::default() {
            let _ = writeln!(
                evidence,
                "sockstat not back to its baseline within {:?}: before {:?}, after {after:?} \
                 (mem may move {} pages with the CPUs' reserves)",
                scaled(SETTLE),
                self.baseline,
                self.bound
            );
        }

        let splats = kmsg::splats(&self.kmsg.read_new());
        for splat in &splats {
            let _ = writeln!(evidence, "kernel log:\n{}", splat.text);
        }

        let accounting = Accounting { sockets, sockstat, splats: splats.into_iter().map(|s| s.summary).collect() };
        (accounting, (!evidence.is_empty()).then_some(evidence))
    }

    /// The probe's reports for the ledger's sockets, waiting on the ring buffer (bounded by
    /// [`DESTROY_WAIT`]) until every one of them arrived.
    fn wait_destroyed(&self, ledger: &Ledger) -> BTreeMap<u64, Destroyed> {
        let seen = RefCell::new(BTreeMap::new());
        let mut builder = RingBufferBuilder::new();
        builder
            .add(&self.probe.skel.maps.destroyed, |bytes| {
                let event = Destroyed::parse(bytes);
                if ledger.sockets.contains_key(&event.cookie) {
                    seen.borrow_mut().entry(event.cookie).or_insert(event);
                }
                0
            })
            .expect("adding the destroyed ring buffer");
        let ring = builder.build().expect("opening the destroyed ring buffer");
        let mut left = scaled(DESTROY_WAIT);
        loop {
            ring.consume().expect("reading the destroyed ring buffer");
            if seen.borrow().len() == ledger.sockets.len() || left.is_zero() {
                break;
            }
            // A slice counts for no more than its own length: under TCG on a busy host the guest
            // can stand still for seconds, and that must not use up the wait.
            let slice = left.min(POLL_SLICE);
            let started = Instant::now();
            ring.poll(slice).expect("waiting on the destroyed ring buffer");
            left -= started.elapsed().min(slice);
        }
        drop(ring);
        seen.into_inner()
    }

    /// sockstat against the baseline, polled until it is back there or [`SETTLE`] passed; also
    /// returns the last reading.
    fn settle(&self) -> (SockstatChange, Sockstat) {
        let deadline = Instant::now() + scaled(SETTLE);
        loop {
            let now = Sockstat::read();
            let change = SockstatChange::between(self.baseline, now, self.bound);
            if change == SockstatChange::default() || Instant::now() >= deadline {
                return (change, now);
            }
            std::thread::sleep(SETTLE_POLL);
        }
    }
}

fn family_name(family: u32) -> String {
    match family as i32 {
        libc::AF_INET => "AF_INET".into(),
        libc::AF_INET6 => "AF_INET6".into(),
        libc::AF_UNIX => "AF_UNIX".into(),
        libc::AF_VSOCK => "AF_VSOCK".into(),
        other => format!("family {other}"),
    }
}

fn type_name(kind: u32) -> String {
    match kind as i32 {
        libc::SOCK_STREAM => "SOCK_STREAM".into(),
        libc::SOCK_DGRAM => "SOCK_DGRAM".into(),
        libc::SOCK_SEQPACKET => "SOCK_SEQPACKET".into(),
        other => format!("type {other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_counts_only_beyond_what_the_reserves_explain() {
        let at = |tcp_mem, udp_mem| Sockstat {
            tcp: Usage { inuse: 0, mem: tcp_mem },
            udp: Usage { inuse: 0, mem: udp_mem },
        };
        assert_eq!(SockstatChange::between(at(1000, 0), at(100, 510), 1020), SockstatChange::default());
        let change = SockstatChange::between(at(0, 2000), at(1030, 0), 1020);
        assert_eq!((change.tcp_mem_beyond_reserves, change.udp_mem_beyond_reserves), (10, -980));
    }
}
