//! One measured run: a throughput run (stream messages of one size for a time budget) or a latency
//! run (lockstep request/response), with the kernel's context-switch counters around it.

use std::fs::File;
use std::io::{ErrorKind, Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Barrier;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde::Serialize;

use crate::path::{Endpoints, READ_POLL, STALL};

/// Reads take up to the largest message size at once, so the reader never splits a big message and
/// coalesces small ones the way a streaming application would.
const READ_CHUNK: usize = 64 * 1024;
/// The sender looks at the clock about once per this many bytes: often enough to stop near the
/// budget, rarely enough not to add a clock read to every small send.
const CLOCK_EVERY_BYTES: usize = 4096;
/// Bytes sent but not yet read beyond which the sender waits, 1 ms at a time. Should it engage on a
/// path that pushes back by itself, the receiver still has this much queued, far more than it
/// reads in 1 ms, so it costs that path nothing.
const IN_FLIGHT_MAX: u64 = 4 << 20;
/// Latency runs go on past their budget until they have this many samples, so p99 means something.
const MIN_SAMPLES: usize = 100;

#[derive(Debug, Serialize)]
pub struct ThroughputRun {
    /// Messages the sender wrote whole.
    pub messages: u64,
    /// Bytes the receiver read, including any beyond what was sent.
    pub bytes: u64,
    /// Messages whose stamp (their sequence number) the receiver read in order: a content check of
    /// its own, apart from the byte count the read loop stops on.
    pub verified_messages: u64,
    /// From the sender's first write to the receiver's last read.
    pub seconds: f64,
    #[serde(flatten)]
    pub switches: Switches,
}

#[derive(Debug, Serialize)]
pub struct LatencyRun {
    pub samples: u64,
    /// Request written → request read by the responder (both stamped on the same monotonic clock).
    pub one_way_p50_us: f64,
    pub one_way_p99_us: f64,
    /// Request written → the responder's reply, sent back over an AF_UNIX socketpair, read.
    pub round_trip_p50_us: f64,
    pub round_trip_p99_us: f64,
    #[serde(flatten)]
    pub switches: Switches,
}

/// Context switches during a run, as the kernel counts them, and the TCP segments sent.
#[derive(Debug, Serialize)]
pub struct Switches {
    /// This process, every thread (getrusage(RUSAGE_SELF) counts finished threads too).
    pub voluntary_switches: u64,
    pub involuntary_switches: u64,
    /// The whole guest (/proc/stat ctxt): also counts the kworkers that carry the sk_skb
    /// redirects' backlog, which the process counters miss.
    pub system_switches: u64,
    /// The whole guest's TCP segments sent (/proc/net/snmp Tcp OutSegs: data and pure ACKs, on
    /// every hop of the path): whether a sender's small writes left as one segment each.
    pub tcp_segments: u64,
}

impl Switches {
    fn now() -> anyhow::Result<Self> {
        // SAFETY: getrusage fills the struct we pass; all-zero is a valid starting value.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: `usage` is a valid rusage to fill.
        if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
            return Err(std::io::Error::last_os_error()).context("getrusage");
        }
        let stat = std::fs::read_to_string("/proc/stat").context("reading /proc/stat")?;
        let ctxt = stat
            .lines()
            .find_map(|l| l.strip_prefix("ctxt "))
            .and_then(|v| v.trim().parse().ok())
            .context("/proc/stat has no ctxt line")?;
        Ok(Self {
            voluntary_switches: usage.ru_nvcsw as u64,
            involuntary_switches: usage.ru_nivcsw as u64,
            system_switches: ctxt,
            tcp_segments: tcp_out_segments()?,
        })
    }

    fn since(self, before: &Self) -> Self {
        Self {
            voluntary_switches: self.voluntary_switches - before.voluntary_switches,
            involuntary_switches: self.involuntary_switches - before.involuntary_switches,
            system_switches: self.system_switches - before.system_switches,
            tcp_segments: self.tcp_segments - before.tcp_segments,
        }
    }
}

/// /proc/net/snmp has a header line and a value line per protocol; OutSegs is a column of `Tcp:`.
fn tcp_out_segments() -> anyhow::Result<u64> {
    out_segments(&std::fs::read_to_string("/proc/net/snmp").context("reading /proc/net/snmp")?)
}

fn out_segments(snmp: &str) -> anyhow::Result<u64> {
    let mut tcp = snmp.lines().filter_map(|l| l.strip_prefix("Tcp: "));
    let (names, values) = tcp.next().zip(tcp.next()).context("/proc/net/snmp has no Tcp lines")?;
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(name, _)| *name == "OutSegs")
        .and_then(|(_, v)| v.parse().ok())
        .context("/proc/net/snmp has no Tcp OutSegs")
}

