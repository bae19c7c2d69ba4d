use std::process::ExitCode;

use clap::{Parser, Subcommand};

use lab::cli::{self, Context};
use lab::process;

#[derive(Parser)]
#[command(name = "lab", version, about = "Build kernels, boot them under virtme-ng, and run the sockmap suite in them")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Each subcommand's arguments and handler live in `lab::cli::<name>`.
#[derive(Subcommand)]
enum Command {
    /// Build a kernel definition (or find it in the cache).
    Build(cli::build::Args),
    /// Boot a kernel and run a command in it; the command's exit code becomes lab's.
    Run(cli::run::Args),
    /// Run the redirect-path suite in a guest: one line per case, a summary, results as JSON.
    Test(cli::test::Args),
    /// Build the kernel tree's own sockmap selftests (test_progs -t sockmap*, test_sockmap) for a
    /// kernel and run them in a guest: one line per test, a summary, results as JSON and JUnit.
    Selftests(cli::selftests::Args),
    /// Run the suite on every mutant (deliberately broken kernel); passes only if each is caught.
    Mutants(cli::mutants::Args),
    /// Run the suite over many kernels: a table of kernels × paths, the cases that differ, JUnit.
    Matrix(cli::matrix::Args),
    /// Manage kernel definitions.
    Kernels {
        #[command(subcommand)]
        action: cli::kernels::Action,
    },
    /// Benchmark each redirect path against plain TCP and AF_UNIX, per message size.
    Bench(cli::bench::Args),
    /// Draw a finished bench's plots and print its tables again from its JSON (no guest is booted).
    BenchPlot(cli::bench::PlotArgs),
    /// List kernel definitions and what the cache holds.
    List(cli::list::Args),
    /// Remove cache entries and build trees (of one kernel, or all).
    Clean(cli::clean::Args),
    /// Find the first bad commit of a kernel tree (or the first bad kernel of a list) for the cases
    /// FILTER selects, with `git bisect run` and the lab as the step.
    Bisect(cli::bisect::Args),
    /// One `git bisect run` step on the commit being tested: exits 0 good, 1 bad, 125 skip.
    #[command(hide = true)]
    BisectStep(cli::bisect::StepCli),
    /// Show whether guests run under KVM or TCG here, and why.
    Accel(cli::accel::Args),
}

fn main() -> ExitCode {
    process::install_interrupt_handler();
    // Under `git bisect run` any code from 1 to 127 but 125 means "bad commit": a lab that fails
    // before a step could judge its commit must stop git instead (exit 255), not blame the commit.
    let lab_error = if std::env::args().nth(1).as_deref() == Some("bisect-step") { lab::bisect::EXIT_ABORT } else { cli::EXIT_LAB_ERROR };
    let command = match Cli::try_parse() {
        Ok(cli) => cli.command,
        Err(e) if !e.use_stderr() => e.exit(),
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(lab_error);
        }
    };
    match Context::open().and_then(|ctx| run(&ctx, command)) {
        Ok(code) => ExitCode::from(code),
        Err(_) if process::interrupted() => ExitCode::from(130),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(lab_error)
        }
    }
}

fn run(ctx: &Context, command: Command) -> anyhow::Result<u8> {
    match command {
        Command::Build(args) => cli::build::run(ctx, args),
        Command::Run(args) => cli::run::run(ctx, args),
        Command::Test(args) => cli::test::run(ctx, args),
        Command::Selftests(args) => cli::selftests::run(ctx, args),
        Command::Mutants(args) => cli::mutants::run(ctx, args),
        Command::Matrix(args) => cli::matrix::run(ctx, args),
        Command::Kernels { action } => cli::kernels::run(ctx, action),
        Command::Bench(args) => cli::bench::run(ctx, args),
        Command::BenchPlot(args) => cli::bench::plot(ctx, args),
        Command::List(args) => cli::list::run(ctx, args),
        Command::Clean(args) => cli::clean::run(ctx, args),
        Command::Bisect(args) => cli::bisect::run(ctx, args),
        Command::BisectStep(args) => Ok(cli::bisect::step(ctx, args)),
        Command::Accel(args) => cli::accel::run(ctx, args),
    }
}
