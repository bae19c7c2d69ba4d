//! How a case hands its bytes to the kernel, and how it takes them out (issue 13, family 4):
//! sendfile(2) from a file and vmsplice(2) + splice(2) through a pipe (since 6.5 both reach the
//! socket as one sendmsg with MSG_SPLICE_PAGES per pipe's worth: splice_to_socket()), one
//! sendmsg(2) of many iovecs, and splice(2) out of a receiver into a pipe.

use std::thread;
use std::time::Duration;

use crate::bpf::Config;
use crate::observation::{Content, Role, Step};
use crate::patience::Patience;
use crate::payload::pattern;
use crate::rig::{Rig, STALL};
use crate::sys::{self, errno_name, Errno, Fd, Sock};

/// What a pipe holds by default (16 pages): splice() moves at most this much per call.
const PIPE_CAPACITY: usize = 64 * 1024;

#[derive(Clone, Copy, Debug)]
pub enum SendCall {
    /// send(2) calls of this many bytes each: what the others are compared with.
    Send(usize),
    /// One sendmsg(2) of iovecs of this many bytes each.
    Iovecs(usize),
    /// sendfile(2) calls of up to this many bytes each, from a memfd holding the bytes: the socket
    /// gets the file's page cache pages by reference.
    Sendfile(usize),
    /// vmsplice(2) of the bytes into a pipe (the pipe references the sender's own pages), then
    /// splice(2) from the pipe into the socket, a pipe's worth at a time.
    VmspliceSplice,
}

impl SendCall {
    pub fn name(self) -> String {
        match self {
            Self::Send(chunk) => format!("send_chunks_of_{chunk}"),
            Self::Iovecs(each) => format!("sendmsg_iovecs_of_{each}"),
            Self::Sendfile(chunk) => format!("sendfile_chunks_of_{chunk}"),
            Self::VmspliceSplice => "vmsplice_then_splice".to_string(),
        }
    }

    /// Hands all of `data` to `sock`; returns the bytes accepted, or the first error.
    fn send(self, sock: &Sock, data: &[u8]) -> Result<usize, Errno> {
        match self {
            Self::Send(chunk) => data.chunks(chunk).try_fold(0, |sent, chunk| {
                // A blocking send takes all of it or fails (SO_SNDTIMEO).
                sock.send(chunk).map(|n| sent + n)
            }),
            Self::Iovecs(each) => sock.send_iovecs(&data.chunks(each).collect::<Vec<_>>()),
            Self::Sendfile(chunk) => {
                let file = Fd::memfd_with(data)?;
                let mut sent = 0;
                while sent < data.len() {
                    match sys::sendfile(sock, &file, sent, chunk.min(data.len() - sent))? {
                        0 => return Err(Errno::EPIPE),
                        n => sent += n,
                    }
                }
                Ok(sent)
            }
            Self::VmspliceSplice => {
                let (from_pipe, into_pipe) = Fd::pipe()?;
                let mut sent = 0;
                while sent < data.len() {
                    let end = data.len().min(sent + PIPE_CAPACITY);
                    let mut queued = sys::vmsplice(&into_pipe, &data[sent..end])?;
                    while queued > 0 {
                        match sys::splice(from_pipe.raw(), sock.raw(), queued, 0)? {
                            0 => return Err(Errno::EPIPE),
                            n => (queued, sent) = (queued - n, sent + n),
                        }
                    }
                }
                Ok(sent)
            }
        }
    }
}

