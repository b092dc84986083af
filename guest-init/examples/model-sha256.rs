//! A test workload for QEMU boots. Walks the model's read-only file view at
//! `MODEL_PATH` (served by pqcc-init from the dm-verity device), prints
//! `model-sha256: ./<path> <size> <sha256>` for each regular file in name order, then
//! exits with the status given as its first argument (default 0), or dies by
//! `SIGABRT` when the argument is `crash`. When pqcc-init received secrets from the
//! broker (`PQCC_SECRETS_DIR`), it also prints `model-sha256: secret <name> <size>
//! <sha256>` for each, so a test can check what arrived without printing it.

use std::io::Read;
use std::path::Path;

use sha2::{Digest, Sha256};

fn walk(root: &Path, dir: &Path) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .expect("read_dir")
        .map(|e| e.expect("dir entry").path())
        .collect();
    entries.sort();
    for p in entries {
        let meta = std::fs::metadata(&p).expect("stat");
        if meta.is_dir() {
            walk(root, &p);
            continue;
        }
        let mut f = std::fs::File::open(&p).expect("open model file");
        let mut h = Sha256::new();
        let mut buf = vec![0u8; 1 << 16];
        let mut total = 0u64;
        loop {
            let n = f.read(&mut buf).expect("read model file");
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
            total += n as u64;
        }
        assert_eq!(total, meta.len(), "size from stat");
        let digest: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
        let rel = p.strip_prefix(root).unwrap().display();
        println!("model-sha256: ./{rel} {total} {digest}");
    }
}

fn main() {
    for k in [
        "MODEL_NAME",
        "MODEL_COMMIT",
        "MODEL_VERITY_HASH",
        "MODEL_DEVICE",
        "MODEL_PATH",
    ] {
        println!("model-sha256: {k}={}", std::env::var(k).unwrap_or_default());
    }
    let root = std::env::var("MODEL_PATH").expect("MODEL_PATH");
    walk(Path::new(&root), Path::new(&root));
    // The view is read-only.
    assert!(std::fs::write(Path::new(&root).join("new"), b"x").is_err());
    if let Ok(dir) = std::env::var("PQCC_SECRETS_DIR") {
        let mut names: Vec<_> = std::fs::read_dir(&dir)
            .expect("secrets dir")
            .map(|e| e.expect("dir entry").path())
            .collect();
        names.sort();
        for p in names {
            let bytes = std::fs::read(&p).expect("read secret");
            let digest: String = Sha256::digest(&bytes)
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            let name = p.file_name().unwrap().to_string_lossy();
            println!("model-sha256: secret {name} {} {digest}", bytes.len());
        }
    }
    match std::env::args().nth(1).as_deref() {
        Some("crash") => std::process::abort(),
        Some(code) => std::process::exit(code.parse().unwrap_or(1)),
        None => {}
    }
}
