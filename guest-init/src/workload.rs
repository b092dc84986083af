//! Starting the workload and supervising it as PID 1.
//!
//! The workload gets a clean environment: `PATH`, the config's `workload.env`, and the
//! model variables set by pqcc-init. PID 1 then reaps every child (orphans of the
//! workload are re-parented to it) until the workload itself ends, kills whatever the
//! workload left behind, and reports the workload's status.

use std::fmt;
use std::io;
use std::process::Command;

use crate::config::Workload;

/// How the workload ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// It called `exit(code)`.
    Code(i32),
    /// A signal killed it.
    Signal(i32),
}

impl Exit {
    /// Decodes a `waitpid` status; `None` for stop/continue reports.
    pub fn from_wait_status(status: libc::c_int) -> Option<Self> {
        if libc::WIFEXITED(status) {
            Some(Self::Code(libc::WEXITSTATUS(status)))
        } else if libc::WIFSIGNALED(status) {
            Some(Self::Signal(libc::WTERMSIG(status)))
        } else {
            None
        }
    }

    /// Whether it exited with status 0.
    pub fn success(self) -> bool {
        self == Self::Code(0)
    }
}

impl fmt::Display for Exit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Code(c) => write!(f, "exited with status {c}"),
            Self::Signal(s) => write!(f, "killed by signal {s}"),
        }
    }
}

/// Builds the workload's command: argv, a cleared environment plus `PATH`, the
/// config's extra variables, then `model_env` (which the config cannot override).
pub fn command(w: &Workload, model_env: &[(String, String)]) -> Command {
    let mut c = Command::new(&w.command);
    c.args(&w.args)
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .envs(&w.env)
        .envs(model_env.iter().map(|(k, v)| (k, v)))
        .current_dir("/");
    c
}

fn waitpid_any() -> io::Result<(libc::pid_t, libc::c_int)> {
    loop {
        let mut status: libc::c_int = 0;
        // SAFETY: `status` is a live, writable c_int for the duration of the call.
        let pid = unsafe { libc::waitpid(-1, &mut status, 0) };
        if pid > 0 {
            return Ok((pid, status));
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINTR) {
            return Err(e);
        }
    }
}

/// Starts the workload and waits for it, reaping every other child on the way.
/// After it ends, kills and reaps whatever processes it left behind.
pub fn run(mut cmd: Command) -> io::Result<Exit> {
    let child = cmd.spawn()?;
    let pid = libc::pid_t::try_from(child.id())
        .map_err(|_| io::Error::other("child pid out of range"))?;
    // `child` is never waited on through std: every child is reaped below.
    drop(child);
    let exit = loop {
        let (p, status) = waitpid_any()?;
        if p == pid
            && let Some(exit) = Exit::from_wait_status(status)
        {
            break exit;
        }
    };
    // Only PID 1 may sweep: `kill(-1)` from anywhere else would hit the caller's peers.
    if std::process::id() == 1 {
        // SAFETY: `kill(-1, SIGKILL)` from PID 1 signals every process but PID 1
        // itself; it takes no pointers.
        unsafe { libc::kill(-1, libc::SIGKILL) };
        while waitpid_any().is_ok() {}
    }
    Ok(exit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_decoding() {
        // exit(3): status 3 << 8; SIGSEGV: 11 in the low bits.
        assert_eq!(Exit::from_wait_status(3 << 8), Some(Exit::Code(3)));
        assert_eq!(Exit::from_wait_status(11), Some(Exit::Signal(11)));
        assert_eq!(Exit::from_wait_status(0), Some(Exit::Code(0)));
        assert!(Exit::Code(0).success());
        assert!(!Exit::Signal(9).success());
        assert_eq!(Exit::Code(3).to_string(), "exited with status 3");
        assert_eq!(Exit::Signal(11).to_string(), "killed by signal 11");
    }

    #[test]
    fn environment_is_clean_and_model_wins() {
        let w = Workload {
            command: "/bin/true".into(),
            args: vec!["x".into()],
            env: [("A".to_owned(), "1".to_owned())].into_iter().collect(),
        };
        let c = command(&w, &[("MODEL_NAME".into(), "tiny".into())]);
        let envs: Vec<_> = c
            .get_envs()
            .map(|(k, v)| {
                (
                    k.to_string_lossy().into_owned(),
                    v.map(|v| v.to_string_lossy().into_owned()),
                )
            })
            .collect();
        assert!(envs.contains(&("A".into(), Some("1".into()))));
        assert!(envs.contains(&("MODEL_NAME".into(), Some("tiny".into()))));
        assert_eq!(c.get_args().count(), 1);
    }
}
