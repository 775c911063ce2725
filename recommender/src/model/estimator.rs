//! From a container's history to its recommendation. **This file is where the CPU and memory
//! targets are computed.**
//!
//! - CPU target = p(`cpu.percentile`) of usage samples x (1 + `cpu.margin`).
//! - Memory target = the largest of
//!   - `Percentile`: p(`memory.percentile`) of working-set samples x (1 + `memory.margin`);
//!   - `Peak`: the highest working set in the window x (1 + margin), where the margin is
//!     `memory.peakMargin`, or more when the workload has jumped to a new high in the window:
//!     the largest such jump (an hour's peak over the highest peak of every earlier hour, after
//!     the window's first day), at most `memory.maxGrowthMargin`;
//!   - `HeapHint`: heap ceiling + overhead (see [`super::heap`]);
//!   - `GuardRaise`: after the live memory guard raised the limit in the window (the use came
//!     above its threshold and the updater raised the limit live), the highest limit it raised
//!     to, so that no recommendation cuts back below a raise while it is in the window;
//!   - `OOM`: after an OOM kill in the window, max(limit at the kill x `oomBump.ratio`,
//!     limit + `oomBump.minBump`).
//!
//!   All but the percentile make the **memory floor**: tailor never sets memory below it. The
//!   term that decides the target is reported as the floor's reason.
//! - Bounds: lower = p50, upper = p95 (CPU) or p99 (memory), with the margin, widened by
//!   confidence as upstream VPA does: `c` = days of history (at most the samples' worth),
//!   upper x (1 + 1/c), lower x (1 + 0.001/c)^-2. The memory lower bound is never below the
//!   floor; the upper bound never below the target.
//! - No recommendation from fewer than `min_samples` samples per resource or less than
//!   `min_span` of history. Below `confident_span` the recommendation is `low_confidence` and
//!   never below the current requests (no decrease on little evidence).
//! - Per-container minimums (10m, 32 MiB), then `minAllowed`/`maxAllowed` (`uncapped` keeps the
//!   value before them), then rounding up: CPU to 1m below 100m, 5m below 1 core, 10m above;
//!   memory to 1 MiB below 1 GiB, 16 MiB above.

use super::history::ContainerHistory;

const MI: f64 = 1024.0 * 1024.0;
const GI: f64 = 1024.0 * MI;
const DAY: f64 = 86_400.0;

/// The recommender policy of one VerticalAutoscaler and container (fractions, cores, bytes).
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    /// CPU percentile, (0, 1].
    pub cpu_percentile: f64,
    /// CPU margin, >= 0.
    pub cpu_margin: f64,
    /// Memory percentile, (0, 1].
    pub memory_percentile: f64,
    /// Memory margin, >= 0.
    pub memory_margin: f64,
    /// Margin over the observed peak, >= 0.
    pub peak_margin: f64,
    /// OOM bump ratio, >= 1.
    pub oom_ratio: f64,
    /// The most the peak margin grows to after the workload jumped to a new high, >= 0.
    pub max_growth_margin: f64,
    /// Smallest OOM bump, bytes.
    pub oom_min_bump: f64,
    /// `minAllowed`.
    pub min_allowed: Limits,
    /// `maxAllowed`.
    pub max_allowed: Limits,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            cpu_percentile: 0.9,
            cpu_margin: 0.15,
            memory_percentile: 0.95,
            memory_margin: 0.15,
            peak_margin: 0.15,
            oom_ratio: 1.2,
            max_growth_margin: 0.5,
            oom_min_bump: 100.0 * MI,
            min_allowed: Limits::default(),
            max_allowed: Limits::default(),
        }
    }
}

/// Optional CPU (cores) and memory (bytes) values.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Limits {
    /// Cores.
    pub cpu: Option<f64>,
    /// Bytes.
    pub memory: Option<f64>,
}

/// Recommender-wide settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// Fewer samples per resource than this: no recommendation.
    pub min_samples: u64,
    /// Less history than this (seconds): no recommendation.
    pub min_span: f64,
    /// Less history than this (seconds): low confidence, no decrease.
    pub confident_span: f64,
    /// Expected seconds between samples (to turn sample counts into days of evidence).
    pub sample_interval: f64,
    /// Per-container minimum CPU, cores.
    pub min_cpu: f64,
    /// Per-container minimum memory, bytes.
    pub min_memory: f64,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            min_samples: 30,
            min_span: 3600.0,
            confident_span: DAY,
            sample_interval: 60.0,
            min_cpu: 0.01,
            min_memory: 32.0 * MI,
        }
    }
}

/// The container's current requests (bytes, cores), for the no-decrease rule.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Current {
    /// CPU request, cores.
    pub cpu: Option<f64>,
    /// Memory request, bytes.
    pub memory: Option<f64>,
}

/// Which memory term decided the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemoryReason {
    /// The working-set percentile with its margin.
    Percentile,
    /// The observed peak with its margin.
    Peak,
    /// Heap ceiling + overhead.
    HeapHint,
    /// The limit the live memory guard raised to.
    GuardRaise,
    /// The bump after an OOM kill.
    Oom,
}

