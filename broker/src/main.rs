//! memgated: the privileged memgate broker (see `memgated --help` and docs/broker-api.md).

use clap::Parser;

fn main() -> std::process::ExitCode {
    memgated::daemon::run(&memgated::cli::Args::parse())
}
