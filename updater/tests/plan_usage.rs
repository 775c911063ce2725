//! The rule that a memory decrease restarting a container never goes below the container's
//! working set now (`plan::usage`).

use std::collections::BTreeMap;

use tailor_updater::plan::resources::{Amounts, ContainerResources};
use tailor_updater::plan::usage::{Hold, RestartCut, check, restart_cuts};
use tailor_updater::plan::{ContainerChange, PodPlan};

const MI: i64 = 1 << 20;

fn res(request: Option<i64>, limit: Option<i64>) -> ContainerResources {
    ContainerResources {
        requests: Amounts {
            cpu: Some(100),
            memory: request,
        },
        limits: Amounts {
            cpu: None,
            memory: limit,
        },
    }
}

fn change(
    name: &str,
    from: ContainerResources,
    to: ContainerResources,
    restarts: bool,
) -> ContainerChange {
    ContainerChange {
        container: name.into(),
        from,
        to,
        restarts,
        approval: None,
    }
}

fn plan(changes: Vec<ContainerChange>) -> PodPlan {
    PodPlan {
        changes,
        ..PodPlan::default()
    }
}

#[test]
fn only_memory_decreases_that_restart_are_checked() {
    let p = plan(vec![
        // Down through a restart: the new limit is the ceiling.
        change(
            "a",
            res(Some(512 * MI), Some(1024 * MI)),
            res(Some(256 * MI), Some(512 * MI)),
            true,
        ),
        // Down live: the kubelet checks it.
        change(
            "b",
            res(Some(512 * MI), Some(512 * MI)),
            res(Some(256 * MI), Some(256 * MI)),
            false,
        ),
        // Up through a restart.
        change(
            "c",
            res(Some(256 * MI), Some(256 * MI)),
            res(Some(512 * MI), Some(512 * MI)),
            true,
        ),
        // No limit: the request is the ceiling.
        change(
            "d",
            res(Some(512 * MI), None),
            res(Some(300 * MI), None),
            true,
        ),
        // A restart for CPU, memory unchanged.
        change(
            "e",
            res(Some(512 * MI), Some(512 * MI)),
            res(Some(512 * MI), Some(512 * MI)),
            true,
        ),
        // A limit where there was none is a decrease.
        change(
            "f",
            res(Some(512 * MI), None),
            res(Some(512 * MI), Some(600 * MI)),
            true,
        ),
    ]);
    assert_eq!(
        restart_cuts(&p),
        vec![
            RestartCut {
                container: "a".into(),
                ceiling: 512 * MI
            },
            RestartCut {
                container: "d".into(),
                ceiling: 300 * MI
            },
            RestartCut {
                container: "f".into(),
                ceiling: 600 * MI
            },
        ]
    );
}

#[test]
fn a_cut_goes_only_at_or_above_the_working_set_of_every_restarting_container() {
    let cuts = vec![
        RestartCut {
            container: "a".into(),
            ceiling: 512 * MI,
        },
        RestartCut {
            container: "d".into(),
            ceiling: 300 * MI,
        },
    ];
    let sets = |a: f64, d: f64| BTreeMap::from([("a".to_owned(), a), ("d".to_owned(), d)]);
    let mi = MI as f64;
    assert_eq!(check(&cuts, Ok(&sets(400.0 * mi, 300.0 * mi))), Ok(()));
    assert_eq!(
        check(&cuts, Ok(&sets(400.0 * mi, 300.0 * mi + 1.0))),
        Err(Hold::BelowUsage {
            container: "d".into(),
            ceiling: 300 * MI,
            usage: 300.0 * mi + 1.0
        })
    );
    // A container without a reading holds the cut.
    let only_a = BTreeMap::from([("a".to_owned(), 1.0)]);
    assert!(
        matches!(check(&cuts, Ok(&only_a)), Err(Hold::Unknown(m)) if m.contains("container d"))
    );
    // No reading at all holds it too, saying why.
    assert_eq!(
        check(&cuts, Err("Prometheus unavailable")),
        Err(Hold::Unknown("Prometheus unavailable".into()))
    );
    // Nothing to check: nothing is read, nothing held.
    assert_eq!(check(&[], Err("Prometheus unavailable")), Ok(()));
}
