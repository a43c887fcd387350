//! The single integration-test binary (one link step for every suite).

mod admin;
mod architecture;
mod cli;
mod cluster;
mod conformance;
mod download;
mod helpers;
mod migrations;
mod providers;
mod queue;
mod storage;
mod tracing;
mod webhooks;
mod worker;
