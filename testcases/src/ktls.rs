//! kTLS on sockets a case has in its map (issue 13, family 8): the TLS ULP (setsockopt TCP_ULP
//! "tls") and its keys (SOL_TLS TLS_TX / TLS_RX, TLS 1.2 AES-GCM-128 with all-zero key material,
//! as the kernel's selftests use), set on a case's sockets before or after they join the map.
//!
//! A kernel without TLS answers TCP_ULP "tls" with ENOENT (a module kernel whose guest cannot load
//! tls.ko too); a kernel that refuses TLS on a socket in a map (tls_main.c since the 2026 fix that
//! made the two mutually exclusive) answers the keys with EINVAL, and sk_psock_init() refuses a
//! socket with any ULP. Either way a case that needs the combination ends unsupported with that
//! step and errno, and the steps up to it are in its snapshot.

use std::mem::size_of;

use crate::observation::{Role, Step, Unsupported};
use crate::rig::Rig;
use crate::sys::{errno_name, Errno, Sock};

/// include/uapi/linux/tls.h.
const TLS_TX: i32 = 1;
const TLS_RX: i32 = 2;
const TLS_1_2_VERSION: u16 = 0x0303;
const TLS_CIPHER_AES_GCM_128: u16 = 51;

/// struct tls12_crypto_info_aes_gcm_128.
#[repr(C)]
#[derive(Default)]
struct CryptoInfoAesGcm128 {
    version: u16,
    cipher_type: u16,
    iv: [u8; 8],
    key: [u8; 16],
    salt: [u8; 4],
    rec_seq: [u8; 8],
}

/// Which half of a TLS connection a socket gets keys for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TlsDir {
    /// TLS_TX: what the socket sends goes out as TLS records.
    Tx,
    /// TLS_RX: what the socket receives is parsed and decrypted as TLS records.
    Rx,
}

impl TlsDir {
    pub fn name(self) -> &'static str {
        match self {
            Self::Tx => "tls_tx",
            Self::Rx => "tls_rx",
        }
    }
}

impl Sock {
    /// setsockopt(IPPROTO_TCP, TCP_ULP, "tls").
    pub fn set_tls_ulp(&self) -> Result<(), Errno> {
        let name = b"tls";
        // SAFETY: the name is valid for its length.
        let ret = unsafe {
            libc::setsockopt(self.raw(), libc::IPPROTO_TCP, libc::TCP_ULP, name.as_ptr().cast(), name.len() as u32)
        };
        if ret < 0 {
            return Err(Errno::last());
        }
        Ok(())
    }

    /// setsockopt(SOL_TLS, TLS_TX or TLS_RX) with TLS 1.2 AES-GCM-128 and all-zero key material.
    pub fn set_tls_key(&self, dir: TlsDir) -> Result<(), Errno> {
        let info =
            CryptoInfoAesGcm128 { version: TLS_1_2_VERSION, cipher_type: TLS_CIPHER_AES_GCM_128, ..Default::default() };
        let name = match dir {
            TlsDir::Tx => TLS_TX,
            TlsDir::Rx => TLS_RX,
        };
        // SAFETY: `info` is valid for its size.
        let ret = unsafe {
            libc::setsockopt(
                self.raw(),
                libc::SOL_TLS,
                name,
                (&info as *const CryptoInfoAesGcm128).cast(),
                size_of::<CryptoInfoAesGcm128>() as u32,
            )
        };
        if ret < 0 {
            return Err(Errno::last());
        }
        Ok(())
    }

    /// setsockopt(IPPROTO_TCP, TCP_NODELAY, 1): goes through the ULP's setsockopt to the saved proto.
    pub fn set_nodelay(&self) -> Result<(), Errno> {
        let one: libc::c_int = 1;
        // SAFETY: one int, and the length says so.
        let ret = unsafe {
            libc::setsockopt(self.raw(), libc::IPPROTO_TCP, libc::TCP_NODELAY, (&one as *const libc::c_int).cast(), 4)
        };
        if ret < 0 {
            return Err(Errno::last());
        }
        Ok(())
    }

