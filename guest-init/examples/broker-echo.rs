//! A test workload for the broker port that `pqcc launch --broker unix:PATH` adds:
//! opens the virtio console tty given as its first argument (default `/dev/hvc0`)
//! once, puts it in raw mode (no echo, no CR/LF translation: the channel carries
//! binary frames), writes `ping from guest\n`, reads one line back and prints
//! `broker-echo: got <line>`. It also prints the names of the virtio ports it sees
//! (`broker-echo: port vportNpM <name>`). Exits 0 when a line came back, 1 otherwise.

use std::io::{Read, Write};
use std::os::fd::AsRawFd;

fn raw_mode(f: &std::fs::File) -> std::io::Result<()> {
    let fd = f.as_raw_fd();
    // SAFETY: `termios` is plain data that tcgetattr fills in completely on success;
    // `fd` is an open tty for the duration of the calls.
    unsafe {
        let mut t: libc::termios = std::mem::zeroed();
        if libc::tcgetattr(fd, &mut t) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        libc::cfmakeraw(&mut t);
        if libc::tcsetattr(fd, libc::TCSANOW, &t) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

fn main() {
    let dev = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "/dev/hvc0".into());
    if let Ok(rd) = std::fs::read_dir("/sys/class/virtio-ports") {
        let mut ports: Vec<_> = rd.flatten().map(|e| e.path()).collect();
        ports.sort();
        for p in ports {
            let name = std::fs::read_to_string(p.join("name")).unwrap_or_default();
            let port = p.file_name().unwrap_or_default().to_string_lossy();
            println!("broker-echo: port {port} {}", name.trim());
        }
    }
    let mut f = match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&dev)
    {
        Ok(f) => f,
        Err(e) => {
            println!("broker-echo: open {dev}: {e}");
            std::process::exit(1);
        }
    };
    if let Err(e) = raw_mode(&f) {
        println!("broker-echo: raw mode on {dev}: {e}");
        std::process::exit(1);
    }
    if let Err(e) = f.write_all(b"ping from guest\n") {
        println!("broker-echo: write {dev}: {e}");
        std::process::exit(1);
    }
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    while line.len() < 256 {
        match f.read(&mut b) {
            Ok(1) if b[0] == b'\n' => {
                println!("broker-echo: got {}", String::from_utf8_lossy(&line));
                return;
            }
            Ok(1) => line.push(b[0]),
            Ok(_) => break,
            Err(e) => {
                println!("broker-echo: read {dev}: {e}");
                break;
            }
        }
    }
    println!("broker-echo: no line back");
    std::process::exit(1);
}
