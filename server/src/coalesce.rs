//! Coalesced output: the messages that answer one round of a client's messages leave in one
//! write, as PostgreSQL's own server sends them (it flushes when it is about to wait for the
//! client). pgwire flushes after many single messages (BindComplete, CommandComplete,
//! ReadyForQuery): four writes, and so four wake-ups of the client, for one prepared lookup.
//! While the connection is busy with a client's messages its output is held here; the
//! connection loop lets it go when it is about to wait for the client (`socket.rs`), and it
//! goes as soon as more than `HOLD_BYTES` are held, so a long result still streams.
//!
//! Never: reorder, drop or change a byte; hold output while the connection waits for input.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The most output held back: more goes to the stream below at once.
pub(crate) const HOLD_BYTES: usize = 64 * 1024;

pub(crate) struct Coalesced<S> {
    inner: S,
    /// Output not yet written below; `buf[at..]` is what remains of it.
    buf: Vec<u8>,
    at: usize,
    /// Flushes are deferred (the connection is busy with the client's messages).
    held: bool,
}

impl<S> Coalesced<S> {
    pub fn new(inner: S) -> Coalesced<S> {
        Coalesced { inner, buf: Vec::new(), at: 0, held: false }
    }

    /// From now on, a flush only holds the output (until `release`).
    pub fn hold(&mut self) {
        self.held = true;
    }

    /// The next flush writes all output held.
    pub fn release(&mut self) {
        self.held = false;
    }

    /// The stream below, as far as it has been written.
    #[cfg(test)]
    fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }
}

impl<S: AsyncWrite + Unpin> Coalesced<S> {
    /// Writes all held output to the stream below.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.at < self.buf.len() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.buf[self.at..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.at += n;
        }
        self.buf.clear();
        self.at = 0;
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Coalesced<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Coalesced<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.buf.len() - this.at + data.len() > HOLD_BYTES {
            ready!(this.poll_drain(cx))?;
            if data.len() > HOLD_BYTES {
                return Pin::new(&mut this.inner).poll_write(cx, data);
            }
        }
        this.buf.extend_from_slice(data);
        Poll::Ready(Ok(data.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.held {
            return Poll::Ready(Ok(()));
        }
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[tokio::test]
    async fn held_output_leaves_in_order_on_release_when_full_and_at_shutdown() {
        let mut out = Coalesced::new(Vec::new());
        out.write_all(b"direct").await.unwrap();
        out.flush().await.unwrap();
        assert_eq!(out.get_mut().as_slice(), b"direct", "not held: a flush writes");
        out.hold();
        out.write_all(b"-a").await.unwrap();
        out.flush().await.unwrap();
        out.write_all(b"-b").await.unwrap();
        out.flush().await.unwrap();
        assert_eq!(out.get_mut().as_slice(), b"direct", "held: flushes wait");
        out.release();
        out.flush().await.unwrap();
        assert_eq!(out.get_mut().as_slice(), b"direct-a-b");

        // Past the limit, held output goes at once, and in order.
        let mut out = Coalesced::new(Vec::new());
        out.hold();
        let big: Vec<u8> = (0..HOLD_BYTES + 10).map(|i| (i % 251) as u8).collect();
        out.write_all(b"head").await.unwrap();
        out.write_all(&big).await.unwrap();
        let mut expected = b"head".to_vec();
        expected.extend_from_slice(&big);
        assert_eq!(out.get_mut().as_slice(), expected.as_slice());
        out.write_all(b"tail").await.unwrap();
        out.flush().await.unwrap();
        assert_eq!(out.get_mut().len(), expected.len(), "the tail is held");
        out.shutdown().await.unwrap();
        expected.extend_from_slice(b"tail");
        assert_eq!(out.get_mut().as_slice(), expected.as_slice(), "shutdown writes what is held");
    }
}
