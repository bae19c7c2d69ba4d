//! `lab clean`: remove cache entries and build trees (of one kernel, or all).

use super::Context;

#[derive(clap::Args)]
pub struct Args {
    kernel: Option<String>,
}

pub fn run(ctx: &Context, args: Args) -> anyhow::Result<u8> {
    if let Some(k) = &args.kernel {
        ctx.kernels.load(k)?;
    }
    let n = ctx.cache.clean(args.kernel.as_deref())?;
    println!("removed {n} cache entr{}", if n == 1 { "y" } else { "ies" });
    Ok(0)
}
