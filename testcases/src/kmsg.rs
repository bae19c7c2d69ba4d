//! Kernel splats logged while a case ran, read from /dev/kmsg.

use std::ffi::CStr;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use crate::sys::Errno;

/// What starts a report worth failing a case over. Lockdep's reports start with a banner line, so
/// they are matched by their title.
const SPLAT_STARTS: &[&str] = &[
    "WARNING:",
    "BUG:",
    "kernel BUG at",
    "KASAN",
    "possible circular locking",
    "inconsistent lock state",
    "possible recursive locking",
    "refcount_t:",
    "general protection",
];

/// A report goes on to its "end trace" line; lockdep's have none, so they are cut at the next report
/// or at this length.
const MAX_SPLAT_LINES: usize = 80;

/// The kernel log from the moment of [`Kmsg::open_at_end`] on.
pub struct Kmsg {
    fd: OwnedFd,
}

/// One kernel report: its first line without what changes between runs, and all of it.
#[derive(Debug)]
pub struct Splat {
    pub summary: String,
    pub text: String,
}

impl Kmsg {
    /// Opens /dev/kmsg positioned after its last record, so reads return only what comes next.
    pub fn open_at_end() -> io::Result<Self> {
        const PATH: &CStr = c"/dev/kmsg";
        // SAFETY: plain syscall; a non-negative return is a fresh descriptor we now own.
        let fd = unsafe { libc::open(PATH.as_ptr(), libc::O_RDONLY | libc::O_NONBLOCK | libc::O_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: just returned by the kernel, not shared.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: plain syscall on a descriptor we own.
        if unsafe { libc::lseek(fd.as_raw_fd(), 0, libc::SEEK_END) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Self { fd })
    }

    /// The messages logged since opening (or the last call), one per record.
    pub fn read_new(&self) -> Vec<String> {
        let mut messages = Vec::new();
        // The kernel refuses a read into a buffer smaller than the next record.
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            // SAFETY: the buffer is valid and writable for its length.
            let n = unsafe { libc::read(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if n >= 0 {
                messages.push(message(&buf[..n as usize]));
                continue;
            }
            match Errno::last() {
                Errno::EAGAIN => return messages,
                // Records were overwritten before they were read; the next read resumes after them.
                Errno::EPIPE => messages.push("(kernel log records lost: the log wrapped)".into()),
                errno => panic!("reading /dev/kmsg: {errno}"),
            }
        }
    }
}

/// A /dev/kmsg record reads "<prio>,<seq>,<usec>,<flags>;<message>\n" followed by " KEY=value" lines.
fn message(record: &[u8]) -> String {
    let text = String::from_utf8_lossy(record);
    let body = text.split_once(';').map_or(&*text, |(_, body)| body);
    body.lines().next().unwrap_or_default().to_string()
}

/// The reports among `messages`, each running to its "end trace" line or the next report.
pub fn splats(messages: &[String]) -> Vec<Splat> {
    let mut found = Vec::new();
    let mut rest = messages;
    while let Some(start) = rest.iter().position(|m| starts_splat(m)) {
        let report = &rest[start..];
        let len = (1..report.len().min(MAX_SPLAT_LINES))
            .find_map(|i| match &report[i] {
                m if m.contains("---[ end trace") => Some(i + 1),
                m if starts_splat(m) => Some(i),
                _ => None,
            })
            .unwrap_or(report.len().min(MAX_SPLAT_LINES));
        found.push(Splat { summary: summary(&report[0]), text: report[..len].join("\n") });
        rest = &report[len..];
    }
    found
}

fn starts_splat(message: &str) -> bool {
    SPLAT_STARTS.iter().any(|start| message.contains(start))
}

/// The first line of a report without the CPU, the PID, code offsets and addresses, which change
/// from run to run: "WARNING: at net/ipv4/af_inet.c:156 inet_sock_destruct".
fn summary(line: &str) -> String {
    let mut words = Vec::new();
    let mut tokens = line.split_whitespace();
    while let Some(token) = tokens.next() {
        match token {
            "CPU:" | "PID:" => {
                tokens.next();
            }
            _ if is_address(token) => words.push("<address>"),
            _ => words.push(token.split_once("+0x").map_or(token, |(symbol, _)| symbol)),
        }
    }
    words.join(" ")
}

fn is_address(token: &str) -> bool {
    let digits = token.trim_end_matches([':', ',']);
    let digits = digits.strip_prefix("0x").unwrap_or(digits);
    digits.len() >= 8 && digits.chars().all(|c| c.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(text: &str) -> Vec<String> {
        text.lines().map(str::to_string).collect()
    }

    #[test]
    fn a_warning_runs_to_its_end_trace_and_sums_up_without_run_specifics() {
        let log = lines(
            "sockmap-lab: guest command starting\n\
             ------------[ cut here ]------------\n\
             WARNING: CPU: 1 PID: 38 at net/ipv4/af_inet.c:156 inet_sock_destruct+0x199/0x1b0\n\
             Workqueue: events sk_psock_destroy\n\
             ---[ end trace 0000000000000000 ]---\n\
             unrelated",
        );
        let found = splats(&log);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].summary, "WARNING: at net/ipv4/af_inet.c:156 inet_sock_destruct");
        assert!(found[0].text.starts_with("WARNING: CPU: 1"));
        assert!(found[0].text.ends_with("---[ end trace 0000000000000000 ]---"));
    }

    #[test]
    fn lockdep_and_refcount_reports_count() {
        let log =
            lines("WARNING: possible circular locking dependency detected\nrefcount_t: underflow; use-after-free.");
        let summaries: Vec<String> = splats(&log).into_iter().map(|s| s.summary).collect();
        assert_eq!(summaries.len(), 2, "{summaries:?}");
        assert_eq!(
            summary("general protection fault, probably for non-canonical address 0xdffffc0000000003: 0000"),
            "general protection fault, probably for non-canonical address <address> 0000"
        );
    }

    #[test]
    fn records_keep_their_message_only() {
        assert_eq!(message(b"4,1234,5678,-;WARNING: at x\n SUBSYSTEM=net\n"), "WARNING: at x");
    }
}
