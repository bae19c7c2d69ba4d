//! `lab kernels`: manage kernel definitions.

use super::Context;

#[derive(clap::Subcommand)]
pub enum Action {
    /// Write definitions for prebuilt Debian kernels: `6.1.0-47`, `6.12.117`, or `--all` that apt knows.
    AddDebian {
        versions: Vec<String>,
        #[arg(long)]
        all: bool,
    },
}

pub fn run(ctx: &Context, action: Action) -> anyhow::Result<u8> {
    let Action::AddDebian { versions, all } = action;
    let needs_view = all || versions.iter().any(|v| crate::definition::debian_image_package(v).is_none());
    let newer = if needs_view { crate::apt::AptView::open(&ctx.cache)?.kernel_images()? } else { vec![] };
    let written = crate::definition::add_debian_images(&ctx.kernels, &versions, all, &newer)?;
    for (name, created, suite) in &written {
        println!("{} kernels/{name}.toml ({suite})", if *created { "wrote" } else { "kept " });
    }
    Ok(0)
}
