//! The HTTP server: hyper's HTTP/1 connection handling under the engine's
//! bounds. A connection is accepted only while fewer than `MAX_CONNECTIONS`
//! are open (the rest wait in the kernel's backlog, costing no descriptor
//! of ours); request headers must arrive within `HEADER_READ_TIMEOUT_MS`,
//! which also closes keep-alive connections idle that long. Per-request
//! bounds (in-flight cap, deadline, sizes) are the `bounded` middleware's.
//!
//! A request hyper cannot parse (a broken request line or header, framing
//! it cannot read, a head beyond its buffer) never reaches the router:
//! hyper answers it itself with a bare status. [`Enveloped`] rewrites that
//! one kind of answer with the error envelope and a request id, so every
//! response has them.

use super::AppState;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use std::future::Future;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// Serves on an already bound listener until `shutdown` completes, then
/// lets the requests in flight finish.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let limits = state.config.limits.clone();
    let app = super::router(state.clone());
    let open = Arc::new(Semaphore::new(limits.max_connections));
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .keep_alive(true);
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            () = &mut shutdown => break,
            permit = open.clone().acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let (stream, _peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of descriptors or the like: not fatal, wait a beat.
                    tracing::warn!(error = %e, "accept failed");
                    state.metrics.incr("http.accept_errors");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(app.clone());
        let connection = http.serve_connection(TokioIo::new(Enveloped::new(stream)), service);
        let watched = graceful.watch(connection);
        tokio::spawn(async move {
            // Errors here are the client's (reset, header timeout, bad
            // framing answered by hyper): nothing of ours to report.
            let _ = watched.await;
            drop(permit);
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

/// A connection whose writes pass through untouched, except hyper's own
/// answer to a request it could not parse: recognisable as the only
/// response without our `x-request-id` (the middleware puts one on every
/// response the router makes), with no body.
struct Enveloped<T> {
    inner: T,
    /// The rewritten answer still to be written, and how much of it was.
    pending: Vec<u8>,
    sent: usize,
}

impl<T> Enveloped<T> {
    fn new(inner: T) -> Self {
        Self {
            inner,
            pending: Vec::new(),
            sent: 0,
        }
    }
}

impl<T: tokio::io::AsyncWrite + Unpin> Enveloped<T> {
    fn drain(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<std::io::Result<()>> {
        use std::task::Poll;
        while self.sent < self.pending.len() {
            let n = match std::pin::Pin::new(&mut self.inner)
                .poll_write(cx, &self.pending[self.sent..])
            {
                Poll::Ready(Ok(n)) => n,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            };
            if n == 0 {
                return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()));
            }
            self.sent += n;
        }
        self.pending.clear();
        self.sent = 0;
        Poll::Ready(Ok(()))
    }
}

/// The envelope for hyper's bare answer in `buf`, if that is what it is.
fn envelope_for_bare_answer(buf: &[u8]) -> Option<Vec<u8>> {
    if !buf.starts_with(b"HTTP/1.1 4") {
        return None;
    }
    let head_end = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
    if head_end + 4 != buf.len() {
        return None; // it has a body: not hyper's bare answer
    }
    let original = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let head = original.to_ascii_lowercase();
    if head.contains("\r\nx-request-id:") || !head.contains("\r\ncontent-length: 0") {
        return None;
    }
    let status_line = head.lines().next()?.to_string();
    let code: u16 = status_line.get(9..12)?.parse().ok()?;
    let status = axum::http::StatusCode::from_u16(code).ok()?;
    let message = match code {
        431 => "the request headers are too large to read",
        414 => "the request target is too long to read",
        _ => "the request could not be read: a malformed request line, header or framing",
    };
    let error = super::ApiError::from_framework(status, message);
    let request_id = uuid::Uuid::new_v4().to_string();
    let body = serde_json::json!({"error": {
        "code": error.code, "message": error.message, "requestId": request_id,
    }})
    .to_string();
    tracing::warn!(r#type = "handled", requestId = %request_id, status = code, code = error.code,
        "a request the HTTP parser could not read was refused");
    let date = original
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("date:"))
        .map(|l| format!("{l}\r\n"))
        .unwrap_or_default();
    Some(
        format!(
            "HTTP/1.1 {} {}\r\ncontent-type: application/json\r\nx-request-id: {request_id}\r\n\
             content-length: {}\r\nconnection: close\r\n{date}\r\n{body}",
            status.as_u16(),
            status.canonical_reason().unwrap_or(""),
            body.len()
        )
        .into_bytes(),
    )
}

impl<T: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for Enveloped<T> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        use std::task::Poll;
        match self.drain(cx) {
            Poll::Ready(Ok(())) => {}
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            Poll::Pending => return Poll::Pending,
        }
        if let Some(rewritten) = envelope_for_bare_answer(buf) {
            self.pending = rewritten;
            self.sent = 0;
            // Taken whole; written by this call if it can, else by flush.
            if let Poll::Ready(Err(e)) = self.drain(cx) {
                return Poll::Ready(Err(e));
            }
            return Poll::Ready(Ok(buf.len()));
        }
        std::pin::Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::ready!(self.drain(cx))?;
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::ready!(self.drain(cx))?;
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    // hyper then writes a response head as one buffer, which is what the
    // recognition above needs.
    fn is_write_vectored(&self) -> bool {
        false
    }
}

impl<T: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for Enveloped<T> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

#[cfg(test)]
mod tests {
    use super::envelope_for_bare_answer;

    #[test]
    fn only_hyper_bare_answers_are_rewritten() {
        let bare = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\ndate: Tue, 01 Dec 2026 15:00:00 GMT\r\n\r\n";
        let out = String::from_utf8(envelope_for_bare_answer(bare).unwrap()).unwrap();
        assert!(out.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{out}");
        assert!(out.contains("x-request-id: ") && out.contains("\"code\":\"VALIDATION_ERROR\""));
        let (head, body) = out.split_once("\r\n\r\n").unwrap();
        assert!(
            head.contains(&format!("content-length: {}", body.len())),
            "{out}"
        );
        let ours = b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nx-request-id: abc\r\n\r\n";
        assert!(envelope_for_bare_answer(ours).is_none());
        let with_body = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 2\r\n\r\n{}";
        assert!(envelope_for_bare_answer(with_body).is_none());
        assert!(
            envelope_for_bare_answer(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n").is_none()
        );
        let big = b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\n\r\n";
        let out = String::from_utf8(envelope_for_bare_answer(big).unwrap()).unwrap();
        assert!(out.contains("HEADERS_TOO_LARGE"), "{out}");
    }
}
