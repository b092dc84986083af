//! Running QEMU: the serial console streamed out as it comes, the guest's outcome
//! read from the console and from QEMU's exit status, and one exit status for
//! `pqcc launch`.
//!
//! # Exit status of `pqcc launch`
//!
//! | status | when |
//! |---|---|
//! | 0 | the workload exited with status 0 |
//! | 1 | the guest ran and the workload did not succeed: pqcc-init printed `FATAL`, the workload exited non-zero or was killed by a signal, or the guest stopped without reporting an outcome (a kernel panic, for example) |
//! | 2 | usage or I/O error, QEMU could not start or failed by itself, `--timeout` expired, or the two reports of the outcome disagree |
//!
//! The outcome comes from pqcc-init's console lines (`pqcc-init: FATAL <stage>: …`,
//! `… workload exited with status N; powering off`, `… workload killed by signal N;
//! powering off`). With profile `none` and `debug.qemu_debug_exit = true` in the
//! guest's config, QEMU's exit status carries it too (isa-debug-exit: QEMU exits with
//! `code * 2 + 1`; code 0 workload OK → 1, 1 workload failed → 3, 2 killed by a signal
//! → 5; a FATAL boot powers off plainly → 0), and the two must agree. QEMU's own
//! errors also exit 1, so status 1 counts as success only together with the console
//! line. This is an operator's report, not a security decision: the host is
//! untrusted and so is everything it reads from the guest.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;

use super::Launch;

/// What pqcc-init reported on the console.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GuestReport {
    /// `workload exited with status N`.
    Exited(i32),
    /// `workload killed by signal N`.
    Signaled(i32),
    /// `pqcc-init: FATAL <stage>: <reason>`: the stage and the whole line.
    Fatal {
        /// The stage named.
        stage: String,
        /// The line as printed.
        line: String,
    },
}

/// Scans console output for pqcc-init's outcome lines, fed in arbitrary chunks.
#[derive(Debug, Default)]
pub struct ConsoleWatch {
    partial: Vec<u8>,
    /// The first FATAL line, or else the last workload outcome line.
    pub report: Option<GuestReport>,
}

/// Longest console line kept for matching; longer lines are matched by their start.
const MAX_LINE: usize = 4096;

impl ConsoleWatch {
    /// Feeds bytes as they come from the console.
    pub fn feed(&mut self, bytes: &[u8]) {
        for &b in bytes {
            if b == b'\n' {
                let line = String::from_utf8_lossy(&self.partial).replace('\r', "");
                self.partial.clear();
                self.line(&line);
            } else if self.partial.len() < MAX_LINE {
                self.partial.push(b);
            }
        }
    }

    /// Feeds what is left after the console closed.
    pub fn finish(&mut self) {
        if !self.partial.is_empty() {
            let line = String::from_utf8_lossy(&self.partial).replace('\r', "");
            self.partial.clear();
            self.line(&line);
        }
    }

    fn line(&mut self, line: &str) {
        if matches!(self.report, Some(GuestReport::Fatal { .. })) {
            return;
        }
        let l = line.trim();
        if let Some(rest) = l.strip_prefix("pqcc-init: FATAL ") {
            let stage = rest.split(':').next().unwrap_or("").trim().to_owned();
            self.report = Some(GuestReport::Fatal {
                stage,
                line: l.to_owned(),
            });
            return;
        }
        if !l.starts_with("pqcc-init: ") {
            return;
        }
        let Some(rest) = l.strip_suffix("; powering off") else {
            return;
        };
        let number = |prefix: &str| -> Option<i32> {
            let i = rest.rfind(prefix)?;
            rest.get(i + prefix.len()..)?.trim().parse().ok()
        };
        if let Some(n) = number("workload exited with status ") {
            self.report = Some(GuestReport::Exited(n));
        } else if let Some(n) = number("workload killed by signal ") {
            self.report = Some(GuestReport::Signaled(n));
        }
    }
}

/// How QEMU ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QemuEnd {
    /// Exited with this status.
    Status(i32),
    /// Killed by this signal.
    Signal(i32),
    /// Killed by `pqcc launch` after `--timeout`.
    TimedOut,
}