/// CPU in millicores and memory in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Amounts {
    /// Millicores.
    pub cpu: i64,
    /// Bytes.
    pub memory: i64,
}

/// A recommendation for one container.
#[derive(Debug, Clone, PartialEq)]
pub struct Estimate {
    /// The recommended requests.
    pub target: Amounts,
    /// Below this the container is under-provisioned.
    pub lower: Amounts,
    /// Above this it is over-provisioned.
    pub upper: Amounts,
    /// The target before min/max allowed.
    pub uncapped: Amounts,
    /// The memory floor, bytes.
    pub floor: i64,
    /// The memory term that decided the target.
    pub reason: MemoryReason,
    /// The margin over the observed peak in force (`peakMargin`, or the growth margin).
    pub peak_margin: f64,
    /// Samples used (CPU + memory).
    pub samples: u64,
    /// Seconds of history.
    pub span: f64,
    /// The highest usage in the window (millicores, bytes).
    pub peak: Amounts,
    /// Days of evidence (VPA's confidence).
    pub confidence: f64,
    /// Less history than `confident_span`: no decrease was recommended.
    pub low_confidence: bool,
}

/// The result of estimating.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// A recommendation.
    Estimate(Estimate),
    /// Not enough history for any recommendation; the message says what is missing.
    NotEnoughHistory(String),
}

/// CPU cores to millicores, rounded up to 1m / 5m / 10m steps.
pub fn round_cpu(cores: f64) -> i64 {
    let m = (cores * 1000.0 - 1e-9).ceil().max(0.0);
    let step = if m < 100.0 {
        1.0
    } else if m < 1000.0 {
        5.0
    } else {
        10.0
    };
    ((m / step).ceil() * step) as i64
}

/// Bytes rounded up to 1 MiB below 1 GiB and 16 MiB above.
pub fn round_memory(bytes: f64) -> i64 {
    let step = if bytes < GI { MI } else { 16.0 * MI };
    ((bytes.max(0.0) / step - 1e-12).ceil() * step) as i64
}

fn clamp(v: f64, min: Option<f64>, max: Option<f64>) -> f64 {
    let v = min.map_or(v, |m| v.max(m));
    max.map_or(v, |m| v.min(m))
}

/// The usage distribution the targets are read from, and the confidence in it.
struct Usage {
    span: f64,
    /// Days of evidence, and the factors that widen the upper and lower bounds by it.
    confidence: f64,
    widen_up: f64,
    widen_down: f64,
    cpu_p: f64,
    cpu_p50: f64,
    cpu_p95: f64,
    mem_p: f64,
    mem_p50: f64,
    mem_p99: f64,
    mem_peak: f64,
}

/// The percentiles, the peak and the confidence, or why there is not enough history for
/// them.
fn usage(
    history: &ContainerHistory,
    policy: &Policy,
    settings: &Settings,
) -> Result<Usage, String> {
    let span = history.span();
    let (cpu_n, mem_n) = (history.cpu_samples(), history.memory_samples());
    if cpu_n < settings.min_samples || mem_n < settings.min_samples || span < settings.min_span {
        return Err(format!(
            "{cpu_n} CPU and {mem_n} memory samples over {:.1} h; at least {} of each over {:.1} h are needed",
            span / 3600.0,
            settings.min_samples,
            settings.min_span / 3600.0
        ));
    }
    let (
        Some(cpu_p),
        Some(cpu_p50),
        Some(cpu_p95),
        Some(mem_p),
        Some(mem_p50),
        Some(mem_p99),
        Some(mem_peak),
    ) = (
        history.cpu_percentile(policy.cpu_percentile),
        history.cpu_percentile(0.5),
        history.cpu_percentile(0.95_f64.max(policy.cpu_percentile)),
        history.memory_percentile(policy.memory_percentile),
        history.memory_percentile(0.5),
        history.memory_percentile(0.99_f64.max(policy.memory_percentile)),
        history.memory_peak(),
    )
    else {
        return Err("no usable samples".into());
    };
    // VPA's confidence: days of history, at most the samples' worth.
    let per_day = DAY / settings.sample_interval.max(1.0);
    let confidence = (span / DAY)
        .min(cpu_n.min(mem_n) as f64 / per_day)
        .max(1e-3);
    Ok(Usage {
        span,
        confidence,
        widen_up: 1.0 + 1.0 / confidence,
        widen_down: (1.0 + 0.001 / confidence).powi(-2),
        cpu_p,
        cpu_p50,
        cpu_p95,
        mem_p,
        mem_p50,
        mem_p99,
        mem_peak,
    })
}

/// A target with its bounds, before rounding and min/max allowed.
struct Band {
    target: f64,
    lower: f64,
    upper: f64,
}

/// The memory target and bounds, the floor, the deciding term and the peak margin in force.
struct MemoryTarget {
    band: Band,
    floor: f64,
    reason: MemoryReason,
    peak_margin: f64,
}

