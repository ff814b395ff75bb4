//! The WebSocket server side this baseline needs (RFC 6455): the upgrade handshake, masked
//! client frames in, unmasked server frames out. No extensions, no subprotocols.

use anyhow::{Context as _, Result, bail, ensure};
use bytes::{BufMut as _, Bytes, BytesMut};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

pub const OP_CONTINUATION: u8 = 0x0;
pub const OP_TEXT: u8 = 0x1;
pub const OP_BINARY: u8 = 0x2;
pub const OP_CLOSE: u8 = 0x8;
pub const OP_PING: u8 = 0x9;
pub const OP_PONG: u8 = 0xA;

/// Largest request head and largest message accepted from a client.
const MAX_HEAD_BYTES: usize = 8 * 1024;
const MAX_MESSAGE_BYTES: usize = 1024 * 1024;

/// Reads the HTTP upgrade request and answers it. Returns the halves of the stream and the
/// bytes read past the request head (the start of the first frames).
pub async fn accept(mut stream: TcpStream) -> Result<(OwnedReadHalf, BytesMut, OwnedWriteHalf)> {
    let mut buf = BytesMut::with_capacity(1024);
    let head_len = loop {
        if let Some(i) = find(&buf, b"\r\n\r\n") {
            break i + 4;
        }
        ensure!(buf.len() < MAX_HEAD_BYTES, "request head too large");
        let n = stream
            .read_buf(&mut buf)
            .await
            .context("reading the request")?;
        ensure!(n > 0, "closed during the handshake");
    };
    let head = String::from_utf8_lossy(&buf[..head_len]).into_owned();
    let key = head
        .lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case("sec-websocket-key"))
        .map(|(_, v)| v.trim().to_owned());
    let Some(key) = key else {
        let _ = stream
            .write_all(
                b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            )
            .await;
        bail!("not a WebSocket upgrade");
    };
    let reply = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {}\r\n\r\n",
        derive_accept_key(key.as_bytes())
    );
    stream.write_all(reply.as_bytes()).await?;
    let leftover = buf.split_off(head_len);
    let (r, w) = stream.into_split();
    Ok((r, leftover, w))
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn header(buf: &mut BytesMut, opcode: u8, len: usize) {
    buf.put_u8(0x80 | opcode);
    if len < 126 {
        #[allow(clippy::cast_possible_truncation)]
        buf.put_u8(len as u8);
    } else if let Ok(len16) = u16::try_from(len) {
        buf.put_u8(126);
        buf.put_u16(len16);
    } else {
        buf.put_u8(127);
        buf.put_u64(len as u64);
    }
}

/// One unmasked text frame holding the parts, in order.
pub fn text_frame(parts: &[&[u8]]) -> Bytes {
    let len: usize = parts.iter().map(|p| p.len()).sum();
    let mut buf = BytesMut::with_capacity(len + 10);
    header(&mut buf, OP_TEXT, len);
    for p in parts {
        buf.put_slice(p);
    }
    buf.freeze()
}

/// One unmasked control frame (pong, close).
pub fn control_frame(opcode: u8, payload: &[u8]) -> Bytes {
    let mut buf = BytesMut::with_capacity(payload.len() + 2);
    header(&mut buf, opcode, payload.len());
    buf.put_slice(payload);
    buf.freeze()
}

/// What a client sent.
pub enum Incoming {
    Text(String),
    Ping(Vec<u8>),
    Close,
}

/// Reads masked client frames, joining fragmented messages.
pub struct Reader {
    buf: BytesMut,
    /// The message being assembled from fragments, with its opcode.
    partial: Option<(u8, Vec<u8>)>,
}

impl Reader {
    pub fn new(leftover: BytesMut) -> Self {
        Self {
            buf: leftover,
            partial: None,
        }
    }

    /// The next text message, ping or close; binary messages and pongs are skipped.
    pub async fn next(&mut self, stream: &mut OwnedReadHalf) -> Result<Incoming> {
        loop {
            while let Some((fin, opcode, payload)) = self.frame()? {
                if let Some(msg) = self.message(fin, opcode, payload)? {
                    return Ok(msg);
                }
            }
            if self.buf.capacity() - self.buf.len() < 1024 {
                self.buf.reserve(4096);
            }
            let n = stream.read_buf(&mut self.buf).await?;
            ensure!(n > 0, "closed");
        }
    }

    fn message(&mut self, fin: bool, opcode: u8, payload: Vec<u8>) -> Result<Option<Incoming>> {
        let (opcode, payload) = match opcode {
            OP_PING => return Ok(Some(Incoming::Ping(payload))),
            OP_CLOSE => return Ok(Some(Incoming::Close)),
            OP_PONG => return Ok(None),
            OP_CONTINUATION => {
                let Some((op, mut data)) = self.partial.take() else {
                    bail!("continuation without a first fragment");
                };
                data.extend_from_slice(&payload);
                ensure!(data.len() <= MAX_MESSAGE_BYTES, "message too large");
                if !fin {
                    self.partial = Some((op, data));
                    return Ok(None);
                }
                (op, data)
            }
            OP_TEXT | OP_BINARY if !fin => {
                self.partial = Some((opcode, payload));
                return Ok(None);
            }
            OP_TEXT | OP_BINARY => (opcode, payload),
            other => bail!("unknown opcode {other:#x}"),
        };
        if opcode == OP_TEXT {
            return Ok(Some(Incoming::Text(
                String::from_utf8(payload).context("text frame is not UTF-8")?,
            )));
        }
        Ok(None)
    }

