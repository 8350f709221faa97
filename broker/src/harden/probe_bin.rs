//! Root of the `memgated-harden-probe` binary: applies memgated's hardening to itself, then
//! tries each forbidden and each needed operation (see `memgated::harden::probe_cli`).

fn main() -> std::process::ExitCode {
    memgated::harden::probe_cli::main()
}
