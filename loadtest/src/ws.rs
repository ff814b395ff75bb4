//! A lean WebSocket client connection (RFC 6455, no extensions) built for the generator's
//! receive path: one read fetches every frame the kernel has, frames are parsed in place and
//! handed out as borrowed bytes, so a delivery costs no allocation, no copy and no UTF-8 pass.
//!
//! tokio-tungstenite, which the generator used before, allocates and validates each message and
//! reads 8 KiB at a time; at a few hundred thousand deliveries per second that made the
//! generator, not the server under test, the bottleneck.
//!
//! Cancel safety: [`WsConn::fill`] and [`WsConn::flush`] can be dropped at any await point
//! without losing or corrupting bytes (reads land in the buffer, writes advance a cursor kept
//! in `self`), so a task may `select!` them against its own schedule.

use std::io;

use base64::Engine as _;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

/// The read buffer a connection starts with; it doubles (up to [`MAX_READ_BUF`]) whenever a
/// read fills it, so busy subscribers read many frames per syscall and idle ones stay small.
const INITIAL_READ_BUF: usize = 4 * 1024;
const MAX_READ_BUF: usize = 256 * 1024;
/// Largest message accepted (a server sending more is broken or hostile).
const MAX_MESSAGE: usize = 64 * 1024 * 1024;
/// Largest HTTP response head of the upgrade.
const MAX_HEAD: usize = 16 * 1024;

/// What [`WsConn::next_message`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frame {
    /// A complete text or binary message: read it with [`WsConn::bytes`] before the next
    /// call that takes `&mut self`.
    Message(Span),
    /// The server closed the connection (close frame).
    Closed,
}

/// Where a parsed message lies (an index pair rather than a borrow, so a caller can look at a
/// message, decide, and go on parsing in one loop).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Span {
    Read(usize, usize),
    Assembled,
}

/// One client WebSocket connection.
pub struct WsConn {
    stream: TcpStream,
    /// Received bytes; `rpos..` is not parsed yet.
    rbuf: Vec<u8>,
    rpos: usize,
    /// A fragmented message being assembled.
    frag: Vec<u8>,
    /// Bytes to send; `wpos..` is not written yet.
    wbuf: Vec<u8>,
    wpos: usize,
    mask_state: u32,
    /// The message a caller last took (for callers that look before they borrow).
    pub last: Option<Span>,
    /// Re-arm `TCP_QUICKACK` after every read (Linux leaves quick-ACK mode by itself).
    pub quickack: bool,
}

/// The server answered the upgrade with something other than `101 Switching Protocols`.
#[derive(Debug)]
pub struct UpgradeRefused {
    /// The status code, when the status line had one.
    pub status: Option<u16>,
    pub line: String,
}

impl std::fmt::Display for UpgradeRefused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "upgrade refused: {}", self.line)
    }
}

impl std::error::Error for UpgradeRefused {}

/// Asks for an immediate ACK of what was read (best effort: an error only loses the hint).
fn quickack(stream: &TcpStream) {
    let _ = socket2::SockRef::from(stream).set_tcp_quickack(true);
}

