//! Finding the model disks by their virtio-blk serial (`/sys/block/*/serial`).
//!
//! The serial is chosen by whoever launches the VM, so it only says which disk is
//! meant to be which; nothing on the disks is trusted because of it (dm-verity checks
//! every block against the measured root hash). A serial that matches two disks is an
//! error rather than a guess.

use std::io;
use std::path::Path;
use std::time::{Duration, Instant};

/// A block device found by serial.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disk {
    /// Kernel name, e.g. `vda`.
    pub name: String,
    /// Size in 512-byte sectors.
    pub sectors: u64,
}

impl Disk {
    /// The device node, `/dev/<name>`.
    pub fn dev_path(&self) -> String {
        format!("/dev/{}", self.name)
    }
}

/// Looks in `sys_block` (normally `/sys/block`) for the one disk whose `serial` is
/// `serial`. `Ok(None)` when none has it (yet).
pub fn find(sys_block: &Path, serial: &str) -> io::Result<Option<Disk>> {
    let mut found: Option<Disk> = None;
    for entry in std::fs::read_dir(sys_block)? {
        let entry = entry?;
        let dir = entry.path();
        let Ok(s) = std::fs::read_to_string(dir.join("serial")) else {
            continue;
        };
        if s.trim_end_matches('\n') != serial {
            continue;
        }
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(prev) = &found {
            return Err(io::Error::other(format!(
                "serial `{serial}` is on both {} and {name}",
                prev.name
            )));
        }
        let size = std::fs::read_to_string(dir.join("size"))?;
        let sectors = size
            .trim()
            .parse::<u64>()
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, format!("{name}: bad size")))?;
        found = Some(Disk { name, sectors });
    }
    Ok(found)
}

/// Waits up to `timeout` for a disk with `serial`, polling every 2 ms, and for its
/// `/dev` node (devtmpfs makes it when the disk is added).
pub fn wait_for(sys_block: &Path, serial: &str, timeout: Duration) -> io::Result<Disk> {
    let start = Instant::now();
    loop {
        if let Some(d) = find(sys_block, serial)?
            && Path::new(&d.dev_path()).exists()
        {
            return Ok(d);
        }
        if start.elapsed() >= timeout {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!(
                    "no disk with serial `{serial}` after {} ms",
                    timeout.as_millis()
                ),
            ));
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake(dir: &Path, name: &str, serial: &str, size: u64) {
        let d = dir.join(name);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("serial"), format!("{serial}\n")).unwrap();
        std::fs::write(d.join("size"), format!("{size}\n")).unwrap();
    }

    fn tmp(tag: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("pqcc-init-disks-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn finds_by_serial() {
        let d = tmp("find");
        fake(&d, "vda", "data", 128);
        fake(&d, "vdb", "hash", 16);
        std::fs::create_dir_all(d.join("loop0")).unwrap(); // no serial
        assert_eq!(
            find(&d, "hash").unwrap(),
            Some(Disk {
                name: "vdb".into(),
                sectors: 16
            })
        );
        assert_eq!(find(&d, "other").unwrap(), None);
        assert_eq!(find(&d, "dat").unwrap(), None);
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn refuses_duplicate_serial() {
        let d = tmp("dup");
        fake(&d, "vda", "data", 128);
        fake(&d, "vdc", "data", 128);
        let e = find(&d, "data").unwrap_err();
        assert!(e.to_string().contains("both"), "{e}");
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn wait_times_out() {
        let d = tmp("wait");
        let e = wait_for(&d, "data", Duration::from_millis(10)).unwrap_err();
        assert!(e.to_string().contains("no disk with serial `data`"), "{e}");
        std::fs::remove_dir_all(&d).unwrap();
    }
}
