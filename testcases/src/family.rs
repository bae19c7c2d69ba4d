//! Connected socket pairs, one factory per socket family the suite covers.

use crate::accounting::Ledger;
use crate::observation::Side;
use crate::sys::{Errno, Sock, SockAddr};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    /// TCP over 127.0.0.1.
    Ipv4,
    /// TCP over ::1.
    Ipv6,
    /// UDP over 127.0.0.1.
    Udp,
    /// UDP over ::1.
    Udp6,
    UnixStream,
    UnixDgram,
    /// AF_VSOCK stream over VMADDR_CID_LOCAL (the loopback transport).
    Vsock,
    /// AF_VSOCK SOCK_SEQPACKET over VMADDR_CID_LOCAL: connected like a stream, but keeps message
    /// boundaries (vsock_bpf.c serves both types).
    VsockSeqpacket,
}

/// Payloads larger than this go out as several datagrams on datagram families.
const DATAGRAM_LIMIT: usize = 16 * 1024;

impl Family {
    pub fn name(self) -> &'static str {
        match self {
            Self::Ipv4 => "ipv4",
            Self::Ipv6 => "ipv6",
            Self::Udp => "udp",
            Self::Udp6 => "udp_ipv6",
            Self::UnixStream => "unix_stream",
            Self::UnixDgram => "unix_dgram",
            Self::Vsock => "vsock",
            Self::VsockSeqpacket => "vsock_seqpacket",
        }
    }

    /// The largest single send, for families that keep message boundaries.
    pub fn datagram_limit(self) -> Option<usize> {
        // A seqpacket message larger than the rig's receive buffer would be truncated by the read.
        matches!(self, Self::Udp | Self::Udp6 | Self::UnixDgram | Self::VsockSeqpacket).then_some(DATAGRAM_LIMIT)
    }

    /// Two connected sockets for `side`: (the socket a case puts in the map, its peer). Every socket
    /// made on the way is in `ledger` as soon as it exists, listeners included.
    pub fn pair(self, side: Side, ledger: &mut Ledger) -> Result<(Sock, Sock), Errno> {
        match self {
            Self::Ipv4 => tcp_pair(ipv4_loopback(), side, ledger),
            Self::Ipv6 => tcp_pair(ipv6_loopback(), side, ledger),
            Self::Udp => udp_pair(ipv4_loopback(), side, ledger),
            Self::Udp6 => udp_pair(ipv6_loopback(), side, ledger),
            Self::UnixStream => socketpair(libc::SOCK_STREAM, side, ledger),
            Self::UnixDgram => socketpair(libc::SOCK_DGRAM, side, ledger),
            Self::Vsock => vsock_pair(libc::SOCK_STREAM, side, ledger),
            Self::VsockSeqpacket => vsock_pair(libc::SOCK_SEQPACKET, side, ledger),
        }
    }
}

fn socketpair(kind: i32, side: Side, ledger: &mut Ledger) -> Result<(Sock, Sock), Errno> {
    let (role, peer_role, _) = side.roles();
    let (sock, peer) = Sock::socketpair(libc::AF_UNIX, kind)?;
    ledger.record(role, &sock);
    ledger.record(peer_role, &peer);
    Ok((sock, peer))
}

pub(crate) fn ipv4_loopback() -> (i32, SockAddr) {
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

/// Listener, connect, accept: returns (client, accepted); the listener is closed on return.
fn stream_pair(
    domain: i32,
    kind: i32,
    bind_to: &SockAddr,
    connect_to: impl Fn(SockAddr) -> SockAddr,
    side: Side,
    ledger: &mut Ledger,
) -> Result<(Sock, Sock), Errno> {
    let (role, peer_role, listener_role) = side.roles();
    let listener = Sock::new(domain, kind)?;
    ledger.record(listener_role, &listener);
    listener.bind(bind_to)?;
    listener.listen()?;
    let client = Sock::new(domain, kind)?;
    ledger.record(role, &client);
    client.connect(&connect_to(listener.local_addr()?))?;
    let server = listener.accept()?;
    ledger.record(peer_role, &server);
    Ok((client, server))
}

fn tcp_pair((domain, loopback): (i32, SockAddr), side: Side, ledger: &mut Ledger) -> Result<(Sock, Sock), Errno> {
    stream_pair(domain, libc::SOCK_STREAM, &loopback, |bound| bound, side, ledger)
}

fn udp_pair((domain, loopback): (i32, SockAddr), side: Side, ledger: &mut Ledger) -> Result<(Sock, Sock), Errno> {
    let (role, peer_role, _) = side.roles();
    let one = Sock::new(domain, libc::SOCK_DGRAM)?;
    ledger.record(role, &one);
    let other = Sock::new(domain, libc::SOCK_DGRAM)?;
    ledger.record(peer_role, &other);
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
fn vsock_pair(kind: i32, side: Side, ledger: &mut Ledger) -> Result<(Sock, Sock), Errno> {
    let connect_to = |bound: SockAddr| {
        // SAFETY: getsockname on an AF_VSOCK socket fills a sockaddr_vm.
        let port = unsafe { bound.read::<libc::sockaddr_vm>() }.svm_port;
        vsock_addr(libc::VMADDR_CID_LOCAL, port)
    };
    stream_pair(libc::AF_VSOCK, kind, &vsock_addr(libc::VMADDR_CID_ANY, libc::VMADDR_PORT_ANY), connect_to, side, ledger)
}