/// The verdict: the exit status of `pqcc launch` and one line saying why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// 0, 1 or 2 (see the module docs).
    pub exit: u8,
    /// What happened, for stderr and `--json`.
    pub summary: String,
    /// The workload's exit status when it exited.
    pub workload_status: Option<i32>,
    /// The FATAL stage when the guest refused.
    pub fatal_stage: Option<String>,
}

/// Decides the exit status from QEMU's end and the console report.
pub fn verdict(debug_exit: bool, end: QemuEnd, report: Option<&GuestReport>) -> Verdict {
    let v = |exit: u8, summary: String| Verdict {
        exit,
        summary,
        workload_status: match report {
            Some(GuestReport::Exited(n)) => Some(*n),
            _ => None,
        },
        fatal_stage: match report {
            Some(GuestReport::Fatal { stage, .. }) => Some(stage.clone()),
            _ => None,
        },
    };
    let status = match end {
        QemuEnd::TimedOut => return v(2, "QEMU did not finish in time and was killed".into()),
        QemuEnd::Signal(s) => return v(2, format!("QEMU was killed by signal {s}")),
        QemuEnd::Status(s) => s,
    };
    // What isa-debug-exit says, when the profile has it and QEMU's status is one it
    // produces (0 is a plain power-off; anything odd is `code * 2 + 1`).
    let port = |s: i32| -> Option<i32> { (debug_exit && s % 2 == 1).then_some(s >> 1) };
    match report {
        Some(GuestReport::Fatal { line, .. }) => {
            if status == 0 {
                v(
                    1,
                    format!("the guest refused to start the workload: {line}"),
                )
            } else {
                v(
                    2,
                    format!("QEMU exited with status {status} after the guest printed: {line}"),
                )
            }
        }
        Some(r @ (GuestReport::Exited(_) | GuestReport::Signaled(_))) => {
            let (expected, what) = match r {
                GuestReport::Exited(0) => (0, "the workload exited with status 0".to_owned()),
                GuestReport::Exited(n) => (1, format!("the workload exited with status {n}")),
                GuestReport::Signaled(n) => (2, format!("the workload was killed by signal {n}")),
                GuestReport::Fatal { .. } => unreachable!("matched above"),
            };
            let agrees = status == 0 || port(status) == Some(expected);
            if !agrees {
                return v(
                    2,
                    format!("QEMU exited with status {status}, which does not match: {what}"),
                );
            }
            v(u8::from(expected != 0), what)
        }
        None => match (status, port(status)) {
            (0, _) => v(
                1,
                "the guest stopped without reporting a workload outcome (see the console)".into(),
            ),
            (_, Some(code @ 1..=2)) => v(
                1,
                format!("isa-debug-exit code {code} (workload failed) without a console report"),
            ),
            _ => v(
                2,
                format!("QEMU exited with status {status} without a guest outcome"),
            ),
        },
    }
}

/// How to run.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Also write the console to this file.
    pub console: Option<PathBuf>,
    /// Kill QEMU after this long.
    pub timeout: Option<Duration>,
    /// Send the console to stderr (stdout then carries only the JSON result).
    pub console_to_stderr: bool,
}

/// What a run gave.
#[derive(Debug, Clone)]
pub struct RunResult {
    /// How QEMU ended.
    pub end: QemuEnd,
    /// The console report.
    pub report: Option<GuestReport>,
    /// Wall time from spawn to exit.
    pub wall: Duration,
}