/// What the sender and the receiver of a throughput run tell each other.
struct Flow {
    /// u64::MAX until the sender knows how much it sent.
    sent_total: AtomicU64,
    sender_failed: AtomicBool,
    received: AtomicU64,
    start_line: Barrier,
}

/// Streams `size`-byte messages from `ends.sender` for `budget` while another thread reads
/// `ends.receiver` until every byte has arrived.
pub fn throughput(ends: &Endpoints, size: usize, budget: Duration) -> anyhow::Result<ThroughputRun> {
    let before = Switches::now()?;
    let flow = Flow {
        sent_total: AtomicU64::new(u64::MAX),
        sender_failed: AtomicBool::new(false),
        received: AtomicU64::new(0),
        start_line: Barrier::new(2),
    };
    let (sent, received) = thread::scope(|s| {
        let receiver = s.spawn(|| receive_all(&ends.receiver, size, &flow));
        flow.start_line.wait();
        let sent = send_for(&ends.sender, size, budget, &flow);
        match &sent {
            Ok((_, messages)) => flow.sent_total.store(messages * size as u64, Ordering::Release),
            Err(_) => flow.sender_failed.store(true, Ordering::Release),
        }
        (sent, receiver.join().expect("receiver thread"))
    });
    let (start, messages) = sent.context("sending")?;
    let (end, bytes, stamps) = received.context("receiving")?;
    if let Some(broken) = stamps.broken {
        bail!("receiving: the content is not what was sent: {broken}");
    }
    Ok(ThroughputRun {
        messages,
        bytes,
        verified_messages: stamps.verified,
        seconds: (end - start).as_secs_f64(),
        switches: Switches::now()?.since(&before),
    })
}

/// Returns when it started and how many messages it wrote.
fn send_for(sock: &File, size: usize, budget: Duration, flow: &Flow) -> anyhow::Result<(Instant, u64)> {
    let mut message = vec![0x5a; size];
    let clock_every = (CLOCK_EVERY_BYTES / size).max(1) as u64;
    let start = Instant::now();
    let deadline = start + budget;
    let mut messages = 0u64;
    while !messages.is_multiple_of(clock_every) || Instant::now() < deadline {
        // On the sk_skb paths A's receive queue is emptied as fast as data arrives, whatever the
        // redirect target keeps up with, so only this window pushes back on the sender: without
        // it the backlog grows for the whole budget and takes seconds to drain.
        let waiting = Instant::now();
        while messages * size as u64 - flow.received.load(Ordering::Relaxed) > IN_FLIGHT_MAX {
            if waiting.elapsed() > STALL {
                bail!("stalled: the receiver took nothing for {STALL:?}");
            }
            thread::sleep(Duration::from_millis(1));
        }
        stamp(&mut message, messages);
        write_whole(sock, &message).with_context(|| format!("after {messages} messages"))?;
        messages += 1;
    }
    Ok((start, messages))
}

/// Returns when the last byte arrived, how many bytes did (those beyond what was sent too), and
/// what the content check found.
fn receive_all(sock: &File, size: usize, flow: &Flow) -> anyhow::Result<(Instant, u64, Stamps)> {
    let mut buf = vec![0; READ_CHUNK];
    let mut received = 0u64;
    let mut stamps = Stamps::new(size);
    flow.start_line.wait();
    let mut last_read = Instant::now();
    while received < flow.sent_total.load(Ordering::Acquire) {
        if flow.sender_failed.load(Ordering::Acquire) {
            bail!("the sender failed after {received} bytes arrived");
        }
        match (&*sock).read(&mut buf) {
            Ok(0) => bail!("end of stream after {received} bytes"),
            Ok(n) => {
                stamps.check(&buf[..n]);
                received += n as u64;
                flow.received.store(received, Ordering::Relaxed);
                last_read = Instant::now();
            }
            Err(e) if is_timeout(&e) && last_read.elapsed() < STALL => {}
            Err(e) if is_timeout(&e) => bail!("stalled: nothing arrived for {STALL:?} after {received} bytes"),
            Err(e) => return Err(e).context(format!("read after {received} bytes")),
        }
    }
    // Whatever is already queued beyond what was sent counts too: a path that duplicates data
    // must not look complete because the loop stopped at the expected count.
    received += surplus(sock, &mut buf);
    Ok((last_read, received, stamps))
}

/// Bytes readable right now, without waiting.
fn surplus(sock: &impl std::os::fd::AsRawFd, buf: &mut [u8]) -> u64 {
    let mut total = 0;
    loop {
        // SAFETY: buf is a valid, writable buffer of buf.len() bytes.
        let n = unsafe { libc::recv(sock.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT) };
        if n <= 0 {
            return total;
        }
        total += n as u64;
    }
}

/// Each message starts with its sequence number, little-endian, as many bytes of it as fit.
const STAMP: usize = 8;

