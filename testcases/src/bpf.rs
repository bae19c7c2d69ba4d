//! The skeleton of bpf/sockmap.bpf.c and what the cases do with it: steer, attach, insert, count.

use std::mem::MaybeUninit;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};

use libbpf_rs::libbpf_sys;
use libbpf_rs::skel::{OpenSkel, Skel, SkelBuilder};
use libbpf_rs::{MapCore, MapFlags, OpenObject, ProgramMut};

use crate::sys::{Errno, Sock};

mod skel {
    include!(concat!(env!("OUT_DIR"), "/sockmap.skel.rs"));
}

use skel::{SockmapSkel, SockmapSkelBuilder};

/// The `config` map's value (struct config in bpf/sockmap.h).
pub type Config = skel::types::config;

/// enum action in bpf/sockmap.h.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum Action {
    Redirect = 0,
    Pass = 1,
    Drop = 2,
    Alternate = 3,
}

/// enum counter in bpf/sockmap.h.
#[derive(Clone, Copy, Debug)]
#[repr(u32)]
pub enum Counter {
    MsgRuns = 0,
    ParserRuns = 1,
    StreamVerdictRuns = 2,
    SkbVerdictRuns = 3,
    RedirectMisses = 4,
    HelperErrors = 5,
    PulledLen = 6,
    PulledFirstByte = 7,
    HelperErrno = 8,
    MsgPassRuns = 9,
}

/// PUSH_FILL in bpf/sockmap.h.
pub const PUSH_FILL: u8 = 0xee;

/// BPF_F_INGRESS: redirect into the target's receive queue instead of out of its egress.
pub const F_INGRESS: u32 = libbpf_sys::BPF_F_INGRESS;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapKind {
    Sockmap,
    Sockhash,
}

impl MapKind {
    pub fn name(self) -> &'static str {
        match self {
            Self::Sockmap => "sockmap",
            Self::Sockhash => "sockhash",
        }
    }
}

/// Which programs a case attaches to its map.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hook {
    /// sk_msg verdict (BPF_SK_MSG_VERDICT): sees what the socket sends.
    Msg,
    /// sk_skb verdict without a parser (BPF_SK_SKB_VERDICT): sees what the socket receives.
    SkbVerdict,
    /// sk_skb stream parser + stream verdict (TCP only): sees what the socket receives.
    StreamParser,
}

impl Hook {
    /// The program whose run count says whether the kernel hooked this socket family at all.
    pub fn verdict_counter(self) -> Counter {
        match self {
            Self::Msg => Counter::MsgRuns,
            Self::SkbVerdict => Counter::SkbVerdictRuns,
            Self::StreamParser => Counter::StreamVerdictRuns,
        }
    }
}

/// A step of the setup the kernel turned down, and with which errno.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refused {
    pub step: &'static str,
    pub errno: Errno,
}

pub struct Bpf<'obj> {
    skel: SockmapSkel<'obj>,
    map: MapKind,
}

impl<'obj> Bpf<'obj> {
    /// Loads only the programs `hooks` need (and msg_pass, the program a bpf_link is updated to,
    /// with `msg_pass`): each program costs verifier time, and under TCG that adds up over hundreds
    /// of cases.
    pub fn load(
        object: &'obj mut MaybeUninit<OpenObject>,
        map: MapKind,
        hooks: &[Hook],
        msg_pass: bool,
    ) -> libbpf_rs::Result<Self> {
        let mut open = SockmapSkelBuilder::default().open(object)?;
        let progs = &mut open.progs;
        progs.msg_verdict.set_autoload(hooks.contains(&Hook::Msg));
        progs.msg_pass.set_autoload(msg_pass);
        progs.skb_verdict.set_autoload(hooks.contains(&Hook::SkbVerdict));
        progs.skb_parser.set_autoload(hooks.contains(&Hook::StreamParser));
        progs.skb_stream_verdict.set_autoload(hooks.contains(&Hook::StreamParser));
        let skel = open.load()?;
        assert_eq!(
            skel.maps.config.value_size() as usize,
            std::mem::size_of::<Config>(),
            "bpf/sockmap.h and Config disagree"
        );
        Ok(Self { skel, map })
    }

    pub fn configure(&self, config: &Config) {
        // SAFETY: Config is #[repr(C)] and made of u32 fields only, so it has no padding bytes.
        let bytes = unsafe {
            std::slice::from_raw_parts((config as *const Config).cast::<u8>(), std::mem::size_of::<Config>())
        };
        self.skel.maps.config.update(&0u32.to_ne_bytes(), bytes, MapFlags::ANY).expect("writing the config map");
    }

    /// The map under test's descriptor, for a thread of the case's own (the skeleton stays here).
    pub(crate) fn map_fd(&self) -> i32 {
        self.fd_of(self.map)
    }

    fn fd_of(&self, map: MapKind) -> i32 {
        match map {
            MapKind::Sockmap => self.skel.maps.sock_map.as_fd().as_raw_fd(),
            MapKind::Sockhash => self.skel.maps.sock_hash.as_fd().as_raw_fd(),
        }
    }

    /// Attaches the loaded programs to the map under test; must come before any socket is inserted,
    /// since a socket only picks up the programs attached when it joins the map.
    pub fn attach(&self, hook: Hook) -> Result<(), Refused> {
        self.attach_to(self.map, hook)
    }

