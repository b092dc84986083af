//! NVML in a child process: [`HelperNvml`] (pqcc-init's side, an [`Nvml`]) and
//! [`serve`] (the helper's side, run by the `pqcc-nvml-helper` binary).
//!
//! pqcc-init is a static glibc binary and must not `dlopen` NVML itself
//! ([`crate::gpu_gate`]). The helper is a small dynamically linked program in the
//! initramfs: it loads `libnvidia-ml.so.1` with the initramfs's own loader and glibc,
//! and answers one request at a time on its stdin/stdout. If it crashes, hangs or
//! lies about lengths, pqcc-init sees a closed pipe, a timeout or a refused frame —
//! an error, never a crash of PID 1. It is as trusted as the driver it wraps: what
//! it returns is verified ([`pqcc_verify::nvidia`]) like anything else.
//!
//! Protocol (`pqcc-nvml/1`): every message is a frame `u32 big-endian length (1 ..=
//! MAX) ‖ body`. Requests are one opcode byte and its arguments:
//!
//! | op | request | response payload |
//! |---|---|---|
//! | 1 init | — | — |
//! | 2 device count | — | u32 BE |
//! | 3 attestation report | index u32 BE ‖ nonce (32) | the report bytes |
//! | 4 certificate chain | index u32 BE | the PEM bytes |
//! | 5 set CC ready | — | — |
//!
//! A response is `0 ‖ payload` (success) or `1 ‖ UTF-8 message` (an NVML error, at
//! most [`MAX_ERROR_LEN`] bytes). Before any request the helper sends one greeting:
//! `0 ‖ "pqcc-nvml/1"` when NVML loaded, `1 ‖ why` when it did not (library absent,
//! symbols missing). Requests are at most [`MAX_REQUEST_LEN`] bytes, responses at
//! most [`MAX_RESPONSE_LEN`]; anything else is refused and ends the conversation.

use std::ffi::CString;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::gpu_gate::{Nvml, NvmlError};

/// The greeting of a helper that loaded NVML.
pub const GREETING: &[u8] = b"pqcc-nvml/1";
/// Largest request frame body.
pub const MAX_REQUEST_LEN: usize = 1 + 4 + 32;
/// Largest response frame body (NVML's report buffer is 8 KiB, its chain 5 KiB).
pub const MAX_RESPONSE_LEN: usize = 64 * 1024;
/// Largest error message in a response.
pub const MAX_ERROR_LEN: usize = 1024;

const OP_INIT: u8 = 1;
const OP_COUNT: u8 = 2;
const OP_REPORT: u8 = 3;
const OP_CERTS: u8 = 4;
const OP_READY: u8 = 5;

fn write_frame(w: &mut dyn Write, body: &[u8]) -> io::Result<()> {
    let n = u32::try_from(body.len()).map_err(|_| io::Error::other("frame too long"))?;
    w.write_all(&n.to_be_bytes())?;
    w.write_all(body)?;
    w.flush()
}

fn read_frame(r: &mut dyn Read, max: usize) -> io::Result<Vec<u8>> {
    let mut p = [0u8; 4];
    r.read_exact(&mut p)?;
    let n = u32::from_be_bytes(p) as usize;
    if n == 0 || n > max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("frame length {n} not in 1..={max}"),
        ));
    }
    let mut b = vec![0u8; n];
    r.read_exact(&mut b)?;
    Ok(b)
}

fn ok_body(payload: &[u8]) -> Vec<u8> {
    let mut b = Vec::with_capacity(1 + payload.len());
    b.push(0);
    b.extend_from_slice(payload);
    b
}

fn err_body(msg: &str) -> Vec<u8> {
    let mut end = msg.len().min(MAX_ERROR_LEN);
    while !msg.is_char_boundary(end) {
        end -= 1;
    }
    let mut b = Vec::with_capacity(1 + end);
    b.push(1);
    b.extend_from_slice(&msg.as_bytes()[..end]);
    b
}