    /// Takes one complete frame off the buffer, unmasked: `(fin, opcode, payload)`.
    fn frame(&mut self) -> Result<Option<(bool, u8, Vec<u8>)>> {
        let b = &self.buf[..];
        if b.len() < 2 {
            return Ok(None);
        }
        let (fin, opcode, masked) = (b[0] & 0x80 != 0, b[0] & 0x0F, b[1] & 0x80 != 0);
        ensure!(masked, "client frame not masked");
        let (len, mut at) = match b[1] & 0x7F {
            126 if b.len() >= 4 => (usize::from(u16::from_be_bytes([b[2], b[3]])), 4),
            127 if b.len() >= 10 => {
                let mut n = [0u8; 8];
                n.copy_from_slice(&b[2..10]);
                let len = usize::try_from(u64::from_be_bytes(n)).unwrap_or(usize::MAX);
                (len, 10)
            }
            126 | 127 => return Ok(None),
            n => (usize::from(n), 2),
        };
        ensure!(len <= MAX_MESSAGE_BYTES, "frame too large");
        if b.len() < at + 4 + len {
            return Ok(None);
        }
        let mask = [b[at], b[at + 1], b[at + 2], b[at + 3]];
        at += 4;
        let mut frame = self.buf.split_to(at + len);
        let payload = &mut frame[at..];
        for (i, byte) in payload.iter_mut().enumerate() {
            *byte ^= mask[i % 4];
        }
        Ok(Some((fin, opcode, payload.to_vec())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client frame as a browser sends it: masked with `mask`.
    fn client_frame(fin: bool, opcode: u8, payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
        let mut buf = BytesMut::new();
        header(&mut buf, opcode, payload.len());
        let mut v = buf.to_vec();
        if !fin {
            v[0] &= 0x7F;
        }
        v[1] |= 0x80;
        v.extend_from_slice(&mask);
        v.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        v
    }

    fn read_all(bytes: &[u8]) -> Result<Vec<(bool, u8, Vec<u8>)>> {
        let mut r = Reader::new(BytesMut::from(bytes));
        let mut out = Vec::new();
        while let Some(f) = r.frame()? {
            out.push(f);
        }
        Ok(out)
    }

    #[test]
    fn masked_frames_of_every_length_form_unmask() {
        for len in [0, 5, 125, 126, 300, 70_000] {
            let payload: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let frames = read_all(&client_frame(true, OP_TEXT, &payload, [1, 2, 3, 4])).unwrap();
            assert_eq!(frames, vec![(true, OP_TEXT, payload)], "length {len}");
        }
    }

    #[test]
    fn a_frame_split_across_reads_waits_for_the_rest() {
        let whole = client_frame(true, OP_TEXT, b"p 1 room hello", [9, 8, 7, 6]);
        let mut r = Reader::new(BytesMut::from(&whole[..5]));
        assert!(r.frame().unwrap().is_none());
        r.buf.extend_from_slice(&whole[5..]);
        assert_eq!(r.frame().unwrap().unwrap().2, b"p 1 room hello");
    }

    #[test]
    fn fragments_join_into_one_text_message() {
        let mut r = Reader::new(BytesMut::new());
        assert!(
            r.message(false, OP_TEXT, b"p 1 ".to_vec())
                .unwrap()
                .is_none()
        );
        let Some(Incoming::Text(t)) = r.message(true, OP_CONTINUATION, b"r x".to_vec()).unwrap()
        else {
            panic!("no message");
        };
        assert_eq!(t, "p 1 r x");
    }

    #[test]
    fn unmasked_client_frames_and_oversized_frames_are_refused() {
        let mut unmasked = client_frame(true, OP_TEXT, b"x", [0; 4]);
        unmasked[1] &= 0x7F;
        assert!(read_all(&unmasked).is_err());
        let mut huge = BytesMut::new();
        header(&mut huge, OP_TEXT, MAX_MESSAGE_BYTES + 1);
        huge[1] |= 0x80;
        assert!(read_all(&huge).is_err());
    }

    #[test]
    fn server_frames_carry_the_length_in_the_right_form() {
        assert_eq!(&text_frame(&[b"a ", b"7"])[..], b"\x81\x03a 7");
        let long = text_frame(&[&[b'x'; 200]]);
        assert_eq!(&long[..4], &[0x81, 126, 0, 200]);
        assert_eq!(long.len(), 204);
    }
}
