//! Thin wrappers over the socket calls the suite makes. Every call returns the raw errno on failure,
//! because the errno a user would see is part of what a case observes.

use std::mem::{size_of, MaybeUninit};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

pub use nix::errno::Errno;

/// The name a user would look up ("EAGAIN"), as the observations record it.
pub fn errno_name(errno: Errno) -> String {
    format!("{errno:?}")
}

fn check(ret: isize) -> Result<usize, Errno> {
    usize::try_from(ret).map_err(|_| Errno::last())
}

fn check_unit(ret: i32) -> Result<(), Errno> {
    check(ret as isize).map(drop)
}

pub struct Sock {
    fd: OwnedFd,
}

impl Sock {
    pub fn new(domain: i32, kind: i32) -> Result<Self, Errno> {
        // SAFETY: plain syscall; a non-negative return is a fresh descriptor we now own.
        let fd = check(unsafe { libc::socket(domain, kind | libc::SOCK_CLOEXEC, 0) } as isize)?;
        Ok(Self::from_raw(fd as RawFd))
    }

    fn from_raw(fd: RawFd) -> Self {
        // SAFETY: callers pass a descriptor that was just returned by the kernel and is not shared.
        Self { fd: unsafe { OwnedFd::from_raw_fd(fd) } }
    }

