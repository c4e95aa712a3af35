//! Holding up under idle and slow clients: a connection budget per listener and per client
//! address, an idle timer that runs from accept (no bytes either way for `idle` closes the
//! connection, before the first request too), and a deadline for each whole request, body
//! included. A client that hogs connections loses them; everyone else keeps being served.
use axum::extract::Request;
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};

/// Connection limits (`[limits]` in the configuration).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Open connections on the HTTPS listener.
    pub max_connections: usize,
    /// Open connections on the plain-HTTP listener (its own budget: filling it leaves HTTPS alone).
    pub max_http_connections: usize,
    /// Open connections from one client address, on each listener.
    pub per_ip_connections: usize,
    /// No byte read or written for this long closes a connection (from accept on).
    pub idle: Duration,
    /// A request (headers, body and answer) must finish within this.
    pub request: Duration,
    /// The TLS handshake must finish within this.
    pub handshake: Duration,
    /// Request headers must arrive within this once they start.
    pub header: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_connections: 4096,
            max_http_connections: 1024,
            per_ip_connections: 256,
            idle: Duration::from_secs(30),
            request: Duration::from_secs(60),
            handshake: Duration::from_secs(10),
            header: Duration::from_secs(10),
        }
    }
}

/// What counts as one client: an IPv4 address, or an IPv6 /64 (one site or one machine's
/// privacy addresses; counting each /128 would let one network take every slot).
pub fn address_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

/// One listener's connection budget.
#[derive(Clone)]
pub struct Budget {
    total: Arc<Semaphore>,
    per_ip: usize,
    open: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

/// Why a connection was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Full {
    Listener,
    Address,
}

/// An admitted connection; dropping it gives the slot back.
pub struct Slot {
    _permit: OwnedSemaphorePermit,
    ip: IpAddr,
    open: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = open.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

impl Budget {
    pub fn new(total: usize, per_ip: usize) -> Budget {
        Budget { total: Arc::new(Semaphore::new(total)), per_ip, open: Arc::default() }
    }

    pub fn admit(&self, ip: IpAddr) -> Result<Slot, Full> {
        let ip = address_key(ip);
        // The listener's permit first: a refused connection leaves no entry behind.
        let permit = self.total.clone().try_acquire_owned().map_err(|_| Full::Listener)?;
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let n = open.entry(ip).or_insert(0);
        if *n >= self.per_ip {
            return Err(Full::Address);
        }
        *n += 1;
        drop(open);
        Ok(Slot { _permit: permit, ip, open: self.open.clone() })
    }
}

/// Requests being handled on one connection. While one is, the connection is not idle: hyper
/// keeps reading the socket during a handler (to notice a client that leaves), and a slow
/// handler must not look like a silent client.
#[derive(Clone, Default)]
pub struct InFlight(Arc<AtomicUsize>);

/// Held while a request is handled.
pub struct Handling(Arc<AtomicUsize>);

impl InFlight {
    pub fn enter(&self) -> Handling {
        self.0.fetch_add(1, Ordering::AcqRel);
        Handling(self.0.clone())
    }

    fn busy(&self) -> bool {
        self.0.load(Ordering::Acquire) > 0
    }
}

impl Drop for Handling {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// An I/O stream that fails with `TimedOut` once nothing has moved either way for `idle` while
/// no request is being handled.
pub struct IdleIo<T> {
    inner: T,
    idle: Duration,
    deadline: Pin<Box<Sleep>>,
    in_flight: InFlight,
}

impl<T> IdleIo<T> {
    pub fn new(inner: T, idle: Duration, in_flight: InFlight) -> IdleIo<T> {
        IdleIo { inner, idle, deadline: Box::pin(tokio::time::sleep(idle)), in_flight }
    }

    pub fn get_ref(&self) -> &T {
        &self.inner
    }

    fn progressed(&mut self) {
        let idle = self.idle;
        self.deadline.as_mut().reset(Instant::now() + idle);
    }

