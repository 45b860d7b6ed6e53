//! Server-Sent Events for `watch=1`: an `init` event with the whole document, then an `update`
//! event with the whole new document each time it changes, `heartbeat` events every N seconds
//! when asked, and an `error` event when the source goes away.
//!
//! Event ids count from 1 on each connection for `init` and `update` (and `delete`); `error` and
//! `heartbeat` carry id 0. Each connection is one stream fed by a `watch` channel of the daemon's
//! own state: a client never opens a watch on the store. The stream is written with
//! `async-stream` (no task or channel per connection: it ends when axum drops it).

use std::convert::Infallible;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::response::sse::{Event, Sse};
use futures::Stream;
use tokio::sync::watch;
use tokio::time::{Instant, Interval, MissedTickBehavior};

/// The body type of a watch response.
pub type EventStream = Sse<std::pin::Pin<Box<dyn Stream<Item = Result<Event, Infallible>> + Send>>>;

/// Streams the document `render` produces from the value in `trigger`, re-rendering each time
/// `trigger` changes and sending an `update` only when the document differs from the last one.
/// `render` may return `None` to say "nothing that this document shows has changed"; its
/// first call must return a document. The stream ends when the client goes away (axum drops it).
pub fn stream<T, F>(
    mut trigger: watch::Receiver<T>,
    mut render: F,
    heartbeat: Option<Duration>,
) -> EventStream
where
    T: Clone + Send + Sync + 'static,
    F: FnMut(&T) -> Option<serde_json::Value> + Send + 'static,
{
    let events = async_stream::stream! {
        let mut id: u64 = 1;
        // Clone out of the channel so that rendering never holds the sender's lock.
        let first = trigger.borrow_and_update().clone();
        let mut last = render(&first).unwrap_or_default();
        yield Ok(doc_event(id, "init", &last));
        let mut beat = heartbeat.map(|every| {
            let mut i = tokio::time::interval_at(Instant::now() + every, every);
            i.set_missed_tick_behavior(MissedTickBehavior::Delay);
            i
        });
        loop {
            tokio::select! {
                changed = trigger.changed() => {
                    if changed.is_err() {
                        let data = serde_json::json!({ "error": "the daemon's state is gone: it is shutting down" });
                        yield Ok(Event::default().id("0").event("error").data(data.to_string()));
                        break;
                    }
                    let now = trigger.borrow_and_update().clone();
                    let Some(doc) = render(&now) else { continue };
                    if doc != last {
                        id += 1;
                        last = doc;
                        yield Ok(doc_event(id, "update", &last));
                    }
                }
                _ = tick(&mut beat) => {
                    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
                    let data = serde_json::json!({ "time": now.as_secs_f64() });
                    yield Ok(Event::default().id("0").event("heartbeat").data(data.to_string()));
                }
            }
        }
    };
    Sse::new(Box::pin(events))
}

/// An `init`/`update` event carrying a whole document.
fn doc_event(id: u64, kind: &str, doc: &serde_json::Value) -> Event {
    Event::default()
        .id(id.to_string())
        .event(kind)
        .data(doc.to_string())
}

/// Waits for the next heartbeat, or forever when none was asked for.
async fn tick(beat: &mut Option<Interval>) {
    match beat {
        Some(i) => {
            i.tick().await;
        }
        None => std::future::pending().await,
    }
}