    /// [`Bpf::attach`] to either map.
    pub fn attach_to(&self, map: MapKind, hook: Hook) -> Result<(), Refused> {
        let progs = &self.skel.progs;
        let attach = |prog: &ProgramMut<'_>, step| {
            // SAFETY: plain syscall wrapper on two descriptors we own.
            let ret = unsafe {
                libbpf_sys::bpf_prog_attach(prog.as_fd().as_raw_fd(), self.fd_of(map), prog.attach_type() as u32, 0)
            };
            if ret < 0 {
                return Err(Refused { step, errno: Errno::from_raw(-ret) });
            }
            Ok(())
        };
        match hook {
            Hook::Msg => attach(&progs.msg_verdict, "attach_sk_msg_verdict"),
            Hook::SkbVerdict => attach(&progs.skb_verdict, "attach_sk_skb_verdict"),
            Hook::StreamParser => {
                attach(&progs.skb_parser, "attach_sk_skb_stream_parser")?;
                attach(&progs.skb_stream_verdict, "attach_sk_skb_stream_verdict")
            }
        }
    }

    /// Attaches msg_verdict to the map under test through a bpf_link (BPF_LINK_TYPE_SOCKMAP, since
    /// 6.10) instead of BPF_PROG_ATTACH; the program stays attached as long as the link's descriptor.
    pub fn link_msg_verdict(&self) -> Result<OwnedFd, Refused> {
        let prog = self.skel.progs.msg_verdict.as_fd().as_raw_fd();
        // SAFETY: plain syscall wrapper on two descriptors we own; no options.
        let ret = unsafe {
            libbpf_sys::bpf_link_create(prog, self.map_fd(), libbpf_sys::BPF_SK_MSG_VERDICT, std::ptr::null())
        };
        if ret < 0 {
            return Err(Refused { step: "link_create", errno: Errno::from_raw(-ret) });
        }
        // SAFETY: the kernel just returned this descriptor to us, and nothing else owns it.
        Ok(unsafe { OwnedFd::from_raw_fd(ret) })
    }

    /// Points `link` at msg_pass (BPF_LINK_UPDATE).
    pub fn link_update_to_msg_pass(&self, link: &OwnedFd) -> Result<(), Errno> {
        let prog = self.skel.progs.msg_pass.as_fd().as_raw_fd();
        // SAFETY: plain syscall wrapper on two descriptors we own; no options.
        let ret = unsafe { libbpf_sys::bpf_link_update(link.as_raw_fd(), prog, std::ptr::null()) };
        if ret < 0 {
            return Err(Errno::from_raw(-ret));
        }
        Ok(())
    }

    pub fn insert(&self, key: u32, sock: &Sock) -> Result<(), Errno> {
        self.insert_into(self.map, key, sock)
    }

    /// Puts `sock` at `key` of either map (BPF_ANY: replaces whatever is there).
    pub fn insert_into(&self, map: MapKind, key: u32, sock: &Sock) -> Result<(), Errno> {
        let fd = sock.raw() as u32;
        // SAFETY: key and value point at u32s, matching the maps' key and value sizes.
        let ret = unsafe {
            libbpf_sys::bpf_map_update_elem(
                self.fd_of(map),
                (&key as *const u32).cast(),
                (&fd as *const u32).cast(),
                libbpf_sys::BPF_ANY.into(),
            )
        };
        if ret < 0 {
            return Err(Errno::from_raw(-ret));
        }
        Ok(())
    }

    pub fn remove(&self, key: u32) -> Result<(), Errno> {
        self.remove_from(self.map, key)
    }

    pub fn remove_from(&self, map: MapKind, key: u32) -> Result<(), Errno> {
        // SAFETY: key points at a u32, matching the maps' key size.
        let ret = unsafe { libbpf_sys::bpf_map_delete_elem(self.fd_of(map), (&key as *const u32).cast()) };
        if ret < 0 {
            return Err(Errno::from_raw(-ret));
        }
        Ok(())
    }

    /// The ids of the loaded programs: a program id stays valid until its last reference (the
    /// map's attachment, every psock that copied it) is gone.
    pub fn prog_ids(&self) -> Vec<u32> {
        self.skel
            .object()
            .progs()
            .filter(|p| p.autoload())
            .filter_map(|p| libbpf_rs::Program::id_from_fd(p.as_fd()).ok())
            .collect()
    }

    pub fn counter(&self, counter: Counter) -> u64 {
        let value = self
            .skel
            .maps
            .counters
            .lookup(&(counter as u32).to_ne_bytes(), MapFlags::ANY)
            .expect("reading the counters map")
            .expect("counters is an array: every index exists");
        u64::from_ne_bytes(value.try_into().expect("counters hold u64"))
    }
}

/// Whether a program with this id still exists (anything still holds a reference to it).
pub fn prog_exists(id: u32) -> bool {
    // SAFETY: plain syscall wrapper; a non-negative return is a descriptor we close at once.
    let fd = unsafe { libbpf_sys::bpf_prog_get_fd_by_id(id) };
    if fd < 0 {
        return false;
    }
    // SAFETY: the descriptor was just returned to us and nothing else uses it.
    unsafe { libc::close(fd) };
    true
}

/// BPF_MAP_UPDATE_ELEM (BPF_ANY) of `sock_fd` at `key` of the map `map_fd`, or BPF_MAP_DELETE_ELEM
/// with None: for a thread that churns an entry while the case goes on.
pub(crate) fn raw_update(map_fd: i32, key: u32, sock_fd: Option<i32>) -> bool {
    // SAFETY: key and value point at u32s, matching the maps' key and value sizes.
    let ret = unsafe {
        match sock_fd {
            Some(fd) => libbpf_sys::bpf_map_update_elem(
                map_fd,
                (&key as *const u32).cast(),
                (&(fd as u32) as *const u32).cast(),
                libbpf_sys::BPF_ANY.into(),
            ),
            None => libbpf_sys::bpf_map_delete_elem(map_fd, (&key as *const u32).cast()),
        }
    };
    ret == 0
}
