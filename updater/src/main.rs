//! `tailor-updater`.

use clap::Parser;

/// Applies VerticalAutoscaler recommendations to running pods in place.
#[derive(Debug, Parser)]
#[command(name = "tailor-updater", version, about)]
struct Args {}

fn main() -> std::process::ExitCode {
    let _args = Args::parse();
    eprintln!("tailor-updater: no subcommands are available in this build yet");
    std::process::ExitCode::FAILURE
}
