//! Bounded input: every file or stdin the CLI reads (policies, signatures, keys, tokens,
//! grants) goes through [`read_bounded`], which never reads more than a limit plus one
//! byte. Sizes from `metadata` are not trusted: `/dev/zero`, pipes and `/proc` files report
//! 0 and then never end.
//!
//! Token arguments are resolved here too ([`token_arg`]), so that every command that takes
//! a token accepts the same forms: the token itself, a file holding it, `@FILE`, or `-`.

use std::io::Read;
use std::path::Path;

use anyhow::{anyhow, bail};

/// Largest policy or grant document read (1 MiB).
pub const MAX_DOCUMENT: u64 = 1 << 20;
/// Largest key, signature or token read (64 KiB).
pub const MAX_SMALL: u64 = 64 << 10;

fn human(limit: u64) -> String {
    if limit >= 1 << 20 && limit & ((1 << 20) - 1) == 0 {
        format!("{} MiB", limit >> 20)
    } else if limit >= 1 << 10 && limit & ((1 << 10) - 1) == 0 {
        format!("{} KiB", limit >> 10)
    } else {
        format!("{limit} bytes")
    }
}

/// Reads at most `limit` bytes from `path` (`-` = stdin) as UTF-8 text. `what` names the
/// input in errors ("policy", "token", ...).
pub fn read_bounded(path: &Path, limit: u64, what: &str) -> anyhow::Result<String> {
    let stdin = path.as_os_str() == "-";
    let name = if stdin {
        format!("the {what} on stdin")
    } else {
        path.display().to_string()
    };
    let mut buf = Vec::new();
    let n = if stdin {
        std::io::stdin()
            .lock()
            .take(limit + 1)
            .read_to_end(&mut buf)
    } else {
        let f = std::fs::File::open(path).map_err(|e| anyhow!("reading {name}: {e}"))?;
        if f.metadata().is_ok_and(|m| m.is_dir()) {
            bail!("{name} is a directory, not a {what} file");
        }
        f.take(limit + 1).read_to_end(&mut buf)
    }
    .map_err(|e| anyhow!("reading {name}: {e}"))?;
    if n as u64 > limit {
        bail!(
            "{name} is larger than {}; is this the right file?",
            human(limit)
        );
    }
    String::from_utf8(buf).map_err(|_| anyhow!("{name} is not UTF-8 text; is this the right file?"))
}

/// Whether `s` looks like a PASETO v4.public token rather than a file name.
pub fn is_token_shaped(s: &str) -> bool {
    s.trim().starts_with("v4.public.")
}

/// Resolves a token argument: `-` (stdin), `@FILE`, the token itself (`v4.public.…`), or
/// the name of an existing file holding it. Files and stdin are read bounded.
pub fn token_arg(arg: &str) -> anyhow::Result<String> {
    let text = if arg == "-" {
        read_bounded(Path::new("-"), MAX_SMALL, "token")?
    } else if let Some(path) = arg.strip_prefix('@') {
        read_bounded(Path::new(path), MAX_SMALL, "token")?
    } else if is_token_shaped(arg) {
        arg.to_string()
    } else if Path::new(arg).exists() {
        read_bounded(Path::new(arg), MAX_SMALL, "token")?
    } else if arg.trim().starts_with("v") && arg.contains('.') {
        // Some other PASETO version or purpose: let the decoder name what is wrong.
        arg.to_string()
    } else {
        bail!("{arg:?} is neither a token (v4.public.…) nor an existing file")
    };
    Ok(text.trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dev_zero_is_refused_quickly() {
        let e = read_bounded(Path::new("/dev/zero"), MAX_DOCUMENT, "policy").unwrap_err();
        assert_eq!(
            e.to_string(),
            "/dev/zero is larger than 1 MiB; is this the right file?"
        );
    }

    #[test]
    fn exact_limit_is_accepted_and_one_more_byte_is_not() {
        let dir = std::env::temp_dir().join(format!("memgate-input-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("f");
        std::fs::write(&p, vec![b'a'; 1024]).unwrap();
        assert_eq!(read_bounded(&p, 1024, "x").unwrap().len(), 1024);
        assert!(read_bounded(&p, 1023, "x").is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn token_forms() {
        assert_eq!(token_arg(" v4.public.abc ").unwrap(), "v4.public.abc");
        assert!(token_arg("/nonexistent/token/file").is_err());
    }
}
