//! `memgate key` subcommands.

use clap::Subcommand;

/// `memgate key` subcommands.
#[derive(Debug, Subcommand)]
pub enum KeyCommand {}

/// Runs a `memgate key` subcommand.
pub fn run(cmd: KeyCommand) -> anyhow::Result<()> {
    match cmd {}
}