    pub fn raw(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// MSG_NOSIGNAL: a send on a shut-down socket must show up as EPIPE, not kill the test binary.
    pub fn send(&self, buf: &[u8]) -> Result<usize, Errno> {
        // SAFETY: the buffer is valid for its length.
        check(unsafe { libc::send(self.raw(), buf.as_ptr().cast(), buf.len(), libc::MSG_NOSIGNAL) })
    }

    pub fn recv(&self, buf: &mut [u8], flags: i32) -> Result<usize, Errno> {
        // SAFETY: the buffer is valid and writable for its length.
        check(unsafe { libc::recv(self.raw(), buf.as_mut_ptr().cast(), buf.len(), flags) })
    }

    /// One sendmsg(2) of `bufs` as that many iovecs (MSG_NOSIGNAL, as [`Sock::send`]).
    pub fn send_iovecs(&self, bufs: &[&[u8]]) -> Result<usize, Errno> {
        let mut iov: Vec<libc::iovec> =
            bufs.iter().map(|b| libc::iovec { iov_base: b.as_ptr() as *mut _, iov_len: b.len() }).collect();
        // SAFETY: msghdr is plain data; all-zero is a valid empty header before we fill it.
        let mut header: libc::msghdr = unsafe { std::mem::zeroed() };
        header.msg_iov = iov.as_mut_ptr();
        header.msg_iovlen = iov.len();
        // SAFETY: every iovec points at a live buffer of its length; the kernel only reads them.
        check(unsafe { libc::sendmsg(self.raw(), &header, libc::MSG_NOSIGNAL) })
    }

    /// O_NONBLOCK on or off: what tcp_splice_read() looks at (the file's flags, not the splice's).
    pub fn set_nonblocking(&self, on: bool) -> Result<(), Errno> {
        // SAFETY: plain fcntl calls on a descriptor we own.
        let flags = check(unsafe { libc::fcntl(self.raw(), libc::F_GETFL) } as isize)? as i32;
        let flags = if on { flags | libc::O_NONBLOCK } else { flags & !libc::O_NONBLOCK };
        // SAFETY: as above.
        check_unit(unsafe { libc::fcntl(self.raw(), libc::F_SETFL, flags) })
    }

    /// SO_SNDBUF or SO_RCVBUF (`name`): the kernel doubles the value and enforces its own minimum.
    pub fn set_buffer(&self, name: i32, bytes: usize) -> Result<(), Errno> {
        self.set_option(libc::SOL_SOCKET, name, &(bytes as libc::c_int))
    }

    /// A second descriptor for the same socket (a thread that must outlive a borrow sends on it).
    pub fn duplicate(&self) -> Result<Self, Errno> {
        // SAFETY: plain syscall; a non-negative return is a fresh descriptor we now own.
        let fd = check(unsafe { libc::fcntl(self.raw(), libc::F_DUPFD_CLOEXEC, 0) } as isize)?;
        Ok(Self::from_raw(fd as RawFd))
    }

    pub fn set_send_timeout(&self, timeout: Duration) -> Result<(), Errno> {
        self.set_option(libc::SOL_SOCKET, libc::SO_SNDTIMEO, &timeval(timeout))
    }

    /// Zero: a blocking recv waits for ever.
    pub fn set_recv_timeout(&self, timeout: Duration) -> Result<(), Errno> {
        self.set_option(libc::SOL_SOCKET, libc::SO_RCVTIMEO, &timeval(timeout))
    }

    /// SO_COOKIE: the socket's unique id, which the kernel assigns on first use and never reuses.
    pub fn cookie(&self) -> Result<u64, Errno> {
        let mut cookie: u64 = 0;
        let mut len = size_of::<u64>() as libc::socklen_t;
        // SAFETY: SO_COOKIE writes one u64 and `len` says so.
        check_unit(unsafe {
            libc::getsockopt(self.raw(), libc::SOL_SOCKET, libc::SO_COOKIE, (&mut cookie as *mut u64).cast(), &mut len)
        })?;
        Ok(cookie)
    }

    fn set_option<T>(&self, level: i32, name: i32, value: &T) -> Result<(), Errno> {
        // SAFETY: `value` is valid for size_of::<T>() bytes.
        check_unit(unsafe {
            libc::setsockopt(self.raw(), level, name, (value as *const T).cast(), size_of::<T>() as libc::socklen_t)
        })
    }

    pub fn fionread(&self) -> Result<usize, Errno> {
        let mut pending: libc::c_int = 0;
        // SAFETY: FIONREAD writes one int.
        check_unit(unsafe { libc::ioctl(self.raw(), libc::FIONREAD, &mut pending) })?;
        Ok(pending as usize)
    }

    pub fn shutdown(&self, how: i32) -> Result<(), Errno> {
        // SAFETY: plain syscall on a descriptor we own.
        check_unit(unsafe { libc::shutdown(self.raw(), how) })
    }

    pub fn bind(&self, addr: &SockAddr) -> Result<(), Errno> {
        // SAFETY: the address is valid for its recorded length.
        check_unit(unsafe { libc::bind(self.raw(), addr.as_ptr(), addr.len) })
    }

    pub fn connect(&self, addr: &SockAddr) -> Result<(), Errno> {
        // SAFETY: the address is valid for its recorded length.
        check_unit(unsafe { libc::connect(self.raw(), addr.as_ptr(), addr.len) })
    }

    pub fn listen(&self) -> Result<(), Errno> {
        // SAFETY: plain syscall on a descriptor we own.
        check_unit(unsafe { libc::listen(self.raw(), 8) })
    }

    pub fn accept(&self) -> Result<Self, Errno> {
        // SAFETY: null address arguments are allowed; a non-negative return is a fresh descriptor.
        let fd =
            check(
                unsafe { libc::accept4(self.raw(), std::ptr::null_mut(), std::ptr::null_mut(), libc::SOCK_CLOEXEC) }
                    as isize,
            )?;
        Ok(Self::from_raw(fd as RawFd))
    }

    pub fn local_addr(&self) -> Result<SockAddr, Errno> {
        let mut addr = SockAddr::empty();
        // SAFETY: the storage is large enough for any address and `len` says so.
        check_unit(unsafe { libc::getsockname(self.raw(), addr.as_mut_ptr(), &mut addr.len) })?;
        Ok(addr)
    }

    pub fn socketpair(domain: i32, kind: i32) -> Result<(Self, Self), Errno> {
        let mut fds = [0; 2];
        // SAFETY: socketpair writes two descriptors, which we then own.
        check_unit(unsafe { libc::socketpair(domain, kind | libc::SOCK_CLOEXEC, 0, fds.as_mut_ptr()) })?;
        Ok((Self::from_raw(fds[0]), Self::from_raw(fds[1])))
    }
}

pub struct SockAddr {
    storage: libc::sockaddr_storage,
    len: libc::socklen_t,
}

impl SockAddr {
    fn empty() -> Self {
        // SAFETY: sockaddr_storage is plain data; all-zero is a valid (unspecified) address.
        let storage = unsafe { MaybeUninit::<libc::sockaddr_storage>::zeroed().assume_init() };
        Self { storage, len: size_of::<libc::sockaddr_storage>() as libc::socklen_t }
    }

    /// Wraps one of the libc sockaddr_* structs.
    pub fn from<T>(addr: T) -> Self {
        assert!(size_of::<T>() <= size_of::<libc::sockaddr_storage>());
        let mut this = Self::empty();
        // SAFETY: the storage is larger than T (asserted above) and suitably aligned for any address.
        unsafe { std::ptr::write((&mut this.storage as *mut libc::sockaddr_storage).cast::<T>(), addr) };
        this.len = size_of::<T>() as libc::socklen_t;
        this
    }

