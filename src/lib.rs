//! Loyalty-programme service: points, tiers, offers and rewards over gRPC.
//!
//! Layout: [`domain`] holds the rules (no I/O), [`service`] the use cases (one
//! transaction each), [`store`] all SQL, [`grpc`] the thin transport adapters, and
//! [`startup`] wires them into a server.
pub mod admin;
pub mod auth;
pub mod config;
pub mod domain;
pub mod error;
pub mod grpc;
pub mod infra;
pub mod metrics;
pub mod service;
pub mod startup;
pub mod store;
pub mod telemetry;
