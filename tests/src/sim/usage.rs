//! Usage models: what each simulated container *wants* to use over time.
//!
//! A pod selects its containers' models with the annotation [`USAGE_ANNOTATION`], whose value
//! is a JSON object from container name (or `"*"` for every other container) to a model:
//!
//! ```json
//! {
//!   "app":  {"model": "daily", "cpu": {"min": 0.2, "max": 1.5},
//!            "memory": {"min": "300Mi", "max": "600Mi"}, "peakHour": 14, "noise": 0.05},
//!   "jvm":  {"model": "jvm", "cpu": 0.3, "heapMax": "1Gi", "nonHeap": "200Mi", "growSeconds": 3600},
//!   "*":    {"model": "constant", "cpu": 0.05, "memory": "64Mi"}
//! }
//! ```
//!
//! Models (`cpu` in cores, memory as a quantity string or a number of bytes):
//! - `constant`: `cpu`, `memory`.
//! - `daily`: `cpu {min, max}`, `memory {min, max}`, `peakHour` (UTC, default 14): a cosine
//!   over the day of the wall clock, highest at `peakHour`.
//! - `spikes`: `cpu`, `memory` (the base), `spikeCpu`, `spikeMemory` (added during a spike),
//!   `everySeconds`, `durationSeconds`: a spike at the start of every period (wall clock).
//! - `leak`: `cpu`, `memory` (at start), `bytesPerHour`: memory grows linearly from the
//!   container's start (a restart resets it).
//! - `jvm`: `cpu`, `heapMax`, `nonHeap`, `growSeconds`: memory = nonHeap + heap, the heap
//!   growing linearly to `heapMax` over `growSeconds` after the start, then staying resident.
//! - `trace`: `path` (a CSV file in the format of the shared traces: `timestamp,cpu_cores,
//!   memory_bytes,...`), `timeScale` (default 1; 60 plays an hour of trace per minute): replays
//!   the trace from the container's start, looping at its end.
//!
//! Every model takes `noise` (default 0): a relative deviation, uniform in
//! `[-noise, +noise]`, drawn from a hash of the seed, the container and the 15-second slot, so
//! runs with the same seed produce the same usage.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Deserializer};

/// The pod annotation that selects usage models.
pub const USAGE_ANNOTATION: &str = "sim.tailor.dev/usage";

const NOISE_SLOT_SECONDS: f64 = 15.0;
const DAY_SECONDS: f64 = 86_400.0;

/// CPU in cores and memory in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Usage {
    /// Cores.
    pub cpu: f64,
    /// Bytes.
    pub memory: f64,
}

/// A low/high pair.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Range<T> {
    /// The low value.
    pub min: T,
    /// The high value.
    pub max: T,
}

/// Memory as a quantity (`"512Mi"`) or a number of bytes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bytes(pub f64);

impl<'de> Deserialize<'de> for Bytes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Number(f64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Number(n) if n.is_finite() && n >= 0.0 => Ok(Bytes(n)),
            Raw::Number(n) => Err(serde::de::Error::custom(format!(
                "memory must be a finite number >= 0, got {n}"
            ))),
            Raw::Text(s) => tailor_crds::quantity::memory_bytes(
                &k8s_openapi::apimachinery::pkg::api::resource::Quantity(s),
            )
            .map(|b| Bytes(b as f64))
            .map_err(serde::de::Error::custom),
        }
    }
}

