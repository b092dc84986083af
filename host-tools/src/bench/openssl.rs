//! The reference point: `openssl speed -evp aes-256-gcm`, run and parsed.
//!
//! Runs `openssl speed -evp aes-256-gcm -bytes SIZE -seconds S -mr` (with `-multi N`
//! for N processes, `-decrypt` for decryption, `-aead` for OpenSSL's TLS-like sequence
//! of a fresh IV, 13 bytes of AAD and a tag per buffer) and reads the machine-readable
//! `+F:` line, which gives bytes per second (summed over processes with `-multi`).
//! Without `-aead`, OpenSSL times bulk `EVP_EncryptUpdate` calls on one context: no
//! per-buffer IV setup or tag, so it is an upper bound for any per-frame AEAD.

use std::process::Command;

/// What `openssl speed` should time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Bulk encryption (`EVP_EncryptUpdate`).
    Encrypt,
    /// Bulk decryption (`-decrypt`).
    Decrypt,
    /// IV + AAD + encrypt + tag per buffer (`-aead`).
    AeadEncrypt,
}

impl Mode {
    /// The `op` name used in reports.
    pub fn op(self) -> &'static str {
        match self {
            Mode::Encrypt => "openssl-seal",
            Mode::Decrypt => "openssl-open",
            Mode::AeadEncrypt => "openssl-aead-seal",
        }
    }
}

/// Whether an `openssl` binary can be run.
pub fn available() -> bool {
    Command::new("openssl")
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// The `openssl version` line, if any.
pub fn version() -> Option<String> {
    let o = Command::new("openssl").arg("version").output().ok()?;
    o.status
        .success()
        .then(|| String::from_utf8_lossy(&o.stdout).trim().to_string())
}

/// Runs `openssl speed` for one buffer size and returns bytes per second.
pub fn speed(mode: Mode, size: usize, seconds: u64, processes: usize) -> anyhow::Result<f64> {
    let mut cmd = Command::new("openssl");
    cmd.args(["speed", "-evp", "aes-256-gcm", "-mr"])
        .args(["-bytes", &size.to_string()])
        .args(["-seconds", &seconds.max(1).to_string()]);
    if processes > 1 {
        cmd.args(["-multi", &processes.to_string()]);
    }
    match mode {
        Mode::Encrypt => {}
        Mode::Decrypt => {
            cmd.arg("-decrypt");
        }
        Mode::AeadEncrypt => {
            cmd.arg("-aead");
        }
    }
    let out = cmd.output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        anyhow::bail!(
            "openssl speed failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    parse_speed_mr(&text)
        .ok_or_else(|| anyhow::anyhow!("no +F: line in openssl speed output:\n{text}"))
}

/// Reads the bytes-per-second figure from `openssl speed -mr` output: the last line
/// that starts with `+F:` (children's lines under `-multi` start with `Got:`), whose
/// last `:`-separated field is the rate for the one `-bytes` size.
pub fn parse_speed_mr(text: &str) -> Option<f64> {
    text.lines()
        .rfind(|l| l.starts_with("+F:"))
        .and_then(|l| l.rsplit(':').next())
        .and_then(|v| v.trim().parse::<f64>().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_single_and_multi() {
        let single = "+DT:AES-256-GCM:1:4096\n+R:548555:AES-256-GCM:0.680000\n+H:4096\n\
                      +F:25:AES-256-GCM:3304237176.47\n";
        assert_eq!(parse_speed_mr(single), Some(3_304_237_176.47));
        let multi = "Forked child 0\n+R:2285:AES-256-GCM:1.000000\nGot: +H:1048576 from 0\n\
                     Got: +F:25:AES-256-GCM:2208238764.36 from 0\n\
                     Got: +F:25:AES-256-GCM:2395996160.00 from 1\n\
                     +F:25:AES-256-GCM:4604234924.36\n";
        assert_eq!(parse_speed_mr(multi), Some(4_604_234_924.36));
        assert_eq!(parse_speed_mr("nothing"), None);
    }
}
