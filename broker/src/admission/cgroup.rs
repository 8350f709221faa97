//! Step 3, the target's cgroup: the cgroup v2 path from the `0::` line of
//! `/proc/<pid>/cgroup`. On a hybrid hierarchy (v1 controllers plus v2 at
//! `/sys/fs/cgroup/unified`) the file lists v1 lines too; only the `0::` line counts.
//! The pidfd is re-checked after the read so a recycled pid cannot answer for the target.

use super::ptrace::{Proven, PtraceError};

/// Why the target's cgroup could not be established.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    /// The file could not be read.
    #[error("cannot read /proc/{pid}/cgroup: {err}")]
    Read {
        /// Target pid.
        pid: i32,
        /// The error.
        err: std::io::Error,
    },
    /// No `0::` line (no cgroup v2 hierarchy).
    #[error("/proc/{0}/cgroup has no cgroup v2 (0::) line")]
    NoV2(i32),
    /// The path is not a clean absolute cgroup path (or its cgroup was removed).
    #[error("target cgroup {path:?} is not usable: {detail}")]
    BadPath {
        /// The path read.
        path: String,
        /// Why.
        detail: String,
    },
    /// The target exited during the check.
    #[error(transparent)]
    Target(#[from] PtraceError),
}

impl CgroupError {
    /// Stable code.
    pub fn code(&self) -> &'static str {
        match self {
            CgroupError::Read { .. } | CgroupError::NoV2(_) | CgroupError::BadPath { .. } => {
                "cgroup_unresolved"
            }
            CgroupError::Target(e) => e.code(),
        }
    }
}

/// The v2 path of a `/proc/<pid>/cgroup` text, if it has a `0::` line.
pub fn parse_v2(text: &str) -> Option<&str> {
    text.lines().find_map(|l| l.strip_prefix("0::"))
}

/// Reads and checks the target's cgroup v2 path.
pub fn resolve(target: &Proven) -> Result<String, CgroupError> {
    let mut name = super::pidfd::PathBuf::new();
    let mut buf = [0u8; 8192];
    // Reading stops at the first complete `0::` line (the one `parse_v2` takes).
    let text = super::pidfd::read_small(name.proc_pid(target.pid, "/cgroup"), &mut buf, |t| {
        super::pidfd::complete_line(t, b"0::").is_some()
    });
    target.check_alive()?;
    let text = text.map_err(|err| CgroupError::Read {
        pid: target.pid,
        err,
    })?;
    // A complete `0::` line, or (no newline at the end of the file) the last line.
    let line = super::pidfd::complete_line(text, b"0::").or_else(|| {
        text.rsplit(|&b| b == b'\n')
            .next()
            .and_then(|l| l.strip_prefix(b"0::"))
    });
    let line = line.ok_or(CgroupError::NoV2(target.pid))?;
    let path = std::str::from_utf8(line).map_err(|_| CgroupError::BadPath {
        path: String::from_utf8_lossy(line).escape_debug().to_string(),
        detail: "not UTF-8".into(),
    })?;
    memgate_policy::cgroup::validate_path(path).map_err(|e| CgroupError::BadPath {
        path: path.escape_debug().to_string(),
        detail: e.to_string(),
    })?;
    if path.ends_with(" (deleted)") {
        return Err(CgroupError::BadPath {
            path: path.to_string(),
            detail: "the cgroup has been removed".into(),
        });
    }
    Ok(path.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hybrid_hierarchy_uses_the_v2_line() {
        let text = "9:name=systemd:/\n4:memory:/a/b\n0::/system.slice/x.service\n";
        assert_eq!(parse_v2(text), Some("/system.slice/x.service"));
        assert_eq!(parse_v2("4:memory:/a\n1:cpu:/\n"), None);
        assert_eq!(parse_v2("0::/\n"), Some("/"));
    }
}
