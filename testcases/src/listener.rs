//! A listening socket in the map (issue 13, family 9): the case makes it, connects a client to it
//! and accepts the child, each step recorded, every socket recorded for the accounting.

use crate::family::ipv4_loopback;
use crate::observation::{Role, Step};
use crate::rig::{Inbox, Rig};
use crate::sys::{Errno, Sock};

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

    fn adopt(&mut self, role: Role, sock: Sock) {
        self.socks.insert(role, sock);
        self.inbox.insert(role, Inbox::default());
    }
}
