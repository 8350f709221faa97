//! cgroup v2 paths and the patterns a policy uses to name allowed targets.
//!
//! A path is absolute (`/` is the root), with non-empty segments and no `.`/`..`, no
//! control characters, no trailing slash. A pattern is a path where a segment may be `*`
//! (exactly one segment) or `**` (any number of segments, including none).

/// What was wrong with a cgroup path or pattern.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CgroupError {
    /// Not absolute.
    #[error("cgroup path {0:?} must start with '/'")]
    NotAbsolute(String),
    /// An empty segment (`//` or trailing `/`).
    #[error("cgroup path {0:?} has an empty segment")]
    EmptySegment(String),
    /// A `.` or `..` segment.
    #[error("cgroup path {0:?} has a '.' or '..' segment")]
    DotSegment(String),
    /// A control character.
    #[error("cgroup path {0:?} contains a control character")]
    Control(String),
    /// A wildcard inside a segment, or a wildcard in a plain path.
    #[error("cgroup {0:?}: '*' and '**' must be whole segments (and are not allowed in a concrete path)")]
    Wildcard(String),
    /// Too long.
    #[error("cgroup path is longer than 4096 bytes")]
    TooLong,
}

fn segments(s: &str) -> Result<Vec<&str>, CgroupError> {
    if s.len() > 4096 {
        return Err(CgroupError::TooLong);
    }
    if s.chars().any(char::is_control) {
        return Err(CgroupError::Control(s.escape_debug().to_string()));
    }
    let rest = s
        .strip_prefix('/')
        .ok_or_else(|| CgroupError::NotAbsolute(s.to_string()))?;
    if rest.is_empty() {
        return Ok(Vec::new());
    }
    let segs: Vec<&str> = rest.split('/').collect();
    for seg in &segs {
        if seg.is_empty() {
            return Err(CgroupError::EmptySegment(s.to_string()));
        }
        if *seg == "." || *seg == ".." {
            return Err(CgroupError::DotSegment(s.to_string()));
        }
    }
    Ok(segs)
}

/// Checks a concrete cgroup path (no wildcards).
pub fn validate_path(s: &str) -> Result<(), CgroupError> {
    let segs = segments(s)?;
    if segs.iter().any(|seg| seg.contains('*')) {
        return Err(CgroupError::Wildcard(s.to_string()));
    }
    Ok(())
}

/// A compiled cgroup pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    text: String,
    segs: Vec<Seg>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Seg {
    Lit(String),
    One,
    Any,
}

impl Pattern {
    /// Compiles a pattern.
    pub fn parse(s: &str) -> Result<Self, CgroupError> {
        let segs = segments(s)?
            .into_iter()
            .map(|seg| match seg {
                "*" => Ok(Seg::One),
                "**" => Ok(Seg::Any),
                lit if lit.contains('*') => Err(CgroupError::Wildcard(s.to_string())),
                lit => Ok(Seg::Lit(lit.to_string())),
            })
            .collect::<Result<_, _>>()?;
        Ok(Self {
            text: s.to_string(),
            segs,
        })
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether a concrete, valid path matches. Invalid paths never match.
    pub fn matches(&self, path: &str) -> bool {
        match segments(path) {
            Ok(p) if !p.iter().any(|s| s.contains('*')) => match_segs(&self.segs, &p),
            _ => false,
        }
    }
}

fn match_segs(pat: &[Seg], path: &[&str]) -> bool {
    // Iterative matcher with single backtrack point for `**` (like glob matching):
    // linear in practice, no recursion on untrusted input.
    let (mut p, mut s) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while s < path.len() {
        match pat.get(p) {
            Some(Seg::Any) => {
                star = Some((p, s));
                p += 1;
            }
            Some(Seg::One) => {
                p += 1;
                s += 1;
            }
            Some(Seg::Lit(l)) if l == path[s] => {
                p += 1;
                s += 1;
            }
            _ => match star {
                Some((sp, ss)) => {
                    p = sp + 1;
                    s = ss + 1;
                    star = Some((sp, ss + 1));
                }
                None => return false,
            },
        }
    }
    pat[p.min(pat.len())..].iter().all(|seg| *seg == Seg::Any)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(p: &str, path: &str) -> bool {
        Pattern::parse(p).unwrap().matches(path)
    }

    #[test]
    fn matching() {
        assert!(m("/a/b", "/a/b"));
        assert!(!m("/a/b", "/a/b/c"));
        assert!(m("/a/*", "/a/b"));
        assert!(!m("/a/*", "/a"));
        assert!(!m("/a/*", "/a/b/c"));
        assert!(m("/a/**", "/a"));
        assert!(m("/a/**", "/a/b/c/d"));
        assert!(m("/a/**/vm", "/a/x/y/vm"));
        assert!(m("/a/**/vm", "/a/vm"));
        assert!(!m("/a/**/vm", "/a/x/vmm"));
        assert!(m("/**", "/"));
        assert!(m("/**", "/x/y"));
        assert!(m("/", "/"));
        assert!(!m("/", "/x"));
        assert!(m("/*/**/*", "/x/y"));
        assert!(!m("/*/**/*", "/x"));
        assert!(!m("/a/*", "/a/../b"));
        assert!(!m("/a/**", "/a//b"));
    }

    #[test]
    fn rejects() {
        assert!(matches!(
            Pattern::parse("a/b"),
            Err(CgroupError::NotAbsolute(_))
        ));
        assert!(matches!(
            Pattern::parse("/a//b"),
            Err(CgroupError::EmptySegment(_))
        ));
        assert!(matches!(
            Pattern::parse("/a/"),
            Err(CgroupError::EmptySegment(_))
        ));
        assert!(matches!(
            Pattern::parse("/a/../b"),
            Err(CgroupError::DotSegment(_))
        ));
        assert!(matches!(
            Pattern::parse("/a/\nb"),
            Err(CgroupError::Control(_))
        ));
        assert!(matches!(
            Pattern::parse("/a/vm-*"),
            Err(CgroupError::Wildcard(_))
        ));
        assert!(matches!(
            validate_path("/a/*"),
            Err(CgroupError::Wildcard(_))
        ));
        assert!(validate_path("/system.slice/foo.service").is_ok());
    }
}
