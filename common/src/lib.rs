//! Code both enforcement points run: the gateway (`proxy/`) and the extension
//! (`extension/`). Keeping one copy means the two layers can never disagree
//! about what a card number is, how it is masked, or which session is valid.
//!
//! Pure Rust, no I/O, no clock and no randomness: callers pass keys, seeds and
//! the current time, so every function here is deterministic and testable.
//!
//! - [`pan`]: finding primary account numbers (card numbers) in bytes.
//! - [`mask`]: masking strategies for declared columns and for free text.
//! - [`token`]: the signed session token the gateway issues and the
//!   extension verifies.
//! - [`names`]: names (extension, schema, GUCs, views) both sides must spell
//!   identically.
//! - [`identity`]: who is behind a session, as the gateway verified it.
//!
//! With the `gateway` feature (the gateway's crates; not the extension),
//! the types every gateway configuration section and record shares, which
//! do read files, the environment and the clock:
//!
//! - [`config`]: durations, secrets (`{ file }` / `{ env }`), key-naming errors.
//! - [`time`]: timestamps (microseconds, RFC 3339).

pub mod pan;

pub mod mask;

pub mod token;

pub mod names;

pub mod identity;

#[cfg(feature = "gateway")]
pub mod config;

#[cfg(feature = "gateway")]
pub mod time;
