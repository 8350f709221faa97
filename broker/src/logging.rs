//! Log set-up: `tracing` to the journal when running under systemd (or when asked), to
//! stderr otherwise.

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

use crate::config::LogTarget;

/// The journal's native socket.
pub const JOURNAL_SOCKET: &str = "/run/systemd/journal/socket";

/// Whether `auto` means the journal: systemd connected stderr to the journal
/// (`$JOURNAL_STREAM`) and the native socket exists.
fn journal_wanted() -> bool {
    std::env::var_os("JOURNAL_STREAM").is_some() && std::path::Path::new(JOURNAL_SOCKET).exists()
}

/// Colour only for a person at a terminal: stderr is a tty and `NO_COLOR` is unset or
/// empty (<https://no-color.org>).
pub fn colour_wanted() -> bool {
    use std::io::IsTerminal;
    let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
    !no_color && std::io::stderr().is_terminal()
}

/// Installs the global subscriber. Returns where logs go ("journald" or "stderr").
pub fn init(level: &str, target: LogTarget) -> &'static str {
    let filter = EnvFilter::try_new(level).unwrap_or_else(|_| EnvFilter::new("info"));
    let use_journal = match target {
        LogTarget::Journald => true,
        LogTarget::Stderr => false,
        LogTarget::Auto => journal_wanted(),
    };
    if use_journal {
        if let Ok(layer) = tracing_journald::layer() {
            let layer = layer.with_syslog_identifier("memgated".to_string());
            if tracing_subscriber::registry()
                .with(filter)
                .with(layer)
                .try_init()
                .is_ok()
            {
                return "journald";
            }
            return "stderr";
        }
    }
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colour_wanted())
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
    "stderr"
}
