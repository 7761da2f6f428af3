//! An HTTP/1.1 client that pipelines (the `pipeline` setting): a batch's
//! POSTs are written back to back on one kept-alive connection and the
//! answers read in order. hyper, under reqwest, has no HTTP/1 pipelining,
//! so there each send in flight holds a connection and pays its own
//! system calls both ways; here a batch costs about one write and a few
//! reads per connection.
//!
//! HTTP says not to pipeline POSTs because a connection that closes leaves
//! unknown which of them took effect. Every request here carries its
//! `webhook-id` idempotency key, which a receiver de-duplicates on, so the
//! requests left unanswered on a closed connection are sent again, same
//! bytes (key, timestamp, signature), on a new connection.
//!
//! Answers are read strictly and within limits: a peer's bytes end in an
//! answer, a clear error, or a closed connection, never in a panic, an
//! unbounded buffer or a loop.

use relance_plugin_api::net::{Guard, ResolveError};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// Requests one connection carries before their answers are read, at most.
pub const MAX_DEPTH: usize = 64;
/// An answer's status line and headers, at most.
const HEAD_LIMIT: usize = 16 * 1024;
/// Headers one answer may carry.
const MAX_HEADERS: usize = 64;
/// Body bytes read (and dropped) per answer; a longer body ends the
/// connection after its status was taken, and the requests after it go
/// again on another.
const BODY_LIMIT: usize = 64 * 1024;
/// A chunk-size line, at most.
const LINE_LIMIT: usize = 1024;
/// Interim (1xx) answers skipped before a final one.
const MAX_INTERIM: usize = 8;
/// Idle kept-alive connections kept, at most.
const MAX_IDLE: usize = 64;
/// New connections that close before answering anything, in a row, after
/// which the requests left fail (to be retried by the outbox).
const MAX_FRESH_FAILURES: usize = 2;
/// The read buffer of a connection: a head always fits.
const READ_BUFFER: usize = 2 * HEAD_LIMIT;

/// What an answer says, as far as the outcome needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    pub retry_after: Option<String>,
    pub location: Option<String>,
}

/// Why a request got no answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Failure {
    /// The SSRF guard refused the address: permanent.
    Refused(String),
    /// Worth another attempt later (timeout, connection refused, an
    /// unreadable answer).
    Transient(String),
}

/// The requests of one connection's batch, written back to back:
/// request `i` is `bytes[ends[i - 1]..ends[i]]`. Kept between calls so
/// that its memory is reused.
#[derive(Debug, Default)]
pub struct Batch {
    pub bytes: Vec<u8>,
    pub ends: Vec<usize>,
}

impl Batch {
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// Marks the bytes written since the previous request as one request.
    pub fn end_request(&mut self) {
        self.ends.push(self.bytes.len());
    }

    /// Drops what was written since the last complete request.
    pub fn abandon_request(&mut self) {
        let end = self.ends.last().copied().unwrap_or(0);
        self.bytes.truncate(end);
    }

    fn clear(&mut self) {
        self.bytes.clear();
        self.ends.clear();
    }

    fn start_of(&self, i: usize) -> usize {
        if i == 0 { 0 } else { self.ends[i - 1] }
    }
}

/// The pipelining client of one plugin instance: where to connect, and
/// the connections and buffers kept between calls.
#[derive(Debug)]
pub struct Pipe {
    host: String,
    port: u16,
    guard: Arc<Guard>,
    timeout: Duration,
    depth: usize,
    idle: Mutex<Vec<Conn>>,
    spare: Mutex<Vec<Batch>>,
}

impl Pipe {
    pub fn new(
        host: String,
        port: u16,
        guard: Arc<Guard>,
        timeout: Duration,
        depth: usize,
    ) -> Self {
        Self {
            host,
            port,
            guard,
            timeout,
            depth: depth.clamp(1, MAX_DEPTH),
            idle: Mutex::new(Vec::new()),
            spare: Mutex::new(Vec::new()),
        }
    }

    /// Requests per connection per exchange.
    pub fn depth(&self) -> usize {
        self.depth
    }

    /// An empty batch, reusing a previous one's memory.
    pub fn batch(&self) -> Batch {
        self.spare
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop()
            .unwrap_or_default()
    }

