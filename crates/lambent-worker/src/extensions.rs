//! The registry behind the Extensions API (2020-01-01): who registered, for which events,
//! the events waiting for each, and whether each is back in `/event/next`.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use serde_json::Value;
use tokio::sync::Notify;

/// Most extensions one environment may register.
pub const MAX_EXTENSIONS: usize = 10;

struct Registered {
    id: String,
    name: String,
    invoke: bool,
    shutdown: bool,
    queue: VecDeque<Value>,
    /// In `/event/next` now.
    waiting: bool,
    /// Has called `/event/next` at least once (its init is done).
    called_next: bool,
    /// Its process exited or it reported `/exit/error`; it holds nothing up any more.
    gone: bool,
    notify: Arc<Notify>,
}

/// Why a registration was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum RegisterError {
    /// Already [`MAX_EXTENSIONS`] registered.
    TooMany,
    /// The body is not `{"events":[...]}` with INVOKE / SHUTDOWN.
    BadEvents(String),
}

/// The extensions registered in one environment.
#[derive(Default)]
pub struct Extensions {
    list: Mutex<Vec<Registered>>,
}

/// What `/event/next` gets from the registry.
pub enum NextEvent {
    /// An event to return now.
    Event(Value),
    /// Nothing yet: wait for this and ask again.
    Wait(Arc<Notify>),
    /// No extension has this identifier.
    Unknown,
}

/// Parses a registration body into (INVOKE, SHUTDOWN) subscriptions.
pub fn parse_events(body: &[u8]) -> Result<(bool, bool), RegisterError> {
    let value: Value = if body.iter().all(u8::is_ascii_whitespace) {
        serde_json::json!({ "events": [] })
    } else {
        serde_json::from_slice(body)
            .map_err(|e| RegisterError::BadEvents(format!("invalid JSON body: {e}")))?
    };
    let events = match value.get("events") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(events)) => events.clone(),
        Some(_) => return Err(RegisterError::BadEvents("events must be an array".into())),
    };
    let (mut invoke, mut shutdown) = (false, false);
    for event in events {
        match event.as_str() {
            Some("INVOKE") => invoke = true,
            Some("SHUTDOWN") => shutdown = true,
            _ => {
                return Err(RegisterError::BadEvents(format!(
                    "unknown event type {event}; expected INVOKE or SHUTDOWN"
                )));
            }
        }
    }
    Ok((invoke, shutdown))
}

impl Extensions {
    /// Registers an extension; returns its identifier.
    pub fn register(
        &self,
        name: &str,
        invoke: bool,
        shutdown: bool,
    ) -> Result<String, RegisterError> {
        let mut list = self.list.lock().map_err(|_| RegisterError::TooMany)?;
        if list.len() >= MAX_EXTENSIONS {
            return Err(RegisterError::TooMany);
        }
        let id = uuid::Uuid::new_v4().to_string();
        list.push(Registered {
            id: id.clone(),
            name: name.to_string(),
            invoke,
            shutdown,
            queue: VecDeque::new(),
            waiting: false,
            called_next: false,
            gone: false,
            notify: Arc::new(Notify::new()),
        });
        Ok(id)
    }

    fn with<T>(&self, f: impl FnOnce(&mut Vec<Registered>) -> T) -> Option<T> {
        self.list.lock().ok().map(|mut list| f(&mut list))
    }

    /// How many extensions registered.
    pub fn count(&self) -> usize {
        self.with(|l| l.len()).unwrap_or(0)
    }

    /// The name of the extension with this identifier.
    pub fn name_of(&self, id: &str) -> Option<String> {
        self.with(|l| l.iter().find(|e| e.id == id).map(|e| e.name.clone()))
            .flatten()
    }

    /// True once every extension still running has called `/event/next` once.
    pub fn all_initialized(&self) -> bool {
        self.with(|l| l.iter().all(|e| e.gone || e.called_next))
            .unwrap_or(true)
    }