/// One container's usage model.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "model", rename_all = "camelCase", deny_unknown_fields)]
pub enum Model {
    /// Flat usage.
    Constant {
        /// Cores.
        cpu: f64,
        /// Bytes.
        memory: Bytes,
        /// Relative noise.
        #[serde(default)]
        noise: f64,
    },
    /// A daily cosine cycle on the wall clock.
    #[serde(rename_all = "camelCase")]
    Daily {
        /// Cores.
        cpu: Range<f64>,
        /// Bytes.
        memory: Range<Bytes>,
        /// The UTC hour of the peak.
        #[serde(default = "default_peak_hour")]
        peak_hour: f64,
        /// Relative noise.
        #[serde(default)]
        noise: f64,
    },
    /// A base with periodic spikes on the wall clock.
    #[serde(rename_all = "camelCase")]
    Spikes {
        /// Base cores.
        cpu: f64,
        /// Base bytes.
        memory: Bytes,
        /// Cores added during a spike.
        #[serde(default)]
        spike_cpu: f64,
        /// Bytes added during a spike.
        #[serde(default = "zero_bytes")]
        spike_memory: Bytes,
        /// Spike period.
        every_seconds: f64,
        /// Spike length.
        duration_seconds: f64,
        /// Relative noise.
        #[serde(default)]
        noise: f64,
    },
    /// Memory growing linearly since the container started.
    #[serde(rename_all = "camelCase")]
    Leak {
        /// Cores.
        cpu: f64,
        /// Bytes at start.
        memory: Bytes,
        /// Growth.
        bytes_per_hour: f64,
        /// Relative noise.
        #[serde(default)]
        noise: f64,
    },
    /// A JVM: the heap grows to its ceiling, then stays resident.
    #[serde(rename_all = "camelCase")]
    Jvm {
        /// Cores.
        cpu: f64,
        /// The heap ceiling (-Xmx).
        heap_max: Bytes,
        /// Metaspace, threads, code cache, buffers.
        non_heap: Bytes,
        /// Time for the heap to reach its ceiling.
        grow_seconds: f64,
        /// Relative noise.
        #[serde(default)]
        noise: f64,
    },
    /// Replay of a trace file.
    #[serde(rename_all = "camelCase")]
    Trace {
        /// The CSV file.
        path: PathBuf,
        /// Trace seconds per simulated second.
        #[serde(default = "one")]
        time_scale: f64,
        /// Relative noise.
        #[serde(default)]
        noise: f64,
    },
}

fn default_peak_hour() -> f64 {
    14.0
}
fn zero_bytes() -> Bytes {
    Bytes(0.0)
}
fn one() -> f64 {
    1.0
}

/// A malformed usage annotation or trace.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum UsageError {
    /// The annotation is not valid JSON for the models above.
    #[error("annotation {USAGE_ANNOTATION}: {0}")]
    Annotation(String),
    /// A field is out of range.
    #[error("annotation {USAGE_ANNOTATION}: container {container:?}: {field}: {reason}")]
    Field {
        /// The container key.
        container: String,
        /// The field.
        field: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// A trace file could not be read.
    #[error("trace {path}: {reason}")]
    Trace {
        /// The file (and line, where known).
        path: String,
        /// What is wrong.
        reason: String,
    },
}

/// The models of one pod, by container name (`"*"` for the rest).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PodUsage {
    models: BTreeMap<String, Model>,
}

impl PodUsage {
    /// Parses and validates the annotation value.
    pub fn parse(json: &str) -> Result<Self, UsageError> {
        let models: BTreeMap<String, Model> =
            serde_json::from_str(json).map_err(|e| UsageError::Annotation(e.to_string()))?;
        for (container, model) in &models {
            model.validate(container)?;
        }
        Ok(Self { models })
    }

    /// The model for `container`, if the annotation names it or has `"*"`.
    pub fn model(&self, container: &str) -> Option<&Model> {
        self.models.get(container).or_else(|| self.models.get("*"))
    }

    /// Trace files the models replay.
    pub fn trace_paths(&self) -> impl Iterator<Item = &Path> {
        self.models.values().filter_map(|m| match m {
            Model::Trace { path, .. } => Some(path.as_path()),
            _ => None,
        })
    }
}

