//! bpf/sockmap.bpf.c steered to "redirect everything to key 1" for one path, as the suite's plain
//! data-path cases do (see bpf/sockmap.h for the config layout).

use std::mem::MaybeUninit;
use std::os::fd::{AsFd, AsRawFd};

use anyhow::Context;
use libbpf_rs::skel::{OpenSkel, SkelBuilder};
use libbpf_rs::{libbpf_sys, MapCore, MapFlags, OpenObject};

use crate::path::Path;

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

pub struct Bpf {
    skel: SockmapSkel<'static>,
}

impl Bpf {
    /// Loads and attaches, to the sockmap, only the verdict program `path` needs: sk_msg for the tx
    /// paths, the parser-less sk_skb verdict for the rx paths.
    pub fn load(path: Path) -> anyhow::Result<Self> {
        // The skeleton borrows its object for as long as the programs stay loaded, which is the
        // whole bench: leaking it is simpler than threading a lifetime through every path.
        let object: &'static mut MaybeUninit<OpenObject> = Box::leak(Box::new(MaybeUninit::uninit()));
        let mut open = SockmapSkelBuilder::default().open(object).context("opening bpf/sockmap.bpf.c")?;
        let progs = &mut open.progs;
        progs.msg_verdict.set_autoload(path.is_tx());
        progs.skb_verdict.set_autoload(!path.is_tx());
        progs.skb_parser.set_autoload(false);
        progs.skb_stream_verdict.set_autoload(false);
        let skel = open.load().context("loading bpf/sockmap.bpf.c")?;

        let config = skel::types::config {
            action: ACT_REDIRECT,
            target_key: KEY_B,
            flags: if path.is_ingress() { libbpf_sys::BPF_F_INGRESS } else { 0 },
            ..Default::default()
        };
        // SAFETY: config is #[repr(C)] and made of u32 fields only, so it has no padding bytes.
        let bytes = unsafe {
            std::slice::from_raw_parts((&config as *const skel::types::config).cast::<u8>(), size_of_val(&config))
        };
        skel.maps.config.update(&0u32.to_ne_bytes(), bytes, MapFlags::ANY).context("writing the config map")?;

        let map_fd = skel.maps.sock_map.as_fd().as_raw_fd();
        let prog = if path.is_tx() { &skel.progs.msg_verdict } else { &skel.progs.skb_verdict };
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
