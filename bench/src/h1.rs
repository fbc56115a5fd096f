//! A lean HTTP/1.1 client for the load generators: one kept-alive
//! connection per simulated client, each request written in one `write`
//! and its answer read in place, with no connection pool, no task per
//! connection, no redirect handling and no URL parsing per request.
//!
//! The generators share the machine's two cores with the server they
//! measure, so every cycle they spend is one the server does not get; a
//! general-purpose client (reqwest) spent about a tenth of the CPU of a sale
//! run. This one speaks only what the generators need: requests with a
//! JSON body or none, answers framed by `Content-Length` (every answer of
//! the API is).

use std::net::SocketAddr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub struct Conn {
    stream: TcpStream,
    host: String,
    buf: Vec<u8>,
    req: Vec<u8>,
}

/// An answer: status and body.
pub struct Answer {
    pub status: u16,
    pub body: Vec<u8>,
}

impl Conn {
    pub async fn open(addr: SocketAddr) -> std::io::Result<Conn> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(Conn { stream, host: addr.to_string(), buf: Vec::with_capacity(8192), req: Vec::with_capacity(1024) })
    }

    /// `POST path` with a JSON body and, when given, an `Authorization`
    /// header's value.
    pub async fn post(&mut self, path: &str, authorization: Option<&str>, json: &[u8]) -> std::io::Result<Answer> {
        self.request("POST", path, authorization, Some(json)).await
    }

    /// `GET path`.
    pub async fn get(&mut self, path: &str) -> std::io::Result<Answer> {
        self.request("GET", path, None, None).await
    }

    async fn request(
        &mut self,
        method: &str,
        path: &str,
        authorization: Option<&str>,
        json: Option<&[u8]>,
    ) -> std::io::Result<Answer> {
        use std::io::Write;
        self.req.clear();
        write!(self.req, "{method} {path} HTTP/1.1\r\nhost: {}\r\n", self.host)?;
        if let Some(a) = authorization {
            write!(self.req, "authorization: {a}\r\n")?;
        }
        if let Some(body) = json {
            write!(self.req, "content-type: application/json\r\ncontent-length: {}\r\n\r\n", body.len())?;
            self.req.extend_from_slice(body);
        } else {
            self.req.extend_from_slice(b"\r\n");
        }
        self.stream.write_all(&self.req).await?;
        self.read_answer().await
    }

    async fn read_answer(&mut self) -> std::io::Result<Answer> {
        self.buf.clear();
        loop {
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut res = httparse::Response::new(&mut headers);
            match res.parse(&self.buf).map_err(std::io::Error::other)? {
                httparse::Status::Complete(head) => {
                    let status = res.code.unwrap_or(0);
                    let length = res
                        .headers
                        .iter()
                        .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                        .and_then(|h| std::str::from_utf8(h.value).ok()?.trim().parse::<usize>().ok())
                        .ok_or_else(|| std::io::Error::other("an answer without Content-Length"))?;
                    while self.buf.len() < head + length {
                        self.fill().await?;
                    }
                    let body = self.buf[head..head + length].to_vec();
                    return Ok(Answer { status, body });
                }
                httparse::Status::Partial => self.fill().await?,
            }
        }
    }

    async fn fill(&mut self) -> std::io::Result<()> {
        let at = self.buf.len();
        self.buf.resize(at + 8192, 0);
        let n = self.stream.read(&mut self.buf[at..]).await?;
        self.buf.truncate(at + n);
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        Ok(())
    }
}

/// Kept-alive connections shared by tasks that come and go (an open-loop
/// generator spawns one per request): a request takes an idle connection,
/// or opens one, and gives it back after the answer.
pub struct Pool {
    addr: SocketAddr,
    idle: std::sync::Mutex<Vec<Conn>>,
}

impl Pool {
    /// A pool with `warm` connections already open.
    pub async fn new(addr: SocketAddr, warm: usize) -> std::io::Result<Pool> {
        let mut idle = Vec::with_capacity(warm);
        for _ in 0..warm {
            idle.push(Conn::open(addr).await?);
        }
        Ok(Pool { addr, idle: std::sync::Mutex::new(idle) })
    }

    pub async fn post(&self, path: &str, authorization: Option<&str>, json: &[u8]) -> std::io::Result<Answer> {
        let idle = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let mut conn = match idle {
            Some(c) => c,
            None => Conn::open(self.addr).await?,
        };
        let answer = conn.post(path, authorization, json).await?;
        self.idle.lock().unwrap_or_else(|p| p.into_inner()).push(conn);
        Ok(answer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Requests reach a real server over one connection and answers of
    /// every size come back whole, framed by their length.
    #[tokio::test]
    async fn requests_and_answers_round_trip_on_one_connection() {
        use axum::routing::{get, post};
        let app = axum::Router::new()
            .route("/echo", post(|body: String| async move { format!("got {body}") }))
            .route("/big", get(|| async { "x".repeat(100_000) }))
            .route(
                "/who",
                get(|h: axum::http::HeaderMap| async move {
                    h.get("authorization").map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default()
                }),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

        let mut c = Conn::open(addr).await.unwrap();
        let a = c.post("/echo", None, br#"{"a":1}"#).await.unwrap();
        assert_eq!((a.status, a.body.as_slice()), (200, br#"got {"a":1}"#.as_slice()));
        let a = c.get("/big").await.unwrap();
        assert_eq!((a.status, a.body.len()), (200, 100_000));
        let a = c.post("/who", Some("Bearer t0k"), b"").await.unwrap();
        assert_eq!(a.status, 405);
        let a = c.get("/missing").await.unwrap();
        assert_eq!(a.status, 404);
        let a = c.request("GET", "/who", Some("Bearer t0k"), None).await.unwrap();
        assert_eq!((a.status, a.body.as_slice()), (200, b"Bearer t0k".as_slice()));
    }
}
