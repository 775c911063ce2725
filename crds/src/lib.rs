//! tailor's API: the `VerticalAutoscaler` custom resource (`tailor.dev/v1alpha1`), the
//! updater's `ResizeState` record of each, and exact CPU/memory quantity arithmetic. No I/O
//! lives here.
#![forbid(unsafe_code)]

pub mod crd;
pub mod memory_guard;
pub mod quantity;
pub mod resize_state;
pub mod schema;
pub mod v1alpha1;

pub use quantity::{Quantity, QuantityError};
pub use resize_state::{ResizeState, ResizeStateSpec};
pub use v1alpha1::{VerticalAutoscaler, VerticalAutoscalerSpec, VerticalAutoscalerStatus};
