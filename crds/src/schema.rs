//! Hand-written schema fragments that schemars cannot derive.

use schemars::{Schema, SchemaGenerator, json_schema};

/// The API server's pattern for `resource.Quantity`, without the minus sign: CPU and memory
/// amounts are never negative.
pub const QUANTITY_PATTERN: &str = r"^\+?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$";

/// A Kubernetes quantity: an integer or a string in quantity syntax, validated by
/// [`QUANTITY_PATTERN`] (which applies to the string form).
pub fn quantity(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "pattern": QUANTITY_PATTERN,
        // Bounds the cost the API server estimates for CEL rules over quantities.
        "maxLength": 64,
        "x-kubernetes-int-or-string": true,
    })
}
