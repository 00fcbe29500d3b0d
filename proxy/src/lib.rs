//! The hoop gateway: a PostgreSQL wire-protocol relay that logs agents in
//! with OIDC tokens, connects upstream with its own credential, maps groups
//! to a database role and hands the database a signed session.
//!
//! The modules form layers; each imports only from layers below it (no
//! import cycles: `scripts/cycles.py`, run by the lint stage of
//! `scripts/test.sh`). Bottom up:
//!
//! 1. [`config`]: the TOML configuration. It holds `[audit]`, `[reviews]`
//!    and `[[rules]]`/`[policy]` as the types their crates define
//!    (`hoop-audit`, `hoop-reviews`, `hoop-policy`) and imports no other
//!    module of the gateway.
//! 2. [`protocol`] (byte-exact framing; every message read once into a
//!    frontend or backend type that borrows its frame, and a named
//!    constructor for each message the gateway writes), `tls` (rustls on
//!    both sides), `metrics`, `transport` (TCP, then TLS, to the database).
//! 3. The features, each on its own: [`auth`] (JWT verification: OIDC
//!    discovery + JWKS, static JWKS, dev issuer), `cancel` (the gateway's
//!    BackendKeyData and CancelRequest forwarding), `upstream` (SCRAM login
//!    as the gateway role, `SET ROLE` + `hoop.session`), `audit` (opening
//!    the store, recorded refusals, `hoop audit …`), `reviews` (the hub,
//!    reviewer tokens, `hoop reviews …`), `admin` (`/healthz`, `/metrics`).
//! 4. The connection: `handshake` (SSLRequest / direct SSL / GSSENCRequest
//!    / CancelRequest up to the StartupMessage; knows only the wire),
//!    `login` (startup parameters, the password that must be a token, the
//!    group → role decision), [`relay`] (the steady-state `select!` loop and
//!    the one model of the session's statements and portals).
//! 5. [`server`]: listener, per-connection flow, graceful shutdown; it wires
//!    the layers below and nothing imports it.
//! 6. [`cli`], `demo`, `keys`: the `hoop` command.

// What the `hoop` binary and the integration tests use; everything else is
// the crate's own.
pub mod auth;
pub mod cli;
pub mod config;
pub mod encoding;
pub mod server;

pub(crate) mod admin;
pub(crate) mod audit;
pub(crate) mod cancel;
pub(crate) mod demo;
pub(crate) mod handshake;
pub(crate) mod keys;
pub(crate) mod login;
pub(crate) mod metrics;
pub(crate) mod protocol;
pub(crate) mod relay;
pub(crate) mod reviews;
pub(crate) mod threads;
pub(crate) mod tls;
pub(crate) mod transport;
pub(crate) mod upstream;
