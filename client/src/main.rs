//! memgate: the command-line client. All logic lives in the library's `cli` module.

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = memgate::cli::Cli::parse();
    match memgate::cli::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("memgate: {e:#}");
            ExitCode::FAILURE
        }
    }
}
