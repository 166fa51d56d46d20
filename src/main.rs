use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    faultline::cli::Cli::parse().run()
}