    /// Reads the address back as one of the libc sockaddr_* structs.
    ///
    /// # Safety
    /// The address must be of the family `T` describes.
    pub unsafe fn read<T: Copy>(&self) -> T {
        assert!(size_of::<T>() <= size_of::<libc::sockaddr_storage>());
        // SAFETY: in bounds (asserted above); the caller vouches for the family.
        unsafe { std::ptr::read((&self.storage as *const libc::sockaddr_storage).cast::<T>()) }
    }

    fn as_ptr(&self) -> *const libc::sockaddr {
        (&self.storage as *const libc::sockaddr_storage).cast()
    }

    fn as_mut_ptr(&mut self) -> *mut libc::sockaddr {
        (&mut self.storage as *mut libc::sockaddr_storage).cast()
    }
}

fn timeval(timeout: Duration) -> libc::timeval {
    libc::timeval { tv_sec: timeout.as_secs() as libc::time_t, tv_usec: timeout.subsec_micros() as libc::suseconds_t }
}

/// The calling thread's id, as /proc/self/task names it.
pub fn gettid() -> i32 {
    // SAFETY: gettid has no arguments and cannot fail.
    unsafe { libc::gettid() }
}

/// Whether thread `tid` of this process is asleep (state S: waiting, interruptibly, for an event).
pub fn thread_asleep(tid: i32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).unwrap_or_default();
    // The state follows the command name, which is in parentheses and may hold anything.
    stat.rsplit_once(") ").is_some_and(|(_, rest)| rest.starts_with('S'))
}

/// poll(2) readiness, as the observations name it.
pub fn readiness_names(revents: i16) -> Vec<&'static str> {
    [
        (libc::POLLIN, "in"),
        (libc::POLLOUT, "out"),
        (libc::POLLRDHUP, "rdhup"),
        (libc::POLLHUP, "hup"),
        (libc::POLLERR, "err"),
    ]
    .into_iter()
    .filter(|(bit, _)| revents & bit != 0)
    .map(|(_, name)| name)
    .collect()
}

pub const POLL_ALL: i16 = libc::POLLIN | libc::POLLOUT | libc::POLLRDHUP;

/// Polls the descriptors, returning each one's revents.
pub fn poll(fds: &[(RawFd, i16)], timeout: Duration) -> Result<Vec<i16>, Errno> {
    let mut pollfds: Vec<libc::pollfd> =
        fds.iter().map(|&(fd, events)| libc::pollfd { fd, events, revents: 0 }).collect();
    let timeout_ms = timeout.as_millis().min(i32::MAX as u128) as i32;
    // SAFETY: the array is valid for its length.
    check(unsafe { libc::poll(pollfds.as_mut_ptr(), pollfds.len() as libc::nfds_t, timeout_ms) } as isize)?;
    Ok(pollfds.iter().map(|p| p.revents).collect())
}

/// epoll readiness of one socket, as the observations name it.
pub fn epoll_once(sock: &Sock, timeout: Duration) -> Result<Vec<&'static str>, Errno> {
    // SAFETY: a non-negative return is a fresh descriptor we now own.
    let epfd = check(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) } as isize)?;
    let epoll = Sock::from_raw(epfd as RawFd);
    let wanted = (libc::EPOLLIN | libc::EPOLLOUT | libc::EPOLLRDHUP) as u32;
    let mut event = libc::epoll_event { events: wanted, u64: 0 };
    // SAFETY: `event` is a valid epoll_event.
    check_unit(unsafe { libc::epoll_ctl(epoll.raw(), libc::EPOLL_CTL_ADD, sock.raw(), &mut event) })?;
    let mut ready = [libc::epoll_event { events: 0, u64: 0 }];
    // SAFETY: the output array is valid for one event.
    let n =
        check(unsafe { libc::epoll_wait(epoll.raw(), ready.as_mut_ptr(), 1, timeout.as_millis() as i32) } as isize)?;
    let events = if n == 0 { 0 } else { ready[0].events };
    Ok([
        (libc::EPOLLIN, "in"),
        (libc::EPOLLOUT, "out"),
        (libc::EPOLLRDHUP, "rdhup"),
        (libc::EPOLLHUP, "hup"),
        (libc::EPOLLERR, "err"),
    ]
    .into_iter()
    .filter(|(bit, _)| events & *bit as u32 != 0)
    .map(|(_, name)| name)
    .collect())
}

