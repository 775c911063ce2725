//! What is known about one container of one workload: usage distributions, the exact memory
//! peak per hour (so the window's peak expires exactly), sample counts, OOM kills, and the
//! raises of the live memory guard.
//!
//! Samples of every pod of the workload, earlier rollouts included, go into the same history:
//! the recommendation is per workload and container name.

use std::collections::BTreeMap;

use super::histogram::DecayingHistogram;

const HOUR: f64 = 3600.0;

/// An OOM kill seen in the window.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OomKill {
    /// When (unix seconds).
    pub time: f64,
    /// The memory limit (or request, where no limit was set) at the kill, bytes.
    pub limit: f64,
}

/// A raise of the memory limit by the live memory guard, seen in the window.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GuardRaise {
    /// When (unix seconds).
    pub time: f64,
    /// The memory limit the guard raised to, bytes.
    pub limit: f64,
}

/// Usage history of one container name of one workload.
#[derive(Debug, Clone, PartialEq)]
pub struct ContainerHistory {
    cpu: DecayingHistogram,
    memory: DecayingHistogram,
    /// Memory peak per hour (hour index -> bytes).
    memory_peaks: BTreeMap<i64, f64>,
    /// CPU peak per hour (hour index -> cores).
    cpu_peaks: BTreeMap<i64, f64>,
    cpu_samples: u64,
    memory_samples: u64,
    rejected: u64,
    first: Option<f64>,
    last: Option<f64>,
    ooms: Vec<OomKill>,
    raises: Vec<GuardRaise>,
}

impl Default for ContainerHistory {
    fn default() -> Self {
        Self {
            cpu: DecayingHistogram::cpu(),
            memory: DecayingHistogram::memory(),
            memory_peaks: BTreeMap::new(),
            cpu_peaks: BTreeMap::new(),
            cpu_samples: 0,
            memory_samples: 0,
            rejected: 0,
            first: None,
            last: None,
            ooms: Vec::new(),
            raises: Vec::new(),
        }
    }
}

fn hour(t: f64) -> i64 {
    (t / HOUR).floor() as i64
}

fn valid(t: f64, v: f64) -> bool {
    t.is_finite() && v.is_finite() && v >= 0.0
}

impl ContainerHistory {
    fn seen(&mut self, t: f64) {
        self.first = Some(self.first.map_or(t, |f| f.min(t)));
        self.last = Some(self.last.map_or(t, |l| l.max(t)));
    }

    /// A CPU usage sample (cores, averaged over the sample interval). NaN, infinities and
    /// negative values are counted as rejected and otherwise ignored.
    pub fn add_cpu(&mut self, t: f64, cores: f64) {
        if !valid(t, cores) || !self.cpu.add(cores, 1.0, t) {
            self.rejected += 1;
            return;
        }
        self.cpu_samples += 1;
        let peak = self.cpu_peaks.entry(hour(t)).or_insert(0.0);
        *peak = peak.max(cores);
        self.seen(t);
    }

    /// A memory working-set sample (bytes).
    pub fn add_memory(&mut self, t: f64, bytes: f64) {
        if !valid(t, bytes) || !self.memory.add(bytes, 1.0, t) {
            self.rejected += 1;
            return;
        }
        self.memory_samples += 1;
        let peak = self.memory_peaks.entry(hour(t)).or_insert(0.0);
        *peak = peak.max(bytes);
        self.seen(t);
    }

    /// An OOM kill with the limit in force at the time.
    pub fn add_oom(&mut self, t: f64, limit: f64) {
        if !valid(t, limit) || self.ooms.iter().any(|o| o.time == t) {
            return;
        }
        self.ooms.push(OomKill { time: t, limit });
        self.ooms.sort_by(|a, b| a.time.total_cmp(&b.time));
    }

    /// A raise of the memory limit to `limit` bytes by the live memory guard.
    pub fn add_guard_raise(&mut self, t: f64, limit: f64) {
        if !valid(t, limit) {
            return;
        }
        self.raises.push(GuardRaise { time: t, limit });
    }

    /// Whether an OOM kill is recorded at `t`.
    pub fn has_oom_at(&self, t: f64) -> bool {
        self.ooms.iter().any(|o| o.time == t)
    }

    /// Drops what is older than `since` from the peaks, OOM kills and guard raises (the
    /// histograms decay instead).
    pub fn expire(&mut self, since: f64) {
        let h = hour(since);
        self.memory_peaks = self.memory_peaks.split_off(&h);
        self.cpu_peaks = self.cpu_peaks.split_off(&h);
        self.ooms.retain(|o| o.time >= since);
        self.raises.retain(|r| r.time >= since);
        if let Some(first) = self.first
            && first < since
        {
            self.first = Some(since);
        }
    }

    /// The `p` percentile of CPU usage, cores.
    pub fn cpu_percentile(&self, p: f64) -> Option<f64> {
        self.cpu.percentile(p)
    }

    /// The `p` percentile of memory usage, bytes.
    pub fn memory_percentile(&self, p: f64) -> Option<f64> {
        self.memory.percentile(p)
    }

    /// The highest memory sample in the window, bytes.
    pub fn memory_peak(&self) -> Option<f64> {
        self.memory_peaks.values().copied().reduce(f64::max)
    }

