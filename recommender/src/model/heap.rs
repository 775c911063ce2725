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