/// An eventfd the sender thread uses to wake the reader's poll, so neither side sleeps.
pub struct Wakeup {
    fd: OwnedFd,
}

impl Wakeup {
    pub fn new() -> Result<Self, Errno> {
        // SAFETY: a non-negative return is a fresh descriptor we now own.
        let fd = check(unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) } as isize)?;
        // SAFETY: just returned by the kernel, not shared.
        Ok(Self { fd: unsafe { OwnedFd::from_raw_fd(fd as RawFd) } })
    }

    pub fn raw(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    pub fn wake(&self) {
        let one: u64 = 1;
        // SAFETY: eventfd writes take exactly 8 bytes. It cannot fail short of overflow, and then the
        // reader is already awake.
        unsafe { libc::write(self.raw(), (&one as *const u64).cast(), 8) };
    }

    pub fn clear(&self) {
        let mut count: u64 = 0;
        // SAFETY: eventfd reads fill exactly 8 bytes; EAGAIN (nothing pending) is fine.
        unsafe { libc::read(self.raw(), (&mut count as *mut u64).cast(), 8) };
    }
}

/// A pipe, or a memfd: descriptors the sending and splicing calls move data through.
pub struct Fd {
    fd: OwnedFd,
}

impl Fd {
    pub fn raw(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// An anonymous file (shmem: page cache pages, which sendfile() hands to the socket by
    /// reference) holding `data`.
    pub fn memfd_with(data: &[u8]) -> Result<Self, Errno> {
        // SAFETY: the name is a valid C string; a non-negative return is a fresh descriptor.
        let fd = check(unsafe { libc::memfd_create(c"sockmap-lab".as_ptr(), libc::MFD_CLOEXEC) } as isize)?;
        // SAFETY: just returned by the kernel, not shared.
        let file = Self { fd: unsafe { OwnedFd::from_raw_fd(fd as RawFd) } };
        let mut rest = data;
        while !rest.is_empty() {
            // SAFETY: the buffer is valid for its length.
            let n = check(unsafe { libc::write(file.raw(), rest.as_ptr().cast(), rest.len()) })?;
            rest = &rest[n..];
        }
        Ok(file)
    }

    /// (read end, write end).
    pub fn pipe() -> Result<(Self, Self), Errno> {
        let mut fds = [0; 2];
        // SAFETY: pipe2 writes two descriptors, which we then own.
        check_unit(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) })?;
        // SAFETY: just returned by the kernel, not shared.
        Ok(unsafe { (Self { fd: OwnedFd::from_raw_fd(fds[0]) }, Self { fd: OwnedFd::from_raw_fd(fds[1]) }) })
    }

    pub fn read(&self, buf: &mut [u8]) -> Result<usize, Errno> {
        // SAFETY: the buffer is valid and writable for its length.
        check(unsafe { libc::read(self.raw(), buf.as_mut_ptr().cast(), buf.len()) })
    }
}

/// sendfile(2) of `len` bytes of `file` from `offset` into `sock`.
pub fn sendfile(sock: &Sock, file: &Fd, offset: usize, len: usize) -> Result<usize, Errno> {
    let mut off = offset as libc::off_t;
    // SAFETY: `off` is a valid off_t the kernel updates.
    check(unsafe { libc::sendfile(sock.raw(), file.raw(), &mut off, len) })
}

/// vmsplice(2) of `buf` into a pipe's write end: the pipe then holds references to its pages.
pub fn vmsplice(pipe: &Fd, buf: &[u8]) -> Result<usize, Errno> {
    let iov = libc::iovec { iov_base: buf.as_ptr() as *mut _, iov_len: buf.len() };
    // SAFETY: the iovec points at a live buffer of its length, which outlives the pipe's use of it
    // (the caller keeps it until the data has been read at the far end).
    check(unsafe { libc::vmsplice(pipe.raw(), &iov, 1, 0) })
}

/// splice(2) of up to `len` bytes between two descriptors, one of them a pipe.
pub fn splice(from: RawFd, to: RawFd, len: usize, flags: u32) -> Result<usize, Errno> {
    // SAFETY: null offsets are allowed (and required for sockets and pipes).
    check(unsafe { libc::splice(from, std::ptr::null_mut(), to, std::ptr::null_mut(), len, flags) })
}