impl Rig<'_> {
    /// The programs' config replaced (the next verdict run reads it).
    pub fn set_config(&mut self, config: Config) {
        self.bpf.as_ref().expect("set_config after free_map").configure(&config);
    }

    /// One blocking send of exactly `bytes` (a framed stream's header and body: see
    /// tests/topologies/framing.rs); `role`'s pattern offset is left alone.
    pub fn send_bytes(&mut self, role: Role, bytes: &[u8]) {
        let result = self.sock(role).send(bytes).into();
        self.steps.push(Step::Send { role, len: bytes.len(), result });
    }

    /// `role` hands the next `len` bytes of its stream to the kernel by `call`, from a thread of its
    /// own (a fresh page fragment; the vmsplice'd buffer lives until the case thread is done with
    /// it), while the case reads `reader`; then waits (bounded) until `reader` has all it expects.
    pub fn send_by(&mut self, role: Role, call: SendCall, len: usize, reader: Role) {
        let data = pattern(self.next_offset(role, len), len);
        let sock = self.sock(role).duplicate().expect("dup");
        let (result, stall) = thread::scope(|scope| {
            let sending = scope.spawn(|| call.send(&sock, &data));
            let stall = self.read_while_sending(reader, || sending.is_finished());
            (sending.join().expect("sending thread"), stall)
        });
        let what = |stall: String| stall.replacen("stalled: ", &format!("stalled: {} of {len} bytes: ", call.name()), 1);
        self.stalls.extend(stall.map(what));
        self.steps.push(Step::SendBy { role, call: call.name(), len, result: result.into() });
    }

    /// Reads `reader` until `sent()` and it has everything it expects (or reached its end), at most
    /// [`STALL`] of guest run time without a byte read; returns the stall if it gave up.
    fn read_while_sending(&mut self, reader: Role, sent: impl Fn() -> bool) -> Option<String> {
        let sock = self.socks.get(&reader).unwrap_or_else(|| panic!("{reader:?} was closed earlier in the case"));
        let inbox = self.inbox.get_mut(&reader).expect("every role has an inbox");
        let expected = self.expected.get(&reader).map_or(&[][..], Vec::as_slice);
        let want = expected.len();
        let mut wait = Patience::new(STALL);
        loop {
            // Bytes that already differ from the expectation fail the case: waiting for more
            // would only add a stall to it.
            let wrong = !expected.starts_with(&inbox.data[..inbox.data.len().min(want)]);
            if sent() && (inbox.data.len() >= want || !inbox.open() || wrong) {
                return None;
            }
            if wait.exhausted() {
                let sender = if sent() { "done" } else { "still sending" };
                let what = format!("{} to receive {want} bytes (got {}), sender {sender}", reader.name(), inbox.data.len());
                return Some(wait.stalled(&what));
            }
            // Short slices: the sender's end is not signalled, only the reader's data is.
            wait.sleep(|slice| sys::poll(&[(sock.raw(), libc::POLLIN)], slice.min(Duration::from_millis(10))).expect("poll"));
            if inbox.take_queued(sock) > 0 {
                wait.progress();
            }
        }
    }

    /// Reads what `role` still expects through splice(2) into a pipe (non-blocking, as soon as poll
    /// says `role` is readable), then out of the pipe. A splice that finds nothing while `role` is
    /// readable ends it (EAGAIN): nothing would change by waiting. What is left is read by the case's
    /// end as usual, so `delivered` still says whether the data was there.
    pub fn splice_out(&mut self, role: Role) {
        let (from_pipe, into_pipe) = Fd::pipe().expect("pipe");
        let sock = self.socks.get(&role).unwrap_or_else(|| panic!("{role:?} was closed earlier in the case"));
        let inbox = self.inbox.get_mut(&role).expect("every role has an inbox");
        let expected = self.expected.get(&role).map_or(&[][..], Vec::as_slice);
        let before = inbox.data.len();
        // tcp_splice_read() takes its wait from the socket file's O_NONBLOCK, not the splice flags.
        sock.set_nonblocking(true).expect("O_NONBLOCK");
        let mut wait = Patience::new(STALL);
        let mut error = None;
        let mut buf = vec![0; PIPE_CAPACITY];
        while inbox.data.len() < expected.len() {
            if wait.exhausted() {
                let what = format!("{} to become readable for splice (got {})", role.name(), inbox.data.len() - before);
                self.stalls.push(wait.stalled(&what));
                break;
            }
            if wait.sleep(|slice| sys::poll(&[(sock.raw(), libc::POLLIN)], slice).expect("poll"))[0] == 0 {
                continue;
            }
            let want = (expected.len() - inbox.data.len()).min(PIPE_CAPACITY);
            match sys::splice(sock.raw(), into_pipe.raw(), want, libc::SPLICE_F_NONBLOCK) {
                Ok(0) => {
                    error = Some("eof".to_string());
                    break;
                }
                Ok(mut spliced) => {
                    while spliced > 0 {
                        let n = from_pipe.read(&mut buf[..spliced]).expect("reading the pipe");
                        inbox.data.extend_from_slice(&buf[..n]);
                        spliced -= n;
                    }
                    wait.progress();
                }
                Err(errno) => {
                    error = Some(errno_name(errno));
                    break;
                }
            }
        }
        sock.set_nonblocking(false).expect("O_NONBLOCK");
        let got = &inbox.data[before..];
        let content = Content::compare(&expected[before.min(expected.len())..], got);
        self.steps.push(Step::SpliceOut { role, received: got.len(), content, error });
    }
}