/// The memory terms: the percentile and the floor's terms (peak, heap hint, guard raise, OOM
/// bump).
fn memory_target(
    history: &ContainerHistory,
    policy: &Policy,
    heap_floor: Option<f64>,
    settings: &Settings,
    u: &Usage,
) -> MemoryTarget {
    // A workload that has jumped to a new high by x% in the window may do it again: the margin
    // over the peak is at least that jump (at most `max_growth_margin`). Jumps in the first day
    // of the window are not counted: there, everything is a new high.
    let growth = history
        .memory_peak_jump(DAY)
        .map_or(0.0, |j| (j - 1.0).min(policy.max_growth_margin));
    let peak_margin = policy.peak_margin.max(growth);
    let percentile_term = u.mem_p * (1.0 + policy.memory_margin);
    let mut terms = vec![
        (MemoryReason::Percentile, percentile_term),
        (MemoryReason::Peak, u.mem_peak * (1.0 + peak_margin)),
    ];
    if let Some(h) = heap_floor.filter(|h| h.is_finite() && *h > 0.0) {
        terms.push((MemoryReason::HeapHint, h));
    }
    if let Some(raised) = history.guard_raise_peak() {
        terms.push((MemoryReason::GuardRaise, raised));
    }
    if let Some(oom) = history.last_oom() {
        terms.push((
            MemoryReason::Oom,
            (oom.limit * policy.oom_ratio).max(oom.limit + policy.oom_min_bump),
        ));
    }
    let floor = terms
        .iter()
        .filter(|(r, _)| *r != MemoryReason::Percentile)
        .map(|(_, v)| *v)
        .fold(settings.min_memory, f64::max);
    // The deciding term; on a tie the safety term is named (OOM, then guard raise, then heap,
    // then peak).
    let (reason, target) =
        terms
            .iter()
            .copied()
            .rev()
            .fold((MemoryReason::Percentile, f64::MIN), |best, t| {
                if t.1 > best.1 { t } else { best }
            });
    let target = target.max(floor);
    let lower = (u.mem_p50 * (1.0 + policy.memory_margin) * u.widen_down).clamp(floor, target);
    let upper = (u.mem_p99 * (1.0 + policy.memory_margin) * u.widen_up).max(target);
    MemoryTarget {
        band: Band {
            target,
            lower,
            upper,
        },
        floor,
        reason,
        peak_margin,
    }
}

/// Computes the recommendation for one container.
pub fn estimate(
    history: &ContainerHistory,
    policy: &Policy,
    heap_floor: Option<f64>,
    current: &Current,
    settings: &Settings,
) -> Verdict {
    let u = match usage(history, policy, settings) {
        Ok(u) => u,
        Err(why) => return Verdict::NotEnoughHistory(why),
    };
    // CPU.
    let cpu_target = (u.cpu_p * (1.0 + policy.cpu_margin)).max(settings.min_cpu);
    let cpu = Band {
        target: cpu_target,
        lower: (u.cpu_p50 * (1.0 + policy.cpu_margin) * u.widen_down).min(cpu_target),
        upper: (u.cpu_p95 * (1.0 + policy.cpu_margin) * u.widen_up).max(cpu_target),
    };
    let memory = memory_target(history, policy, heap_floor, settings, &u);
    finish(history, policy, current, settings, &u, cpu, memory)
}

/// The low-confidence rule, min/max allowed and rounding.
fn finish(
    history: &ContainerHistory,
    policy: &Policy,
    current: &Current,
    settings: &Settings,
    u: &Usage,
    cpu: Band,
    memory: MemoryTarget,
) -> Verdict {
    // Little history: never below what the container has now.
    let low_confidence = u.span < settings.confident_span;
    let (mut cpu_target, mut memory_target) = (cpu.target, memory.band.target);
    if low_confidence {
        cpu_target = cpu_target.max(current.cpu.unwrap_or(0.0));
        memory_target = memory_target.max(current.memory.unwrap_or(0.0));
    }

    let uncapped = Amounts {
        cpu: round_cpu(cpu_target),
        memory: round_memory(memory_target),
    };
    let (min, max) = (policy.min_allowed, policy.max_allowed);
    let cap_cpu = |v: f64| round_cpu(clamp(v, min.cpu, max.cpu));
    let cap_memory = |v: f64| round_memory(clamp(v, min.memory, max.memory));
    Verdict::Estimate(Estimate {
        target: Amounts {
            cpu: cap_cpu(cpu_target),
            memory: cap_memory(memory_target),
        },
        lower: Amounts {
            cpu: cap_cpu(cpu.lower.min(cpu_target)),
            memory: cap_memory(memory.band.lower.min(memory_target)),
        },
        upper: Amounts {
            cpu: cap_cpu(cpu.upper.max(cpu_target)),
            memory: cap_memory(memory.band.upper.max(memory_target)),
        },
        uncapped,
        floor: round_memory(memory.floor),
        reason: memory.reason,
        peak_margin: memory.peak_margin,
        samples: history.samples(),
        span: u.span,
        peak: Amounts {
            cpu: round_cpu(history.cpu_peak().unwrap_or(0.0)),
            memory: u.mem_peak.ceil() as i64,
        },
        confidence: u.confidence,
        low_confidence,
    })
}
