use super::*;
use crate::sim::usage::Bytes;

fn container() -> HistoryContainer {
    HistoryContainer {
        uid: "u-1".into(),
        pod_ip: "10.244.0.2".into(),
        node: "n".into(),
        host_ip: "10.0.0.2".into(),
        image: "i".into(),
        cpu: (Some(0.1), Some(0.25)),
        memory: (Some(100.0), Some(200.0)),
        owner: None,
        ..HistoryContainer::new(
            "ns",
            "p",
            "c",
            Model::Constant {
                cpu: 0.5,
                memory: Bytes(300.0),
                noise: 0.0,
            },
            ("", ""),
        )
    }
}

#[test]
fn counters_accumulate_and_limits_cap() {
    let s = generate(&[container()], 0, 120, 60);
    let find = |m: &str| s.iter().find(|x| x.metric == m).unwrap();
    let cpu = find("container_cpu_usage_seconds_total");
    assert_eq!(
        cpu.samples,
        vec![(0, 0.0), (60, 15.0), (120, 30.0)],
        "0.25 cores (throttled) x 60 s"
    );
    assert_eq!(
        find("container_memory_working_set_bytes").samples[0].1,
        200.0,
        "memory capped at the limit"
    );
    assert_eq!(
        find("container_cpu_cfs_throttled_periods_total").samples,
        vec![(0, 0.0), (60, 600.0), (120, 1200.0)],
        "every period throttled while demand is above the limit"
    );
    let text = openmetrics(&s);
    assert!(text.ends_with("# EOF\n"));
    assert!(
        !text.lines().any(|l| l.starts_with("jvm_")),
        "no JVM series unless asked for: {text}"
    );
    assert!(text.contains("kube_pod_container_resource_limits{container=\"c\",instance=\"10.244.255.2:8443\",job=\"kube-state-metrics\",namespace=\"ns\",node=\"n\",pod=\"p\",resource=\"cpu\",uid=\"u-1\",unit=\"core\"} 0.25 60\n"), "{text}");
}

#[test]
fn series_carry_the_labels_of_a_kube_prometheus_scrape() {
    let s = generate(&[container()], 0, 60, 30);
    let labels = |m: &str| {
        let l = &s.iter().find(|x| x.metric == m).unwrap().labels;
        l.iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",")
    };
    assert_eq!(
        labels("container_memory_working_set_bytes"),
        "container=c,endpoint=https-metrics,image=i,instance=10.0.0.2:10250,job=kubelet,metrics_path=/metrics/cadvisor,namespace=ns,node=n,pod=p,service=kubelet"
    );
    assert_eq!(
        labels("kube_pod_owner"),
        "instance=10.244.255.2:8443,job=kube-state-metrics,namespace=ns,owner_is_controller=false,owner_kind=<none>,owner_name=<none>,pod=p,uid=u-1"
    );
    assert_eq!(
        labels("kube_pod_info"),
        "created_by_kind=<none>,created_by_name=<none>,host_ip=10.0.0.2,host_network=false,instance=10.244.255.2:8443,job=kube-state-metrics,namespace=ns,node=n,pod=p,pod_ip=10.244.0.2,uid=u-1"
    );
    let phases: Vec<_> = s
        .iter()
        .filter(|x| x.metric == "kube_pod_status_phase")
        .map(|x| (x.labels["phase"].as_str(), x.samples[0].1))
        .collect();
    assert_eq!(
        phases,
        [
            ("Pending", 0.0),
            ("Succeeded", 0.0),
            ("Failed", 0.0),
            ("Unknown", 0.0),
            ("Running", 1.0)
        ]
    );
    let nodes = node_status(
        &[HistoryNode {
            name: "n".into(),
            cpu: 4.0,
            memory: 8.0,
            pods: 110.0,
        }],
        0,
        60,
        30,
    );
    let text = openmetrics(&nodes);
    assert!(text.contains("kube_node_status_allocatable{instance=\"10.244.255.2:8443\",job=\"kube-state-metrics\",node=\"n\",resource=\"pods\",unit=\"integer\"} 110 30\n"), "{text}");
    assert_eq!(
        nodes.len(),
        6,
        "capacity and allocatable of cpu, memory, pods"
    );
}

