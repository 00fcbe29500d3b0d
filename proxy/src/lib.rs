//! The hoop gateway.
