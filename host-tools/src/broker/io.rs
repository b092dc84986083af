//! Length-prefixed messages on a byte stream, with a deadline.
//!
//! Every message on a broker connection is `u32 big-endian length ‖ bytes`
//! ([`pqcc_core::bundle::frame_prefix`]); a reader names the largest message it will
//! accept, so a peer cannot make it allocate or wait for more.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use pqcc_core::bundle::{FRAME_PREFIX_LEN, frame_prefix, parse_frame_prefix};

/// A stream whose reads and writes can be bounded in time.
pub trait Conn: Read + Write + Send {
    /// Sets the read and write timeouts (never zero).
    fn set_timeouts(&self, d: Duration) -> io::Result<()>;
}

impl Conn for UnixStream {
    fn set_timeouts(&self, d: Duration) -> io::Result<()> {
        self.set_read_timeout(Some(d))?;
        self.set_write_timeout(Some(d))
    }
}

impl Conn for TcpStream {
    fn set_timeouts(&self, d: Duration) -> io::Result<()> {
        self.set_read_timeout(Some(d))?;
        self.set_write_timeout(Some(d))
    }
}

fn remaining(deadline: Instant) -> io::Result<Duration> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(io::Error::new(io::ErrorKind::TimedOut, "deadline passed"));
    }
    Ok(left.max(Duration::from_millis(1)))
}

/// Reads one message of at most `max` bytes before `deadline`.
pub fn read_msg(c: &mut dyn Conn, max: usize, deadline: Instant) -> io::Result<Vec<u8>> {
    c.set_timeouts(remaining(deadline)?)?;
    let mut p = [0u8; FRAME_PREFIX_LEN];
    c.read_exact(&mut p)?;
    let n = parse_frame_prefix(p, max)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("length prefix: {e}")))?;
    let mut buf = vec![0u8; n];
    let mut got = 0;
    while got < n {
        c.set_timeouts(remaining(deadline)?)?;
        match c.read(&mut buf[got..]) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(k) => got += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
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
