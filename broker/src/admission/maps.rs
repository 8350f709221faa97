//! Parser and classifier for `/proc/<pid>/maps` lines: each mapping's range, permissions
//! and what kind of memory it is, or why it may never be exported (`[vdso]`, `[vvar]`,
//! `[vvar_vclock]`, `[vsyscall]`, other kernel-named special mappings, guard pages without
//! read permission).

use memgate_policy::MappingKind;

/// A malformed maps line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed /proc/<pid>/maps line {line}: {detail}")]
pub struct MapsError {
    /// 1-based line number.
    pub line: usize,
    /// What was wrong.
    pub detail: &'static str,
}

/// What a mapping is, for export purposes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// Exportable if the policy lists this kind.
    Kind(MappingKind),
    /// Never exportable, with the reason.
    Forbidden(&'static str),
}

/// One line of `/proc/<pid>/maps`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mapping {
    /// First address.
    pub start: u64,
    /// One past the last address.
    pub end: u64,
    /// `r` permission.
    pub read: bool,
    /// `w` permission.
    pub write: bool,
    /// `s` (shared) rather than `p`.
    pub shared: bool,
    /// Inode of the backing file (0: anonymous).
    pub inode: u64,
    /// The pathname column (may be empty).
    pub path: String,
    /// Classification.
    pub class: Class,
}

/// Kernel special mappings that are never exported.
pub const SPECIAL: [&str; 4] = ["[vdso]", "[vvar]", "[vvar_vclock]", "[vsyscall]"];

/// What a mapping with these permissions, inode and name is, for export purposes.
pub fn classify(read: bool, shared: bool, inode: u64, path: &str) -> Class {
    if SPECIAL.contains(&path) {
        return Class::Forbidden("kernel special mapping");
    }
    if !read {
        return Class::Forbidden("no read permission (guard page)");
    }
    if shared {
        return Class::Kind(MappingKind::Shared);
    }
    match path {
        "[heap]" => Class::Kind(MappingKind::Heap),
        "[stack]" => Class::Kind(MappingKind::Stack),
        p if p.starts_with("[stack:") => Class::Kind(MappingKind::Stack),
        p if p.starts_with("[anon:") => Class::Kind(MappingKind::PrivateAnon),
        "" if inode == 0 => Class::Kind(MappingKind::PrivateAnon),
        p if p.starts_with('[') => Class::Forbidden("kernel special mapping"),
        _ => Class::Kind(MappingKind::PrivateFile),
    }
}

/// Parses one line.
fn parse_line(line: &str, no: usize) -> Result<Mapping, MapsError> {
    let err = |detail| MapsError { line: no, detail };
    let mut it = line.splitn(6, ' ');
    let range = it.next().ok_or(err("no range"))?;
    let perms = it.next().ok_or(err("no permissions"))?.as_bytes();
    let _offset = it.next().ok_or(err("no offset"))?;
    let _dev = it.next().ok_or(err("no device"))?;
    let inode = it.next().ok_or(err("no inode"))?;
    let path = it.next().unwrap_or("").trim_start_matches(' ');
    let (s, e) = range.split_once('-').ok_or(err("range without '-'"))?;
    let start = u64::from_str_radix(s, 16).map_err(|_| err("bad start address"))?;
    let end = u64::from_str_radix(e, 16).map_err(|_| err("bad end address"))?;
    if end <= start {
        return Err(err("empty or reversed range"));
    }
    let &[r, w, _x, sp] = perms else {
        return Err(err("permissions are not 4 characters"));
    };
    let inode = inode.parse().map_err(|_| err("bad inode"))?;
    let (read, write, shared) = (r == b'r', w == b'w', sp == b's');
    Ok(Mapping {
        start,
        end,
        read,
        write,
        shared,
        inode,
        path: path.to_string(),
        class: classify(read, shared, inode, path),
    })
}

/// Parses a whole maps file; mappings come out in address order, non-overlapping.
pub fn parse(text: &str) -> Result<Vec<Mapping>, MapsError> {
    let mut out: Vec<Mapping> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.is_empty() {
            continue;
        }
        let m = parse_line(line, i + 1)?;
        if out.last().is_some_and(|p| m.start < p.end) {
            return Err(MapsError {
                line: i + 1,
                detail: "mappings out of order or overlapping",
            });
        }
        out.push(m);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
55d0c0a00000-55d0c0a02000 r--p 00000000 fe:01 1234                       /usr/bin/cat
55d0c1000000-55d0c1021000 rw-p 00000000 00:00 0                          [heap]
7f0000000000-7f0000001000 ---p 00000000 00:00 0 
7f0000001000-7f0000801000 rw-p 00000000 00:00 0 
7f0000900000-7f0000901000 rw-s 00000000 00:01 77                         /dev/zero (deleted)
7f0000a00000-7f0000a01000 rw-p 00000000 00:00 0                          [anon:named]
7ffc00000000-7ffc00021000 rw-p 00000000 00:00 0                          [stack]
7ffc00100000-7ffc00104000 r--p 00000000 00:00 0                          [vvar]
7ffc00104000-7ffc00105000 r--p 00000000 00:00 0                          [vvar_vclock]
7ffc00105000-7ffc00107000 r-xp 00000000 00:00 0                          [vdso]
ffffffffff600000-ffffffffff601000 --xp 00000000 00:00 0                  [vsyscall]
";

    #[test]
    fn classifies_every_kind() {
        let m = parse(SAMPLE).unwrap();
        let classes: Vec<Class> = m.iter().map(|m| m.class).collect();
        use Class::*;
        use MappingKind::*;
        assert_eq!(
            classes,
            vec![
                Kind(PrivateFile),
                Kind(Heap),
                Forbidden("no read permission (guard page)"),
                Kind(PrivateAnon),
                Kind(Shared),
                Kind(PrivateAnon),
                Kind(Stack),
                Forbidden("kernel special mapping"),
                Forbidden("kernel special mapping"),
                Forbidden("kernel special mapping"),
                Forbidden("kernel special mapping"),
            ]
        );
        assert_eq!(m[4].path, "/dev/zero (deleted)");
        assert!(m[1].write && !m[0].write);
    }

    #[test]
    fn rejects_garbage() {
        assert!(parse("zz-10 rw-p 0 0 0\n").is_err());
        assert!(parse("10-5 rw-p 0 0 0\n").is_err());
        assert!(parse("10-20 rw 0 0 0\n").is_err());
        assert!(parse("10-20 rw-p 0 0\n").is_err());
        assert!(parse("10-20 rw-p 0 0 0\n5-8 rw-p 0 0 0\n").is_err());
    }

    #[test]
    fn our_own_maps_parse() {
        let text = std::fs::read_to_string("/proc/self/maps").unwrap();
        let m = parse(&text).unwrap();
        assert!(m.iter().any(|m| m.class == Class::Kind(MappingKind::Stack)));
        assert!(m
            .iter()
            .any(|m| m.path == "[vdso]" && matches!(m.class, Class::Forbidden(_))));
    }
}
