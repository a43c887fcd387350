//! Conformance suites: one set of plain async functions per port, run against every adapter of
//! that port, so the in-memory twins cannot drift from the real backends.
//!
//! Each suite module holds the behaviour as functions that take the adapter under test (and, where
//! the port has no way to create state, a small seeding hook), followed by one test module per
//! adapter that calls every function. A behaviour that holds for one adapter and not another
//! fails by adapter name, e.g. `conformance::design_store::sqlite::…`.

mod blob_store;
mod cache_index;
mod design_store;
mod tenant_limiter;