    /// Called when the inner stream is waiting: fails once the deadline passed.
    fn check(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Error> {
        if self.in_flight.busy() {
            self.progressed();
        }
        match self.deadline.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(std::io::Error::new(std::io::ErrorKind::TimedOut, "connection idle")),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for IdleIo<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    self.progressed();
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => self.check(cx).map(Err),
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for IdleIo<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        match Pin::new(&mut self.inner).poll_write(cx, buf) {
            Poll::Ready(Ok(n)) => {
                if n > 0 {
                    self.progressed();
                }
                Poll::Ready(Ok(n))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            // A client that stops reading its answers is as idle as one that stops sending.
            Poll::Pending => self.check(cx).map(Err),
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match Pin::new(&mut self.inner).poll_flush(cx) {
            Poll::Pending => self.check(cx).map(Err),
            other => other,
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Axum middleware: a request that has not been answered within `limit` (a body dribbled
/// byte by byte, say) gets 408 and its connection is closed. The handler runs in its own task:
/// work the RA has begun (a signature, an approval) finishes even when the client is gone.
pub async fn request_deadline(limit: Duration, req: Request, next: Next) -> Response {
    // The body stops a moment after the deadline: the 408 goes out first, then the handler's
    // read fails and it lets go of the connection.
    let (parts, body) = req.into_parts();
    let body = DeadlineBody { inner: body, deadline: Box::pin(tokio::time::sleep(limit + BODY_GRACE)) };
    let req = Request::from_parts(parts, axum::body::Body::new(body));
    let handler = tokio::spawn(next.run(req));
    match tokio::time::timeout(limit, handler).await {
        Ok(Ok(response)) => response,
        Ok(Err(e)) => {
            tracing::error!(%e, "request handler failed");
            (StatusCode::INTERNAL_SERVER_ERROR, "internal error\n").into_response()
        }
        Err(_) => {
            let mut r = (StatusCode::REQUEST_TIMEOUT, "the request took too long\n").into_response();
            r.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
            r
        }
    }
}

const BODY_GRACE: Duration = Duration::from_millis(100);

/// A request body that fails once its deadline has passed.
struct DeadlineBody {
    inner: axum::body::Body,
    deadline: Pin<Box<Sleep>>,
}

impl hyper::body::Body for DeadlineBody {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        if self.deadline.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Some(Err(axum::Error::new("the request body took too long"))));
        }
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budgets_count_per_address_and_give_slots_back() {
        let b = Budget::new(3, 2);
        let a: IpAddr = "192.0.2.1".parse().unwrap_or(IpAddr::from([0, 0, 0, 0]));
        let c: IpAddr = "192.0.2.2".parse().unwrap_or(IpAddr::from([0, 0, 0, 0]));
        let s1 = b.admit(a);
        let s2 = b.admit(a);
        assert!(s1.is_ok() && s2.is_ok());
        assert_eq!(b.admit(a).err(), Some(Full::Address));
        let s3 = b.admit(c);
        assert!(s3.is_ok());
        assert_eq!(b.admit(c).err(), Some(Full::Listener), "the listener's total");
        drop(s1);
        assert!(b.admit(c).is_ok(), "a slot came back");
        drop((s2, s3));
        assert!(b.open.lock().map(|m| m.get(&a).is_none()).unwrap_or(false), "no entry left for a gone address");
    }

    #[test]
    fn ipv6_clients_count_per_64() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap_or(IpAddr::from([0, 0, 0, 0]));
        let b: IpAddr = "2001:db8:1:2:bbbb::7".parse().unwrap_or(IpAddr::from([0, 0, 0, 0]));
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap_or(IpAddr::from([0, 0, 0, 0]));
        assert_eq!(address_key(a), address_key(b));
        assert_ne!(address_key(a), address_key(c));
        let mapped: IpAddr = "::ffff:192.0.2.1".parse().unwrap_or(IpAddr::from([0, 0, 0, 0]));
        assert_eq!(address_key(mapped), IpAddr::from([192, 0, 2, 1]));
    }
}