/// The helper's side: sends the greeting (or, when `nvml` is an error, that error,
/// and returns), then answers requests from `input` on `output` until `input` ends.
/// A malformed request ends the conversation with an error.
pub fn serve(
    nvml: Result<&mut dyn Nvml, NvmlError>,
    input: &mut dyn Read,
    output: &mut dyn Write,
) -> io::Result<()> {
    let nvml = match nvml {
        Ok(n) => {
            write_frame(output, &ok_body(GREETING))?;
            n
        }
        Err(e) => return write_frame(output, &err_body(&e.0)),
    };
    loop {
        let req = match read_frame(input, MAX_REQUEST_LEN) {
            Ok(r) => r,
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e),
        };
        let index = || -> io::Result<u32> {
            req.get(1..5)
                .and_then(|b| <[u8; 4]>::try_from(b).ok())
                .map(u32::from_be_bytes)
                .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no GPU index"))
        };
        let bad = || io::Error::new(io::ErrorKind::InvalidData, "malformed request");
        let r: Result<Vec<u8>, NvmlError> = match (req.first().copied(), req.len()) {
            (Some(OP_INIT), 1) => nvml.init().map(|()| Vec::new()),
            (Some(OP_COUNT), 1) => nvml.device_count().map(|n| n.to_be_bytes().to_vec()),
            (Some(OP_REPORT), 37) => {
                let i = index()?;
                let nonce: [u8; 32] = req
                    .get(5..37)
                    .and_then(|b| b.try_into().ok())
                    .ok_or_else(bad)?;
                nvml.attestation_report(i, &nonce)
            }
            (Some(OP_CERTS), 5) => nvml.attestation_cert_chain(index()?),
            (Some(OP_READY), 1) => nvml.set_cc_ready().map(|()| Vec::new()),
            _ => return Err(bad()),
        };
        let body = match r {
            Ok(p) if p.len() < MAX_RESPONSE_LEN => ok_body(&p),
            Ok(p) => err_body(&format!("answer of {} bytes is too long", p.len())),
            Err(e) => err_body(&e.0),
        };
        write_frame(output, &body)?;
    }
}

/// The `pqcc-nvml-helper` program: loads NVML from `library` ([`crate::gpu_gate::DlNvml`])
/// and serves stdin/stdout. Returns the process exit status.
pub fn helper_main(library: &str) -> i32 {
    let lib = match CString::new(library) {
        Ok(c) => c,
        Err(_) => return 2,
    };
    let mut loaded = crate::gpu_gate::DlNvml::load_from(&lib);
    let nvml: Result<&mut dyn Nvml, NvmlError> = match &mut loaded {
        Ok(n) => Ok(n),
        Err(e) => Err(e.clone()),
    };
    let mut stdin = io::stdin().lock();
    let mut stdout = io::stdout().lock();
    match serve(nvml, &mut stdin, &mut stdout) {
        Ok(()) if loaded.is_ok() => 0,
        Ok(()) => 1,
        Err(e) => {
            eprintln!("pqcc-nvml-helper: {e}");
            1
        }
    }
}

/// pqcc-init's side: an [`Nvml`] whose calls are requests to a helper process (or to
/// whatever serves the protocol at the other end of two descriptors). Every answer
/// must come within the call timeout; a late, malformed or missing answer is an
/// error, after which the helper is stopped and every further call fails.
pub struct HelperNvml {
    child: Option<Child>,
    to_helper: Option<std::fs::File>,
    from_helper: std::fs::File,
    timeout: Duration,
    broken: Option<String>,
}

impl std::fmt::Debug for HelperNvml {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HelperNvml")
            .field("pid", &self.child.as_ref().map(Child::id))
            .field("broken", &self.broken)
            .finish()
    }
}

