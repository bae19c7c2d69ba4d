//! Two threads sending on one socket at once. tcp_bpf_send_verdict() lets go of the sender's lock
//! while it redirects, so a second sendmsg() on the same socket can run its verdict, or cork, in
//! the middle of the first one's: the cork checks of patch 11 are about exactly that.

use std::thread;
use std::time::Duration;

use crate::observation::{Content, Outcome, Role, Step};
use crate::patience::Patience;
use crate::payload::pattern_byte;
use crate::rig::{Inbox, Rig, STALL};
use crate::sys::{self, Sock};

/// The senders of [`Rig::send_from_two_threads`]: the top bit of every byte says whose it is.
const THREADS: [u8; 2] = [0, 1];

/// Byte `offset` of sender `thread`'s stream: the pattern's low seven bits, and the thread in the
/// top bit, so that the receiver can take the two streams apart however they interleave.
fn thread_byte(thread: u8, offset: usize) -> u8 {
    (pattern_byte(offset) & 0x7f) | (thread << 7)
}

/// One sender thread's stream: each message in one blocking send (a short send goes on with the
/// rest); what was accepted, or the errno that stopped it.
fn send_messages(sock: &Sock, stream: &[u8], messages: &[usize]) -> Outcome {
    let mut offset = 0;
    for &len in messages {
        let end = offset + len;
        while offset < end {
            match sock.send(&stream[offset..end]) {
                Ok(n) => offset += n,
                Err(errno) => return Outcome::Err(sys::errno_name(errno)),
            }
        }
    }
    Outcome::Ok(offset)
}

impl Rig<'_> {
    /// Two threads send `messages` (each thread its own stream, in these sizes) on `from`'s one
    /// socket at once while the case reads `to`. Then the case's sk_msg program stops corking and
    /// applying, and `flush` more bytes of thread 0's stream push out whatever a cork still holds.
    /// Taken apart by their top bit, `to`'s bytes must be each thread's stream, every byte once and
    /// in order: how the two interleave is up to the kernel. What `to` reads here is in the step,
    /// not in its `delivered`.
    pub fn send_from_two_threads(&mut self, from: Role, to: Role, messages: &[usize], flush: usize) {
        let total: usize = messages.iter().sum();
        let streams = THREADS.map(|t| {
            let len = if t == 0 { total + flush } else { total };
            (0..len).map(|offset| thread_byte(t, offset)).collect::<Vec<u8>>()
        });
        let mut inbox = Inbox::default();
        let (sender, receiver) = (self.sock(from), self.sock(to));
        let sent = thread::scope(|scope| {
            let senders = THREADS.map(|t| {
                let stream = &streams[t as usize][..total];
                scope.spawn(move || send_messages(sender, stream, messages))
            });
            // The senders end by themselves (SO_SNDTIMEO); the reading keeps the receiver's
            // lock busy in between, which is when a redirect waits and the other sender runs.
            while !senders.iter().all(|s| s.is_finished()) {
                sys::poll(&[(receiver.raw(), libc::POLLIN)], SLICE).expect("poll");
                // An error is kept in the inbox, and reported by the read after the flush.
                inbox.take_queued(receiver);
            }
            senders.map(|s| s.join().expect("sender thread"))
        });
        self.set_config(self.scenario().config());
        let flushed = send_messages(self.sock(from), &streams[0][total..], &[flush]);
        let stall = read_until(self.sock(to), 2 * total + flush, &mut inbox);
        if let Some(stall) = stall {
            self.stalls.push(stall.replacen("stalled: ", &format!("stalled: {} reading two senders: ", to.name()), 1));
        }
        let content = THREADS.map(|t| {
            let own: Vec<u8> = inbox.data.iter().copied().filter(|byte| byte >> 7 == t).collect();
            Content::compare(&streams[t as usize], &own)
        });
        let received = inbox.data.len();
        self.steps.push(Step::TwoSenders { from, to, messages: messages.len(), sent, flushed, received, content });
    }
}

/// How long the reader waits for data at a time while the senders run.
const SLICE: Duration = Duration::from_millis(10);

/// Reads `sock` into `inbox` until it holds `want` bytes or nothing came for [`STALL`]; the
/// stall, if it gave up (or the error the socket reported).
fn read_until(sock: &Sock, want: usize, inbox: &mut Inbox) -> Option<String> {
    let mut wait = Patience::new(STALL);
    while inbox.open() && inbox.data.len() < want {
        if wait.exhausted() {
            return Some(wait.stalled(&format!("{want} bytes (got {})", inbox.data.len())));
        }
        wait.sleep(|slice| sys::poll(&[(sock.raw(), libc::POLLIN)], slice).expect("poll"));
        if inbox.take_queued(sock) > 0 {
            wait.progress();
        }
    }
    inbox.error.map(|errno| format!("stalled: recv: {}", sys::errno_name(errno)))
}
