//! tailor's updater: applies the recommender's recommendations to running pods through the
//! `resize` subresource. [`plan`] is the pure planner; [`controller`] the actuator around it.

pub mod controller;
pub mod metrics;
pub mod plan;
