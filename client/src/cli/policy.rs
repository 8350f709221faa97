//! `memgate policy` subcommands.

use clap::Subcommand;

/// `memgate policy` subcommands.
#[derive(Debug, Subcommand)]
pub enum PolicyCommand {}

/// Runs a `memgate policy` subcommand.
pub fn run(cmd: PolicyCommand) -> anyhow::Result<()> {
    match cmd {}
}
