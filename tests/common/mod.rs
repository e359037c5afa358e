//! Shared helpers for integration tests.

#![allow(dead_code)]

pub mod backend;
pub mod differential;
pub mod echo;
pub mod framing_gen;
pub mod gateway;
pub mod procfs;
pub mod reference;
pub mod scripted;
pub mod seccomp;
pub mod tap;
