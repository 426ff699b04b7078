//! A minimal HTTP/2 (prior knowledge, cleartext) client that writes header fields byte for
//! byte: HPACK literals without Huffman coding or indexing, so that a test can send what no
//! HTTP library would (raw non-ASCII bytes in `:path`, trailing HEADERS after the body).
//!
//! One request per connection, on stream 1. It reads frames until the response HEADERS of
//! stream 1 and reports the `:status`, or that the peer refused (GOAWAY, RST_STREAM, closed).
//! Use with `#[path = "support/h2_raw.rs"] mod h2_raw;`.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const TIMEOUT: Duration = Duration::from_secs(10);

const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const PING: u8 = 0x6;
const GOAWAY: u8 = 0x7;
const END_STREAM: u8 = 0x1;
const ACK: u8 = 0x1;
const END_HEADERS: u8 = 0x4;

/// What came back for the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum H2Outcome {
    /// Response HEADERS with this `:status`.
    Status(u16),
    /// GOAWAY, RST_STREAM, or the connection closed before a response: not served.
    Refused(String),
}

/// One request: `headers` are sent in order (pseudo-headers first, as given), then `body` as
/// one DATA frame, then `trailers` as a second HEADERS frame that ends the stream.
pub fn request(
    addr: SocketAddr,
    headers: &[(&[u8], &[u8])],
    body: Option<&[u8]>,
    trailers: &[(&[u8], &[u8])],
) -> std::io::Result<H2Outcome> {
    let mut s = TcpStream::connect_timeout(&addr, TIMEOUT)?;
    s.set_read_timeout(Some(TIMEOUT))?;
    s.set_write_timeout(Some(TIMEOUT))?;
    let mut out = PREFACE.to_vec();
    frame(&mut out, SETTINGS, 0, 0, &[]);
    let ends_with_headers = body.is_none() && trailers.is_empty();
    frame(
        &mut out,
        HEADERS,
        END_HEADERS | if ends_with_headers { END_STREAM } else { 0 },
        1,
        &hpack(headers),
    );
    if let Some(b) = body {
        frame(
            &mut out,
            DATA,
            if trailers.is_empty() { END_STREAM } else { 0 },
            1,
            b,
        );
    }
    if !trailers.is_empty() {
        frame(
            &mut out,
            HEADERS,
            END_HEADERS | END_STREAM,
            1,
            &hpack(trailers),
        );
    }
    if let Err(e) = s.write_all(&out) {
        return Ok(H2Outcome::Refused(format!("write failed: {e}")));
    }
    loop {
        let mut head = [0u8; 9];
        if let Err(e) = s.read_exact(&mut head) {
            return Ok(H2Outcome::Refused(format!("connection ended: {e}")));
        }
        let len = usize::from(head[0]) << 16 | usize::from(head[1]) << 8 | usize::from(head[2]);
        let (kind, flags) = (head[3], head[4]);
        let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
        let mut payload = vec![0u8; len];
        if let Err(e) = s.read_exact(&mut payload) {
            return Ok(H2Outcome::Refused(format!("connection ended: {e}")));
        }
        match kind {
            SETTINGS if flags & ACK == 0 => {
                let mut ack = Vec::new();
                frame(&mut ack, SETTINGS, ACK, 0, &[]);
                let _ = s.write_all(&ack);
            }
            PING if flags & ACK == 0 => {
                let mut pong = Vec::new();
                frame(&mut pong, PING, ACK, 0, &payload);
                let _ = s.write_all(&pong);
            }
            GOAWAY => return Ok(H2Outcome::Refused(format!("GOAWAY {payload:02x?}"))),
            RST_STREAM if stream == 1 => {
                return Ok(H2Outcome::Refused(format!("RST_STREAM {payload:02x?}")))
            }
            HEADERS if stream == 1 => {
                return status(&payload).map(H2Outcome::Status).ok_or_else(|| {
                    std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        format!("no :status in {payload:02x?}"),
                    )
                })
            }
            _ => {}
        }
    }
}

fn frame(out: &mut Vec<u8>, kind: u8, flags: u8, stream: u32, payload: &[u8]) {
    let len = payload.len();
    out.extend_from_slice(&[(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags]);
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
}

/// HPACK "literal header field without indexing, new name", no Huffman coding.
fn hpack(fields: &[(&[u8], &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, value) in fields {
        out.push(0x00);
        int7(&mut out, name.len());
        out.extend_from_slice(name);
        int7(&mut out, value.len());
        out.extend_from_slice(value);
    }
    out
}

/// An HPACK integer with a 7-bit prefix (string lengths, Huffman bit clear).
fn int7(out: &mut Vec<u8>, mut n: usize) {
    if n < 0x7f {
        out.push(n as u8);
        return;
    }
    out.push(0x7f);
    n -= 0x7f;
    while n >= 0x80 {
        out.push((n % 0x80) as u8 | 0x80);
        n /= 0x80;
    }
    out.push(n as u8);
}

/// The `:status` of a response header block, as HAProxy encodes it: first field, either an
/// indexed static-table entry (8..=14) or a literal with name index 8 and a plain value.
fn status(block: &[u8]) -> Option<u16> {
    let mut i = 0;
    // Dynamic table size updates (001xxxxx) may come first.
    while block.get(i)? & 0xe0 == 0x20 {
        i += 1;
    }
    let b = *block.get(i)?;
    if b & 0x80 != 0 {
        return match b & 0x7f {
            8 => Some(200),
            9 => Some(204),
            10 => Some(206),
            11 => Some(304),
            12 => Some(400),
            13 => Some(404),
            14 => Some(500),
            _ => None,
        };
    }
    let name_index = if b & 0x40 != 0 { b & 0x3f } else { b & 0x0f };
    if name_index != 8 {
        return None;
    }
    let len_byte = *block.get(i + 1)?;
    if len_byte & 0x80 != 0 {
        return None; // Huffman-coded: HAProxy does not do that for :status.
    }
    let len = usize::from(len_byte);
    std::str::from_utf8(block.get(i + 2..i + 2 + len)?)
        .ok()?
        .parse()
        .ok()
}