    /// Gives a batch's memory back for the next call.
    pub fn recycle(&self, mut batch: Batch) {
        batch.clear();
        let mut spare = self.spare.lock().unwrap_or_else(PoisonError::into_inner);
        if spare.len() < MAX_DEPTH {
            spare.push(batch);
        }
    }

    fn take_idle(&self) -> Option<Conn> {
        self.idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop()
    }

    fn keep(&self, conn: Conn) {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        if idle.len() < MAX_IDLE {
            idle.push(conn);
        }
    }

    /// A new connection to an address the guard lets through (checked
    /// after resolution, at every connection, like the reqwest client's).
    async fn connect(&self) -> Result<Conn, Failure> {
        let addrs = self
            .guard
            .resolve(&self.host, self.port)
            .await
            .map_err(|e| match e {
                ResolveError::Refused(r) => Failure::Refused(r.to_string()),
                other => Failure::Transient(format!("could not connect: {other}")),
            })?;
        let mut last = None;
        for addr in addrs {
            match TcpStream::connect(addr).await {
                Ok(stream) => {
                    // Small requests go out at once; answers are acknowledged at once.
                    let _ = stream.set_nodelay(true);
                    let conn = Conn::new(stream);
                    conn.quickack();
                    return Ok(conn);
                }
                Err(e) => last = Some(format!("{addr}: {e}")),
            }
        }
        Err(Failure::Transient(format!(
            "could not connect: {}",
            last.unwrap_or_else(|| "no address".into())
        )))
    }

    /// Sends a batch on one connection at a time and reads the answers in
    /// order; one result per request, in order. Requests left unanswered
    /// when a connection closes go again on another under the same bytes;
    /// the whole exchange is bounded by the timeout.
    pub async fn send(self: Arc<Self>, batch: Batch) -> (Batch, Vec<Result<Answer, Failure>>) {
        let n = batch.len();
        let mut answers: Vec<Answer> = Vec::with_capacity(n);
        let mut failure: Option<Failure> = None;
        let deadline = Instant::now() + self.timeout;
        let mut fresh_failures = 0;
        while answers.len() < n {
            let next = answers.len();
            let (mut conn, fresh) = match self.take_idle() {
                Some(c) => (c, false),
                None => match tokio::time::timeout_at(deadline, self.connect()).await {
                    Ok(Ok(c)) => (c, true),
                    Ok(Err(f)) => {
                        failure = Some(f);
                        break;
                    }
                    Err(_) => {
                        failure = Some(self.timed_out());
                        break;
                    }
                },
            };
            let bytes = &batch.bytes[batch.start_of(next)..];
            let round = conn.exchange(bytes, n - next, &mut answers);
            match tokio::time::timeout_at(deadline, round).await {
                Err(_) => {
                    failure = Some(self.timed_out());
                    break;
                }
                Ok(End::Reusable) => self.keep(conn),
                Ok(End::Closed) => {
                    if answers.len() > next {
                        fresh_failures = 0;
                    } else if fresh {
                        fresh_failures += 1;
                        if fresh_failures >= MAX_FRESH_FAILURES {
                            failure = Some(Failure::Transient(
                                "the connection closed before answering".into(),
                            ));
                            break;
                        }
                    }
                }
                Ok(End::Broken(why)) => {
                    failure = Some(Failure::Transient(why));
                    break;
                }
            }
        }
        let mut out: Vec<Result<Answer, Failure>> = answers.into_iter().map(Ok).collect();
        if out.len() < n {
            let first = failure.unwrap_or_else(|| Failure::Transient("no answer".into()));
            let later = match &first {
                Failure::Refused(_) => first.clone(),
                Failure::Transient(why) => Failure::Transient(format!(
                    "not answered: the connection failed before its answer ({why})"
                )),
            };
            out.push(Err(first));
            out.resize(n, Err(later));
        }
        (batch, out)
    }

    fn timed_out(&self) -> Failure {
        Failure::Transient(format!("timed out after {:?}", self.timeout))
    }
}

/// How a connection's exchange ended.
#[derive(Debug, PartialEq, Eq)]
enum End {
    /// Every request answered; the connection may carry the next batch.
    Reusable,
    /// The peer closed (or said it would) with requests left unanswered,
    /// or the last answer ends the connection: send the rest elsewhere.
    Closed,
    /// An answer could not be read: the request it belongs to fails, and
    /// the connection's framing cannot be trusted for the rest.
    Broken(String),
}

