//! Events in: event-source mappings that poll the brokers users run (RabbitMQ today) and
//! invoke functions with Lambda's event shapes and semantics, and schedules that fire
//! functions on EventBridge-style `rate(…)` and `cron(…)` expressions.

pub mod cron;
mod jetstream;
mod mappings;
mod mqtt;
mod rabbitmq;
mod redis_stream;
pub mod schedule;
pub mod source;

pub use mappings::EventSources;
pub use schedule::Scheduler;
