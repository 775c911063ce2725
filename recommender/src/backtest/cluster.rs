//! tailor as the recommender in the cluster runs it, for the live backtest: the
//! VerticalAutoscaler that targets the workload gives the policy of each container and, with
//! the workload's current pods and the JVM heap metrics in Prometheus, its heap floor,
//! computed by the recommender's own code ([`Context::estimator_inputs`]).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::api::Api;
use kube::core::PartialObjectMeta;
use tailor_crds::v1alpha1::{RecommenderPolicy, VerticalAutoscaler};

use super::Workload;
use crate::cli::{list, list_meta};
use crate::controller::{Context, EstimatorInputs, Options as ControllerOptions};
use crate::model::backtest::Options;
use crate::prometheus::Prometheus;

/// How long the cluster has to answer the lists.
pub const TIMEOUT: Duration = Duration::from_secs(20);

/// How tailor is set up for a live workload.
#[derive(Debug, Clone, PartialEq)]
pub enum Setup {
    /// A VerticalAutoscaler targets the workload.
    Found {
        /// Its `namespace/name`.
        verticalautoscaler: String,
        /// Per container, what the recommender gives the estimator.
        inputs: BTreeMap<String, EstimatorInputs>,
        /// Whether `--tailor-policy` replaced its `recommenderPolicy`.
        policy_given: bool,
    },
    /// Nothing was read from the cluster, and why.
    NotRead {
        /// Why, for people.
        why: String,
        /// Whether `--tailor-policy` gives tailor's policy.
        policy_given: bool,
    },
}

impl Setup {
    /// The backtest options for `container`: `base` with the VerticalAutoscaler's policy,
    /// history window and heap floor for it, where one was found.
    pub fn options(&self, container: &str, base: &Options) -> Options {
        let Self::Found { inputs, .. } = self else {
            return base.clone();
        };
        let Some(i) = inputs.get(container) else {
            return base.clone();
        };
        Options {
            tailor_policy: i.policy.clone(),
            tailor_window: i.window,
            tailor_heap_floor: i.heap.as_ref().map(|(floor, _)| *floor),
            ..base.clone()
        }
    }

    /// What tailor replays with: one line for the whole workload when nothing was read, else
    /// one per container (named by `trace`).
    pub fn notes(&self, traces: &[(String, String)]) -> Vec<String> {
        let policy = |given: bool, found: &str| {
            if given {
                "the --tailor-policy".to_owned()
            } else {
                found.to_owned()
            }
        };
        match self {
            Self::NotRead { why, policy_given } => vec![format!(
                "heap hints not applied: {why}; tailor replays with {}",
                policy(*policy_given, "the default recommenderPolicy")
            )],
            Self::Found {
                verticalautoscaler,
                inputs,
                policy_given,
            } => traces
                .iter()
                .map(|(trace, container)| {
                    let heap = match inputs.get(container).and_then(|i| i.heap.as_ref()) {
                        Some((floor, hint)) => format!(
                            "heap floor {:.0}Mi ({})",
                            floor / 1048576.0,
                            hint.source
                        ),
                        None => "no heap hint".to_owned(),
                    };
                    format!(
                        "{trace}: tailor as VerticalAutoscaler {verticalautoscaler} sets it up: {}, {heap}",
                        policy(*policy_given, "its recommenderPolicy")
                    )
                })
                .collect(),
        }
    }
}

/// What is listed in the workload's namespace.
struct Listed {
    vas: Vec<VerticalAutoscaler>,
    pods: Vec<Pod>,
    rss: Vec<PartialObjectMeta<ReplicaSet>>,
    jobs: Vec<PartialObjectMeta<Job>>,
}

/// The VerticalAutoscalers and pods of `ns`, and the ReplicaSets or Jobs that tie a
/// Deployment's or CronJob's pods to it.
async fn list_namespace(client: &kube::Client, ns: &str, kind: &str) -> Result<Listed, String> {
    let vas = list(Api::<VerticalAutoscaler>::namespaced(client.clone(), ns)).await?;
    let pods = list(Api::<Pod>::namespaced(client.clone(), ns)).await?;
    let rss = match kind {
        "Deployment" => list_meta(Api::<ReplicaSet>::namespaced(client.clone(), ns)).await?,
        _ => Vec::new(),
    };
    let jobs = match kind {
        "CronJob" => list_meta(Api::<Job>::namespaced(client.clone(), ns)).await?,
        _ => Vec::new(),
    };
    Ok(Listed {
        vas,
        pods,
        rss,
        jobs,
    })
}

/// Reads tailor's setup for `containers` of `workload` at `end` from the cluster the usual
/// kubeconfig (or the in-cluster configuration) points to; `policy` (from `--tailor-policy`)
/// replaces the VerticalAutoscaler's `recommenderPolicy`. Of several VerticalAutoscalers
/// targeting the workload, the first by name. No client, no answer within [`TIMEOUT`], no
/// access or no VerticalAutoscaler: [`Setup::NotRead`]. A VerticalAutoscaler the recommender
/// would refuse, or Prometheus failing: an error.
pub async fn read(
    prom: Arc<Prometheus>,
    workload: &Workload,
    containers: &[String],
    end: f64,
    policy: Option<&RecommenderPolicy>,
) -> Result<Setup, String> {
    let policy_given = policy.is_some();
    let not_read = |why: String| Ok(Setup::NotRead { why, policy_given });
    let client = match kube::Client::try_default().await {
        Ok(c) => c,
        Err(e) => return not_read(format!("no cluster to read ({e})")),
    };
    let ns = &workload.namespace;
    let listed =
        match tokio::time::timeout(TIMEOUT, list_namespace(&client, ns, workload.kind)).await {
            Err(_) => {
                return not_read(format!(
                    "the cluster did not answer within {}s",
                    TIMEOUT.as_secs()
                ));
            }
            Ok(Err(e)) => return not_read(format!("in namespace {ns}, {e}")),
            Ok(Ok(l)) => l,
        };
    let found = listed
        .vas
        .into_iter()
        .filter(|va| {
            let t = &va.spec.target_ref;
            t.kind == workload.kind && t.name == workload.name
        })
        .min_by_key(ResourceExt::name_any);
    let Some(mut va) = found else {
        return not_read(format!(
            "no VerticalAutoscaler in {ns} targets {}/{}",
            workload.kind, workload.name
        ));
    };
    let name = format!("{ns}/{}", va.name_any());
    if let Some(p) = policy {
        va.spec.recommender_policy = p.clone();
    }
    let ctx = Context::from_lists(
        client,
        prom,
        ControllerOptions::default(),
        listed.pods,
        listed.rss,
        listed.jobs,
    );
    let inputs = ctx
        .estimator_inputs(&va, containers, end)
        .await
        .map_err(|e| format!("VerticalAutoscaler {name}: {e}"))?;
    Ok(Setup::Found {
        verticalautoscaler: name,
        inputs,
        policy_given,
    })
}
