//! tailor's updater: applies the recommender's recommendations to running pods through the
//! `resize` subresource, and sizes new pods at creation. [`plan`] is the pure planner;
//! [`controller`] the actuator around it; [`admission`] the webhook every replica serves.

pub mod admission;
pub mod controller;
pub mod metrics;
pub mod plan;
