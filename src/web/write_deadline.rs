//! A connection whose writes must make progress: [`WriteDeadline`] fails a write (or flush)
//! that has waited for the socket longer than its limit, so the server drops a connection
//! whose peer stopped reading instead of holding it (and its buffers) forever.
//!
//! The clock starts when a write first finds the socket full and restarts at every write that
//! goes through, so a slow reader that keeps reading is never cut, only one that stopped. An
//! event stream's client that stops reading gets its `overflow` event queued first (after
//! [`crate::web::stream::STALL`]); this bounds the wait for that final write.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

/// An IO whose writes fail with `TimedOut` after waiting `limit` without progress (`None`:
/// no limit).
pub struct WriteDeadline<IO> {
    io: IO,
    limit: Option<Duration>,
    /// Set while a write waits for the socket.
    waiting: Option<Pin<Box<Sleep>>>,
}

impl<IO> WriteDeadline<IO> {
    /// `io` with writes bounded by `limit`.
    pub fn new(io: IO, limit: Option<Duration>) -> WriteDeadline<IO> {
        WriteDeadline {
            io,
            limit,
            waiting: None,
        }
    }

    /// Passes on a write's outcome: progress restarts the clock; waiting past the limit is an
    /// error.
    fn check<T>(&mut self, cx: &mut Context<'_>, poll: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        if poll.is_ready() {
            self.waiting = None;
            return poll;
        }
        let Some(limit) = self.limit else {
            return poll;
        };
        let waiting = self
            .waiting
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        match waiting.as_mut().poll(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("the peer read nothing for {limit:?}"),
            ))),
        }
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for WriteDeadline<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for WriteDeadline<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.io).poll_write(cx, buf);
        this.check(cx, poll)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        this.check(cx, poll)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.io).poll_flush(cx);
        this.check(cx, poll)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.io).poll_shutdown(cx);
        this.check(cx, poll)
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// A pipe holding 64 bytes: the writer fails once the reader stopped for the limit, and
    /// not while the reader keeps reading, however long the whole takes.
    #[tokio::test(flavor = "current_thread")]
    async fn a_write_fails_only_when_the_peer_stopped_reading() {
        let limit = Duration::from_millis(500);
        let (near, mut far) = tokio::io::duplex(64);
        let mut writer = WriteDeadline::new(near, Some(limit));
        let reader = tokio::spawn(async move {
            let mut buf = [0; 16];
            let mut total = 0;
            // Reads 512 bytes slowly (16 bytes every 20 ms, 0.64 s in all), then stops.
            while total < 512 {
                tokio::time::sleep(Duration::from_millis(20)).await;
                total += far.read(&mut buf).await.unwrap();
            }
            far
        });
        writer.write_all(&[7; 512]).await.expect("a slow reader");
        let _far = reader.await.unwrap();
        let started = tokio::time::Instant::now();
        let error = writer.write_all(&[7; 1024]).await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        assert!(started.elapsed() >= limit);

        let (near, _far) = tokio::io::duplex(64);
        let mut unbounded = WriteDeadline::new(near, None);
        let waited = tokio::time::timeout(limit * 2, unbounded.write_all(&[7; 1024])).await;
        assert!(waited.is_err(), "no limit: still waiting");
    }
}
