//! The CRDs checked in under `deploy/crds/` are what the Rust types generate.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

use std::path::PathBuf;

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(tailor_crds::crd::CRD_DIR)
}

#[test]
fn checked_in_crds_are_current() {
    for (name, generated) in tailor_crds::crd::crd_files().expect("serialize CRDs") {
        let path = dir().join(&name);
        let checked_in = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
        assert!(
            checked_in == generated,
            "{} is stale: run `make crds` and commit the result",
            path.display()
        );
    }
}

#[test]
fn the_kustomization_lists_every_crd_and_nothing_else() {
    let kustomization = std::fs::read_to_string(dir().join("kustomization.yaml")).unwrap();
    let listed: serde_yaml::Value = serde_yaml::from_str(&kustomization).unwrap();
    let mut listed: Vec<String> = listed["resources"]
        .as_sequence()
        .expect("resources")
        .iter()
        .map(|r| r.as_str().unwrap().to_owned())
        .collect();
    listed.sort();
    let mut generated: Vec<String> = tailor_crds::crd::crd_files()
        .unwrap()
        .into_iter()
        .map(|(name, _)| name)
        .collect();
    generated.sort();
    assert_eq!(listed, generated);
    let mut on_disk: Vec<String> = std::fs::read_dir(dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n != "kustomization.yaml")
        .collect();
    on_disk.sort();
    assert_eq!(
        on_disk, generated,
        "files in deploy/crds/ no type generates"
    );
}

#[test]
fn crds_declare_the_api_of_the_design() {
    let files = tailor_crds::crd::crd_files().expect("serialize CRDs");
    let yaml = |name: &str| {
        files
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, y)| y.as_str())
            .unwrap_or_else(|| panic!("no {name}"))
    };
    let va = yaml("tailor.dev_verticalautoscalers.yaml");
    for needle in [
        "group: tailor.dev",
        "name: v1alpha1",
        "kind: VerticalAutoscaler",
        "- va",
        "scope: Namespaced",
        "status: {}",
    ] {
        assert!(
            va.contains(needle),
            "VerticalAutoscaler CRD lacks {needle:?}"
        );
    }
    // The updater's record: namespaced, no status subresource (the updater writes the whole
    // object), the VerticalAutoscaler's uid required.
    let state = yaml("tailor.dev_resizestates.yaml");
    for needle in [
        "group: tailor.dev",
        "name: v1alpha1",
        "kind: ResizeState",
        "plural: resizestates",
        "scope: Namespaced",
        "verticalAutoscalerUid:",
        "- verticalAutoscalerUid",
        "pendingApprovals:",
        "lastResizes:",
        "x-kubernetes-list-type: map",
    ] {
        assert!(state.contains(needle), "ResizeState CRD lacks {needle:?}");
    }
    assert!(!state.contains("subresources"), "{state}");
}
