//! What the benchmark drivers share: running requests a few at a time, and reading a
//! process's memory and CPU from `/proc`.

use futures::StreamExt;

/// Runs `f` for each item, `concurrency` at a time; the first error, with how many failed.
pub async fn run_all<I, F, Fut>(items: I, concurrency: usize, f: F) -> Result<(), String>
where
    I: IntoIterator,
    F: Fn(I::Item) -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let results: Vec<Result<(), String>> = futures::stream::iter(items)
        .map(f)
        .buffer_unordered(concurrency)
        .collect()
        .await;
    let n = results.len();
    let errors: Vec<String> = results.into_iter().filter_map(Result::err).collect();
    match errors.first() {
        Some(e) => Err(format!("{} of {n} failed, first: {e}", errors.len())),
        None => Ok(()),
    }
}

/// A field of `/proc/<pid>/status` in MiB (`VmRSS:`, `VmHWM:`); 0 if the process is gone.
pub fn status_mib(pid: u32, field: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .unwrap_or(0.0)
        / 1024.0
}

/// CPU seconds (user + system) a process has used, from `/proc/<pid>/stat` (USER_HZ = 100).
pub fn cpu_seconds(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            // The fields after the command name, which may hold spaces, follow its ')'.
            let rest = s.rsplit_once(')')?.1;
            let f: Vec<&str> = rest.split_whitespace().collect();
            let ticks = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
            Some(ticks / 100.0)
        })
        .unwrap_or(0.0)
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn run_all_reports_the_failures() {
        let ok = super::run_all(0..10, 3, |_| async { Ok(()) }).await;
        assert_eq!(ok, Ok(()));
        let failed = super::run_all(0..10, 3, |i| async move {
            if i % 5 == 0 {
                Err(format!("item {i}"))
            } else {
                Ok(())
            }
        })
        .await
        .unwrap_err();
        assert!(
            failed.starts_with("2 of 10 failed, first: item"),
            "{failed}"
        );
    }

    #[test]
    fn this_process_has_memory_and_cpu() {
        let pid = std::process::id();
        assert!(super::status_mib(pid, "VmRSS:") > 0.0);
        assert!(super::status_mib(pid, "VmHWM:") >= super::status_mib(pid, "VmRSS:") - 1.0);
        assert!(super::cpu_seconds(pid) >= 0.0);
        assert_eq!(super::status_mib(u32::MAX, "VmRSS:"), 0.0);
    }
}
