//! The values `value` resources hold on this host, read by mcl's `value.get*` (mgmt's
//! "local" value API): one process-wide table, in memory.
//!
//! A resource sets or removes its key when it applies; readers subscribe and are woken on
//! every change (they read the table again). Keeping values across restarts (so that the
//! functions, which run before the resources, start with the last value) is the `value`
//! kind's job: it writes them under the state directory and loads them back at start.

use std::collections::HashMap;
use std::sync::Mutex;

use futures::channel::mpsc;

use crate::value::Value;

struct Table {
    values: HashMap<String, Value>,
    subscribers: Vec<mpsc::UnboundedSender<()>>,
}

static TABLE: Mutex<Option<Table>> = Mutex::new(None);

fn with<R>(f: impl FnOnce(&mut Table) -> R) -> R {
    let mut g = TABLE.lock().unwrap_or_else(|e| e.into_inner());
    let t = g.get_or_insert_with(|| Table {
        values: HashMap::new(),
        subscribers: Vec::new(),
    });
    f(t)
}

/// Sets (`Some`) or removes (`None`) `key`; returns whether it changed. Subscribers are woken
/// on a change.
pub fn set(key: &str, v: Option<Value>) -> bool {
    with(|t| {
        let changed = match &v {
            Some(v) => t.values.get(key) != Some(v),
            None => t.values.contains_key(key),
        };
        if !changed {
            return false;
        }
        match v {
            Some(v) => {
                t.values.insert(key.to_string(), v);
            }
            None => {
                t.values.remove(key);
            }
        }
        t.subscribers.retain(|s| s.unbounded_send(()).is_ok());
        true
    })
}

/// The value of `key`, if a resource set it.
pub fn get(key: &str) -> Option<Value> {
    with(|t| t.values.get(key).cloned())
}

/// A stream with one item per change of any key (items may be coalesced by the reader).
pub fn subscribe() -> mpsc::UnboundedReceiver<()> {
    let (tx, rx) = mpsc::unbounded();
    with(|t| t.subscribers.push(tx));
    rx
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;

    #[test]
    fn set_get_and_wake() {
        let mut rx = subscribe();
        let k = "tend-model-values-test";
        assert_eq!(get(k), None);
        assert!(set(k, Some(Value::from("a"))));
        assert!(
            !set(k, Some(Value::from("a"))),
            "the same value is no change"
        );
        assert_eq!(get(k), Some(Value::from("a")));
        assert!(set(k, None));
        assert!(!set(k, None));
        assert_eq!(get(k), None);
        // Two changes, two wake-ups (other tests may add theirs).
        let got = futures::executor::block_on(async {
            let a = rx.next().await;
            let b = rx.next().await;
            a.is_some() && b.is_some()
        });
        assert!(got);
    }
}
