//! Issue 13's families 6, 2, 11, 9, 4, 5 and 8 in one test binary: each suite binary costs the guest
//! a start and a first case that loads the kernel's BTF (1-4 s under TCG), so these small files
//! share one. Runs only inside a lab guest (`lab test`).
//!
//! - shared_psock: one psock, several programs or maps (family 6)
//! - cross: redirects across socket families and across maps (family 2)
//! - skb_reads: UDP over IPv6; vsock SEQPACKET; MSG_PEEK and FIONREAD on the sk_skb paths (family 11)
//! - listener: listening sockets in the map (family 9)
//! - sending: how the data is handed to the kernel — sendfile, vmsplice + splice, many iovecs,
//!   sends larger than MAX_MSG_FRAGS pages, a cork filled by chunks — and splice out of the
//!   receiver (family 4)
//! - framing: a stream parser that frames messages by a length header (family 5)
//! - ktls: sockets with the TLS ULP and kTLS keys, set before or after they join the map (family 8)

#[path = "topologies/cross.rs"]
mod cross;
#[path = "topologies/framing.rs"]
mod framing;
#[path = "topologies/ktls.rs"]
mod ktls;
#[path = "topologies/listener.rs"]
mod listener;
#[path = "topologies/sending.rs"]
mod sending;
#[path = "topologies/shared_psock.rs"]
mod shared_psock;
#[path = "topologies/skb_reads.rs"]
mod skb_reads;
