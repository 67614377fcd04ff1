//! A minimal HTTP/1.1 server on 127.0.0.1 for tests: one request per connection, bodies by
//! `Content-Length`, answers written by a handler that may stream (and may stall on purpose).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// One parsed request.
#[derive(Debug, Clone)]
pub struct HttpRequest {
    pub method: String,
    pub path: String,
    pub body: Vec<u8>,
}

impl HttpRequest {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

/// Where a handler writes its answer.
pub struct Out {
    stream: TcpStream,
}

impl Out {
    /// Status line and headers; the body then ends when the connection closes.
    pub async fn head(&mut self, status: u16, content_type: &str) -> std::io::Result<()> {
        let reason = if status == 200 { "OK" } else { "Error" };
        let h = format!("HTTP/1.1 {status} {reason}\r\ncontent-type: {content_type}\r\nconnection: close\r\n\r\n");
        self.stream.write_all(h.as_bytes()).await
    }
    pub async fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes).await?;
        self.stream.flush().await
    }
    /// A whole JSON answer.
    pub async fn json(&mut self, status: u16, v: &serde_json::Value) -> std::io::Result<()> {
        let body = v.to_string();
        let reason = if status == 200 { "OK" } else { "Error" };
        let h = format!(
            "HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
            body.len()
        );
        self.stream.write_all(h.as_bytes()).await?;
        self.stream.write_all(body.as_bytes()).await?;
        self.stream.flush().await
    }
}

pub type Handler = Arc<dyn Fn(HttpRequest, Out) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

async fn read_request(stream: &mut TcpStream) -> Option<HttpRequest> {
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).await.ok()?;
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_owned();
    let path = parts.next()?.to_owned();
    let mut len = 0usize;
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).await.ok()? == 0 {
            return None;
        }
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':')
            && k.eq_ignore_ascii_case("content-length")
        {
            len = v.trim().parse().ok()?;
        }
    }
    let mut body = vec![0u8; len];
    reader.read_exact(&mut body).await.ok()?;
    Some(HttpRequest { method, path, body })
}

/// Serves `handler` on 127.0.0.1 (a free port) from its own runtime thread, until the process
/// ends. Returns the base URL.
pub fn serve(handler: Handler) -> String {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
            Ok(rt) => rt,
            Err(e) => panic!("runtime: {e}"),
        };
        rt.block_on(async move {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap_or_else(|e| panic!("bind: {e}"));
            let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
            let _ = tx.send(format!("http://{addr}"));
            loop {
                let Ok((mut stream, _)) = listener.accept().await else { continue };
                let handler = Arc::clone(&handler);
                tokio::spawn(async move {
                    if let Some(req) = read_request(&mut stream).await {
                        handler(req, Out { stream }).await;
                    }
                });
            }
        });
    });
    rx.recv().unwrap_or_else(|e| panic!("server did not start: {e}"))
}
