//! Code both enforcement points run: the gateway and the extension.
