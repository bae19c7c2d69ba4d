//! `lab accel`: whether guests run under KVM or TCG here, and why.

use anyhow::Context as _;

use super::Context;
use crate::build::{self, BuildOptions};

#[derive(clap::Args)]
pub struct Args {
    /// Kernel to probe with.
    #[arg(default_value = "debian-6.12")]
    kernel: String,
    /// Ignore the cached answer and probe again.
    #[arg(long)]
    reprobe: bool,
}

pub fn run(ctx: &Context, args: Args) -> anyhow::Result<u8> {
    let def = ctx.kernels.load(&args.kernel)?;
    let built = build::build(&def, &ctx.kernels, &ctx.cache, &BuildOptions::default())?;
    let d = crate::accel::choose(&ctx.cache, &built.entry.kernel_image(), args.reprobe).context("choosing the accelerator")?;
    println!("{}: {}", d.accel.as_str(), d.reason);
    Ok(0)
}