    /// True while every INVOKE subscriber still running waits in `/event/next` with nothing
    /// left to take.
    pub fn all_idle(&self) -> bool {
        self.with(|l| {
            l.iter()
                .all(|e| e.gone || !e.invoke || (e.waiting && e.queue.is_empty()))
        })
        .unwrap_or(true)
    }

    /// Queues `event` for every INVOKE (`invoke`) or SHUTDOWN (`!invoke`) subscriber.
    pub fn broadcast(&self, invoke: bool, event: &Value) {
        self.with(|l| {
            for e in l
                .iter_mut()
                .filter(|e| !e.gone && if invoke { e.invoke } else { e.shutdown })
            {
                e.queue.push_back(event.clone());
                e.notify.notify_one();
            }
        });
    }

    /// `/event/next` for extension `id`: the next event, or what to wait on.
    pub fn next(&self, id: &str) -> NextEvent {
        self.with(|l| {
            let Some(e) = l.iter_mut().find(|e| e.id == id) else {
                return NextEvent::Unknown;
            };
            e.called_next = true;
            match e.queue.pop_front() {
                Some(event) => {
                    e.waiting = false;
                    NextEvent::Event(event)
                }
                None => {
                    e.waiting = true;
                    NextEvent::Wait(e.notify.clone())
                }
            }
        })
        .unwrap_or(NextEvent::Unknown)
    }

    /// The extension left `/event/next` (its connection closed).
    pub fn left_next(&self, id: &str) {
        self.with(|l| {
            if let Some(e) = l.iter_mut().find(|e| e.id == id) {
                e.waiting = false;
            }
        });
    }

    /// Marks the extensions named `name` (or with identifier `name`) as gone.
    pub fn mark_gone(&self, name: &str) {
        self.with(|l| {
            for e in l.iter_mut().filter(|e| e.name == name || e.id == name) {
                e.gone = true;
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registration_body_is_parsed() {
        assert_eq!(
            parse_events(br#"{"events":["INVOKE","SHUTDOWN"]}"#),
            Ok((true, true))
        );
        assert_eq!(
            parse_events(br#"{"events":["SHUTDOWN"]}"#),
            Ok((false, true))
        );
        assert_eq!(parse_events(b""), Ok((false, false)));
        assert!(parse_events(br#"{"events":["BOOT"]}"#).is_err());
        assert!(parse_events(b"nope").is_err());
    }

    #[test]
    fn events_flow_and_idleness_is_tracked() {
        let ext = Extensions::default();
        let a = ext.register("a", true, true).unwrap();
        let b = ext.register("b", false, true).unwrap();
        assert!(!ext.all_initialized());
        assert!(matches!(ext.next(&a), NextEvent::Wait(_)));
        assert!(matches!(ext.next(&b), NextEvent::Wait(_)));
        assert!(ext.all_initialized() && ext.all_idle());
        ext.broadcast(true, &serde_json::json!({"eventType": "INVOKE"}));
        assert!(!ext.all_idle());
        assert!(matches!(ext.next(&b), NextEvent::Wait(_)));
        match ext.next(&a) {
            NextEvent::Event(e) => assert_eq!(e["eventType"], "INVOKE"),
            _ => panic!("expected the INVOKE event"),
        }
        assert!(!ext.all_idle());
        assert!(matches!(ext.next(&a), NextEvent::Wait(_)));
        assert!(ext.all_idle());
        ext.broadcast(false, &serde_json::json!({"eventType": "SHUTDOWN"}));
        assert!(matches!(ext.next(&b), NextEvent::Event(_)));
        assert!(matches!(ext.next("nobody"), NextEvent::Unknown));
        for i in 2..MAX_EXTENSIONS {
            ext.register(&format!("e{i}"), false, false).unwrap();
        }
        assert_eq!(
            ext.register("one-too-many", false, false),
            Err(RegisterError::TooMany)
        );
        assert_eq!(ext.name_of(&a).as_deref(), Some("a"));
    }
}
