//! A listening socket in the map (issue 13, family 9): the case makes it, connects a client to it
//! and accepts the child, each step recorded, every socket recorded for the accounting.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;

use crate::bpf::raw_update;
use crate::family::ipv4_loopback;
use crate::observation::{Role, Step};
use crate::patience::scaled;
use crate::payload::pattern;
use crate::rig::{Inbox, Rig, STALL};
use crate::sys::{self, Errno, Sock};

impl Rig<'_> {
    /// A TCP listener on 127.0.0.1 (role `listener`), not yet in any map.
    pub fn listen(&mut self) {
        let result = self.make_listener();
        self.steps.push(Step::Listen { result: result.into() });
    }

    fn make_listener(&mut self) -> Result<(), Errno> {
        let (domain, loopback) = ipv4_loopback();
        let listener = Sock::new(domain, libc::SOCK_STREAM)?;
        self.ledger.record(Role::Listener, &listener);
        listener.bind(&loopback)?;
        listener.listen()?;
        self.adopt(Role::Listener, listener);
        Ok(())
    }

    /// A client (role `client`) connects to the listener: the connection is established and waits
    /// in the listener's accept queue.
    pub fn connect_client(&mut self) {
        let result = self.make_client();
        self.steps.push(Step::Connect { result: result.into() });
    }

    fn make_client(&mut self) -> Result<(), Errno> {
        let (domain, _) = ipv4_loopback();
        let client = Sock::new(domain, libc::SOCK_STREAM)?;
        self.ledger.record(Role::Client, &client);
        client.connect(&self.sock(Role::Listener).local_addr()?)?;
        self.adopt(Role::Client, client);
        Ok(())
    }

    /// The listener accepts the client's connection: the child (role `child`). Waits (bounded)
    /// for the listener to be readable first, so a kernel that never queues the child fails the
    /// case instead of hanging it.
    pub fn accept_child(&mut self) {
        self.wait_for_pollin(Role::Listener, "to accept");
        let result = self.sock(Role::Listener).accept().map(|child| {
            self.ledger.record(Role::Child, &child);
            self.adopt(Role::Child, child);
        });
        self.steps.push(Step::Accept { result: result.into() });
    }

    /// `sock` joins the case's sockets as `role`; all but a listener get an inbox (a listener has
    /// nothing to read, and a read of it is only ENOTCONN).
    fn adopt(&mut self, role: Role, sock: Sock) {
        self.socks.insert(role, sock);
        if role != Role::Listener {
            self.inbox.insert(role, Inbox::default());
        }
    }

    /// `connections` clients connect to the listener and are accepted, one after another, while a
    /// thread inserts the listener at `key` and deletes it again as fast as it can; each child
    /// sends `len` bytes of pattern, which its client must read exactly (no child is redirected,
    /// whenever it was cloned). Every client and child is recorded for the accounting.
    pub fn accept_while_churned(&mut self, key: u32, connections: usize, len: usize) {
        let map_fd = self.bpf.as_ref().expect("accept_while_churned after free_map").map_fd();
        let listener_fd = self.sock(Role::Listener).raw();
        let (stop, inserts, deletes) = (AtomicBool::new(false), AtomicUsize::new(0), AtomicUsize::new(0));
        let (accepted, delivered) = thread::scope(|scope| {
            scope.spawn(|| {
                while !stop.load(Ordering::Relaxed) {
                    if raw_update(map_fd, key, Some(listener_fd)) {
                        inserts.fetch_add(1, Ordering::Relaxed);
                    }
                    if raw_update(map_fd, key, None) {
                        deletes.fetch_add(1, Ordering::Relaxed);
                    }
                }
            });
            let outcome = (0..connections).fold((0, 0), |(accepted, delivered), i| {
                match self.one_churned_connection(pattern(i * len, len)) {
                    Ok(got) => (accepted + 1, delivered + usize::from(got)),
                    Err(_) => (accepted, delivered),
                }
            });
            stop.store(true, Ordering::Relaxed);
            outcome
        });
        let churned = inserts.into_inner() > 0 && deletes.into_inner() > 0;
        self.steps.push(Step::AcceptWhileChurned { connections, accepted, delivered, churned });
    }

    /// One client connected and accepted; its child sends `data`: whether the client read exactly
    /// that (within STALL, wall time: a blocking recv with a timeout).
    fn one_churned_connection(&mut self, data: Vec<u8>) -> Result<bool, Errno> {
        let (domain, _) = ipv4_loopback();
        let client = Sock::new(domain, libc::SOCK_STREAM)?;
        self.ledger.record(Role::Client, &client);
        client.connect(&self.sock(Role::Listener).local_addr()?)?;
        let listener = self.sock(Role::Listener).raw();
        if sys::poll(&[(listener, libc::POLLIN)], scaled(STALL))?[0] == 0 {
            return Err(Errno::ETIMEDOUT);
        }
        let child = self.sock(Role::Listener).accept()?;
        self.ledger.record(Role::Child, &child);
        child.send(&data)?;
        client.set_recv_timeout(scaled(STALL))?;
        let mut got = Vec::new();
        let mut buf = vec![0; data.len()];
        while got.len() < data.len() {
            match client.recv(&mut buf, 0) {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
        Ok(got == data)
    }
}
