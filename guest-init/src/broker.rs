//! The guest's side of attested key release: connect to the broker, run the v1
//! handshake with evidence bound to it, receive the granted secrets over the channel,
//! and hand them to the workload as files.
//!
//! Fail closed: any error — no broker within the wait, a Reject, a signature that is
//! not the configured broker's, a frame that does not open or does not match its
//! grant — is returned, and the caller (stage `attest`) prints FATAL and powers off.
//!
//! Messages are length-prefixed ([`pqcc_core::bundle::frame_prefix`]); every read
//! names the largest message it takes and a deadline.

use std::fmt;
use std::fs;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use pqcc_core::bundle::{
    Claims, DONE, EvidenceBundle, FRAME_PREFIX_LEN, READY, frame_prefix, parse_frame_prefix,
};
use pqcc_core::channel::{Limits, Session};
use pqcc_core::handshake::Initiator;
use pqcc_core::wire::{
    ACCEPT_MAX_LEN, CHALLENGE_MAX_LEN, Evidence, FRAME_HEADER_MAX_LEN, HELLO_MAX_LEN,
    MAX_EVIDENCE_LEN,
};
use pqcc_core::{Error as CoreError, aead::TAG_LEN};
use zeroize::{Zeroize, Zeroizing};

use crate::config::Transport;
use crate::platform::Platform;

/// Largest secret accepted from the broker, in bytes.
pub const MAX_SECRET_LEN: usize = 1 << 20;
/// Where secrets are written for the workload (tmpfs), given to it as
/// `PQCC_SECRETS_DIR`.
pub const SECRETS_DIR: &str = "/run/pqcc/secrets";

/// A byte stream to the broker whose reads can wait with a deadline.
pub trait Link: Read + Write {
    /// Waits until a read would not block, or fails with `TimedOut` at `until`.
    fn wait_readable(&mut self, until: Instant) -> io::Result<()>;
}

/// Any readable/writable file descriptor (a tty, a socket).
#[derive(Debug)]
pub struct FdLink<T>(pub T);

impl<T: Read> Read for FdLink<T> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf)
    }
}

impl<T: Write> Write for FdLink<T> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

impl<T: Read + Write + AsRawFd> Link for FdLink<T> {
    fn wait_readable(&mut self, until: Instant) -> io::Result<()> {
        wait_fd_readable(self.0.as_raw_fd(), until)
    }
}

/// Waits with `poll(2)` until `fd` is readable (or hung up), or fails with `TimedOut`
/// once `until` has passed.
pub(crate) fn wait_fd_readable(fd: std::os::fd::RawFd, until: Instant) -> io::Result<()> {
    loop {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(io::ErrorKind::TimedOut, "timed out"));
        }
        let ms = i32::try_from(left.as_millis().max(1)).unwrap_or(i32::MAX);
        let mut p = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: `p` is one valid pollfd for the duration of the call.
        let r = unsafe { libc::poll(&mut p, 1, ms) };
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if r > 0 {
            return Ok(());
        }
    }
}

/// Where named virtio-serial ports are listed.
pub const VIRTIO_PORTS: &str = "/sys/class/virtio-ports";

/// The device node of the virtio-serial port called `name`, from `sys_ports`
/// (`/sys/class/virtio-ports/vportNpM/name`).
pub fn find_port(sys_ports: &Path, name: &str) -> Result<String, String> {
    let rd = fs::read_dir(sys_ports).map_err(|e| format!("{}: {e}", sys_ports.display()))?;
    for e in rd.flatten() {
        let n = fs::read_to_string(e.path().join("name")).unwrap_or_default();
        if n.trim_end_matches('\n') == name {
            return Ok(format!("/dev/{}", e.file_name().to_string_lossy()));
        }
    }
    Err(format!(
        "no virtio-serial port named `{name}` (is the virtio_console module loaded and the port given to QEMU?)"
    ))
}