    /// The largest jump to a new high in the window: the highest ratio of an hour's memory peak
    /// to the highest peak of every earlier hour in the window, counting only hours that start
    /// at least `settle` seconds after the start of the window's first hour. `None` when no
    /// hour set a new high.
    pub fn memory_peak_jump(&self, settle: f64) -> Option<f64> {
        let first = *self.memory_peaks.keys().next()?;
        let settle_hours = (settle / HOUR).ceil() as i64;
        let mut high = 0.0_f64;
        let mut jump: Option<f64> = None;
        for (&h, &peak) in &self.memory_peaks {
            if h - first >= settle_hours && high > 0.0 && peak > high {
                let r = peak / high;
                jump = Some(jump.map_or(r, |j| j.max(r)));
            }
            high = high.max(peak);
        }
        jump
    }

    /// The highest CPU sample in the window, cores.
    pub fn cpu_peak(&self) -> Option<f64> {
        self.cpu_peaks.values().copied().reduce(f64::max)
    }

    /// Samples taken (CPU and memory).
    pub fn samples(&self) -> u64 {
        self.cpu_samples + self.memory_samples
    }

    /// CPU samples taken.
    pub fn cpu_samples(&self) -> u64 {
        self.cpu_samples
    }

    /// Memory samples taken.
    pub fn memory_samples(&self) -> u64 {
        self.memory_samples
    }

    /// Samples refused (NaN, infinite, negative).
    pub fn rejected(&self) -> u64 {
        self.rejected
    }

    /// Seconds between the first and the last sample.
    pub fn span(&self) -> f64 {
        match (self.first, self.last) {
            (Some(f), Some(l)) => l - f,
            _ => 0.0,
        }
    }

    /// The latest sample's time.
    pub fn last_sample(&self) -> Option<f64> {
        self.last
    }

    /// The most recent OOM kill in the window.
    pub fn last_oom(&self) -> Option<OomKill> {
        self.ooms.last().copied()
    }

    /// The highest limit the live memory guard raised to in the window, bytes.
    pub fn guard_raise_peak(&self) -> Option<f64> {
        self.raises.iter().map(|r| r.limit).reduce(f64::max)
    }
}

/// Which usage a sample measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Usage {
    /// CPU, cores.
    Cpu,
    /// Memory working set, bytes.
    Memory,
}

/// Usage samples read but not settled: recent enough that samples reaching Prometheus late
/// (remote-write lag, a slow scrape) may still change them. They count in the estimate of the
/// pass that read them, and are read again by the next pass, which settles them into the
/// history for good. So a late sample is not lost and no sample is counted twice.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Unsettled {
    samples: Vec<(String, Usage, f64, f64)>,
}

impl Unsettled {
    /// A sample of `container`.
    pub fn add(&mut self, container: &str, usage: Usage, t: f64, v: f64) {
        self.samples.push((container.to_owned(), usage, t, v));
    }

    /// How many samples.
    pub fn len(&self) -> usize {
        self.samples.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    /// Adds the samples to `histories` (per container name).
    pub fn apply_to(&self, histories: &mut BTreeMap<String, ContainerHistory>) {
        for (container, usage, t, v) in &self.samples {
            let h = histories.entry(container.clone()).or_default();
            match usage {
                Usage::Cpu => h.add_cpu(*t, *v),
                Usage::Memory => h.add_memory(*t, *v),
            }
        }
    }
}

/// Where the samples of a read go: those at or before `settled` into `histories` for good,
/// later ones into `unsettled`.
#[derive(Debug)]
pub struct UsageSink<'a> {
    /// The latest time whose samples are settled.
    pub settled: f64,
    /// Settled samples, per container name.
    pub histories: &'a mut BTreeMap<String, ContainerHistory>,
    /// The others.
    pub unsettled: &'a mut Unsettled,
}

impl UsageSink<'_> {
    /// A sample of `container` at `t`.
    pub fn add(&mut self, container: &str, usage: Usage, t: f64, v: f64) {
        // Points are whole milliseconds apart from the grid at most.
        if t > self.settled + 1e-3 {
            self.unsettled.add(container, usage, t, v);
            return;
        }
        let h = self.histories.entry(container.to_owned()).or_default();
        match usage {
            Usage::Cpu => h.add_cpu(t, v),
            Usage::Memory => h.add_memory(t, v),
        }
    }
}

/// What one pass over an object reads. Every read evaluates on the grid of multiples of the
/// step (as Prometheus and VictoriaMetrics return them, whatever the wall-clock time of the
/// pass), so a point is either settled once or read again.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pass {
    /// Where pods read by an earlier pass are read from: the point after the last settled one
    /// (the first grid point in the window on the first pass, or if that is later).
    pub known_from: f64,
    /// Where pods not read before are read from: the first grid point in the window.
    pub new_from: f64,
    /// The last point settled by this pass: the last one at least `overlap` before `end`.
    /// Later points are read again by the next pass.
    pub settled: f64,
}

impl Pass {
    /// The pass over `[start, end]` after one that settled up to `previous` (none: the first
    /// pass), at `step`, reading again the last `overlap` seconds.
    pub fn plan(previous: Option<f64>, (start, end): (f64, f64), overlap: f64, step: f64) -> Self {
        let step = step.max(1.0);
        let new_from = (start / step).ceil() * step;
        let known_from = previous.map_or(new_from, |p| (p + step).max(new_from));
        let last = ((end - overlap.max(0.0)) / step).floor() * step;
        Self {
            known_from,
            new_from,
            settled: last.max(known_from - step),
        }
    }
}
