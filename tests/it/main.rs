//! The single integration-test binary (one link step for every suite).

mod admin;
mod architecture;
mod bull_board;
mod cache;
mod cli;
mod cluster;
mod conformance;
mod dashboard;
mod download;
mod helpers;
mod migrations;
mod providers;
mod queue;
mod storage;
mod tracing;
mod webhooks;
mod worker;