    /// connect(AF_UNSPEC): tcp_disconnect() through the socket's proto.
    pub fn disconnect(&self) -> Result<(), Errno> {
        // SAFETY: sockaddr is plain data; AF_UNSPEC with zeroes is the documented disconnect.
        let mut addr: libc::sockaddr = unsafe { std::mem::zeroed() };
        addr.sa_family = libc::AF_UNSPEC as libc::sa_family_t;
        // SAFETY: the address is valid for its size.
        let ret = unsafe { libc::connect(self.raw(), &addr, size_of::<libc::sockaddr>() as u32) };
        if ret < 0 {
            return Err(Errno::last());
        }
        Ok(())
    }
}

impl Rig<'_> {
    /// TCP_ULP "tls" on `role`, recorded as a step. A kernel without TLS (ENOENT) makes the case
    /// unsupported whatever else it does.
    pub fn tls_ulp(&mut self, role: Role) -> Result<(), Errno> {
        let result = self.sock(role).set_tls_ulp();
        if result == Err(Errno::ENOENT) {
            self.unsupported_by("tcp_ulp_tls", Errno::ENOENT);
            self.lacks = Some("TLS (TCP_ULP \"tls\" is ENOENT: no CONFIG_TLS, or tls.ko not loadable)");
        }
        self.steps.push(Step::TcpUlp { role, result: result.into() });
        result
    }

    /// TLS keys for `dir` on `role`, recorded as a step.
    pub fn tls_key(&mut self, role: Role, dir: TlsDir) -> Result<(), Errno> {
        let result = self.sock(role).set_tls_key(dir);
        self.steps.push(Step::TlsKey { role, dir: dir.name(), result: result.into() });
        result
    }

    /// The ULP and the keys for `dir` on `role`, a case's precondition: if the kernel refuses
    /// either, the case is unsupported with that step and errno; true if `role` now has them.
    pub fn require_tls(&mut self, role: Role, dir: TlsDir) -> bool {
        if let Err(errno) = self.tls_ulp(role) {
            self.unsupported_by("tcp_ulp_tls", errno);
            return false;
        }
        self.require_key(role, dir)
    }

    /// The keys for `dir` on `role`, which has the ULP already; as [`Rig::require_tls`].
    pub fn require_key(&mut self, role: Role, dir: TlsDir) -> bool {
        if let Err(errno) = self.tls_key(role, dir) {
            self.unsupported_by(dir.name(), errno);
            return false;
        }
        true
    }

    /// `role` (back) into the map at `key`, a case's precondition: the case is unsupported if the
    /// kernel refuses it.
    pub fn require_insert(&mut self, key: u32, role: Role) -> bool {
        let result = self.bpf.as_ref().expect("require_insert after free_map").insert(key, self.sock(role));
        self.steps.push(Step::MapInsert { key, role, map: None, result: result.into() });
        match result {
            Ok(()) => true,
            Err(errno) => {
                self.unsupported_by("map_update", errno);
                false
            }
        }
    }

    pub fn nodelay(&mut self, role: Role) {
        let result = self.sock(role).set_nodelay().into();
        self.steps.push(Step::TcpNodelay { role, result });
    }

    pub fn disconnect(&mut self, role: Role) {
        let result = self.sock(role).disconnect().into();
        self.steps.push(Step::Disconnect { role, result });
    }

    /// The case ends unsupported with this reason (the first one given wins).
    pub fn unsupported_by(&mut self, step: &'static str, errno: Errno) {
        self.refused.get_or_insert(Unsupported { step, error: errno_name(errno) });
    }

    /// The case checks the kernel's answers to setup steps, not a data path: that the verdict
    /// program never ran does not make it unsupported.
    pub fn lifecycle_only(&mut self) {
        self.lifecycle_only = true;
    }
}
