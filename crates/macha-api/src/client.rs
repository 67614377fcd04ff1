//! The blocking client of the CLI: one request, one typed answer (or a stream of events first).

use crate::PROTOCOL_VERSION;
use crate::frame::{ErrorCode, Incoming, LineError, decode_line, encode_request};
use crate::ops::Call;
use crate::reply::StreamEvent;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach the Macha daemon at {path}: {source} (is macha.service running?)")]
    Connect { path: String, source: std::io::Error },
    #[error("talking to the Macha daemon: {0}")]
    Io(#[from] std::io::Error),
    #[error("the daemon sent an unreadable answer: {0}")]
    Protocol(String),
    #[error(
        "the daemon at {socket} speaks protocol {daemon}, this macha speaks {ours}: restart macha.service after an \
         upgrade, or use the matching CLI"
    )]
    VersionMismatch { socket: String, daemon: u64, ours: u32 },
    #[error("{message}")]
    Remote { code: ErrorCode, message: String },
}

/// A synchronous client for the CLI.
#[derive(Debug)]
pub struct Client {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
    socket: PathBuf,
}

impl Client {
    pub fn connect(path: &Path, timeout: Duration) -> Result<Client, ClientError> {
        let stream = UnixStream::connect(path)
            .map_err(|source| ClientError::Connect { path: path.display().to_string(), source })?;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(Duration::from_secs(10)))?;
        let writer = stream.try_clone()?;
        Ok(Client { reader: BufReader::new(stream), writer, socket: path.to_owned() })
    }

    /// Sends one request and returns its typed answer (events of a streamed answer are skipped).
    pub fn call<C: Call>(&mut self, req: C) -> Result<C::Reply, ClientError> {
        self.call_streaming(req, |_| {})
    }

    /// Sends a request: `on_event` sees every event of a streamed answer, and the final answer is
    /// returned.
    pub fn call_streaming<C: Call>(
        &mut self,
        req: C,
        mut on_event: impl FnMut(&StreamEvent),
    ) -> Result<C::Reply, ClientError> {
        let mut line = encode_request(&req.into_request()).map_err(|e| ClientError::Protocol(e.to_string()))?;
        line.push('\n');
        self.writer.write_all(line.as_bytes())?;
        loop {
            let mut answer = String::new();
            if self.reader.read_line(&mut answer)? == 0 {
                return Err(ClientError::Protocol("the daemon closed the connection".into()));
            }
            match decode_line(answer.trim_end()) {
                Ok(Incoming::Event(e)) => on_event(&e),
                Ok(Incoming::Ok(data)) => {
                    return serde_json::from_value(data).map_err(|e| ClientError::Protocol(e.to_string()));
                }
                Ok(Incoming::Err { code, message }) => return Err(ClientError::Remote { code, message }),
                Err(LineError::Version(v)) => return Err(self.mismatch(v)),
                Err(LineError::Malformed(e)) => return Err(ClientError::Protocol(e)),
            }
        }
    }

    fn mismatch(&self, daemon: u64) -> ClientError {
        ClientError::VersionMismatch { socket: self.socket.display().to_string(), daemon, ours: PROTOCOL_VERSION }
    }
}
