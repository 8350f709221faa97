//! `memgate token` subcommands.

use clap::Subcommand;

/// `memgate token` subcommands.
#[derive(Debug, Subcommand)]
pub enum TokenCommand {}

/// Runs a `memgate token` subcommand.
pub fn run(cmd: TokenCommand) -> anyhow::Result<()> {
    match cmd {}
}
