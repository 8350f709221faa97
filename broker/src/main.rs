//! memgated: the privileged memgate broker.

use std::process::ExitCode;

use clap::Parser;
use memgated::cli::Args;
use memgated::policy_store::PolicyStore;

fn main() -> ExitCode {
    let args = Args::parse();
    let cfg = match args.resolve().and_then(|c| c.validate().map(|()| c)) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("memgated: {e}");
            return ExitCode::from(2);
        }
    };
    if args.check_config {
        return match PolicyStore::open(&cfg.policy) {
            Ok(store) => {
                let cur = store.current();
                println!(
                    "configuration ok; policy serial {} for broker {:?}, signed by {}",
                    cur.policy.serial, cur.policy.broker, cur.signer
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("memgated: policy: {e}");
                ExitCode::from(1)
            }
        };
    }
    eprintln!("memgated: serving is not built yet; only --check-config works in this build");
    ExitCode::from(1)
}
