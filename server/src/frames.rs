//! The size limit on client messages, enforced as their bytes arrive. pgwire accepts a Query,
//! Parse, Bind or CopyData message of up to 1 GiB and buffers it whole before anyone sees it, so
//! the limit must sit under the codec: this stream follows the message framing (untyped startup
//! packets, then a type byte and a length per message) and fails the read as soon as a length
//! over the limit is announced, before its body is buffered. It never changes a byte.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The largest message a client may send after startup: a statement of the largest size
/// (`tally_query::MAX_STATEMENT_BYTES`) with room for a Parse's or Bind's other fields.
pub(crate) const MAX_MESSAGE_BYTES: usize = tally_query::MAX_STATEMENT_BYTES + (1 << 20);
/// The largest startup packet (SSL/GSS requests, the startup message), as pgwire's own limit.
const MAX_STARTUP_BYTES: usize = 10_000;
/// Request codes of untyped packets after which more untyped packets follow.
const SSL_REQUEST: u32 = 80_877_103;
const GSS_REQUEST: u32 = 80_877_104;

/// A message announced a length over the limit; the connection cannot continue.
#[derive(Debug, thiserror::Error)]
#[error("a message of {bytes} bytes exceeds the limit of {max} bytes")]
pub(crate) struct TooLarge {
    pub bytes: usize,
    pub max: usize,
}

#[derive(Debug, Clone, Copy)]
enum Phase {
    /// Collecting the header of the next message: 8 bytes (length, code) before the startup
    /// message, 5 (type, length) after it.
    Header { have: usize },
    /// Inside a message's body.
    Body { remaining: usize, startup_done_after: bool },
}

pub(crate) struct Limited<S> {
    inner: S,
    phase: Phase,
    header: [u8; 8],
    /// The startup message was seen: messages are typed from here on.
    typed: bool,
    max: usize,
}

impl<S> Limited<S> {
    pub fn new(inner: S) -> Limited<S> {
        Limited {
            inner,
            phase: Phase::Header { have: 0 },
            header: [0; 8],
            typed: false,
            max: MAX_MESSAGE_BYTES,
        }
    }

    /// Follows bytes already read from the stream below (by TLS negotiation) so that the
    /// framing continues where they end.
    pub fn seen(&mut self, bytes: &[u8]) -> Result<(), TooLarge> {
        let mut at = 0;
        while at < bytes.len() {
            at += self.advance(&bytes[at..])?;
        }
        Ok(())
    }

    fn header_len(&self) -> usize {
        if self.typed {
            5
        } else {
            8
        }
    }

    /// Consumes part of `bytes` (at least one byte) and moves the framing on.
    fn advance(&mut self, bytes: &[u8]) -> Result<usize, TooLarge> {
        match self.phase {
            Phase::Body { remaining, startup_done_after } => {
                let n = remaining.min(bytes.len());
                self.phase = Phase::Body { remaining: remaining - n, startup_done_after };
                self.end_of_body();
                Ok(n)
            }
            Phase::Header { have } => {
                let want = self.header_len();
                let n = (want - have).min(bytes.len());
                self.header[have..have + n].copy_from_slice(&bytes[..n]);
                self.phase = if have + n < want {
                    Phase::Header { have: have + n }
                } else {
                    self.message_started()?
                };
                self.end_of_body();
                Ok(n)
            }
        }
    }

    /// A body with nothing left ends its message (an empty body ends it at once).
    fn end_of_body(&mut self) {
        if let Phase::Body { remaining: 0, startup_done_after } = self.phase {
            self.typed |= startup_done_after;
            self.phase = Phase::Header { have: 0 };
        }
    }

    /// A whole header is in `header`: checks the announced length and starts the body.
    fn message_started(&self) -> Result<Phase, TooLarge> {
        let u32_at = |at: usize| {
            u32::from_be_bytes(self.header[at..at + 4].try_into().expect("4 bytes")) as usize
        };
        let (len, max, counted, startup) = if self.typed {
            (u32_at(1), self.max, 4, false)
        } else {
            let code = u32_at(4) as u32;
            (u32_at(0), MAX_STARTUP_BYTES, 8, code != SSL_REQUEST && code != GSS_REQUEST)
        };
        if len > max {
            return Err(TooLarge { bytes: len, max });
        }
        // A length below the header's own is invalid; pgwire's codec reports it.
        Ok(Phase::Body { remaining: len.saturating_sub(counted), startup_done_after: startup })
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Limited<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let new = &buf.filled()[before..];
                match this.seen(new) {
                    Ok(()) => Poll::Ready(Ok(())),
                    Err(e) => Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, e))),
                }
            }
            other => other,
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Limited<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// The limit a failed read reports, if that is why it failed.
pub(crate) fn too_large(e: &io::Error) -> Option<&TooLarge> {
    e.get_ref().and_then(|inner| inner.downcast_ref::<TooLarge>())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn startup() -> Vec<u8> {
        let body = b"\0\x03\0\0user\0tally\0\0";
        let mut m = ((body.len() + 4) as u32).to_be_bytes().to_vec();
        m.extend_from_slice(body);
        m
    }

    fn typed(kind: u8, len: u32) -> Vec<u8> {
        let mut m = vec![kind];
        m.extend_from_slice(&len.to_be_bytes());
        m
    }

    #[test]
    fn follows_the_framing_in_any_split_and_refuses_an_oversized_length() {
        let mut stream = startup();
        let query = b"SELECT 1\0";
        stream.extend(typed(b'Q', 4 + query.len() as u32));
        stream.extend_from_slice(query);
        stream.extend(typed(b'Q', (MAX_MESSAGE_BYTES + 1) as u32));
        for split in 1..stream.len() {
            let mut l = Limited::new(());
            let (a, b) = stream.split_at(split);
            let result = l.seen(a).and_then(|()| l.seen(b));
            let e = result.expect_err("the oversized message is refused");
            assert_eq!((e.bytes, e.max), (MAX_MESSAGE_BYTES + 1, MAX_MESSAGE_BYTES));
        }
        let mut ssl = 8u32.to_be_bytes().to_vec();
        ssl.extend_from_slice(&SSL_REQUEST.to_be_bytes());
        let mut l = Limited::new(());
        l.seen(&ssl).unwrap();
        assert!(!l.typed, "a startup packet still follows an SSL request");
        l.seen(&startup()).unwrap();
        assert!(l.typed);
        let mut huge_startup = 1_000_000u32.to_be_bytes().to_vec();
        huge_startup.extend_from_slice(&196608u32.to_be_bytes());
        assert!(Limited::new(()).seen(&huge_startup).is_err());
    }
}
