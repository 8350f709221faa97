//! Command-line interface of `memgate`: one module per subcommand group.

pub mod key;
pub mod policy;
pub mod token;

use clap::{Parser, Subcommand};

/// memgate: request memory exports from memgated, manage keys, policies and tokens, and
/// serve post-copy page faults on the destination host.
#[derive(Debug, Parser)]
#[command(name = "memgate", version, about, long_about = None)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Top-level subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Generate admin, issuer or peer keys.
    #[command(subcommand)]
    Key(key::KeyCommand),
    /// Sign, verify and show policy documents.
    #[command(subcommand)]
    Policy(policy::PolicyCommand),
    /// Mint, inspect and verify export tokens.
    #[command(subcommand)]
    Token(token::TokenCommand),
}

/// Runs the parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Key(c) => key::run(c),
        Command::Policy(c) => policy::run(c),
        Command::Token(c) => token::run(c),
    }
}
