//! bpf/sockmap.bpf.c steered to "redirect everything to key 1" for one path, as the suite's plain
//! data-path cases do (see bpf/sockmap.h for the config layout).

use std::mem::MaybeUninit;
use std::os::fd::{AsFd, AsRawFd};

use anyhow::Context;
use libbpf_rs::skel::{OpenSkel, SkelBuilder};
use libbpf_rs::{libbpf_sys, MapCore, MapFlags, OpenObject};

mod skel {
    include!(concat!(env!("OUT_DIR"), "/sockmap.skel.rs"));
}

use skel::{SockmapSkel, SockmapSkelBuilder};

/// The socket whose traffic the programs act on.
pub const KEY_A: u32 = 0;
/// Where they redirect it.
pub const KEY_B: u32 = 1;

/// enum action in bpf/sockmap.h.
const ACT_REDIRECT: u32 = 0;

/// Which verdict program sees the traffic: sk_msg for what A sends, sk_skb for what A receives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hook {
    SkMsg,
    SkSkb,
}

/// One redirect, as the programs are steered to do it: this module knows programs and maps, not
/// the bench's paths (which say what redirect each of them is).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Redirect {
    pub hook: Hook,
    /// BPF_F_INGRESS: into B's receive queue rather than out of B.
    pub ingress: bool,
}

pub struct Bpf {
    skel: SockmapSkel<'static>,
}

impl Bpf {
    /// Loads and attaches, to the sockmap, only the verdict program `redirect` needs: sk_msg, or
    /// the parser-less sk_skb verdict.
    pub fn load(redirect: Redirect) -> anyhow::Result<Self> {
        let tx = redirect.hook == Hook::SkMsg;
        // The skeleton borrows its object for as long as the programs stay loaded, which is the
        // whole bench: leaking it is simpler than threading a lifetime through every path.
        let object: &'static mut MaybeUninit<OpenObject> = Box::leak(Box::new(MaybeUninit::uninit()));
        let mut open = SockmapSkelBuilder::default().open(object).context("opening bpf/sockmap.bpf.c")?;
        let progs = &mut open.progs;
        progs.msg_verdict.set_autoload(tx);
        progs.skb_verdict.set_autoload(!tx);
        progs.skb_parser.set_autoload(false);
        progs.skb_stream_verdict.set_autoload(false);
        let skel = open.load().context("loading bpf/sockmap.bpf.c")?;

        let config = skel::types::config {
            action: ACT_REDIRECT,
            target_key: KEY_B,
            flags: if redirect.ingress { libbpf_sys::BPF_F_INGRESS } else { 0 },
            ..Default::default()
        };
        // SAFETY: config is #[repr(C)] and made of u32 fields only, so it has no padding bytes.
        let bytes = unsafe {
            std::slice::from_raw_parts((&config as *const skel::types::config).cast::<u8>(), size_of_val(&config))
        };
        skel.maps.config.update(&0u32.to_ne_bytes(), bytes, MapFlags::ANY).context("writing the config map")?;

        let map_fd = skel.maps.sock_map.as_fd().as_raw_fd();
        let prog = if tx { &skel.progs.msg_verdict } else { &skel.progs.skb_verdict };
        prog.attach_sockmap(map_fd)
            .with_context(|| format!("attaching {} to the sockmap", prog.name().to_string_lossy()))?;
        Ok(Self { skel })
    }

    /// A socket joins the map after the program is attached, and so picks it up.
    pub fn insert(&self, key: u32, sock: &impl AsRawFd) -> anyhow::Result<()> {
        let fd = sock.as_raw_fd() as u32;
        self.skel
            .maps
            .sock_map
            .update(&key.to_ne_bytes(), &fd.to_ne_bytes(), MapFlags::ANY)
            .with_context(|| format!("adding a socket to the sockmap at key {key}"))
    }
}