impl Model {
    /// The default for a container without a (valid) model: half its requests, or 50m/64Mi.
    pub fn fallback(cpu_request: Option<f64>, memory_request: Option<f64>) -> Self {
        Model::Constant {
            cpu: cpu_request.map_or(0.05, |c| c / 2.0),
            memory: Bytes(memory_request.map_or(64.0 * 1024.0 * 1024.0, |m| m / 2.0)),
            noise: 0.0,
        }
    }

    fn validate(&self, container: &str) -> Result<(), UsageError> {
        let field = |field: &'static str, reason: String| UsageError::Field {
            container: container.to_owned(),
            field,
            reason,
        };
        let non_negative = |name: &'static str, v: f64| {
            if v.is_finite() && v >= 0.0 {
                Ok(())
            } else {
                Err(field(
                    name,
                    format!("must be a finite number >= 0, got {v}"),
                ))
            }
        };
        let positive = |name: &'static str, v: f64| {
            if v.is_finite() && v > 0.0 {
                Ok(())
            } else {
                Err(field(name, format!("must be a finite number > 0, got {v}")))
            }
        };
        let noise = match self {
            Model::Constant { cpu, noise, .. } => {
                non_negative("cpu", *cpu)?;
                noise
            }
            Model::Daily {
                cpu,
                memory,
                peak_hour,
                noise,
            } => {
                non_negative("cpu.min", cpu.min)?;
                non_negative("cpu.max", cpu.max)?;
                if cpu.min > cpu.max {
                    return Err(field("cpu", "min must not exceed max".into()));
                }
                if memory.min.0 > memory.max.0 {
                    return Err(field("memory", "min must not exceed max".into()));
                }
                if !(0.0..24.0).contains(peak_hour) {
                    return Err(field(
                        "peakHour",
                        format!("must be in [0, 24), got {peak_hour}"),
                    ));
                }
                noise
            }
            Model::Spikes {
                cpu,
                spike_cpu,
                every_seconds,
                duration_seconds,
                noise,
                ..
            } => {
                non_negative("cpu", *cpu)?;
                non_negative("spikeCpu", *spike_cpu)?;
                positive("everySeconds", *every_seconds)?;
                non_negative("durationSeconds", *duration_seconds)?;
                noise
            }
            Model::Leak {
                cpu,
                bytes_per_hour,
                noise,
                ..
            } => {
                non_negative("cpu", *cpu)?;
                non_negative("bytesPerHour", *bytes_per_hour)?;
                noise
            }
            Model::Jvm {
                cpu,
                grow_seconds,
                noise,
                ..
            } => {
                non_negative("cpu", *cpu)?;
                positive("growSeconds", *grow_seconds)?;
                noise
            }
            Model::Trace {
                time_scale, noise, ..
            } => {
                positive("timeScale", *time_scale)?;
                noise
            }
        };
        if !(0.0..1.0).contains(noise) {
            return Err(field("noise", format!("must be in [0, 1), got {noise}")));
        }
        Ok(())
    }

    /// Usage at wall-clock `now` (unix seconds) for a container started `since_start` seconds
    /// ago. `trace` is the loaded trace for `Model::Trace` (an empty trace yields zero usage).
    pub fn sample(&self, now: f64, since_start: f64, seed: u64, trace: Option<&Trace>) -> Usage {
        let since_start = since_start.max(0.0);
        let (usage, noise) = match self {
            Model::Constant { cpu, memory, noise } => (
                Usage {
                    cpu: *cpu,
                    memory: memory.0,
                },
                *noise,
            ),
            Model::Daily {
                cpu,
                memory,
                peak_hour,
                noise,
            } => {
                let phase = (now.rem_euclid(DAY_SECONDS) / 3600.0 - peak_hour) / 24.0;
                // 1 at the peak hour, 0 twelve hours away.
                let level = 0.5 + 0.5 * (2.0 * std::f64::consts::PI * phase).cos();
                (
                    Usage {
                        cpu: cpu.min + (cpu.max - cpu.min) * level,
                        memory: memory.min.0 + (memory.max.0 - memory.min.0) * level,
                    },
                    *noise,
                )
            }
            Model::Spikes {
                cpu,
                memory,
                spike_cpu,
                spike_memory,
                every_seconds,
                duration_seconds,
                noise,
            } => {
                let in_spike = now.rem_euclid(*every_seconds) < *duration_seconds;
                let k = if in_spike { 1.0 } else { 0.0 };
                (
                    Usage {
                        cpu: cpu + k * spike_cpu,
                        memory: memory.0 + k * spike_memory.0,
                    },
                    *noise,
                )
            }
            Model::Leak {
                cpu,
                memory,
                bytes_per_hour,
                noise,
            } => (
                Usage {
                    cpu: *cpu,
                    memory: memory.0 + bytes_per_hour * since_start / 3600.0,
                },
                *noise,
            ),
            Model::Jvm {
                cpu,
                heap_max,
                non_heap,
                grow_seconds,
                noise,
            } => (
                Usage {
                    cpu: *cpu,
                    memory: non_heap.0 + heap_max.0 * (since_start / grow_seconds).min(1.0),
                },
                *noise,
            ),
            Model::Trace {
                time_scale, noise, ..
            } => (
                trace
                    .map(|t| t.at(since_start * time_scale))
                    .unwrap_or_default(),
                *noise,
            ),
        };
        if noise == 0.0 {
            return usage;
        }
        let slot = (now / NOISE_SLOT_SECONDS).floor() as i64;
        let jitter = |salt: u64| 1.0 + noise * (2.0 * unit(seed ^ salt, slot) - 1.0);
        Usage {
            cpu: (usage.cpu * jitter(0x9e37_79b9)).max(0.0),
            memory: (usage.memory * jitter(0x85eb_ca6b)).max(0.0),
        }
    }
}

