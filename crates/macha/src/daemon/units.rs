//! The systemd signal task: follows unit state changes and tells the loop, in its own message type.
//!
//! On loss it marks the shared link down, reconnects with backoff (1 s doubling to 60 s), and
//! reports both transitions, so the loop can alert and run a cycle to catch up.

use crate::config::Config;
use crate::observe::{self, SystemdLink};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// What the signal task reports.
#[derive(Debug)]
pub enum UnitSignal {
    /// A unit's active state changed.
    Changed { unit: String, active_state: String, result: Option<String> },
    /// The unit signal stream ended or failed.
    Lost(String),
    /// The unit signal stream is back after a loss: run a cycle to catch up.
    Restored,
}

/// Follows systemd's unit signals until `stop`.
pub async fn watch(link: Arc<SystemdLink>, config: Config, tx: mpsc::Sender<UnitSignal>, stop: CancellationToken) {
    let mut backoff = Duration::from_secs(1);
    let mut lost = false;
    loop {
        let systemd = match link.get() {
            Ok(s) => Ok(s),
            Err(_) => observe::connect_systemd(&config).await,
        };
        let subscribed = match systemd {
            Ok(s) => s.subscribe().await.map(|events| (s, events)).map_err(|e| e.to_string()),
            Err(e) => Err(e),
        };
        match subscribed {
            Ok((s, mut events)) => {
                link.set(Ok(s));
                backoff = Duration::from_secs(1);
                if std::mem::take(&mut lost) {
                    let _ = tx.send(UnitSignal::Restored).await;
                }
                loop {
                    tokio::select! {
                        () = stop.cancelled() => return,
                        ev = events.next() => match ev {
                            Ok(e) => {
                                // Only state changes matter here; job ends are the executor's.
                                if let Some(active_state) = e.active_state.filter(|_| e.job_result.is_none()) {
                                    let _ = tx.send(UnitSignal::Changed { unit: e.unit, active_state, result: e.result }).await;
                                }
                            }
                            Err(e) => {
                                link.set(Err(format!("connection lost: {e}")));
                                let _ = tx.send(UnitSignal::Lost(e.to_string())).await;
                                lost = true;
                                break;
                            }
                        }
                    }
                }
            }
            Err(reason) => {
                if !lost {
                    let _ = tx.send(UnitSignal::Lost(reason.clone())).await;
                    lost = true;
                }
                link.set(Err(reason));
            }
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(60));
    }
}
