//! The demo's workloads made to run on the real node: CPU scaled down, the real-node image,
//! and the pods' spec for the node.

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use serde_json::{Value, json};
use tailor_e2e::real_node::{IMAGE, RealNode};

use crate::workloads::Workload;
use crate::{Error, NS};

/// On the real node: the simulator's 8-core nodes hold it; on a node this size, CPU-scaled, it
/// fits.
const BATCH: &str = "CPU-hungry job using more CPU than it requests: on the simulator's 8-core nodes the recommendation is more than a node has (Infeasible); scaled to this node it fits, and the CPU goes up live";
const ORDERS: &str = "JVM service with -Xmx2g (here in JAVA_TOOL_OPTIONS of a stand-in process that uses what its model says) whose heap has grown to 1Gi so far: memory goes down through a container restart, one pod at a time, never below the 2g heap + overhead";

/// `q` (a CPU quantity) times `scale`, in whole millicores (at least 1m).
fn scale_cpu(q: &Value, scale: f64) -> Result<Value, Error> {
    let s = q.as_str().ok_or("a CPU quantity is not a string")?;
    let milli = tailor_crds::quantity::cpu_millis(&Quantity(s.into()))?;
    let scaled = ((milli as f64) * scale).round().max(1.0) as i64;
    Ok(Value::String(format!("{scaled}m")))
}

/// Multiplies the CPU figures of every model of a usage annotation by `scale`.
fn scale_usage(usage: &mut Value, scale: f64) {
    let mul = |v: &mut Value| {
        if let Some(n) = v.as_f64() {
            *v = json!(n * scale);
        }
    };
    for model in usage
        .as_object_mut()
        .into_iter()
        .flat_map(|m| m.values_mut())
    {
        for key in ["cpu", "spikeCpu"] {
            match model.get_mut(key) {
                Some(Value::Object(range)) => range.values_mut().for_each(mul),
                Some(v) => mul(v),
                None => {}
            }
        }
    }
}

/// A JVM's `-X` flags from its command line into `JAVA_TOOL_OPTIONS` (where the recommender
/// reads them as well), for a stand-in process that is not a JVM.
fn jvm_flags_to_env(c: &mut Value) {
    let Some(command) = c.get("command").and_then(Value::as_array).cloned() else {
        return;
    };
    if command.first().and_then(Value::as_str) != Some("java") {
        return;
    }
    let flags: Vec<&str> = command
        .iter()
        .filter_map(Value::as_str)
        .filter(|a| a.starts_with("-X"))
        .collect();
    c["env"] = json!([{"name": "JAVA_TOOL_OPTIONS", "value": flags.join(" ")}]);
    if let Some(o) = c.as_object_mut() {
        o.remove("command");
    }
}

/// The workloads for the real node: CPU requests, limits and usage times `scale`, memory as it
/// is, the real-node image.
pub fn workloads(mut list: Vec<Workload>, scale: f64) -> Result<Vec<Workload>, Error> {
    for w in &mut list {
        let res = &mut w.container["resources"];
        for part in ["requests", "limits"] {
            if let Some(cpu) = res.get_mut(part).and_then(|p| p.get_mut("cpu")) {
                *cpu = scale_cpu(cpu, scale)?;
            }
        }
        scale_usage(&mut w.usage, scale);
        w.container["image"] = json!(IMAGE);
        w.container["imagePullPolicy"] = json!("Never");
        jvm_flags_to_env(&mut w.container);
        match w.name {
            "batch" => w.what = BATCH,
            "orders" => w.what = ORDERS,
            _ => {}
        }
    }
    Ok(list)
}

/// The spec of a pod on the real node: its container mounts its load file's directory.
pub fn pod_spec(node: &RealNode, pod: &str, container: &Value) -> Result<Value, Error> {
    let name = container["name"].as_str().unwrap_or("app");
    // The directory must exist before the pod; the load comes from the driver.
    node.set_load(NS, pod, name, 0, 0)?;
    let ctl = node.ctl_dir(NS, pod, name);
    let mut c = container.clone();
    c["volumeMounts"] = json!([{"name": "ctl", "mountPath": "/ctl"}]);
    Ok(json!({
        "nodeName": node.name(), "hostNetwork": true, "automountServiceAccountToken": false,
        "terminationGracePeriodSeconds": 2, "containers": [c],
        "volumes": [{"name": "ctl", "hostPath": {"path": ctl, "type": "Directory"}}],
    }))
}

/// The sum of the pods' CPU requests, millicores.
pub fn cpu_requests(list: &[Workload]) -> i64 {
    list.iter()
        .map(|w| {
            let q = w.container["resources"]["requests"]["cpu"].as_str();
            let m = q.map_or(0, |q| {
                tailor_crds::quantity::cpu_millis(&Quantity(q.into())).unwrap_or(0)
            });
            m * w.replicas as i64
        })
        .sum()
}
