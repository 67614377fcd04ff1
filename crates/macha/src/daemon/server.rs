//! The socket server: accepts connections, reads the peer's credentials from the kernel, parses
//! request lines and hands them to the daemon loop. It decides nothing itself.

use crate::api::{self, Request, Response};
use macha_api::Tier;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

/// Who is on the other end, as the kernel says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer {
    pub uid: u32,
    pub gid: u32,
    pub pid: Option<i32>,
}

/// Binds the socket: removes a stale one, creates the directory, and makes the socket connectable
/// by everyone (reads are public; writes are checked per request by credentials).
pub fn bind(path: &Path) -> anyhow::Result<UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(anyhow::format_err!("cannot remove the old socket {}: {e}", path.display())),
    }
    let listener = UnixListener::bind(path).map_err(|e| anyhow::format_err!("cannot bind {}: {e}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666))?;
    Ok(listener)
}

/// What the socket hands the daemon: one request with its peer, answered once or as a stream.
#[derive(Debug)]
pub enum ApiCall {
    Once {
        request: Request,
        peer: Peer,
        reply: oneshot::Sender<Response>,
    },
    /// A request from the web console, for a person it has identified (`daemon/web.rs`).
    Web {
        request: Request,
        user: macha_web::User,
        reply: oneshot::Sender<Response>,
    },
    /// A streamed request (chat, ask, discuss): event lines and the final response go to `sink`.
    Stream {
        request: Request,
        peer: Peer,
        sink: mpsc::UnboundedSender<api::StreamLine>,
    },
}

pub async fn serve(listener: UnixListener, events: mpsc::Sender<ApiCall>, stop: CancellationToken) {
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let events = events.clone();
                    let stop = stop.clone();
                    tokio::spawn(async move { connection(stream, events, stop).await });
                }
                Err(e) => {
                    tracing::warn!("accept on the API socket failed: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            },
        }
    }
}

async fn connection(stream: UnixStream, events: mpsc::Sender<ApiCall>, stop: CancellationToken) {
    let peer = match stream.peer_cred() {
        Ok(c) => Peer { uid: c.uid(), gid: c.gid(), pid: c.pid() },
        Err(e) => {
            tracing::warn!("cannot read peer credentials, dropping the connection: {e}");
            return;
        }
    };
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read);
    let mut line = Vec::new();
    loop {
        line.clear();
        let mut limited = (&mut reader).take(api::REQUEST_MAX as u64 + 1);
        let n = tokio::select! {
            () = stop.cancelled() => return,
            n = limited.read_until(b'\n', &mut line) => n,
        };
        let response = match n {
            Ok(0) | Err(_) => return,
            Ok(_) if line.len() > api::REQUEST_MAX => {
                let r =
                    Response::err(api::ErrorCode::BadRequest, format!("request exceeds {} bytes", api::REQUEST_MAX));
                let _ = write_response(&mut write, &r).await;
                return;
            }
            Ok(_) => {
                let parsed = std::str::from_utf8(&line)
                    .map_err(|e| api::Refusal {
                        code: api::ErrorCode::BadRequest,
                        message: format!("bad request: {e}"),
                    })
                    .and_then(|s| api::parse_request(s.trim()));
                match parsed {
                    Err(refusal) => Response::err(refusal.code, refusal.message),
                    Ok(request) if request.is_streamed() => {
                        // Event lines, then one final response line (the agent's streamed answers).
                        let (tx, mut rx) = mpsc::unbounded_channel::<api::StreamLine>();
                        if events.send(ApiCall::Stream { request, peer, sink: tx }).await.is_err() {
                            return;
                        }
                        let mut last = Response::err(api::ErrorCode::Internal, "the daemon is shutting down");
                        while let Some(line) = rx.recv().await {
                            match line {
                                api::StreamLine::Done(r) => {
                                    last = r;
                                    break;
                                }
                                event => {
                                    let mut s = event.to_line();
                                    s.push('\n');
                                    if write.write_all(s.as_bytes()).await.is_err() {
                                        return;
                                    }
                                }
                            }
                        }
                        last
                    }
                    Ok(request) => {
                        let (tx, rx) = oneshot::channel();
                        if events.send(ApiCall::Once { request, peer, reply: tx }).await.is_err() {
                            return;
                        }
                        match rx.await {
                            Ok(r) => r,
                            Err(_) => Response::err(api::ErrorCode::Internal, "the daemon is shutting down"),
                        }
                    }
                }
            }
        };
        if write_response(&mut write, &response).await.is_err() {
            return;
        }
    }
}

async fn write_response(write: &mut tokio::net::unix::OwnedWriteHalf, r: &Response) -> std::io::Result<()> {
    let mut s = r.to_line();
    s.push('\n');
    write.write_all(s.as_bytes()).await
}

/// Whether `peer` is a member (primary or supplementary) of `gid`.
fn in_group(peer: Peer, gid: Option<u32>) -> bool {
    let Some(gid) = gid else { return false };
    if peer.gid == gid {
        return true;
    }
    let Ok(Some(user)) = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(peer.uid)) else { return false };
    let Ok(name) = std::ffi::CString::new(user.name) else { return false };
    nix::unistd::getgrouplist(&name, user.gid).map(|groups| groups.iter().any(|g| g.as_raw() == gid)).unwrap_or(false)
}

/// What `peer` may do: admin (root or the admin group), viewer (the viewer group), or anyone.
/// The one place a caller's credentials become a tier.
pub fn access(peer: Peer, admin_gid: Option<u32>, viewer_gid: Option<u32>) -> Tier {
    if peer.uid == 0 || in_group(peer, admin_gid) {
        Tier::Admin
    } else if in_group(peer, viewer_gid) {
        Tier::Viewer
    } else {
        Tier::Anyone
    }
}

/// The gid of a configured group (`role`: "admin" or "viewer", for the warning), if it exists.
pub fn group_gid(group: Option<&str>, role: &str) -> Option<u32> {
    let name = group?;
    match nix::unistd::Group::from_name(name) {
        Ok(Some(g)) => Some(g.gid.as_raw()),
        _ => {
            let who = if role == "admin" { "only root may approve" } else { "only root and admins may read" };
            tracing::warn!("{role} group {name:?} does not exist; {who}");
            None
        }
    }
}

/// A readable name for audit records: `alice (uid 1000)`.
pub fn peer_name(peer: Peer) -> String {
    match nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(peer.uid)) {
        Ok(Some(u)) => format!("{} (uid {})", u.name, peer.uid),
        _ => format!("uid {}", peer.uid),
    }
}