impl HelperNvml {
    /// Starts `helper --library <library>` and reads its greeting within `timeout`.
    /// A helper that is not there, or that could not load NVML, is an error naming
    /// the file and the reason.
    pub fn spawn(helper: &Path, library: &str, timeout: Duration) -> Result<Self, NvmlError> {
        let mut child = Command::new(helper)
            .arg("--library")
            .arg(library)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .env_clear()
            .spawn()
            .map_err(|e| {
                NvmlError(format!(
                    "cannot start the NVML helper {}: {e}",
                    helper.display()
                ))
            })?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(NvmlError("NVML helper: no pipes".into()));
        };
        let mut h = Self {
            child: Some(child),
            to_helper: Some(std::fs::File::from(OwnedFd::from(stdin))),
            from_helper: std::fs::File::from(OwnedFd::from(stdout)),
            timeout,
            broken: None,
        };
        h.greet()
            .map_err(|e| NvmlError(format!("NVML helper {}: {}", helper.display(), e.0)))?;
        Ok(h)
    }

    /// Talks to a helper already running at the other end of `to_helper` and
    /// `from_helper` (pipes or a socket); reads its greeting within `timeout`.
    pub fn over(
        to_helper: OwnedFd,
        from_helper: OwnedFd,
        timeout: Duration,
    ) -> Result<Self, NvmlError> {
        let mut h = Self {
            child: None,
            to_helper: Some(std::fs::File::from(to_helper)),
            from_helper: std::fs::File::from(from_helper),
            timeout,
            broken: None,
        };
        h.greet()?;
        Ok(h)
    }

    fn greet(&mut self) -> Result<(), NvmlError> {
        let until = Instant::now() + self.timeout;
        let g = self.answer(until, "greeting")?;
        if g != GREETING {
            return Err(self.fail("greeting: not a pqcc-nvml/1 helper".into()));
        }
        Ok(())
    }

    fn fail(&mut self, why: String) -> NvmlError {
        self.broken = Some(why.clone());
        self.stop();
        NvmlError(why)
    }

    fn stop(&mut self) {
        self.to_helper = None;
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Reads one response; `Ok(payload)` for success, `Err` for an NVML error (the
    /// helper lives on) or a broken conversation (the helper is stopped).
    fn answer(&mut self, until: Instant, what: &str) -> Result<Vec<u8>, NvmlError> {
        let mut prefix = [0u8; 4];
        if let Err(e) = self.read_until(&mut prefix, until) {
            return Err(self.fail(format!("{what}: {e}")));
        }
        let n = u32::from_be_bytes(prefix) as usize;
        if n == 0 || n > MAX_RESPONSE_LEN {
            return Err(self.fail(format!("{what}: answer length {n} out of range")));
        }
        let mut body = vec![0u8; n];
        if let Err(e) = self.read_until(&mut body, until) {
            return Err(self.fail(format!("{what}: {e}")));
        }
        match body.split_first() {
            Some((0, payload)) => Ok(payload.to_vec()),
            Some((1, msg)) if msg.len() <= MAX_ERROR_LEN => {
                Err(NvmlError(String::from_utf8_lossy(msg).into_owned()))
            }
            _ => Err(self.fail(format!("{what}: malformed answer"))),
        }
    }

    fn read_until(&mut self, buf: &mut [u8], until: Instant) -> io::Result<()> {
        let mut got = 0;
        while got < buf.len() {
            crate::broker::wait_fd_readable(self.from_helper.as_raw_fd(), until).map_err(|e| {
                if e.kind() == io::ErrorKind::TimedOut {
                    io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("no answer within {:?}", self.timeout),
                    )
                } else {
                    e
                }
            })?;
            match self.from_helper.read(&mut buf[got..]) {
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the helper closed its output (exited?)",
                    ));
                }
                Ok(k) => got += k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    fn call(&mut self, what: &str, req: &[u8]) -> Result<Vec<u8>, NvmlError> {
        if let Some(b) = &self.broken {
            return Err(NvmlError(format!("NVML helper unusable: {b}")));
        }
        let until = Instant::now() + self.timeout;
        let sent = match self.to_helper.as_mut() {
            Some(w) => write_frame(w, req),
            None => Err(io::Error::other("helper stopped")),
        };
        if let Err(e) = sent {
            return Err(self.fail(format!("{what}: sending to the NVML helper: {e}")));
        }
        self.answer(until, what)
    }

    fn empty(&mut self, what: &str, req: &[u8]) -> Result<(), NvmlError> {
        let p = self.call(what, req)?;
        if p.is_empty() {
            Ok(())
        } else {
            Err(self.fail(format!("{what}: unexpected payload")))
        }
    }
}

impl Nvml for HelperNvml {
    fn init(&mut self) -> Result<(), NvmlError> {
        self.empty("nvmlInit_v2", &[OP_INIT])
    }

    fn device_count(&mut self) -> Result<u32, NvmlError> {
        let p = self.call("nvmlDeviceGetCount_v2", &[OP_COUNT])?;
        match <[u8; 4]>::try_from(p.as_slice()) {
            Ok(b) => Ok(u32::from_be_bytes(b)),
            Err(_) => Err(self.fail("nvmlDeviceGetCount_v2: malformed count".into())),
        }
    }

    fn attestation_report(&mut self, index: u32, nonce: &[u8; 32]) -> Result<Vec<u8>, NvmlError> {
        let mut req = vec![OP_REPORT];
        req.extend_from_slice(&index.to_be_bytes());
        req.extend_from_slice(nonce);
        self.call("nvmlDeviceGetConfComputeGpuAttestationReport", &req)
    }

    fn attestation_cert_chain(&mut self, index: u32) -> Result<Vec<u8>, NvmlError> {
        let mut req = vec![OP_CERTS];
        req.extend_from_slice(&index.to_be_bytes());
        self.call("nvmlDeviceGetConfComputeGpuCertificate", &req)
    }

    fn set_cc_ready(&mut self) -> Result<(), NvmlError> {
        self.empty("nvmlSystemSetConfComputeGpusReadyState", &[OP_READY])
    }
}

impl Drop for HelperNvml {
    fn drop(&mut self) {
        // Closing its stdin ends a well-behaved helper; kill covers the rest.
        self.to_helper = None;
        if let Some(mut c) = self.child.take() {
            let t = Instant::now();
            while t.elapsed() < Duration::from_millis(200) {
                if matches!(c.try_wait(), Ok(Some(_))) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
