//! `lab list`: kernel definitions and what the cache holds.

use super::Context;

#[derive(clap::Args)]
pub struct Args {}

pub fn run(ctx: &Context, _args: Args) -> anyhow::Result<u8> {
    print!("{}", crate::render::kernels::list(&ctx.kernels.load_all()?, &ctx.cache.entries()));
    println!("cache: {}", ctx.cache.root.display());
    Ok(0)
}
