//! The CRD checked in under `deploy/crds/` is what the Rust types generate.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

use std::path::PathBuf;

#[test]
fn checked_in_crd_is_current() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(tailor_crds::crd::CRD_PATH);
    let checked_in = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let generated = tailor_crds::crd::crd_yaml().expect("serialize CRD");
    assert!(
        checked_in == generated,
        "{} is stale: run `cargo run -p tailor-crds --bin crdgen` and commit the result",
        path.display()
    );
}

#[test]
fn crd_declares_the_api_of_the_design() {
    let yaml = tailor_crds::crd::crd_yaml().expect("serialize CRD");
    for needle in [
        "group: tailor.dev",
        "name: v1alpha1",
        "kind: VerticalAutoscaler",
        "- va",
        "scope: Namespaced",
        "status: {}",
    ] {
        assert!(yaml.contains(needle), "CRD lacks {needle:?}");
    }
}
