//! The API integration suite: one binary, each test starting the real server on a random
//! loopback port with a fresh SQLite database, and talking HTTP to it.

mod auth;
mod client;
mod common;
mod keys;
mod service;
