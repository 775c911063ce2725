//! Heap hints: the memory a managed runtime is *allowed* to grow to, read from how the process
//! is started. A JVM keeps its heap resident once it has grown, so the memory floor must cover
//! the heap ceiling plus what the runtime needs beside it, however low the usage has been.
//!
//! Sources, later ones overriding earlier ones as the runtimes do:
//! - JVM: `JAVA_TOOL_OPTIONS`, then `JDK_JAVA_OPTIONS`, then `JAVA_OPTS` (expanded by start
//!   scripts into the command line), then the container's command and args. Flags: `-Xmx`,
//!   `-XX:MaxHeapSize=`, `-Xms` (the heap never shrinks below it), `-XX:MaxRAMPercentage=`,
//!   `-XX:MaxRAM=`. The last occurrence wins.
//! - Go: `GOMEMLIMIT` (`512MiB`, `2GiB`, bytes; `off` means none).
//! - Node.js: `--max-old-space-size=<MiB>` in `NODE_OPTIONS` or the command line.
//! - Measured: the heap ceiling a JVM reports in its metrics ([`MeasuredHeaps`]); the caller
//!   reads them from Prometheus and weighs them against the above with [`highest`].
//!
//! **A percentage heap** (`-XX:MaxRAMPercentage=75`) scales with the container's memory limit,
//! so it cannot be added to usage like a fixed size. tailor uses the smallest limit at which
//! heap and overhead fit: `overhead / (1 - percentage)`. With `MaxRAM` set too, the heap is
//! `MaxRAM x percentage`, a fixed size.
//!
//! **Overhead** (memory beside the heap) defaults, unless the policy sets one:
//! JVM `max(256 MiB, 25% of heap)` (metaspace, code cache, thread stacks, GC structures, direct
//! buffers); Go `max(64 MiB, 10%)` (`GOMEMLIMIT` already counts the Go runtime's own memory, so
//! the rest is stacks and cgo); Node.js `max(128 MiB, 25%)` (the young generation, code space
//! and native buffers lie outside the old space).

use std::collections::BTreeMap;

const KI: f64 = 1024.0;
const MI: f64 = 1024.0 * KI;
const GI: f64 = 1024.0 * MI;
const TI: f64 = 1024.0 * GI;

/// The runtime a hint comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Runtime {
    /// A Java virtual machine.
    Jvm,
    /// A Go program with a soft memory limit.
    Go,
    /// Node.js.
    Node,
    /// Set by the policy or an annotation.
    Explicit,
}

/// The size of the heap.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum HeapSize {
    /// A fixed ceiling, bytes.
    Bytes(f64),
    /// A fraction of the container's memory limit (`-XX:MaxRAMPercentage`).
    FractionOfLimit(f64),
}

/// A heap hint and where it was found.
#[derive(Debug, Clone, PartialEq)]
pub struct HeapHint {
    /// The runtime.
    pub runtime: Runtime,
    /// The ceiling.
    pub size: HeapSize,
    /// Where it came from, for people (`-Xmx3g in args`).
    pub source: String,
}

/// How a container's process is started: its command, args, and literal environment values
/// (values from secrets or config maps cannot be read and are left out).
#[derive(Debug, Clone, Copy, Default)]
pub struct Process<'a> {
    /// `command`.
    pub command: &'a [String],
    /// `args`.
    pub args: &'a [String],
    /// `env` name/value pairs.
    pub env: &'a [(String, String)],
}

