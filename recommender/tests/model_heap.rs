//! Heap hints from JVM flags, GOMEMLIMIT and Node options.
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
