//! `lab run`: boot a kernel and run a command in it; the command's exit code becomes lab's.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use super::Context;
use crate::build::{self, BuildOptions};
use crate::vm;

#[derive(clap::Args)]
pub struct Args {
    kernel: String,
    /// Give up on the guest after this many seconds and report a hang.
    #[arg(long, default_value_t = 300, env = "LAB_TIMEOUT")]
    timeout: u64,
    /// Also give up when the guest prints nothing (console or command) for this many seconds.
    #[arg(long)]
    silence: Option<u64>,
    #[arg(long, default_value = "2G")]
    memory: String,
    #[arg(long, default_value_t = 2)]
    cpus: u32,
    /// Show the kernel console live (it is always kept in a log).
    #[arg(long)]
    console: bool,
    /// A host directory the guest may write to (repeatable).
    #[arg(long)]
    rwdir: Vec<PathBuf>,
    #[arg(required = true, last = true)]
    command: Vec<String>,
}

pub fn run(ctx: &Context, args: Args) -> anyhow::Result<u8> {
    let def = ctx.kernels.load(&args.kernel)?;
    let built = build::build(&def, &ctx.kernels, &ctx.cache, &BuildOptions::default())?;
    let kimg = built.entry.kernel_image();
    let mut cfg = ctx.vm_config(&def.name, &kimg, args.timeout)?;
    cfg.silence = args.silence.map(Duration::from_secs);
    cfg.memory = args.memory;
    cfg.cpus = args.cpus;
    cfg.show_console = args.console;
    cfg.rwdirs = args.rwdir;
    let run = vm::run(&kimg, &args.command, &cfg, |bytes| {
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(bytes);
        let _ = out.flush();
    })?;
    Ok(super::guest_exit(&def.name, &run, &cfg))
}
