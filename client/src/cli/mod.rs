//! Command-line interface of `memgate`: one module per subcommand group.

pub mod bench;
pub mod demo;
pub mod demo_dest;
pub mod export;
pub mod fault_serve;
pub mod input;
pub mod key;
pub mod policy;
pub mod reaper;
pub mod runner;
pub mod token;

use clap::{Args, Parser, Subcommand};

/// memgate: request memory exports from memgated, manage keys, policies and tokens, and
/// serve post-copy page faults on the destination host.
#[derive(Debug, Parser)]
#[command(name = "memgate", version, about, long_about = None)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// `memgate __demo-target` options (the demo's source workload).
#[derive(Debug, Args)]
pub struct DemoTargetArgs {
    /// Bytes to fill (heap, anonymous mapping and stack together).
    #[arg(long, default_value_t = 64 << 20)]
    pub size: u64,
    /// Pattern seed.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
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
    /// Ask memgated to export a process's memory; prints the grant JSON.
    Export(export::ExportArgs),
    /// Revoke a grant.
    Revoke(export::RevokeArgs),
    /// List this user's grants.
    Grants(export::GrantsArgs),
    /// Wait until a grant is committed by its fault server (or revoked / expired).
    Wait(export::WaitArgs),
    /// Serve a destination's page faults from a grant (userfaultfd + fabric READs).
    FaultServe(fault_serve::FaultServeArgs),
    /// Run the whole flow on this machine: broker, export, post-copy migration, verification.
    Demo(demo::DemoArgs),
    /// Measure the fault server against a raw userfaultfd + TCP baseline.
    Bench(bench::BenchArgs),
    /// The demo's source workload (internal).
    #[command(name = "__demo-target", hide = true)]
    DemoTarget(DemoTargetArgs),
    /// The demo's destination workload (internal).
    #[command(name = "__demo-dest", hide = true)]
    DemoDest(demo_dest::DemoDestArgs),
}

/// Runs the parsed command line.
/// Errors come back as one line that says each cause once.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    dispatch(cli).map_err(key::one_line)
}

fn dispatch(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Key(c) => key::run(c),
        Command::Policy(c) => policy::run(c),
        Command::Token(c) => token::run(c),
        Command::Export(a) => export::run_export(a),
        Command::Revoke(a) => export::run_revoke(a),
        Command::Grants(a) => export::run_grants(a),
        Command::Wait(a) => export::run_wait(a),
        Command::FaultServe(a) => fault_serve::run(a),
        Command::Demo(a) => demo::run(a),
        Command::Bench(a) => bench::run(a),
        Command::DemoTarget(a) => crate::workload::run_target(a.size, a.seed),
        Command::DemoDest(a) => demo_dest::run(a),
    }
}