#[test]
fn a_pod_has_its_series_once_and_empty_labels_are_left_out() {
    let mut other = container();
    other.container = "d".into();
    other.uid = String::new();
    let s = generate(&[container(), other], 0, 60, 30);
    let owners = s.iter().filter(|x| x.metric == "kube_pod_owner").count();
    assert_eq!(owners, 1, "one kube_pod_owner per pod");
    let d = s
        .iter()
        .find(|x| {
            x.metric == "kube_pod_container_status_restarts_total" && x.labels["container"] == "d"
        })
        .unwrap();
    assert!(!d.labels.contains_key("uid"), "{:?}", d.labels);
}

#[test]
fn a_history_written_in_two_parts_joins_up() {
    let c = [container()];
    let rs = [ReplicaSetOwner {
        namespace: "ns".into(),
        replicaset: "r".into(),
        owner_kind: "Deployment".into(),
        owner_name: "d".into(),
    }];
    let inventory = Inventory {
        containers: &c,
        replicasets: &rs,
        nodes: &[],
    };
    let render = |w: Window| {
        let mut out = Vec::new();
        write_openmetrics(&inventory, w, &mut out).unwrap();
        String::from_utf8(out).unwrap()
    };
    let whole = render(Window::new(0, 300, 30));
    let first = render(Window::new(0, 150, 30));
    let rest = render(Window::new(0, 300, 30).from(180));
    let samples = |text: &str| {
        let mut l: Vec<String> = text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .map(str::to_owned)
            .collect();
        l.sort();
        l
    };
    let mut joined = samples(&first);
    joined.extend(samples(&rest));
    joined.sort();
    assert_eq!(joined, samples(&whole), "the same samples, none twice");
    assert!(
        rest.contains("container_cpu_usage_seconds_total{") && rest.contains("} 45 180\n"),
        "the counter goes on from the first part: {rest}"
    );
    assert!(whole.ends_with("# EOF\n"));
}

#[test]
fn jvm_heap_series_per_pool() {
    let gi = 1024.0 * 1024.0 * 1024.0;
    let h = |metrics, container: Option<&str>| JvmHeap {
        namespace: "ns".into(),
        pod: "p".into(),
        container: container.map(Into::into),
        metrics,
        lifetime: Some((60, 120)),
    };
    let s = jvm_heap(
        &[
            h(
                JvmHeapMetrics::Micrometer(vec![
                    ("G1 Eden Space".into(), -1.0),
                    ("G1 Old Gen".into(), 2.0 * gi),
                ]),
                None,
            ),
            h(JvmHeapMetrics::ClientJava(gi), Some("app")),
        ],
        0,
        180,
        60,
    );
    let text = openmetrics(&s);
    assert!(text.contains("jvm_memory_max_bytes{area=\"heap\",id=\"G1 Eden Space\",instance=\"p:8080\",namespace=\"ns\",pod=\"p\"} -1 60\n"), "{text}");
    assert!(text.contains("jvm_memory_max_bytes{area=\"heap\",id=\"G1 Old Gen\",instance=\"p:8080\",namespace=\"ns\",pod=\"p\"} 2147483648 120\n"), "{text}");
    assert!(
        text.contains("jvm_memory_max_bytes{area=\"nonheap\",id=\"Metaspace\""),
        "{text}"
    );
    assert!(text.contains("jvm_memory_bytes_max{area=\"heap\",container=\"app\",instance=\"p:8080\",namespace=\"ns\",pod=\"p\"} 1073741824 60\n"), "{text}");
    assert!(
        !text.contains(" 0\n") && !text.contains(" 180\n"),
        "only within the lifetime: {text}"
    );
}
