//! The hoop gateway: a PostgreSQL wire-protocol relay that logs agents in
//! with OIDC tokens, connects upstream with its own credential, maps groups
//! to a database role and hands the database a signed session.
//!
//! Reading order:
//! - [`config`]: the TOML configuration (secrets from files or env vars)
//! - [`server`]: listener, per-connection flow, graceful shutdown
//! - [`handshake`]: client startup state machine (TLS, cancel, login)
//! - [`auth`]: JWT verification (OIDC discovery + JWKS, static JWKS, dev issuer)
//! - [`upstream`]: SCRAM login as the gateway role, `SET ROLE` + `hoop.session`
//! - [`relay`]: the steady-state `select!` loop and per-connection state
//! - [`protocol`]: byte-exact framing and the few messages the gateway writes
//! - [`cancel`]: the gateway's BackendKeyData and CancelRequest forwarding
//! - [`tls`]: rustls on both sides
//! - [`audit`]: `[audit]`, what the gateway records, `hoop audit …`
//! - [`reviews`]: `[reviews]`, the review hub and reviewer tokens, `hoop reviews …`
//! - [`admin`], [`metrics`]: `/healthz`, `/metrics`, the review API and page
//! - [`cli`], [`demo`], [`keys`]: the `hoop` command

pub mod admin;
pub mod audit;
pub mod auth;
pub mod cancel;
pub mod cli;
pub mod config;
pub mod demo;
pub mod handshake;
pub mod keys;
pub mod login;
pub mod metrics;
pub mod protocol;
pub mod relay;
pub mod reviews;
pub mod server;
pub mod tls;
pub mod transport;
pub mod upstream;