/// Builds a frame error.
fn bad(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

/// Connects to `authority` from the local address `ip` (any free port): clients spread over
/// many loopback addresses look like many hosts to a proxy and to the servers' per-address
/// budgets, and each address has its own ephemeral ports.
async fn connect_from(ip: std::net::IpAddr, authority: &str) -> io::Result<TcpStream> {
    let addr = tokio::net::lookup_host(authority)
        .await?
        .find(|a| a.is_ipv4() == ip.is_ipv4())
        .ok_or_else(|| {
            io::Error::new(io::ErrorKind::AddrNotAvailable, "no address to connect to")
        })?;
    let socket = if ip.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.bind(std::net::SocketAddr::new(ip, 0))?;
    socket.connect(addr).await
}

impl WsConn {
    /// Makes dropping the connection send a TCP reset instead of a FIN.
    pub fn reset_on_drop(&self) {
        // Best effort: a socket that cannot take the option is closed normally.
        let _ = self.stream.set_zero_linger();
    }

    /// Connects to `authority` and upgrades `path_and_query` to a WebSocket.
    ///
    /// # Errors
    /// TCP errors, or a response other than `101 Switching Protocols`.
    pub async fn connect(
        authority: &str,
        path_and_query: &str,
        source: Option<std::net::IpAddr>,
    ) -> io::Result<Self> {
        let mut stream = match source {
            None => TcpStream::connect(authority).await?,
            Some(ip) => connect_from(ip, authority).await?,
        };
        stream.set_nodelay(true)?;
        let key: [u8; 16] = rand::random();
        let key = base64::engine::general_purpose::STANDARD.encode(key);
        let req = format!(
            "GET {path_and_query} HTTP/1.1\r\nHost: {authority}\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        stream.write_all(req.as_bytes()).await?;
        let mut rbuf = Vec::with_capacity(INITIAL_READ_BUF);
        let head_end = loop {
            if let Some(i) = rbuf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            if rbuf.len() > MAX_HEAD {
                return Err(bad("upgrade response head too large"));
            }
            rbuf.reserve(1024);
            if stream.read_buf(&mut rbuf).await? == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "closed during the WebSocket upgrade",
                ));
            }
        };
        let status_line = rbuf[..head_end]
            .split(|&b| b == b'\r')
            .next()
            .unwrap_or(&[]);
        let line = String::from_utf8_lossy(status_line).trim().to_owned();
        let status = line.split(' ').nth(1).and_then(|c| c.parse::<u16>().ok());
        if status != Some(101) {
            return Err(io::Error::other(UpgradeRefused { status, line }));
        }
        Ok(Self {
            stream,
            rbuf,
            rpos: head_end,
            frag: Vec::new(),
            wbuf: Vec::new(),
            wpos: 0,
            mask_state: rand::random::<u32>() | 1,
            last: None,
            quickack: false,
        })
    }

    /// Reads whatever the kernel has (at least one byte); false when the peer closed TCP.
    /// Pending writes (queued pongs, for instance) go out first. Cancel-safe.
    ///
    /// # Errors
    /// Socket errors.
    pub async fn fill(&mut self) -> io::Result<bool> {
        self.flush().await?;
        if self.rpos > 0 {
            // Keep the unparsed tail at the front; it is at most one partial frame.
            self.rbuf.drain(..self.rpos);
            self.rpos = 0;
        }
        let spare = self.rbuf.capacity() - self.rbuf.len();
        if spare < 512 {
            let grow = self.rbuf.capacity().clamp(INITIAL_READ_BUF, MAX_READ_BUF);
            self.rbuf.reserve(grow);
        }
        let before = self.rbuf.len();
        let n = self.stream.read_buf(&mut self.rbuf).await?;
        if self.quickack {
            quickack(&self.stream);
        }
        if n > 0 && self.rbuf.len() == self.rbuf.capacity() && self.rbuf.capacity() < MAX_READ_BUF {
            // The read filled the buffer: more was waiting; read bigger next time.
            self.rbuf.reserve(self.rbuf.capacity());
        }
        Ok(self.rbuf.len() > before)
    }

    /// The next complete message already read, answering pings on the way; `None` when more
    /// bytes are needed (call [`Self::fill`]).
    ///
    /// # Errors
    /// A malformed or oversized frame.
    pub fn next_message(&mut self) -> io::Result<Option<Frame>> {
        loop {
            let buf = &self.rbuf[self.rpos..];
            let Some((head, len, fin, opcode, mask)) = parse_header(buf)? else {
                return Ok(None);
            };
            if len > MAX_MESSAGE || self.frag.len() + len > MAX_MESSAGE {
                return Err(bad(format!("frame of {len} bytes exceeds the limit")));
            }
            if buf.len() < head + len {
                return Ok(None);
            }
            let start = self.rpos + head;
            self.rpos = start + len;
            if let Some(m) = mask {
                apply_mask(&mut self.rbuf[start..start + len], m);
            }
            match opcode {
                0x8 => return Ok(Some(Frame::Closed)),
                0x9 => {
                    let payload = self.rbuf[start..start + len].to_vec();
                    self.queue_frame(0xA, &payload);
                }
                0xA => {}
                0x0 => {
                    self.frag.extend_from_slice(&self.rbuf[start..start + len]);
                    if fin {
                        // Rare: servers fragment only huge messages.
                        return Ok(Some(Frame::Message(Span::Assembled)));
                    }
                }
                0x1 | 0x2 => {
                    if fin {
                        return Ok(Some(Frame::Message(Span::Read(start, start + len))));
                    }
                    self.frag.clear();
                    self.frag.extend_from_slice(&self.rbuf[start..start + len]);
                }
                other => return Err(bad(format!("unknown WebSocket opcode {other:#x}"))),
            }
        }
    }

    /// The bytes of a message [`Self::next_message`] returned.
    pub fn bytes(&self, span: Span) -> &[u8] {
        match span {
            Span::Read(a, b) => &self.rbuf[a..b],
            Span::Assembled => &self.frag,
        }
    }

    /// Queues one text message (sent by the next [`Self::flush`] or [`Self::fill`]).
    pub fn queue_text(&mut self, text: &[u8]) {
        self.queue_frame(0x1, text);
    }

    /// Queues a close frame.
    pub fn queue_close(&mut self) {
        self.queue_frame(0x8, &[]);
    }

    fn queue_frame(&mut self, opcode: u8, payload: &[u8]) {
        if self.wpos == self.wbuf.len() {
            self.wbuf.clear();
            self.wpos = 0;
        }
        self.wbuf.push(0x80 | opcode);
        let len = payload.len();
        if len < 126 {
            self.wbuf.push(0x80 | len as u8);
        } else if let Ok(l) = u16::try_from(len) {
            self.wbuf.push(0x80 | 126);
            self.wbuf.extend_from_slice(&l.to_be_bytes());
        } else {
            self.wbuf.push(0x80 | 127);
            self.wbuf.extend_from_slice(&(len as u64).to_be_bytes());
        }
        // xorshift: a fresh mask per frame, as RFC 6455 asks of clients.
        let mut x = self.mask_state;
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        self.mask_state = x;
        let mask = x.to_be_bytes();
        self.wbuf.extend_from_slice(&mask);
        let at = self.wbuf.len();
        self.wbuf.extend_from_slice(payload);
        apply_mask(&mut self.wbuf[at..], mask);
    }

    /// Writes everything queued. Cancel-safe.
    ///
    /// # Errors
    /// Socket errors.
    pub async fn flush(&mut self) -> io::Result<()> {
        while self.wpos < self.wbuf.len() {
            let n = self.stream.write(&self.wbuf[self.wpos..]).await?;
            if n == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            self.wpos += n;
        }
        Ok(())
    }
}

