//! Faultline: streaming anomaly detection and root-cause ranking for service telemetry.
//!
//! Start at [`pipeline`] for the engine core, [`detect`] for per-series models, [`rca`] for incidents and root
//! causes, [`config`] for settings. The README's Architecture section maps the whole crate.

pub mod app;
pub mod clock;
pub mod config;
pub mod delivery;
pub mod demo;
pub mod detect;
pub mod error;
pub mod eval;
pub mod event;
pub mod exporter;
pub mod feedback;
#[cfg(feature = "gpu")]
pub mod gpu;
pub mod kafka;
pub mod metrics;
pub mod model;
pub mod otlp;
pub mod otlp_http;
pub mod pipeline;
pub mod rca;
pub mod report;
pub mod sim;
pub mod sink;
pub mod source;
#[cfg(feature = "tables")]
pub mod table;
pub mod units;

pub use error::{Error, Result};
