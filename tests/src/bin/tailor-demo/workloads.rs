//! The five sample workloads: their pods' container, usage model and VerticalAutoscaler policy.

use serde_json::{Value, json};

/// One sample workload.
pub struct Workload {
    pub name: &'static str,
    pub kind: &'static str,
    pub replicas: usize,
    pub what: &'static str,
    pub container: Value,
    pub usage: Value,
    pub va: Value,
    /// OOM kills in the history, hours ago.
    pub oom_hours_ago: Vec<i64>,
}

pub fn workloads() -> Vec<Workload> {
    vec![
        Workload {
            name: "web-api",
            kind: "Deployment",
            replicas: 2,
            what: "web API with a daily CPU cycle, over-provisioned: CPU goes down live, the memory cut waits for approval",
            container: json!({"name": "app", "image": "example/app:1",
                "resources": {"requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"cpu": "2", "memory": "1Gi"}}}),
            usage: json!({"app": {"model": "daily", "cpu": {"min": 0.1, "max": 0.45},
                "memory": {"min": "330Mi", "max": "400Mi"}, "noise": 0.05}}),
            va: json!({"updatePolicy": {"updateMode": "InPlace"}}),
            oom_hours_ago: vec![],
        },
        Workload {
            name: "orders",
            kind: "StatefulSet",
            replicas: 2,
            what: "JVM service started with -Xmx2g whose heap has grown to 1Gi so far: memory goes down through a container restart, one pod at a time, never below the 2g heap + overhead",
            container: json!({"name": "app", "image": "example/app:1",
                "command": ["java", "-Xmx2g", "-jar", "/app/orders.jar"],
                "resources": {"requests": {"cpu": "500m", "memory": "3Gi"}, "limits": {"cpu": "1", "memory": "3Gi"}},
                "resizePolicy": [{"resourceName": "memory", "restartPolicy": "RestartContainer"}]}),
            usage: json!({"app": {"model": "jvm", "cpu": 0.2, "heapMax": "1Gi", "nonHeap": "200Mi",
                "growSeconds": 600}}),
            va: json!({"updatePolicy": {"updateMode": "InPlace", "memoryDecrease": "RestartContainer"}}),
            oom_hours_ago: vec![],
        },
        Workload {
            name: "reports",
            kind: "Deployment",
            replicas: 1,
            what: "over-provisioned service in recommendation-only mode (Off): never touched",
            container: json!({"name": "app", "image": "example/app:1",
                "resources": {"requests": {"cpu": "2", "memory": "4Gi"}, "limits": {"memory": "4Gi"}}}),
            usage: json!({"app": {"model": "constant", "cpu": 0.05, "memory": "150Mi", "noise": 0.05}}),
            va: json!({"updatePolicy": {"updateMode": "Off"}}),
            oom_hours_ago: vec![],
        },
        Workload {
            name: "worker",
            kind: "Deployment",
            replicas: 2,
            what: "memory-spiky worker OOM-killed two days ago: memory goes up live, above the OOM bump",
            container: json!({"name": "app", "image": "example/app:1",
                "resources": {"requests": {"cpu": "250m", "memory": "384Mi"}, "limits": {"memory": "512Mi"}}}),
            usage: json!({"app": {"model": "spikes", "cpu": 0.1, "memory": "200Mi", "spikeCpu": 0.3,
                "spikeMemory": "250Mi", "everySeconds": 3600, "durationSeconds": 300, "noise": 0.05}}),
            va: json!({"updatePolicy": {"updateMode": "InPlace"}}),
            oom_hours_ago: vec![48],
        },
        Workload {
            name: "batch",
            kind: "Deployment",
            replicas: 1,
            what: "CPU-hungry job that needs more than a node has: the kubelet declares the resize Infeasible; it is surfaced and not retried",
            container: json!({"name": "app", "image": "example/app:1",
                "resources": {"requests": {"cpu": "4", "memory": "1Gi"}, "limits": {"memory": "1Gi"}}}),
            usage: json!({"app": {"model": "constant", "cpu": 7.6, "memory": "700Mi", "noise": 0.02}}),
            va: json!({"updatePolicy": {"updateMode": "InPlace", "memoryDecrease": "Never"}}),
            oom_hours_ago: vec![],
        },
    ]
}