/// Runs QEMU with stdin closed, streams its stdout (the serial console) to stdout
/// or stderr and the console file, passes its stderr through, and waits.
pub fn run(l: &Launch, o: &RunOptions) -> anyhow::Result<RunResult> {
    let mut file = match &o.console {
        Some(p) => {
            Some(std::fs::File::create(p).with_context(|| format!("--console {}", p.display()))?)
        }
        None => None,
    };
    let start = Instant::now();
    let mut child = Command::new(&l.program)
        .args(&l.args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("starting {}", l.program))?;
    let mut out = child.stdout.take().context("QEMU's stdout")?;
    let to_stderr = o.console_to_stderr;
    let reader = std::thread::spawn(move || -> anyhow::Result<ConsoleWatch> {
        let mut watch = ConsoleWatch::default();
        let mut buf = [0u8; 8192];
        loop {
            let n = match out.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e).context("reading QEMU's console"),
            };
            let chunk = buf.get(..n).unwrap_or_default();
            watch.feed(chunk);
            // A closed stdout (`| head`) must not stop the guest: keep reading.
            let _ = if to_stderr {
                let mut e = std::io::stderr().lock();
                e.write_all(chunk).and_then(|()| e.flush())
            } else {
                let mut s = std::io::stdout().lock();
                s.write_all(chunk).and_then(|()| s.flush())
            };
            if let Some(f) = file.as_mut() {
                f.write_all(chunk).context("writing --console")?;
            }
        }
        watch.finish();
        Ok(watch)
    });

    let end = loop {
        if let Some(st) = child.try_wait().context("waiting for QEMU")? {
            use std::os::unix::process::ExitStatusExt;
            break match (st.code(), st.signal()) {
                (Some(c), _) => QemuEnd::Status(c),
                (None, Some(s)) => QemuEnd::Signal(s),
                (None, None) => QemuEnd::Signal(0),
            };
        }
        if o.timeout.is_some_and(|t| start.elapsed() > t) {
            let _ = child.kill();
            let _ = child.wait();
            break QemuEnd::TimedOut;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let wall = start.elapsed();
    let watch = reader
        .join()
        .map_err(|_| anyhow::anyhow!("the console reader panicked"))??;
    Ok(RunResult {
        end,
        report: watch.report,
        wall,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn watch(text: &str) -> Option<GuestReport> {
        let mut w = ConsoleWatch::default();
        // Fed in small pieces, as a pipe delivers it.
        for c in text.as_bytes().chunks(3) {
            w.feed(c);
        }
        w.finish();
        w.report
    }

    #[test]
    fn reads_pqcc_init_lines() {
        assert_eq!(
            watch("x\r\npqcc-init: [   2.289s] workload exited with status 0; powering off\r\n"),
            Some(GuestReport::Exited(0))
        );
        assert_eq!(
            watch("pqcc-init: [   2.2s] workload killed by signal 6; powering off"),
            Some(GuestReport::Signaled(6))
        );
        let f = watch(
            "pqcc-init: FATAL verity: /dev/dm-0: Input/output error\n\
             pqcc-init: [ 1s] workload exited with status 0; powering off\n",
        );
        assert_eq!(
            f,
            Some(GuestReport::Fatal {
                stage: "verity".into(),
                line: "pqcc-init: FATAL verity: /dev/dm-0: Input/output error".into()
            })
        );
        assert_eq!(watch("model-sha256: workload exited with status 0\n"), None);
        assert_eq!(
            watch("pqcc-init: [1s] workload: exec /bin/workload\n"),
            None
        );
    }

    #[test]
    fn exit_status_mapping() {
        use GuestReport::*;
        let fatal = Fatal {
            stage: "disks".into(),
            line: "pqcc-init: FATAL disks: no disk".into(),
        };
        let s = QemuEnd::Status;
        for (debug, end, report, want) in [
            (true, s(1), Some(Exited(0)), 0),
            (false, s(0), Some(Exited(0)), 0),
            (true, s(3), Some(Exited(3)), 1),
            (true, s(5), Some(Signaled(6)), 1),
            (true, s(0), Some(fatal.clone()), 1),
            (true, s(0), None, 1),
            (true, s(3), None, 1),
            // QEMU's own error status is 1 too: no console line, no success.
            (true, s(1), None, 2),
            (false, s(1), Some(Exited(0)), 2),
            (true, s(3), Some(Exited(0)), 2),
            (true, s(1), Some(fatal), 2),
            (true, QemuEnd::TimedOut, Some(Exited(0)), 2),
            (true, QemuEnd::Signal(9), None, 2),
        ] {
            let v = verdict(debug, end, report.as_ref());
            assert_eq!(v.exit, want, "{debug} {end:?} {report:?}: {}", v.summary);
        }
    }
}
