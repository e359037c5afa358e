//! Shared helpers for integration tests.

#![allow(dead_code)]

pub mod backend;
pub mod echo;
pub mod gateway;
pub mod procfs;
pub mod scripted;
pub mod seccomp;
pub mod tap;
