//! The tailor updater: applies recommendations to running pods through the pod `resize`
//! subresource. CPU changes and memory increases go live; memory decreases go through a
//! container restart or a person's approval.
//!
//! This crate currently carries the binary's command-line surface only; the planner and the
//! actuator are being built.
#![forbid(unsafe_code)]