/// A uniform number in [0, 1) from a seed and a slot (SplitMix64).
fn unit(seed: u64, slot: i64) -> f64 {
    let mut z = seed.wrapping_add((slot as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15));
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    (z >> 11) as f64 / (1u64 << 53) as f64
}

/// A stable seed for a container from the simulation seed and names (not UIDs, which differ
/// between runs).
pub fn container_seed(seed: u64, namespace: &str, pod: &str, container: &str) -> u64 {
    // FNV-1a: stable across runs and platforms, unlike std's hasher.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ seed;
    for b in namespace
        .bytes()
        .chain([0])
        .chain(pod.bytes())
        .chain([0])
        .chain(container.bytes())
    {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// A loaded trace: samples at offsets from its first timestamp.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Trace {
    offsets: Vec<f64>,
    usage: Vec<Usage>,
    period: f64,
}

impl Trace {
    /// Reads a trace CSV (`timestamp,cpu_cores,memory_bytes[,cpu_limit_cores,memory_limit_bytes]`).
    pub fn load(path: &Path) -> Result<Arc<Self>, UsageError> {
        let text = std::fs::read_to_string(path).map_err(|e| UsageError::Trace {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        Self::parse(&path.display().to_string(), &text).map(Arc::new)
    }

    /// Parses trace CSV text; `name` appears in errors with the line number.
    pub fn parse(name: &str, text: &str) -> Result<Self, UsageError> {
        let err = |line: usize, reason: String| UsageError::Trace {
            path: format!("{name}:{line}"),
            reason,
        };
        let mut lines = text.lines().enumerate();
        let header = lines.next().map(|(_, l)| l.trim()).unwrap_or_default();
        let columns: Vec<&str> = header.split(',').map(str::trim).collect();
        let col = |name: &str| {
            columns
                .iter()
                .position(|c| *c == name)
                .ok_or_else(|| err(1, format!("missing column {name:?} in header {header:?}")))
        };
        let (ts_col, cpu_col, mem_col) =
            (col("timestamp")?, col("cpu_cores")?, col("memory_bytes")?);
        let mut trace = Trace::default();
        let mut first = None;
        let mut last = f64::NEG_INFINITY;
        for (i, line) in lines {
            let line_no = i + 1;
            if line.trim().is_empty() {
                continue;
            }
            let fields: Vec<&str> = line.split(',').map(str::trim).collect();
            let num = |idx: usize, what: &str| -> Result<f64, UsageError> {
                let raw = fields
                    .get(idx)
                    .ok_or_else(|| err(line_no, format!("missing {what}")))?;
                let v: f64 = raw
                    .parse()
                    .map_err(|_| err(line_no, format!("{what} {raw:?} is not a number")))?;
                if !v.is_finite() || v < 0.0 {
                    return Err(err(
                        line_no,
                        format!("{what} {raw:?} must be finite and >= 0"),
                    ));
                }
                Ok(v)
            };
            let ts = num(ts_col, "timestamp")?;
            if ts <= last {
                return Err(err(line_no, format!("timestamp {ts} is not after {last}")));
            }
            last = ts;
            let start = *first.get_or_insert(ts);
            trace.offsets.push(ts - start);
            trace.usage.push(Usage {
                cpu: num(cpu_col, "cpu_cores")?,
                memory: num(mem_col, "memory_bytes")?,
            });
        }
        if trace.offsets.is_empty() {
            return Err(err(1, "no samples".into()));
        }
        // The trace loops: its period is its span plus one typical interval.
        let n = trace.offsets.len();
        let span = trace.offsets[n - 1];
        let interval = if n > 1 { span / (n - 1) as f64 } else { 60.0 };
        trace.period = span + interval;
        Ok(trace)
    }

    /// The sample in force at `offset` seconds into the (looping) trace.
    pub fn at(&self, offset: f64) -> Usage {
        if self.offsets.is_empty() {
            return Usage::default();
        }
        let t = offset.rem_euclid(self.period);
        let idx = self.offsets.partition_point(|o| *o <= t).saturating_sub(1);
        self.usage[idx]
    }

    /// Number of samples.
    pub fn len(&self) -> usize {
        self.offsets.len()
    }

    /// Whether the trace has no samples.
    pub fn is_empty(&self) -> bool {
        self.offsets.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MI: f64 = 1024.0 * 1024.0;

    #[test]
    fn parses_every_model() {
        let usage = PodUsage::parse(
            r#"{
              "a": {"model": "constant", "cpu": 0.5, "memory": "256Mi"},
              "b": {"model": "daily", "cpu": {"min": 0.1, "max": 1}, "memory": {"min": "100Mi", "max": 209715200}, "peakHour": 9},
              "c": {"model": "spikes", "cpu": 0.1, "memory": "100Mi", "spikeCpu": 2, "spikeMemory": "400Mi", "everySeconds": 600, "durationSeconds": 60},
              "d": {"model": "leak", "cpu": 0.1, "memory": "100Mi", "bytesPerHour": 1048576},
              "e": {"model": "jvm", "cpu": 0.3, "heapMax": "1Gi", "nonHeap": "200Mi", "growSeconds": 3600},
              "*": {"model": "trace", "path": "/traces/x.csv", "timeScale": 60, "noise": 0.1}
            }"#,
        )
        .unwrap();
        assert!(matches!(usage.model("a"), Some(Model::Constant { .. })));
        assert!(
            matches!(usage.model("zzz"), Some(Model::Trace { time_scale, .. }) if *time_scale == 60.0)
        );
        assert_eq!(usage.trace_paths().count(), 1);
    }

    #[test]
    fn malformed_annotations_name_the_problem() {
        for (json, wanted) in [
            ("not json", "expected"),
            (r#"{"a": {"model": "sine"}}"#, "unknown variant `sine`"),
            (
                r#"{"a": {"model": "constant", "cpu": 1}}"#,
                "missing field `memory`",
            ),
            (
                r#"{"a": {"model": "constant", "cpu": 1, "memory": "12XB"}}"#,
                "\"12XB\"",
            ),
            (
                r#"{"a": {"model": "constant", "cpu": -1, "memory": 1}}"#,
                "cpu",
            ),
            (
                r#"{"a": {"model": "constant", "cpu": 1, "memory": 1, "cpuu": 2}}"#,
                "unknown field `cpuu`",
            ),
            (
                r#"{"a": {"model": "constant", "cpu": 1, "memory": 1, "noise": 2}}"#,
                "noise",
            ),
            (
                r#"{"a": {"model": "jvm", "cpu": 1, "heapMax": 1, "nonHeap": 1, "growSeconds": 0}}"#,
                "growSeconds",
            ),
            (
                r#"{"a": {"model": "daily", "cpu": {"min": 2, "max": 1}, "memory": {"min": 1, "max": 2}}}"#,
                "min must not exceed max",
            ),
        ] {
            let e = PodUsage::parse(json).unwrap_err().to_string();
            assert!(e.contains(wanted), "{json}: {e}");
            assert!(e.contains(USAGE_ANNOTATION), "{e}");
        }
    }

    #[test]
    fn models_follow_their_shapes() {
        let daily = Model::Daily {
            cpu: Range { min: 0.2, max: 1.0 },
            memory: Range {
                min: Bytes(100.0 * MI),
                max: Bytes(200.0 * MI),
            },
            peak_hour: 14.0,
            noise: 0.0,
        };
        let at_hour = |h: f64| daily.sample(h * 3600.0, 0.0, 1, None);
        assert!((at_hour(14.0).cpu - 1.0).abs() < 1e-9);
        assert!((at_hour(2.0).cpu - 0.2).abs() < 1e-9);
        assert!((at_hour(2.0 + 24.0 * 3.0).memory - 100.0 * MI).abs() < 1.0);

        let jvm = Model::Jvm {
            cpu: 0.3,
            heap_max: Bytes(1024.0 * MI),
            non_heap: Bytes(200.0 * MI),
            grow_seconds: 3600.0,
            noise: 0.0,
        };
        assert_eq!(jvm.sample(0.0, 0.0, 1, None).memory, 200.0 * MI);
        assert_eq!(jvm.sample(0.0, 1800.0, 1, None).memory, 712.0 * MI);
        assert_eq!(
            jvm.sample(0.0, 7200.0, 1, None).memory,
            1224.0 * MI,
            "stays resident at the ceiling"
        );

        let leak = Model::Leak {
            cpu: 0.1,
            memory: Bytes(100.0),
            bytes_per_hour: 3600.0,
            noise: 0.0,
        };
        assert_eq!(leak.sample(0.0, 10.0, 1, None).memory, 110.0);

        let spikes = Model::Spikes {
            cpu: 0.1,
            memory: Bytes(10.0),
            spike_cpu: 1.0,
            spike_memory: Bytes(5.0),
            every_seconds: 600.0,
            duration_seconds: 60.0,
            noise: 0.0,
        };
        assert_eq!(
            spikes.sample(1200.0 + 30.0, 0.0, 1, None),
            Usage {
                cpu: 1.1,
                memory: 15.0
            }
        );
        assert_eq!(
            spikes.sample(1200.0 + 90.0, 0.0, 1, None),
            Usage {
                cpu: 0.1,
                memory: 10.0
            }
        );
    }

    #[test]
    fn noise_is_bounded_and_deterministic_for_a_seed() {
        let m = Model::Constant {
            cpu: 1.0,
            memory: Bytes(1000.0),
            noise: 0.2,
        };
        let seed = container_seed(7, "ns", "pod", "app");
        let mut distinct = std::collections::BTreeSet::new();
        for slot in 0..500 {
            let t = slot as f64 * NOISE_SLOT_SECONDS;
            let a = m.sample(t, 0.0, seed, None);
            assert_eq!(a, m.sample(t, 0.0, seed, None), "same seed, same usage");
            assert!((0.8..=1.2).contains(&a.cpu), "{a:?}");
            assert!((800.0..=1200.0).contains(&a.memory), "{a:?}");
            distinct.insert((a.cpu * 1e6) as i64);
        }
        assert!(distinct.len() > 400, "noise varies between slots");
        let other = container_seed(8, "ns", "pod", "app");
        assert_ne!(
            m.sample(0.0, 0.0, seed, None),
            m.sample(0.0, 0.0, other, None)
        );
    }

    #[test]
    fn traces_replay_and_loop() {
        let t = Trace::parse("t.csv", "timestamp,cpu_cores,memory_bytes,cpu_limit_cores,memory_limit_bytes\n100,1,10,,\n160,2,20,,\n220,3,30,,\n").unwrap();
        assert_eq!(t.len(), 3);
        assert_eq!(
            t.at(0.0),
            Usage {
                cpu: 1.0,
                memory: 10.0
            }
        );
        assert_eq!(
            t.at(59.0),
            Usage {
                cpu: 1.0,
                memory: 10.0
            }
        );
        assert_eq!(
            t.at(60.0),
            Usage {
                cpu: 2.0,
                memory: 20.0
            }
        );
        assert_eq!(
            t.at(150.0),
            Usage {
                cpu: 3.0,
                memory: 30.0
            }
        );
        assert_eq!(
            t.at(180.0),
            Usage {
                cpu: 1.0,
                memory: 10.0
            },
            "loops after span + interval"
        );
        let m = Model::Trace {
            path: "t.csv".into(),
            time_scale: 60.0,
            noise: 0.0,
        };
        assert_eq!(
            m.sample(0.0, 1.0, 1, Some(&t)),
            Usage {
                cpu: 2.0,
                memory: 20.0
            },
            "one second plays a minute"
        );
    }

    #[test]
    fn bad_traces_are_reported_with_file_and_line() {
        for (text, wanted) in [
            ("time,cpu\n", "t.csv:1: missing column \"timestamp\""),
            (
                "timestamp,cpu_cores,memory_bytes\n1,1,1\n1,1,1\n",
                "t.csv:3: timestamp 1 is not after 1",
            ),
            (
                "timestamp,cpu_cores,memory_bytes\n1,x,1\n",
                "t.csv:2: cpu_cores \"x\" is not a number",
            ),
            (
                "timestamp,cpu_cores,memory_bytes\n1,NaN,1\n",
                "t.csv:2: cpu_cores \"NaN\" must be finite",
            ),
            (
                "timestamp,cpu_cores,memory_bytes\n1,1\n",
                "t.csv:2: missing memory_bytes",
            ),
            ("timestamp,cpu_cores,memory_bytes\n", "t.csv:1: no samples"),
        ] {
            let e = Trace::parse("t.csv", text).unwrap_err().to_string();
            assert!(e.contains(wanted), "{e}");
        }
    }

    #[test]
    fn traces_load_from_files_in_the_shared_format() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vm.csv");
        let mut text =
            String::from("timestamp,cpu_cores,memory_bytes,cpu_limit_cores,memory_limit_bytes\n");
        for i in 0..100 {
            text.push_str(&format!(
                "{},{:.4},{},2,8589934592\n",
                1_375_308_176 + i * 300,
                0.25 + i as f64 / 1000.0,
                1_340_026_880 + i
            ));
        }
        std::fs::write(&path, text).unwrap();
        let t = Trace::load(&path).unwrap();
        assert_eq!(t.len(), 100);
        assert_eq!(
            t.at(300.0 * 99.0),
            Usage {
                cpu: 0.349,
                memory: 1_340_026_979.0
            }
        );
        let missing = Trace::load(&dir.path().join("nope.csv"))
            .unwrap_err()
            .to_string();
        assert!(missing.contains("nope.csv"), "{missing}");
    }
}