/// Header of the frame at the start of `buf`: (header length, payload length, FIN, opcode,
/// mask key); `None` when the header is not complete yet.
#[allow(clippy::type_complexity)]
fn parse_header(buf: &[u8]) -> io::Result<Option<(usize, usize, bool, u8, Option<[u8; 4]>)>> {
    let [b0, b1, ..] = *buf else { return Ok(None) };
    if b0 & 0x70 != 0 {
        return Err(bad(
            "reserved WebSocket bits set (no extension was negotiated)",
        ));
    }
    let (fin, opcode, masked) = (b0 & 0x80 != 0, b0 & 0x0f, b1 & 0x80 != 0);
    let (mut head, len) = match b1 & 0x7f {
        126 => {
            let Some(b) = buf.get(2..4) else {
                return Ok(None);
            };
            (4, usize::from(u16::from_be_bytes([b[0], b[1]])))
        }
        127 => {
            let Some(b) = buf.get(2..10) else {
                return Ok(None);
            };
            let mut a = [0u8; 8];
            a.copy_from_slice(b);
            let l = usize::try_from(u64::from_be_bytes(a)).unwrap_or(usize::MAX);
            (10, l)
        }
        l => (2, usize::from(l)),
    };
    let mask = if masked {
        let Some(b) = buf.get(head..head + 4) else {
            return Ok(None);
        };
        head += 4;
        Some([b[0], b[1], b[2], b[3]])
    } else {
        None
    };
    Ok(Some((head, len, fin, opcode, mask)))
}

fn apply_mask(data: &mut [u8], mask: [u8; 4]) {
    for (i, b) in data.iter_mut().enumerate() {
        *b ^= mask[i & 3];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_of_every_length_form() {
        assert_eq!(parse_header(&[0x81]).unwrap(), None);
        assert_eq!(
            parse_header(&[0x81, 5, b'h']).unwrap(),
            Some((2, 5, true, 1, None))
        );
        assert_eq!(
            parse_header(&[0x01, 126, 1, 0]).unwrap(),
            Some((4, 256, false, 1, None))
        );
        assert_eq!(parse_header(&[0x81, 127, 0, 0, 0]).unwrap(), None);
        let mut long = vec![0x82, 127];
        long.extend_from_slice(&70_000u64.to_be_bytes());
        assert_eq!(
            parse_header(&long).unwrap(),
            Some((10, 70_000, true, 2, None))
        );
        assert_eq!(
            parse_header(&[0x81, 0x83, 1, 2, 3, 4]).unwrap(),
            Some((6, 3, true, 1, Some([1, 2, 3, 4])))
        );
        assert!(parse_header(&[0xC1, 1]).is_err(), "RSV1 without deflate");
    }

    #[test]
    fn masking_round_trips() {
        let mut d = b"hello world".to_vec();
        apply_mask(&mut d, [9, 8, 7, 6]);
        assert_ne!(&d, b"hello world");
        apply_mask(&mut d, [9, 8, 7, 6]);
        assert_eq!(&d, b"hello world");
    }
}
