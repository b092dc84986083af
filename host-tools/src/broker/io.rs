//! Length-prefixed messages on a byte stream, with a deadline.
//!
//! Every message on a broker connection is `u32 big-endian length ‖ bytes`
//! ([`pqcc_core::bundle::frame_prefix`]); a reader names the largest message it will
//! accept, so a peer cannot make it allocate or wait for more.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use pqcc_core::bundle::{FRAME_PREFIX_LEN, frame_prefix, parse_frame_prefix};

/// A stream whose reads and writes can be bounded in time.
pub trait Conn: Read + Write + Send {
    /// Sets the read and write timeouts (never zero).
    fn set_timeouts(&self, d: Duration) -> io::Result<()>;
    /// The socket, for `poll(2)`.
    fn fd(&self) -> RawFd;
}

impl Conn for UnixStream {
    fn set_timeouts(&self, d: Duration) -> io::Result<()> {
        self.set_read_timeout(Some(d))?;
        self.set_write_timeout(Some(d))
    }
    fn fd(&self) -> RawFd {
        self.as_raw_fd()
    }
}

impl Conn for TcpStream {
    fn set_timeouts(&self, d: Duration) -> io::Result<()> {
        self.set_read_timeout(Some(d))?;
        self.set_write_timeout(Some(d))
    }
    fn fd(&self) -> RawFd {
        self.as_raw_fd()
    }
}

/// Waits until `fd` is readable (or hung up) for at most `timeout`: `Ok(true)` when it
/// is, `Ok(false)` when the time ran out.
pub fn poll_readable(fd: RawFd, timeout: Duration) -> io::Result<bool> {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    let ms = libc::c_int::try_from(timeout.as_millis()).unwrap_or(libc::c_int::MAX);
    // SAFETY: one valid pollfd, for the length given.
    let r = unsafe { libc::poll(&mut p, 1, ms) };
    match r {
        r if r < 0 => {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                Ok(false)
            } else {
                Err(e)
            }
        }
        0 => Ok(false),
        _ => Ok(true),
    }
}

fn remaining(deadline: Instant) -> io::Result<Duration> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(io::Error::new(io::ErrorKind::TimedOut, "deadline passed"));
    }
    Ok(left.max(Duration::from_millis(1)))
}

/// Fills `buf` before `deadline`: every read gets only the time that is left, so a
/// peer that sends a byte at a time cannot stretch the deadline.
fn read_full(c: &mut dyn Conn, buf: &mut [u8], deadline: Instant) -> io::Result<()> {
    let mut got = 0;
    while got < buf.len() {
        c.set_timeouts(remaining(deadline)?)?;
        match c.read(&mut buf[got..]) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(k) => got += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                return Err(io::Error::new(io::ErrorKind::TimedOut, "deadline passed"));
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Reads one message of at most `max` bytes before `deadline` (the whole message, its
/// length prefix included, whatever the peer's pace).
pub fn read_msg(c: &mut dyn Conn, max: usize, deadline: Instant) -> io::Result<Vec<u8>> {
    let mut p = [0u8; FRAME_PREFIX_LEN];
    read_full(c, &mut p, deadline)?;
    let n = parse_frame_prefix(p, max)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("length prefix: {e}")))?;
    let mut buf = vec![0u8; n];
    read_full(c, &mut buf, deadline)?;
    Ok(buf)
}

/// Writes one message before `deadline`.
pub fn write_msg(c: &mut dyn Conn, msg: &[u8], deadline: Instant) -> io::Result<()> {
    c.set_timeouts(remaining(deadline)?)?;
    let p = frame_prefix(msg.len())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("message: {e}")))?;
    c.write_all(&p)?;
    c.write_all(msg)?;
    c.flush()
}
