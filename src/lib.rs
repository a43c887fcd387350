//! design-render: turns a design's base texture, an optional mask and a prompt into finished
//! texture assets (composite, high-res, preview, normal and roughness maps).
//!
//! Code map (see ARCHITECTURE.md for the flow of one job):
//! - [`config`]: environment → typed, validated [`config::Config`]; the only reader of env vars.
//! - [`job`]: the wire payload and its validated domain types.
//! - [`safety`]: raw prompt → [`safety::SafePrompt`] or a rejection.
//! - [`assets`]: local files and SSRF-guarded downloads, under byte limits.
//! - [`imaging`]: pure CPU image work (decode, mask, composite, resize, maps, encode, inpaint).
//! - [`providers`]: the [`providers::ImageEditor`] port and its adapters.
//! - [`storage`]: the [`storage::BlobStore`] port and its adapters.
//! - [`store`]: the [`store::DesignStore`] port (Design rows) and its SQL adapters.
//! - [`pipeline`]: the use case, [`pipeline::Pipeline::run`], and its error policy.
//! - [`worker`]: the queue driver's policy (deliveries in, outcomes out); [`queue`]: the adapter
//!   over the `bullmq-official` crate that feeds it; [`failure`]: job errors and the one rule for
//!   what a failure records;
//!   [`tenancy`]: crash-safe per-tenant slot leases; [`events`]: render events and their sinks.
//! - [`app`]: the composition root; [`cli`]: the command line; [`telemetry`]: logging.

pub mod admin;
pub mod app;
pub mod assets;
pub mod batch;
pub mod budget;
pub mod cache;
pub mod cli;
pub mod config;
pub mod dashboard;
pub mod error_code;
pub mod events;
pub mod failure;
pub mod http;
pub mod imaging;
pub mod jitter;
pub mod job;
pub mod pipeline;
pub mod providers;
pub mod queue;
pub mod safety;
pub mod storage;
pub mod store;
pub mod telemetry;
pub mod tenancy;
pub mod webhooks;
pub mod worker;
