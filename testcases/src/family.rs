//! Connected socket pairs, one factory per socket family the suite covers.

use crate::sys::{Errno, Sock, SockAddr};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    /// TCP over 127.0.0.1.
    Ipv4,
    /// TCP over ::1.
    Ipv6,
    /// UDP over 127.0.0.1.
    Udp,
    UnixStream,
    UnixDgram,
    /// AF_VSOCK stream over VMADDR_CID_LOCAL (the loopback transport).
    Vsock,
}

/// Payloads larger than this go out as several datagrams on datagram families.
const DATAGRAM_LIMIT: usize = 16 * 1024;

impl Family {
    pub fn name(self) -> &'static str {
        match self {
            Self::Ipv4 => "ipv4",
            Self::Ipv6 => "ipv6",
            Self::Udp => "udp",
            Self::UnixStream => "unix_stream",
            Self::UnixDgram => "unix_dgram",
            Self::Vsock => "vsock",
        }
    }

    /// The largest single send, for families that keep message boundaries.
    pub fn datagram_limit(self) -> Option<usize> {
        matches!(self, Self::Udp | Self::UnixDgram).then_some(DATAGRAM_LIMIT)
    }

    /// Two connected sockets: (the socket a case puts in the map, its peer).
    pub fn pair(self) -> Result<(Sock, Sock), Errno> {
        match self {
            Self::Ipv4 => tcp_pair(ipv4_loopback()),
            Self::Ipv6 => tcp_pair(ipv6_loopback()),
            Self::Udp => udp_pair(),
            Self::UnixStream => Sock::socketpair(libc::AF_UNIX, libc::SOCK_STREAM),
            Self::UnixDgram => Sock::socketpair(libc::AF_UNIX, libc::SOCK_DGRAM),
            Self::Vsock => vsock_pair(),
        }
    }
}

fn ipv4_loopback() -> (i32, SockAddr) {
    let addr = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr { s_addr: u32::from(std::net::Ipv4Addr::LOCALHOST).to_be() },
        sin_zero: [0; 8],
    };
    (libc::AF_INET, SockAddr::from(addr))
}

fn ipv6_loopback() -> (i32, SockAddr) {
    let addr = libc::sockaddr_in6 {
        sin6_family: libc::AF_INET6 as libc::sa_family_t,
        sin6_port: 0,
        sin6_flowinfo: 0,
        sin6_addr: libc::in6_addr { s6_addr: std::net::Ipv6Addr::LOCALHOST.octets() },
        sin6_scope_id: 0,
    };
    (libc::AF_INET6, SockAddr::from(addr))
}

/// Listener, connect, accept: returns (client, accepted).
fn stream_pair(
    domain: i32,
    bind_to: &SockAddr,
    connect_to: impl Fn(SockAddr) -> SockAddr,
) -> Result<(Sock, Sock), Errno> {
    let listener = Sock::new(domain, libc::SOCK_STREAM)?;
    listener.bind(bind_to)?;
    listener.listen()?;
    let client = Sock::new(domain, libc::SOCK_STREAM)?;
    client.connect(&connect_to(listener.local_addr()?))?;
    let server = listener.accept()?;
    Ok((client, server))
}

fn tcp_pair((domain, loopback): (i32, SockAddr)) -> Result<(Sock, Sock), Errno> {
    stream_pair(domain, &loopback, |bound| bound)
}

fn udp_pair() -> Result<(Sock, Sock), Errno> {
    let (domain, loopback) = ipv4_loopback();
    let one = Sock::new(domain, libc::SOCK_DGRAM)?;
    let other = Sock::new(domain, libc::SOCK_DGRAM)?;
    one.bind(&loopback)?;
    other.bind(&loopback)?;
    one.connect(&other.local_addr()?)?;
    other.connect(&one.local_addr()?)?;
    Ok((one, other))
}

fn vsock_addr(cid: u32, port: u32) -> SockAddr {
    // SAFETY: sockaddr_vm is plain data; all-zero is valid before we fill it.
    let mut addr: libc::sockaddr_vm = unsafe { std::mem::zeroed() };
    addr.svm_family = libc::AF_VSOCK as libc::sa_family_t;
    addr.svm_cid = cid;
    addr.svm_port = port;
    SockAddr::from(addr)
}

/// vsock is not namespaced, so the port is left to the kernel to keep cases apart.
fn vsock_pair() -> Result<(Sock, Sock), Errno> {
    stream_pair(libc::AF_VSOCK, &vsock_addr(libc::VMADDR_CID_ANY, libc::VMADDR_PORT_ANY), |bound| {
        // SAFETY: getsockname on an AF_VSOCK socket fills a sockaddr_vm.
        let port = unsafe { bound.read::<libc::sockaddr_vm>() }.svm_port;
        vsock_addr(libc::VMADDR_CID_LOCAL, port)
    })
}