fn stamp(message: &mut [u8], sequence: u64) {
    let len = STAMP.min(message.len());
    message[..len].copy_from_slice(&sequence.to_le_bytes()[..len]);
}

/// The receiver's content check: reads the stream at its own offsets, message by message, and
/// counts the stamps that arrived whole and in order until the first that did not.
#[derive(Debug)]
struct Stamps {
    size: u64,
    /// Stream offset of the next byte to check.
    offset: u64,
    verified: u64,
    broken: Option<String>,
}

impl Stamps {
    fn new(size: usize) -> Self {
        Self { size: size as u64, offset: 0, verified: 0, broken: None }
    }

    fn check(&mut self, chunk: &[u8]) {
        let (start, end) = (self.offset, self.offset + chunk.len() as u64);
        self.offset = end;
        let stamp_len = STAMP.min(self.size as usize) as u64;
        let mut message = start / self.size;
        while self.broken.is_none() && message * self.size < end {
            let expected = message.to_le_bytes();
            for at in 0..stamp_len {
                let offset = message * self.size + at;
                if offset < start || offset >= end {
                    continue;
                }
                let got = chunk[(offset - start) as usize];
                if got != expected[at as usize] {
                    self.broken = Some(format!(
                        "message {message}'s stamp byte {at} is {got:#04x}, not {:#04x} (stream offset {offset})",
                        expected[at as usize]
                    ));
                    return;
                }
                if at == stamp_len - 1 {
                    self.verified += 1;
                }
            }
            message += 1;
        }
    }
}

/// Lockstep requests of `size` bytes over the path: the next goes out only once the previous one's
/// reply is back, so each sample is one message's latency with no queue in front of it.
pub fn latency(ends: &Endpoints, size: usize, budget: Duration) -> anyhow::Result<LatencyRun> {
    // The reply leg is the same for every path, and AF_UNIX keeps its share of the round trip small.
    let (reply_tx, reply_rx) = UnixStream::pair()?;
    reply_rx.set_read_timeout(Some(READ_POLL))?;
    reply_tx.set_write_timeout(Some(STALL))?;
    let before = Switches::now()?;
    let origin = Instant::now();
    let (one_way, round_trip) = thread::scope(|s| {
        let responder = s.spawn(|| respond(&ends.receiver, &reply_tx, size, origin));
        let asked = request(&ends.sender, &reply_rx, size, budget, origin);
        let answered = responder.join().expect("responder thread");
        // The responder's error is the cause when both fail: the requester only saw no reply.
        answered.context("responding")?;
        asked.context("requesting")
    })?;
    let switches = Switches::now()?.since(&before);
    let (one_way, round_trip) = (Percentiles::of(one_way), Percentiles::of(round_trip));
    Ok(LatencyRun {
        samples: one_way.samples,
        one_way_p50_us: one_way.p50,
        one_way_p99_us: one_way.p99,
        round_trip_p50_us: round_trip.p50,
        round_trip_p99_us: round_trip.p99,
        switches,
    })
}

/// The first byte of a request says whether another follows.
const MORE: u8 = 0;
const LAST: u8 = 1;

/// Returns the one-way and round-trip times, in nanoseconds.
fn request(
    sock: &File,
    replies: &UnixStream,
    size: usize,
    budget: Duration,
    origin: Instant,
) -> anyhow::Result<(Vec<u64>, Vec<u64>)> {
    let mut message = vec![MORE; size];
    let mut reply = [0u8; 8];
    let (mut one_way, mut round_trip) = (Vec::new(), Vec::new());
    let deadline = Instant::now() + budget;
    loop {
        let last = one_way.len() + 1 >= MIN_SAMPLES && Instant::now() >= deadline;
        message[0] = if last { LAST } else { MORE };
        let sent = origin.elapsed().as_nanos() as u64;
        write_whole(sock, &message).with_context(|| format!("request {}", one_way.len() + 1))?;
        read_whole(replies, &mut reply).with_context(|| format!("reply {}", one_way.len() + 1))?;
        let back = origin.elapsed().as_nanos() as u64;
        one_way.push(u64::from_ne_bytes(reply).saturating_sub(sent));
        round_trip.push(back - sent);
        if last {
            return Ok((one_way, round_trip));
        }
    }
}

/// Answers each request with the time it arrived.
fn respond(sock: &File, replies: &UnixStream, size: usize, origin: Instant) -> anyhow::Result<()> {
    let mut message = vec![0; size];
    for n in 1.. {
        read_whole(sock, &mut message).with_context(|| format!("request {n}"))?;
        let arrived = origin.elapsed().as_nanos() as u64;
        write_whole(replies, &arrived.to_ne_bytes()).with_context(|| format!("reply {n}"))?;
        if message[0] == LAST {
            break;
        }
    }
    Ok(())
}

