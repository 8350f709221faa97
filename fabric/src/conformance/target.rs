//! A real child process whose memory the suite exports through `/proc/PID/mem`.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

/// A running `sleep` process; killed and reaped on drop.
pub struct TargetProcess {
    child: Child,
}

/// A file-backed mapping of the target whose contents equal the file's bytes at `offset`
/// (the executable text of its binary: not relocated, not written).
#[derive(Debug, Clone)]
pub struct Mapping {
    /// First target address.
    pub addr: u64,
    /// Length in bytes.
    pub len: u64,
    /// The mapped file.
    pub path: PathBuf,
    /// File offset of `addr`.
    pub offset: u64,
}

impl Mapping {
    /// What the target's memory must hold: the file's bytes for the whole mapping.
    pub fn file_bytes(&self) -> std::io::Result<Vec<u8>> {
        let f = File::open(&self.path)?;
        let len = usize::try_from(self.len).map_err(std::io::Error::other)?;
        let mut b = vec![0u8; len];
        f.read_exact_at(&mut b, self.offset)?;
        Ok(b)
    }
}

impl TargetProcess {
    /// Start the child and wait until it runs the `sleep` image.
    pub fn spawn() -> std::io::Result<TargetProcess> {
        let child = Command::new("sleep")
            .arg("600")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()?;
        let t = TargetProcess { child };
        // Right after spawn the exec may not have happened yet; wait for the new image.
        for _ in 0..400 {
            let exe = std::fs::read_link(format!("/proc/{}/exe", t.pid()))?;
            if exe.file_name().is_some_and(|n| n == "sleep") {
                return Ok(t);
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        Err(std::io::Error::other("the target never executed sleep"))
    }

    /// Its pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Open its `/proc/PID/mem` read-only (what a requester hands the broker).
    pub fn mem(&self) -> std::io::Result<File> {
        File::open(format!("/proc/{}/mem", self.pid()))
    }

    /// The executable text mapping of its binary (`r-xp`, file-backed). Right after the
    /// exec the image may still be being mapped, so this waits for it.
    pub fn text_mapping(&self) -> std::io::Result<Mapping> {
        for _ in 0..400 {
            if let Some(m) = self.find_text()? {
                if m.path.file_name().is_some_and(|n| n == "sleep") {
                    return Ok(m);
                }
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        Err(std::io::Error::other(
            "no executable file mapping in the target",
        ))
    }

    fn find_text(&self) -> std::io::Result<Option<Mapping>> {
        let maps = File::open(format!("/proc/{}/maps", self.pid()))?;
        for line in BufReader::new(maps).lines() {
            let line = line?;
            let f: Vec<&str> = line.split_whitespace().collect();
            let [range, perms, offset, _dev, _inode, path, ..] = f[..] else {
                continue;
            };
            if perms != "r-xp" || !path.starts_with('/') {
                continue;
            }
            let Some((a, b)) = range.split_once('-') else {
                continue;
            };
            let (Ok(a), Ok(b), Ok(off)) = (
                u64::from_str_radix(a, 16),
                u64::from_str_radix(b, 16),
                u64::from_str_radix(offset, 16),
            ) else {
                continue;
            };
            return Ok(Some(Mapping {
                addr: a,
                len: b - a,
                path: PathBuf::from(path),
                offset: off,
            }));
        }
        Ok(None)
    }

    /// Kill it and wait until it is reaped (its memory is gone).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for TargetProcess {
    fn drop(&mut self) {
        self.kill();
    }
}
