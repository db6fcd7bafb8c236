//! # TechHub on sled
//!
//! `SledStore` keeps everything in a sled 0.34 database: the pure-Rust embedded alternative to SQLite.