struct Percentiles {
    samples: u64,
    p50: f64,
    p99: f64,
}

impl Percentiles {
    /// Nearest-rank percentiles of nanosecond samples, in microseconds.
    fn of(mut ns: Vec<u64>) -> Self {
        ns.sort_unstable();
        let rank = |p: f64| ns[((p * ns.len() as f64).ceil() as usize).clamp(1, ns.len()) - 1] as f64 / 1000.0;
        Self { samples: ns.len() as u64, p50: rank(0.50), p99: rank(0.99) }
    }
}

fn is_timeout(e: &std::io::Error) -> bool {
    matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)
}

fn write_whole(mut sock: impl Write, buf: &[u8]) -> anyhow::Result<()> {
    sock.write_all(buf).map_err(|e| {
        if is_timeout(&e) {
            anyhow::anyhow!("stalled: a write blocked for {STALL:?}")
        } else {
            e.into()
        }
    })
}

/// read_exact over a socket whose reads time out every READ_POLL: gives up only after STALL
/// without progress.
fn read_whole(mut sock: impl Read, buf: &mut [u8]) -> anyhow::Result<()> {
    let mut filled = 0;
    let mut last_progress = Instant::now();
    while filled < buf.len() {
        match sock.read(&mut buf[filled..]) {
            Ok(0) => bail!("end of stream"),
            Ok(n) => {
                filled += n;
                last_progress = Instant::now();
            }
            Err(e) if is_timeout(&e) && last_progress.elapsed() < STALL => {}
            Err(e) if is_timeout(&e) => bail!("stalled: nothing arrived for {STALL:?}"),
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{out_segments, stamp, surplus, Percentiles, Stamps};

    #[test]
    fn bytes_queued_beyond_the_expected_count_are_counted() {
        use std::io::Write;
        let (mut tx, rx) = std::os::unix::net::UnixStream::pair().unwrap();
        let mut buf = vec![0; 8];
        assert_eq!(surplus(&rx, &mut buf), 0, "nothing queued: no wait, nothing counted");
        tx.write_all(&[1; 20]).unwrap();
        assert_eq!(surplus(&rx, &mut buf), 20);
    }

    fn stream(size: usize, messages: u64) -> Vec<u8> {
        let mut out = Vec::new();
        for k in 0..messages {
            let mut m = vec![0x5a; size];
            stamp(&mut m, k);
            out.extend(m);
        }
        out
    }

    fn verify(size: usize, data: &[u8], chunk: usize) -> Stamps {
        let mut stamps = Stamps::new(size);
        for piece in data.chunks(chunk) {
            stamps.check(piece);
        }
        stamps
    }

    #[test]
    fn every_message_sent_whole_and_in_order_is_verified_however_the_reads_split_it() {
        for (size, chunk) in [(16, 7), (16, 4096), (4, 3), (1024, 1000), (65536, 65536)] {
            let s = verify(size, &stream(size, 300), chunk);
            assert_eq!((s.verified, s.broken.as_deref()), (300, None), "size {size}, reads of {chunk}");
        }
    }

    #[test]
    fn a_lost_repeated_or_reordered_message_breaks_the_check() {
        let data = stream(16, 100);
        let mut lost_byte = data.clone();
        lost_byte.remove(16 * 40 + 3);
        let mut repeated = data[..16 * 50].to_vec();
        repeated.extend_from_slice(&data[16 * 49..]);
        let mut swapped = data.clone();
        swapped[16 * 10..16 * 12].rotate_left(16);
        for (what, bad, verified) in
            [("lost byte", lost_byte, 40), ("repeated message", repeated, 50), ("swapped", swapped, 10)]
        {
            let s = verify(16, &bad, 64);
            assert_eq!(s.verified, verified, "{what}");
            assert!(s.broken.is_some(), "{what}");
        }
    }

    #[test]
    fn percentiles_are_nearest_rank_in_microseconds() {
        let p = Percentiles::of((1..=200).rev().map(|i| i * 1000).collect());
        assert_eq!((p.samples, p.p50, p.p99), (200, 100.0, 198.0));
        let one = Percentiles::of(vec![5000]);
        assert_eq!((one.p50, one.p99), (5.0, 5.0));
    }

    #[test]
    fn out_segments_is_read_from_the_tcp_value_line() {
        let snmp = "Ip: Forwarding DefaultTTL\nIp: 1 64\n\
                    Tcp: RtoAlgorithm RtoMin ActiveOpens InSegs OutSegs RetransSegs\n\
                    Tcp: 1 200 12 4567 8910 3\n\
                    Udp: InDatagrams\nUdp: 5\n";
        assert_eq!(out_segments(snmp).unwrap(), 8910);
        assert!(out_segments("Udp: InDatagrams\nUdp: 5\n").is_err());
    }
}