/// Why reading an answer stopped.
#[derive(Debug)]
enum ReadError {
    /// The connection closed before any byte of the answer.
    Closed,
    /// A broken answer (bad syntax, over a limit, cut short in its head).
    Malformed(String),
}

/// The parts of a head the exchange needs.
#[derive(Debug)]
struct Head {
    len: usize,
    status: u16,
    /// The peer keeps the connection open after this answer.
    keep: bool,
    framing: Framing,
    retry_after: Option<String>,
    location: Option<String>,
}

#[derive(Debug, PartialEq, Eq)]
enum Framing {
    None,
    Length(u64),
    Chunked,
    /// The body runs to the connection's end.
    Close,
}

/// One kept-alive connection and its read buffer.
#[derive(Debug)]
struct Conn {
    stream: TcpStream,
    buf: Box<[u8]>,
    start: usize,
    end: usize,
}

impl Conn {
    fn new(stream: TcpStream) -> Self {
        Self {
            stream,
            buf: vec![0; READ_BUFFER].into_boxed_slice(),
            start: 0,
            end: 0,
        }
    }

    /// Acknowledges what arrives at once: a receiver writing pipelined
    /// answers one by one with Nagle's algorithm waits for these acks.
    fn quickack(&self) {
        #[cfg(target_os = "linux")]
        {
            let _ = socket2::SockRef::from(&self.stream).set_tcp_quickack(true);
        }
    }

    /// Writes `count` requests (`bytes`) and reads their answers into
    /// `answers`, in order.
    async fn exchange(&mut self, bytes: &[u8], count: usize, answers: &mut Vec<Answer>) -> End {
        if self.end > self.start {
            // Bytes nobody asked for: the framing is lost.
            return End::Broken("the peer sent bytes before any request".into());
        }
        if self.stream.write_all(bytes).await.is_err() {
            // A kept-alive connection the peer closed meanwhile.
            return End::Closed;
        }
        for i in 0..count {
            match self.answer().await {
                Ok((answer, keep)) => {
                    answers.push(answer);
                    if !keep {
                        return End::Closed;
                    }
                }
                Err(ReadError::Closed) => return End::Closed,
                Err(ReadError::Malformed(why)) => {
                    return End::Broken(format!(
                        "unreadable HTTP answer to request {}: {why}",
                        i + 1
                    ));
                }
            }
        }
        End::Reusable
    }

    /// Reads more bytes; 0 at the connection's end (or an error on it).
    async fn fill(&mut self) -> usize {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        } else if self.end == self.buf.len() {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.end == self.buf.len() {
            return 0;
        }
        match self.stream.read(&mut self.buf[self.end..]).await {
            Ok(n) => {
                self.end += n;
                if n > 0 {
                    self.quickack();
                }
                n
            }
            Err(_) => 0,
        }
    }

    /// Reads one final answer, its body read and dropped within the
    /// limit; with whether the connection stays usable after it.
    async fn answer(&mut self) -> Result<(Answer, bool), ReadError> {
        let mut interim = 0;
        let head = loop {
            let head = self.head().await?;
            self.start += head.len;
            if (100..200).contains(&head.status) {
                if head.status == 101 {
                    return Err(ReadError::Malformed(
                        "101 Switching Protocols unasked".into(),
                    ));
                }
                interim += 1;
                if interim > MAX_INTERIM {
                    return Err(ReadError::Malformed(
                        "too many interim (1xx) answers".into(),
                    ));
                }
                continue;
            }
            break head;
        };
        let answer = Answer {
            status: head.status,
            retry_after: head.retry_after,
            location: head.location,
        };
        let body_ends_well = match head.framing {
            Framing::None => true,
            Framing::Length(n) => {
                usize::try_from(n).is_ok_and(|n| n <= BODY_LIMIT) && self.skip(n as usize).await
            }
            Framing::Chunked => self.chunked().await?,
            Framing::Close => {
                self.drain_to_close().await;
                false
            }
        };
        // A body over the limit or cut short: the answer stands, the
        // connection goes.
        Ok((answer, head.keep && body_ends_well))
    }