/// Opens the configured transport; waits (until `until`) for the other end to be
/// there: a virtio-serial port whose host side is connected, a TCP or vsock listener.
pub fn open(t: &Transport, until: Instant) -> Result<Box<dyn Link>, String> {
    loop {
        match open_once(t) {
            Ok(Some(l)) => return Ok(l),
            Ok(None) => {}
            Err(e) if Instant::now() >= until => return Err(e),
            Err(_) => {}
        }
        if Instant::now() >= until {
            return Err("the broker did not come within broker.wait_ms".into());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// One attempt: `Ok(None)` when the port exists but nobody is on the host side yet.
fn open_once(t: &Transport) -> Result<Option<Box<dyn Link>>, String> {
    match t {
        Transport::VirtioSerial(name) => {
            let dev = find_port(Path::new(VIRTIO_PORTS), name)?;
            let f = fs::OpenOptions::new()
                .read(true)
                .write(true)
                .custom_flags(libc::O_CLOEXEC)
                .open(&dev)
                .map_err(|e| format!("{dev}: {e}"))?;
            // POLLHUP: the host side (QEMU's chardev) is not connected to a broker.
            let mut p = libc::pollfd {
                fd: f.as_raw_fd(),
                events: libc::POLLOUT,
                revents: 0,
            };
            // SAFETY: one valid pollfd, zero timeout.
            let r = unsafe { libc::poll(&mut p, 1, 0) };
            if r < 0 || p.revents & libc::POLLHUP != 0 {
                return Ok(None);
            }
            Ok(Some(Box::new(FdLink(f))))
        }
        Transport::VirtioConsole(path) => {
            let f = fs::OpenOptions::new()
                .read(true)
                .write(true)
                .custom_flags(libc::O_NOCTTY | libc::O_CLOEXEC)
                .open(path)
                .map_err(|e| format!("{path}: {e}"))?;
            raw_tty(&f).map_err(|e| format!("{path}: raw mode: {e}"))?;
            Ok(Some(Box::new(FdLink(f))))
        }
        Transport::Tcp(addr) => {
            let s = std::net::TcpStream::connect(addr.as_str())
                .map_err(|e| format!("tcp:{addr}: {e}"))?;
            let _ = s.set_nodelay(true);
            Ok(Some(Box::new(FdLink(s))))
        }
        Transport::Vsock { cid, port } => {
            let s = vsock_connect(*cid, *port).map_err(|e| format!("vsock:{cid}:{port}: {e}"))?;
            Ok(Some(Box::new(FdLink(fs::File::from(s)))))
        }
    }
}

/// Puts a tty into raw mode (no echo, no line editing, no CR/NL translation, 8 bits)
/// and drops anything already queued.
fn raw_tty(f: &fs::File) -> io::Result<()> {
    let fd = f.as_raw_fd();
    // SAFETY: termios is plain old data; tcgetattr fills it for a valid fd.
    let mut t: libc::termios = unsafe { std::mem::zeroed() };
    // SAFETY: `fd` is open for the duration; `t` is a valid termios.
    if unsafe { libc::tcgetattr(fd, &mut t) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `t` is a valid termios.
    unsafe { libc::cfmakeraw(&mut t) };
    t.c_cc[libc::VMIN] = 1;
    t.c_cc[libc::VTIME] = 0;
    // SAFETY: as above.
    if unsafe { libc::tcsetattr(fd, libc::TCSANOW, &t) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: as above.
    unsafe { libc::tcflush(fd, libc::TCIOFLUSH) };
    Ok(())
}

fn vsock_connect(cid: u32, port: u32) -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2) call; the result is checked.
    let fd = unsafe { libc::socket(libc::AF_VSOCK, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor we own.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: sockaddr_vm is plain old data.
    let mut addr: libc::sockaddr_vm = unsafe { std::mem::zeroed() };
    addr.svm_family = libc::sa_family_t::try_from(libc::AF_VSOCK)
        .map_err(|_| io::Error::other("AF_VSOCK out of range"))?;
    addr.svm_cid = cid;
    addr.svm_port = port;
    // SAFETY: `addr` is a valid sockaddr_vm of the given size.
    let r = unsafe {
        libc::connect(
            fd,
            (&addr as *const libc::sockaddr_vm).cast(),
            libc::socklen_t::try_from(std::mem::size_of::<libc::sockaddr_vm>())
                .unwrap_or(libc::socklen_t::MAX),
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(owned)
}

/// Reads one length-prefixed message of at most `max` bytes before `until`.
pub fn read_msg(link: &mut dyn Link, max: usize, until: Instant) -> io::Result<Vec<u8>> {
    let mut p = [0u8; FRAME_PREFIX_LEN];
    read_exact_until(link, &mut p, until)?;
    let n = parse_frame_prefix(p, max)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("length prefix: {e}")))?;
    let mut buf = vec![0u8; n];
    read_exact_until(link, &mut buf, until)?;
    Ok(buf)
}

fn read_exact_until(link: &mut dyn Link, buf: &mut [u8], until: Instant) -> io::Result<()> {
    let mut got = 0;
    while got < buf.len() {
        link.wait_readable(until)?;
        match link.read(&mut buf[got..]) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "connection closed",
                ));
            }
            Ok(k) => got += k,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::Interrupted | io::ErrorKind::WouldBlock
                ) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Writes one length-prefixed message.
pub fn write_msg(link: &mut dyn Link, msg: &[u8]) -> io::Result<()> {
    let p = frame_prefix(msg.len())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
    link.write_all(&p)?;
    link.write_all(msg)?;
    link.flush()
}

/// A secret released by the broker. Zeroized on drop; never printed.
pub struct Secret {
    /// Its name (from the grant; checked to be a plain file name).
    pub name: String,
    /// Its bytes.
    pub bytes: Zeroizing<Vec<u8>>,
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Secret({}, {} bytes, <redacted>)",
            self.name,
            self.bytes.len()
        )
    }
}

/// What the broker released, and how long it took.
#[derive(Debug)]
pub struct Released {
    /// The secrets, in grant order.
    pub secrets: Vec<Secret>,
    /// The public session id.
    pub session_id: [u8; 32],
    /// From sending the Hello to reading the Accept (round trip incl. the broker's
    /// decision).
    pub round_trip: Duration,
}

fn core(what: &str) -> impl Fn(CoreError) -> String + '_ {
    move |e| format!("{what}: {e}")
}