impl Process<'_> {
    fn env(&self, name: &str) -> Option<&str> {
        self.env
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Parses a JVM size: digits with an optional k, m, g or t (binary, either case).
fn jvm_size(s: &str) -> Option<f64> {
    let s = s.trim();
    let (digits, unit) = match s.char_indices().last()? {
        (i, c) if c.is_ascii_alphabetic() => (&s[..i], Some(c.to_ascii_lowercase())),
        _ => (s, None),
    };
    let n: f64 = digits.parse::<u64>().ok()? as f64;
    let factor = match unit {
        None => 1.0,
        Some('k') => KI,
        Some('m') => MI,
        Some('g') => GI,
        Some('t') => TI,
        _ => return None,
    };
    Some(n * factor)
}

/// Parses a Go memory limit (`GOMEMLIMIT`): bytes with an optional B, KiB, MiB, GiB or TiB.
fn go_size(s: &str) -> Option<f64> {
    let s = s.trim();
    let (digits, factor) = [
        ("TiB", TI),
        ("GiB", GI),
        ("MiB", MI),
        ("KiB", KI),
        ("B", 1.0),
    ]
    .iter()
    .find_map(|(suffix, f)| s.strip_suffix(suffix).map(|d| (d, *f)))
    .unwrap_or((s, 1.0));
    let n: f64 = digits.trim().parse().ok()?;
    (n.is_finite() && n > 0.0).then_some(n * factor)
}

fn tokens(s: &str) -> impl Iterator<Item = &str> {
    s.split_whitespace()
        .map(|t| t.trim_matches(|c| c == '"' || c == '\''))
}

#[derive(Default)]
struct JvmFlags {
    xmx: Option<(f64, String)>,
    xms: Option<(f64, String)>,
    percentage: Option<(f64, String)>,
    max_ram: Option<(f64, String)>,
}

impl JvmFlags {
    fn scan(&mut self, text: &str, source: &str) {
        for t in tokens(text) {
            let at = |flag: &str| format!("{flag} in {source}");
            if let Some(v) = t.strip_prefix("-Xmx").and_then(jvm_size) {
                self.xmx = Some((v, at(t)));
            } else if let Some(v) = t.strip_prefix("-XX:MaxHeapSize=").and_then(jvm_size) {
                self.xmx = Some((v, at(t)));
            } else if let Some(v) = t.strip_prefix("-Xms").and_then(jvm_size) {
                self.xms = Some((v, at(t)));
            } else if let Some(v) = t
                .strip_prefix("-XX:MaxRAMPercentage=")
                .and_then(|v| v.parse::<f64>().ok())
                .filter(|v| v.is_finite() && *v > 0.0 && *v <= 100.0)
            {
                self.percentage = Some((v / 100.0, at(t)));
            } else if let Some(v) = t.strip_prefix("-XX:MaxRAM=").and_then(jvm_size) {
                self.max_ram = Some((v, at(t)));
            }
        }
    }

    fn hint(self) -> Option<HeapHint> {
        let jvm = |size, source| {
            Some(HeapHint {
                runtime: Runtime::Jvm,
                size,
                source,
            })
        };
        let fixed = match (self.xmx, self.xms) {
            (Some(x), Some(s)) => Some(if s.0 > x.0 { s } else { x }),
            (x, s) => x.or(s),
        };
        if let Some((bytes, source)) = fixed {
            return jvm(HeapSize::Bytes(bytes), source);
        }
        match (self.percentage, self.max_ram) {
            (Some((p, ps)), Some((ram, rs))) => {
                jvm(HeapSize::Bytes(ram * p), format!("{ps} with {rs}"))
            }
            // The JVM's default MaxRAMPercentage is 25.
            (None, Some((ram, rs))) => jvm(HeapSize::Bytes(ram * 0.25), rs),
            (Some((p, ps)), None) => jvm(HeapSize::FractionOfLimit(p), ps),
            (None, None) => None,
        }
    }
}

/// Finds the heap hint of a container's process, if it has one.
pub fn detect(process: &Process<'_>) -> Option<HeapHint> {
    let mut jvm = JvmFlags::default();
    for var in ["JAVA_TOOL_OPTIONS", "JDK_JAVA_OPTIONS", "JAVA_OPTS"] {
        if let Some(v) = process.env(var) {
            jvm.scan(v, var);
        }
    }
    for (part, name) in [(process.command, "command"), (process.args, "args")] {
        for element in part {
            jvm.scan(element, name);
        }
    }
    if let Some(hint) = jvm.hint() {
        return Some(hint);
    }
    if let Some(v) = process.env("GOMEMLIMIT")
        && let Some(bytes) = go_size(v)
    {
        return Some(HeapHint {
            runtime: Runtime::Go,
            size: HeapSize::Bytes(bytes),
            source: format!("GOMEMLIMIT={v}"),
        });
    }
    let mut node = None;
    let node_sources = process
        .env("NODE_OPTIONS")
        .map(|v| (v, "NODE_OPTIONS"))
        .into_iter()
        .chain(process.command.iter().map(|c| (c.as_str(), "command")))
        .chain(process.args.iter().map(|a| (a.as_str(), "args")));
    for (text, source) in node_sources {
        for t in tokens(text) {
            if let Some(mib) = t
                .strip_prefix("--max-old-space-size=")
                .and_then(|v| v.parse::<f64>().ok())
                .filter(|v| v.is_finite() && *v > 0.0)
            {
                node = Some(HeapHint {
                    runtime: Runtime::Node,
                    size: HeapSize::Bytes(mib * MI),
                    source: format!("{t} in {source}"),
                });
            }
        }
    }
    node
}

/// The default memory beside the heap, bytes.
pub fn default_overhead(runtime: Runtime, heap: f64) -> f64 {
    match runtime {
        Runtime::Jvm | Runtime::Explicit => (256.0 * MI).max(0.25 * heap),
        Runtime::Go => (64.0 * MI).max(0.10 * heap),
        Runtime::Node => (128.0 * MI).max(0.25 * heap),
    }
}

/// The memory floor a hint sets, bytes: heap + overhead, or for a percentage heap the smallest
/// limit where both fit. `overhead` overrides the runtime's default.
pub fn floor(hint: &HeapHint, overhead: Option<f64>) -> f64 {
    match hint.size {
        HeapSize::Bytes(heap) => {
            heap + overhead.unwrap_or_else(|| default_overhead(hint.runtime, heap))
        }
        HeapSize::FractionOfLimit(fraction) => {
            let o = overhead.unwrap_or_else(|| default_overhead(hint.runtime, 0.0));
            // A heap of 100% leaves nothing for the rest; treat it as 95%.
            o / (1.0 - fraction.min(0.95))
        }
    }
}

/// The hint that sets the highest floor, with that floor (`overhead` as in [`floor`]). Ties go
/// to the earlier hint.
pub fn highest(
    hints: impl IntoIterator<Item = HeapHint>,
    overhead: Option<f64>,
) -> Option<(f64, HeapHint)> {
    hints.into_iter().fold(None, |best, hint| {
        let f = floor(&hint, overhead);
        match best {
            Some((b, _)) if b >= f => best,
            _ => Some((f, hint)),
        }
    })
}

/// Which JVM series a measured heap came from.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct MeasuredKey {
    /// The pod.
    pub pod: String,
    /// The series' `container` label; empty when it had none.
    pub container: String,
    /// The metric (`jvm_memory_max_bytes`).
    pub metric: String,
}

