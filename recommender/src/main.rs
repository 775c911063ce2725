//! `tailor-recommender`.

use clap::Parser;

/// Computes CPU/memory recommendations for VerticalAutoscalers.
#[derive(Debug, Parser)]
#[command(name = "tailor-recommender", version, about)]
struct Args {}

fn main() -> std::process::ExitCode {
    let _args = Args::parse();
    eprintln!("tailor-recommender: no subcommands are available in this build yet");
    std::process::ExitCode::FAILURE
}