    /// Reads a head: the status line and headers.
    async fn head(&mut self) -> Result<Head, ReadError> {
        loop {
            if self.end > self.start {
                if let Some(head) = parse_head(&self.buf[self.start..self.end])? {
                    return Ok(head);
                }
                if self.end - self.start >= HEAD_LIMIT {
                    return Err(ReadError::Malformed(format!(
                        "status line and headers over {HEAD_LIMIT} bytes"
                    )));
                }
            }
            let had = self.end - self.start;
            if self.fill().await == 0 {
                return Err(if had == 0 {
                    ReadError::Closed
                } else {
                    ReadError::Malformed("the connection closed in the middle of a head".into())
                });
            }
        }
    }

    /// Skips `n` body bytes; false when the connection ended first.
    async fn skip(&mut self, mut n: usize) -> bool {
        loop {
            let here = (self.end - self.start).min(n);
            self.start += here;
            n -= here;
            if n == 0 {
                return true;
            }
            if self.fill().await == 0 {
                return false;
            }
        }
    }

    /// Reads until the peer closes, dropping at most [`BODY_LIMIT`] bytes.
    async fn drain_to_close(&mut self) {
        let mut left = BODY_LIMIT;
        loop {
            let here = self.end - self.start;
            self.start = self.end;
            left = left.saturating_sub(here);
            if left == 0 || self.fill().await == 0 {
                return;
            }
        }
    }

    /// A line ending in CRLF, without it, consumed; `None` at the
    /// connection's end.
    async fn line(&mut self) -> Result<Option<(usize, usize)>, ReadError> {
        loop {
            let window = &self.buf[self.start..self.end];
            let found = window.windows(2).position(|w| w == b"\r\n");
            if found.unwrap_or(window.len()) > LINE_LIMIT {
                return Err(ReadError::Malformed(format!(
                    "a chunked body line over {LINE_LIMIT} bytes"
                )));
            }
            if let Some(at) = found {
                let line = (self.start, self.start + at);
                self.start += at + 2;
                return Ok(Some(line));
            }
            if self.fill().await == 0 {
                return Ok(None);
            }
        }
    }

    /// Reads a chunked body; false when the connection cannot be reused
    /// (body over the limit, or the connection ended first).
    async fn chunked(&mut self) -> Result<bool, ReadError> {
        let mut total = 0usize;
        loop {
            let Some((from, to)) = self.line().await? else {
                return Ok(false);
            };
            let size = chunk_size(&self.buf[from..to])?;
            if size == 0 {
                break;
            }
            total = total.saturating_add(size);
            if total > BODY_LIMIT {
                return Ok(false);
            }
            if !self.skip(size).await {
                return Ok(false);
            }
            match self.line().await? {
                Some((from, to)) if from == to => {}
                Some(_) => {
                    return Err(ReadError::Malformed("a chunk longer than its size".into()));
                }
                None => return Ok(false),
            }
        }
        // Trailers, up to the empty line.
        let mut trailers = 0usize;
        loop {
            let Some((from, to)) = self.line().await? else {
                return Ok(false);
            };
            if from == to {
                return Ok(true);
            }
            trailers += to - from + 2;
            if trailers > HEAD_LIMIT {
                return Err(ReadError::Malformed(format!(
                    "trailers over {HEAD_LIMIT} bytes"
                )));
            }
        }
    }
}

/// A chunk-size line: hexadecimal digits, then extensions after `;`.
fn chunk_size(line: &[u8]) -> Result<usize, ReadError> {
    let digits = line.split(|b| *b == b';').next().unwrap_or_default();
    let digits = digits.trim_ascii_end();
    if digits.is_empty() || digits.len() > 15 || !digits.iter().all(u8::is_ascii_hexdigit) {
        return Err(ReadError::Malformed("a bad chunk size".into()));
    }
    let text =
        std::str::from_utf8(digits).map_err(|_| ReadError::Malformed("a bad chunk size".into()))?;
    usize::from_str_radix(text, 16).map_err(|_| ReadError::Malformed("a bad chunk size".into()))
}

