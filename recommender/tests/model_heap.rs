//! Heap hints from JVM flags, GOMEMLIMIT and Node options, and measured JVM heaps.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

const MI: f64 = 1024.0 * 1024.0;
const GI: f64 = 1024.0 * MI;
use tailor_recommender::model::heap::*;

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

fn env(v: &[(&str, &str)]) -> Vec<(String, String)> {
    v.iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

fn detect_with(command: &[&str], args: &[&str], e: &[(&str, &str)]) -> Option<HeapHint> {
    let (c, a, e) = (s(command), s(args), env(e));
    detect(&Process {
        command: &c,
        args: &a,
        env: &e,
    })
}

#[test]
fn jvm_flags_from_every_source() {
    let h = detect_with(&["java", "-Xmx3g", "-jar", "app.jar"], &[], &[]).unwrap();
    assert_eq!(h.size, HeapSize::Bytes(3.0 * GI));
    assert_eq!(h.source, "-Xmx3g in command");
    let h = detect_with(&["sh", "-c", "exec java -Xmx512m -jar app.jar"], &[], &[]).unwrap();
    assert_eq!(h.size, HeapSize::Bytes(512.0 * MI));
    let h = detect_with(&["java"], &["-XX:MaxHeapSize=2147483648"], &[]).unwrap();
    assert_eq!(h.size, HeapSize::Bytes(2.0 * GI));
    let h = detect_with(&[], &[], &[("JAVA_TOOL_OPTIONS", "-Xmx1G -XX:+UseG1GC")]).unwrap();
    assert_eq!(
        (h.size, h.source.as_str()),
        (HeapSize::Bytes(GI), "-Xmx1G in JAVA_TOOL_OPTIONS")
    );
    let h = detect_with(&[], &[], &[("JAVA_OPTS", "\"-Xmx768m\"")]).unwrap();
    assert_eq!(h.size, HeapSize::Bytes(768.0 * MI));
    let h = detect_with(&[], &[], &[("JDK_JAVA_OPTIONS", "-Xms2g")]).unwrap();
    assert_eq!(
        h.size,
        HeapSize::Bytes(2.0 * GI),
        "-Xms alone: the heap is at least that"
    );
}

#[test]
fn later_sources_override_earlier_ones() {
    let h = detect_with(&["java", "-Xmx4g"], &[], &[("JAVA_TOOL_OPTIONS", "-Xmx1g")]).unwrap();
    assert_eq!(
        h.size,
        HeapSize::Bytes(4.0 * GI),
        "the command line beats JAVA_TOOL_OPTIONS"
    );
    let h = detect_with(&["java", "-Xmx1g", "-Xmx2g"], &[], &[]).unwrap();
    assert_eq!(h.size, HeapSize::Bytes(2.0 * GI), "the last flag wins");
    let h = detect_with(&["java", "-Xmx1g", "-Xms3g"], &[], &[]).unwrap();
    assert_eq!(
        h.size,
        HeapSize::Bytes(3.0 * GI),
        "-Xms above -Xmx raises the heap"
    );
}

#[test]
fn percentage_heaps() {
    let h = detect_with(&["java", "-XX:MaxRAMPercentage=75.0"], &[], &[]).unwrap();
    assert_eq!(h.size, HeapSize::FractionOfLimit(0.75));
    // 256 MiB of overhead must fit in the quarter the heap leaves: a 1 GiB limit.
    assert_eq!(floor(&h, None), GI);
    let h = detect_with(
        &["java", "-XX:MaxRAMPercentage=50", "-XX:MaxRAM=4g"],
        &[],
        &[],
    )
    .unwrap();
    assert_eq!(h.size, HeapSize::Bytes(2.0 * GI));
    let h = detect_with(&["java", "-XX:MaxRAM=4g"], &[], &[]).unwrap();
    assert_eq!(
        h.size,
        HeapSize::Bytes(GI),
        "default MaxRAMPercentage is 25"
    );
}

#[test]
fn go_and_node() {
    let h = detect_with(&["/app"], &[], &[("GOMEMLIMIT", "1536MiB")]).unwrap();
    assert_eq!(
        (h.runtime, h.size),
        (Runtime::Go, HeapSize::Bytes(1536.0 * MI))
    );
    assert_eq!(detect_with(&["/app"], &[], &[("GOMEMLIMIT", "off")]), None);
    assert_eq!(
        detect_with(&["/app"], &[], &[("GOMEMLIMIT", "2147483648")])
            .unwrap()
            .size,
        HeapSize::Bytes(2.0 * GI)
    );
    let h = detect_with(
        &["node", "--max-old-space-size=4096", "server.js"],
        &[],
        &[],
    )
    .unwrap();
    assert_eq!(
        (h.runtime, h.size),
        (Runtime::Node, HeapSize::Bytes(4.0 * GI))
    );
    let h = detect_with(
        &["node", "server.js"],
        &[],
        &[("NODE_OPTIONS", "--max-old-space-size=1024")],
    )
    .unwrap();
    assert_eq!(h.size, HeapSize::Bytes(GI));
}

#[test]
fn nothing_or_garbage_gives_no_hint() {
    assert_eq!(
        detect_with(&["nginx", "-g", "daemon off;"], &[], &[("FOO", "-Xmxlots")]),
        None
    );
    assert_eq!(
        detect_with(
            &["java", "-Xmx", "-Xmx12q", "-XX:MaxRAMPercentage=250"],
            &[],
            &[]
        ),
        None
    );
}

#[test]
fn floors_add_the_overhead() {
    let jvm = HeapHint {
        runtime: Runtime::Jvm,
        size: HeapSize::Bytes(3.0 * GI),
        source: String::new(),
    };
    assert_eq!(floor(&jvm, None), 3.0 * GI + 0.75 * GI);
    assert_eq!(floor(&jvm, Some(512.0 * MI)), 3.5 * GI);
    let small = HeapHint {
        runtime: Runtime::Jvm,
        size: HeapSize::Bytes(256.0 * MI),
        source: String::new(),
    };
    assert_eq!(
        floor(&small, None),
        512.0 * MI,
        "at least 256 MiB beside the heap"
    );
}

#[test]
fn the_highest_floor_wins_and_ties_go_to_the_first() {
    let measured = measured_hint("jvm_memory_max_bytes", 3.0 * GI);
    assert_eq!(
        (measured.runtime, measured.size, measured.source.as_str()),
        (
            Runtime::Jvm,
            HeapSize::Bytes(3.0 * GI),
            "prometheus jvm_memory_max_bytes"
        )
    );
    let percentage = detect_with(&["java", "-XX:MaxRAMPercentage=75"], &[], &[]).unwrap();
    // The measured 3 GiB beats the percentage's 1 GiB, in either order.
    for hints in [
        vec![measured.clone(), percentage.clone()],
        vec![percentage.clone(), measured.clone()],
    ] {
        let (f, h) = highest(hints, None).unwrap();
        assert_eq!(f, 3.75 * GI);
        assert_eq!(h, measured);
    }
    // A measured heap below a percentage's smallest fitting limit does not lower it.
    let small = measured_hint("jvm_memory_max_bytes", 512.0 * MI);
    let (f, h) = highest([small, percentage.clone()], None).unwrap();
    assert_eq!((f, h), (GI, percentage));
    // An -Xmx larger than the measured heap wins; an equal one ties, and the first wins.
    let xmx4 = detect_with(&["java", "-Xmx4g"], &[], &[]).unwrap();
    let (f, h) = highest([measured.clone(), xmx4.clone()], None).unwrap();
    assert_eq!((f, h.source.as_str()), (5.0 * GI, "-Xmx4g in command"));
    let xmx3 = detect_with(&["java", "-Xmx3g"], &[], &[]).unwrap();
    let (_, h) = highest([measured.clone(), xmx3], None).unwrap();
    assert_eq!(h, measured);
    // The policy's overhead applies to every hint.
    let (f, _) = highest([measured], Some(GI)).unwrap();
    assert_eq!(f, 4.0 * GI);
    assert_eq!(highest(Vec::new(), None), None);
}

fn key(pod: &str, container: &str) -> MeasuredKey {
    MeasuredKey {
        pod: pod.into(),
        container: container.into(),
        metric: "jvm_memory_max_bytes".into(),
    }
}

#[test]
fn measured_heaps_keep_the_largest_and_expire_with_the_window() {
    let mut m = MeasuredHeaps::default();
    assert!(m.is_empty());
    // A JVM restarted with a larger heap at t=300, another pod since t=200.
    for (t, v) in [(100.0, 2.0 * GI), (200.0, 2.0 * GI), (300.0, 3.0 * GI)] {
        assert!(m.add(key("a", ""), t, v));
    }
    assert!(m.add(key("b", "app"), 200.0, GI));
    let maxima: Vec<(MeasuredKey, f64)> = m.maxima().map(|(k, v)| (k.clone(), v)).collect();
    assert_eq!(maxima, [(key("a", ""), 3.0 * GI), (key("b", "app"), GI)]);
    // Garbage is refused.
    for v in [f64::NAN, f64::INFINITY, -1.0, 0.0] {
        assert!(!m.add(key("c", ""), 300.0, v), "{v}");
    }
    assert!(m.maxima().all(|(k, _)| k.pod != "c"));
    // A smaller heap after the larger one: the larger stays until it leaves the window.
    assert!(m.add(key("a", ""), 400.0, GI));
    assert_eq!(m.maxima().next().map(|(_, v)| v), Some(3.0 * GI));
    m.expire(250.0);
    let maxima: Vec<(MeasuredKey, f64)> = m.maxima().map(|(k, v)| (k.clone(), v)).collect();
    assert_eq!(maxima, [(key("a", ""), 3.0 * GI)], "b last seen at 200");
    m.expire(350.0);
    assert_eq!(
        m.maxima().next().map(|(_, v)| v),
        Some(GI),
        "the 3 GiB heap was last seen at 300"
    );
    m.expire(401.0);
    assert!(m.is_empty());
}

#[test]
fn measured_heaps_are_attributed_by_label_or_by_the_only_jvm() {
    let c = |v: &[(&str, Option<Runtime>)]| -> Vec<(String, Option<Runtime>)> {
        v.iter().map(|(n, r)| (n.to_string(), *r)).collect()
    };
    let one = c(&[("app", None)]);
    assert_eq!(attribute("", &one), Some("app"), "the only container");
    assert_eq!(attribute("main", &one), Some("main"), "the label names it");
    let two = c(&[("proxy", None), ("app", Some(Runtime::Jvm))]);
    assert_eq!(attribute("", &two), Some("app"), "the only JVM");
    assert_eq!(attribute("proxy", &two), Some("proxy"));
    let no_jvm = c(&[("proxy", Some(Runtime::Go)), ("app", None)]);
    assert_eq!(attribute("", &no_jvm), None);
    let two_jvms = c(&[("a", Some(Runtime::Jvm)), ("b", Some(Runtime::Jvm))]);
    assert_eq!(attribute("", &two_jvms), None);
    assert_eq!(attribute("", &[]), None, "no spec to tell by");
}
