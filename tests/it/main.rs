//! Faultline's integration tests: one binary, one module per area. Golden outputs live in `tests/golden/`; run with
//! `UPDATE_GOLDEN=1` to rewrite them after an intended change, then review the diff.

mod configs;
mod golden;
mod gpu;
mod graph;
mod hostile;
mod incidents;
mod kafka;
mod otlp_http;
mod otlp_wire;
mod outages;
mod schema;
mod seasons;
mod support;
mod tables;
mod threshold;