/// Parses a complete head from `bytes`, `None` while it is incomplete.
fn parse_head(bytes: &[u8]) -> Result<Option<Head>, ReadError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut headers);
    let len = match response.parse(bytes) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(ReadError::Malformed(e.to_string())),
    };
    let status = response.code.unwrap_or(0);
    if !(100..=999).contains(&status) {
        return Err(ReadError::Malformed(format!("status {status}")));
    }
    let mut keep = response.version == Some(1);
    let mut length: Option<u64> = None;
    let mut chunked = false;
    let mut retry_after = None;
    let mut location = None;
    for h in response.headers.iter() {
        let value = std::str::from_utf8(h.value).ok().map(str::trim);
        if h.name.eq_ignore_ascii_case("content-length") {
            let n = value
                .filter(|v| !v.is_empty() && v.len() <= 19 && v.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|v| v.parse::<u64>().ok())
                .ok_or_else(|| ReadError::Malformed("a bad content-length".into()))?;
            if length.is_some_and(|l| l != n) {
                return Err(ReadError::Malformed("two different content-lengths".into()));
            }
            length = Some(n);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            let last = value
                .and_then(|v| v.rsplit(',').next())
                .map(str::trim)
                .unwrap_or_default();
            if !last.eq_ignore_ascii_case("chunked") {
                return Err(ReadError::Malformed(format!(
                    "transfer-encoding `{}` is not supported",
                    value.unwrap_or("?")
                )));
            }
            chunked = true;
        } else if h.name.eq_ignore_ascii_case("connection") {
            for token in value.unwrap_or_default().split(',').map(str::trim) {
                if token.eq_ignore_ascii_case("close") {
                    keep = false;
                } else if token.eq_ignore_ascii_case("keep-alive") && response.version == Some(0) {
                    keep = true;
                }
            }
        } else if h.name.eq_ignore_ascii_case("retry-after") {
            retry_after = value.map(str::to_owned);
        } else if h.name.eq_ignore_ascii_case("location") {
            location = value.map(str::to_owned);
        }
    }
    if chunked && length.is_some() {
        // What request smuggling looks like: refused, not guessed.
        return Err(ReadError::Malformed(
            "both content-length and transfer-encoding".into(),
        ));
    }
    let framing = if (100..200).contains(&status) || status == 204 || status == 304 {
        Framing::None
    } else if chunked {
        Framing::Chunked
    } else if let Some(n) = length {
        if n == 0 {
            Framing::None
        } else {
            Framing::Length(n)
        }
    } else {
        keep = false;
        Framing::Close
    };
    Ok(Some(Head {
        len,
        status,
        keep,
        framing,
        retry_after,
        location,
    }))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn head(text: &str) -> Result<Option<Head>, ReadError> {
        parse_head(text.as_bytes())
    }

    #[test]
    fn heads_are_read_strictly() {
        let h = head("HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
            .unwrap()
            .unwrap();
        assert_eq!(
            (h.status, h.keep, h.framing),
            (200, true, Framing::Length(2))
        );
        let h = head("HTTP/1.1 503 x\r\nretry-after: 7\r\nconnection: close\r\ntransfer-encoding: chunked\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(
            (h.keep, h.framing, h.retry_after.as_deref()),
            (false, Framing::Chunked, Some("7"))
        );
        let h = head("HTTP/1.0 200 OK\r\ncontent-length: 0\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(!h.keep);
        let h = head("HTTP/1.1 200 OK\r\n\r\n").unwrap().unwrap();
        assert_eq!((h.keep, h.framing), (false, Framing::Close));
        assert!(head("HTTP/1.1 200 OK\r\ncontent-le").unwrap().is_none());
        for bad in [
            "HTTP/1.1 200 OK\r\ncontent-length: -1\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: 99999999999999999999\r\n\r\n",
            "HTTP/1.1 200 OK\r\ntransfer-encoding: gzip\r\n\r\n",
            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-length: 3\r\n\r\n",
            "HTTP/1.1 2000 OK\r\n\r\n",
            "SMTP 220 hello\r\n\r\n",
        ] {
            assert!(matches!(head(bad), Err(ReadError::Malformed(_))), "{bad}");
        }
    }

    #[test]
    fn chunk_sizes_are_bounded() {
        assert_eq!(chunk_size(b"1a").unwrap(), 26);
        assert_eq!(chunk_size(b"0;ext=1").unwrap(), 0);
        for bad in [&b""[..], b"x", b"ffffffffffffffffff", b"-1"] {
            assert!(chunk_size(bad).is_err());
        }
    }
}
