//! A real child process whose memory the suite exports through `/proc/PID/mem`.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

/// A running `sleep` process; killed and reaped on drop.
pub struct TargetProcess {
    child: Child,
}

impl TargetProcess {
    /// Start the child.
    pub fn spawn() -> std::io::Result<TargetProcess> {
        let child = Command::new("sleep")
            .arg("600")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()?;
        Ok(TargetProcess { child })
    }

    /// Its pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Open its `/proc/PID/mem` read-only (what a requester hands the broker).
    pub fn mem(&self) -> std::io::Result<File> {
        File::open(format!("/proc/{}/mem", self.pid()))
    }

    /// A readable mapping `(addr, len)` whose contents do not change: the first
    /// read-only or executable mapping of its binary.
    pub fn stable_mapping(&self) -> std::io::Result<(u64, u64)> {
        // The exec may not have happened yet right after spawn; wait for the new image.
        for _ in 0..200 {
            let exe = std::fs::read_link(format!("/proc/{}/exe", self.pid()))?;
            if exe.file_name().is_some_and(|n| n == "sleep") {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        let maps = File::open(format!("/proc/{}/maps", self.pid()))?;
        for line in BufReader::new(maps).lines() {
            let line = line?;
            let mut f = line.split_whitespace();
            let (Some(range), Some(perms)) = (f.next(), f.next()) else { continue };
            if !perms.starts_with('r') || perms.as_bytes().get(1) == Some(&b'w') {
                continue;
            }
            if let Some((a, b)) = range.split_once('-') {
                let (Ok(a), Ok(b)) = (u64::from_str_radix(a, 16), u64::from_str_radix(b, 16)) else {
                    continue;
                };
                return Ok((a, b - a));
            }
        }
        Err(std::io::Error::other("no read-only mapping in the target"))
    }

    /// Kill it and wait until its memory is gone.
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
