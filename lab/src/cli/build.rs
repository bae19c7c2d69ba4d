//! `lab build`: build a kernel definition, or find it in the cache.

use super::Context;
use crate::build::{self, BuildOptions};

#[derive(clap::Args)]
pub struct Args {
    kernel: String,
    /// Rebuild even if the cache has it.
    #[arg(long)]
    force: bool,
    /// Parallel make jobs (default: cores + 1).
    #[arg(short, long)]
    jobs: Option<usize>,
}

pub fn run(ctx: &Context, args: Args) -> anyhow::Result<u8> {
    let def = ctx.kernels.load(&args.kernel)?;
    let mut opts = BuildOptions { force: args.force, ..Default::default() };
    if let Some(j) = args.jobs {
        opts.jobs = j;
    }
    let built = build::build(&def, &ctx.kernels, &ctx.cache, &opts)?;
    let how = if built.cached { "cached, nothing compiled" } else { "built" };
    println!("{} {} ({how}): {}", def.name, built.entry.manifest.release, built.entry.kernel_image().display());
    Ok(0)
}