/// Heap ceilings JVMs reported through their metrics: per pod (and `container` label) the
/// largest value, kept as runs of one value with the last time each was seen, so a window
/// forgets a ceiling exactly when it was last reported before the window began.
///
/// A JVM fixes its ceiling at start (resolving `-XX:MaxRAMPercentage` against the limit it
/// found then), so a run usually lasts as long as the container.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MeasuredHeaps {
    runs: BTreeMap<MeasuredKey, Vec<(f64, f64)>>,
}

impl MeasuredHeaps {
    /// Records that `key` reported a heap ceiling of at most `bytes` in a period that ended
    /// at `seen` (unix seconds). A value that is not a finite positive number is ignored and
    /// `false` returned.
    pub fn add(&mut self, key: MeasuredKey, seen: f64, bytes: f64) -> bool {
        if !(bytes.is_finite() && bytes > 0.0 && seen.is_finite()) {
            return false;
        }
        let runs = self.runs.entry(key).or_default();
        match runs.last_mut() {
            Some((last_seen, last)) if *last == bytes => *last_seen = last_seen.max(seen),
            _ => runs.push((seen, bytes)),
        }
        true
    }

    /// Forgets values last seen before `start`.
    pub fn expire(&mut self, start: f64) {
        self.runs.retain(|_, runs| {
            runs.retain(|(seen, _)| *seen >= start);
            !runs.is_empty()
        });
    }

    /// The largest ceiling of every series still known.
    pub fn maxima(&self) -> impl Iterator<Item = (&MeasuredKey, f64)> {
        self.runs.iter().filter_map(|(key, runs)| {
            runs.iter()
                .map(|(_, b)| *b)
                .reduce(f64::max)
                .map(|b| (key, b))
        })
    }

    /// Whether nothing is known.
    pub fn is_empty(&self) -> bool {
        self.runs.is_empty()
    }
}

/// The container a measured heap belongs to. A non-empty `container` label names it.
/// Without one (applications expose metrics per pod), it is the pod's only container, or
/// else its only container whose process is a JVM (`containers`: each container's name and
/// the runtime its process hints at). `None`: it cannot be told.
pub fn attribute<'a>(
    label: &'a str,
    containers: &'a [(String, Option<Runtime>)],
) -> Option<&'a str> {
    if !label.is_empty() {
        return Some(label);
    }
    if let [(only, _)] = containers {
        return Some(only);
    }
    let mut jvms = containers
        .iter()
        .filter(|(_, runtime)| *runtime == Some(Runtime::Jvm));
    match (jvms.next(), jvms.next()) {
        (Some((name, _)), None) => Some(name),
        _ => None,
    }
}

/// The hint a measured heap gives: a fixed JVM heap from `metric`.
pub fn measured_hint(metric: &str, bytes: f64) -> HeapHint {
    HeapHint {
        runtime: Runtime::Jvm,
        size: HeapSize::Bytes(bytes),
        source: format!("prometheus {metric}"),
    }
}
