//! What is measured: the four sockmap redirect paths and the two baselines, each as a sending and a
//! receiving socket.

use std::fs::File;
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::time::Duration;

use clap::ValueEnum;

use crate::bpf::{Bpf, Hook, Redirect, KEY_A, KEY_B};

/// A blocked read wakes up this often so the reader notices the sender has finished; no data is
/// waiting then, so it costs nothing while data flows.
pub const READ_POLL: Duration = Duration::from_millis(20);
/// No progress for this long and a measurement gives up: a broken kernel fails a point, not the bench.
pub const STALL: Duration = Duration::from_secs(5);

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
#[value(rename_all = "snake_case")]
pub enum Path {
    /// TCP over 127.0.0.1, no BPF: the baseline the sockmap paths are compared with.
    Tcp,
    /// AF_UNIX stream socketpair, no BPF: the cheapest stream the kernel has.
    Unix,
    /// sk_msg redirect with BPF_F_INGRESS: A's sends land in B's receive queue.
    TxToRx,
    /// sk_skb verdict redirect with BPF_F_INGRESS: what A receives lands in B's receive queue.
    RxToRx,
    /// sk_msg redirect to egress: A's sends go out of B, to B's peer.
    TxToTx,
    /// sk_skb verdict redirect to egress: what A receives goes out of B, to B's peer.
    RxToTx,
}

impl Path {
    pub const ALL: [Path; 6] = [Path::Tcp, Path::Unix, Path::TxToRx, Path::RxToRx, Path::TxToTx, Path::RxToTx];

    pub fn name(self) -> &'static str {
        match self {
            Self::Tcp => "tcp",
            Self::Unix => "unix",
            Self::TxToRx => "tx_to_rx",
            Self::RxToRx => "rx_to_rx",
            Self::TxToTx => "tx_to_tx",
            Self::RxToTx => "rx_to_tx",
        }
    }

    /// The sockmap redirect this path measures; none for the baselines.
    pub fn redirect(self) -> Option<Redirect> {
        let (hook, ingress) = match self {
            Self::Tcp | Self::Unix => return None,
            Self::TxToRx => (Hook::SkMsg, true),
            Self::RxToRx => (Hook::SkSkb, true),
            Self::TxToTx => (Hook::SkMsg, false),
            Self::RxToTx => (Hook::SkSkb, false),
        };
        Some(Redirect { hook, ingress })
    }
}

/// The sockets of one measurement: the bench writes to `sender` and reads from `receiver`; the
/// others only have to stay open (and, on sockmap paths, in the map).
pub struct Endpoints {
    pub sender: File,
    pub receiver: File,
    _others: Vec<File>,
}

/// Fresh sockets for `path`, with A and B in `bpf`'s sockmap on the sockmap paths. `nodelay` turns
/// Nagle off on every TCP socket: a request/response exchange needs it, a stream does not.
pub fn connect(path: Path, bpf: Option<&Bpf>, nodelay: bool) -> anyhow::Result<Endpoints> {
    if path == Path::Unix {
        let (one, other) = UnixStream::pair()?;
        for sock in [&one, &other] {
            sock.set_read_timeout(Some(READ_POLL))?;
            sock.set_write_timeout(Some(STALL))?;
        }
        return Ok(Endpoints { sender: file(one), receiver: file(other), _others: vec![] });
    }
    let (a, a_peer) = tcp_pair(nodelay)?;
    if path == Path::Tcp {
        return Ok(Endpoints { sender: file(a), receiver: file(a_peer), _others: vec![] });
    }
    let bpf = bpf.expect("sockmap paths come with their programs");
    let (b, b_peer) = tcp_pair(nodelay)?;
    bpf.insert(KEY_A, &a)?;
    bpf.insert(KEY_B, &b)?;
    let [a, a_peer, b, b_peer] = [a, a_peer, b, b_peer].map(file);
    Ok(match path {
        Path::TxToRx => Endpoints { sender: a, receiver: b, _others: vec![a_peer, b_peer] },
        Path::RxToRx => Endpoints { sender: a_peer, receiver: b, _others: vec![a, b_peer] },
        Path::TxToTx => Endpoints { sender: a, receiver: b_peer, _others: vec![a_peer, b] },
        Path::RxToTx => Endpoints { sender: a_peer, receiver: b_peer, _others: vec![a, b] },
        Path::Tcp | Path::Unix => unreachable!("handled above"),
    })
}

fn tcp_pair(nodelay: bool) -> std::io::Result<(TcpStream, TcpStream)> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    let client = TcpStream::connect(listener.local_addr()?)?;
    let (server, _) = listener.accept()?;
    for sock in [&client, &server] {
        sock.set_nodelay(nodelay)?;
        sock.set_read_timeout(Some(READ_POLL))?;
        sock.set_write_timeout(Some(STALL))?;
    }
    Ok((client, server))
}

/// Every family is read and written the same way, through read(2) and write(2).
fn file(sock: impl Into<OwnedFd>) -> File {
    File::from(sock.into())
}