fn io_err(what: &str) -> impl Fn(io::Error) -> String + '_ {
    move |e| match e.kind() {
        io::ErrorKind::TimedOut => format!("{what}: timed out"),
        _ => format!("{what}: {e}"),
    }
}

fn plain_name(n: &str) -> bool {
    !n.is_empty()
        && !n.starts_with('.')
        && n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

/// Waits (until `until`) for the kernel's random number generator to be initialised,
/// so the handshake's keys never wait on it unboundedly (`getrandom` blocks until then;
/// on x86 with RDRAND — TDX, SEV-SNP, QEMU `-cpu max` — it is ready at once).
pub fn wait_for_entropy(until: Instant) -> Result<(), String> {
    let mut b = [0u8; 16];
    loop {
        // SAFETY: `b` is a valid buffer of the given length.
        let r = unsafe { libc::getrandom(b.as_mut_ptr().cast(), b.len(), libc::GRND_NONBLOCK) };
        b.zeroize();
        if r >= 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EAGAIN) && e.kind() != io::ErrorKind::Interrupted {
            return Err(format!("getrandom: {e}"));
        }
        if Instant::now() >= until {
            return Err("the kernel's random number generator is not initialised (no RDRAND, no virtio-rng?)".into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs the handshake on `link`: sends [`READY`], waits until `wait_until` for the
/// Challenge, then has `timeout` for the rest, and ends with [`DONE`] once the answer
/// (and every secret) has been read. Trusts exactly `broker_public_key`. Sends no GPU
/// evidence ([`handshake_with_gpu`]).
pub fn handshake(
    link: &mut dyn Link,
    broker_public_key: &[u8],
    claims: Claims<'_>,
    platform: &mut dyn Platform,
    wait_until: Instant,
    timeout: Duration,
) -> Result<Released, String> {
    handshake_with_gpu(
        link,
        broker_public_key,
        claims,
        platform,
        None,
        wait_until,
        timeout,
    )
}

/// Produces the GPU evidence for a handshake: called once, after the Challenge, with
/// the handshake's GPU nonce ([`pqcc_core::handshake::BindingValue::gpu_nonce`]);
/// returns the bytes for [`EvidenceBundle::gpu`].
pub type GpuEvidenceFn<'a> = &'a mut dyn FnMut(&[u8; 32]) -> Result<Vec<u8>, String>;

/// [`handshake`], with the GPU evidence from `gpu` (when given) in the bundle. The
/// Hello carrying it is part of the transcript the broker signs, so evidence changed
/// on the way fails the Accept's signature check here.
pub fn handshake_with_gpu(
    link: &mut dyn Link,
    broker_public_key: &[u8],
    claims: Claims<'_>,
    platform: &mut dyn Platform,
    gpu: Option<GpuEvidenceFn<'_>>,
    wait_until: Instant,
    timeout: Duration,
) -> Result<Released, String> {
    let mut rng = rand_core::UnwrapErr(getrandom::SysRng);
    write_msg(link, READY).map_err(io_err("telling the broker we are ready"))?;
    let challenge = read_msg(link, CHALLENGE_MAX_LEN, wait_until)
        .map_err(io_err("no Challenge from the broker"))?;
    let until = Instant::now() + timeout;
    let initiator = Initiator::new(broker_public_key).map_err(core("broker public key"))?;
    let awaiting = initiator
        .handle_challenge(&challenge, &mut rng)
        .map_err(core("Challenge"))?;
    let binding = *awaiting.binding();
    let gpu_evidence = match gpu {
        Some(f) => Some(f(&binding.gpu_nonce()).map_err(|e| format!("gpu: {e}"))?),
        None => None,
    };
    let tee = platform
        .evidence(&binding.0)
        .map_err(|e| format!("evidence: {e}"))?;
    let mut data = vec![0u8; MAX_EVIDENCE_LEN];
    let dlen = EvidenceBundle::new(claims, &tee, gpu_evidence.as_deref())
        .encode(&mut data)
        .map_err(core("evidence bundle"))?;
    let mut hello = vec![0u8; HELLO_MAX_LEN];
    let (awaiting, hlen) = awaiting
        .write_hello(
            Evidence {
                platform: platform.kind(),
                data: pqcc_core::wire::Bytes(&data[..dlen]),
            },
            &mut hello,
        )
        .map_err(core("Hello"))?;
    let sent = Instant::now();
    write_msg(link, &hello[..hlen]).map_err(io_err("sending Hello"))?;
    let response = read_msg(link, ACCEPT_MAX_LEN, until).map_err(io_err("broker's answer"))?;
    let round_trip = sent.elapsed();
    let answer = awaiting.handle_response(&response);
    if answer.is_err() {
        // Let the broker close: its answer has arrived.
        let _ = write_msg(link, DONE);
    }
    let (keys, grants) = answer.map_err(|e| match e {
        CoreError::Rejected(r) => format!("broker refused: {r}"),
        CoreError::BadSignature => {
            "the Accept is not signed by the configured broker key".to_string()
        }
        e => format!("broker's answer: {e}"),
    })?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let mut session: Session = Session::new(keys, Limits::default(), now);
    let mut secrets = Vec::with_capacity(grants.len());
    for g in &grants {
        let len = g.len as usize;
        if !plain_name(g.name) {
            return Err(format!(
                "grant name `{}` is not a plain file name",
                g.name.escape_debug()
            ));
        }
        if len == 0 || len > MAX_SECRET_LEN {
            return Err(format!("grant `{}`: length {len} out of range", g.name));
        }
        let mut frame = Zeroizing::new(
            read_msg(link, FRAME_HEADER_MAX_LEN + len + TAG_LEN, until)
                .map_err(io_err("secret frame"))?,
        );
        let opened = session
            .rx
            .open_in_place(now, &mut frame)
            .map_err(core("secret frame"))?;
        let h = &opened.header;
        if h.stream != g.stream
            || h.meta.name != g.name
            || h.meta.total_len != u64::from(g.len)
            || h.offset != 0
            || !h.is_final()
            || opened.plaintext.len() != len
        {
            opened.plaintext.zeroize();
            return Err(format!("secret frame does not match grant `{}`", g.name));
        }
        secrets.push(Secret {
            name: g.name.to_string(),
            bytes: Zeroizing::new(opened.plaintext.to_vec()),
        });
        opened.plaintext.zeroize();
    }
    // Everything arrived; the broker may close now.
    let _ = write_msg(link, DONE);
    Ok(Released {
        secrets,
        session_id: *session.session_id(),
        round_trip,
    })
}

/// Writes each secret to `dir/<name>` (mode 0400, new files only; `dir` is created
/// mode 0500 and must be on a tmpfs in the guest), then drops them (zeroized).
pub fn install(secrets: Vec<Secret>, dir: &Path) -> Result<(), String> {
    fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    for s in &secrets {
        let path = dir.join(&s.name);
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o400)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&path)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        f.write_all(&s.bytes)
            .map_err(|e| format!("{}: {e}", path.display()))?;
    }
    fs::set_permissions(dir, fs::Permissions::from_mode(0o500))
        .map_err(|e| format!("{}: {e}", dir.display()))?;
    drop(secrets);
    Ok(())
}
