//! How much CPU and memory this process uses, the same for the host, and what build is
//! running.
//!
//! Definitions (sampled with `sysinfo` every [`SAMPLE_INTERVAL`] by a background task, and
//! served from the last sample, so a scrape never touches `/proc` and any number of
//! scrapers see the same values):
//!
//! - `cpu_usage_percent`: CPU time this process used over the last interval, divided by
//!   the CPU time available to it in that interval (wall time × the cores it may use,
//!   [`std::thread::available_parallelism`], which honours CPU affinity and cgroup
//!   quotas). 0 to 100, where 100 means every core it may use was busy with it.
//! - `memory_usage_percent`: this process's resident set size (RSS) divided by the memory
//!   it may use (the cgroup's memory limit inside a container that has one, else the
//!   host's total memory), × 100.
//! - `host_cpu_usage_percent`, `host_memory_usage_percent`: the whole machine (or VM) as
//!   the kernel sees it, busy CPU time over all cores and (total − available) / total
//!   memory. Inside a container these describe the host, not the container.
//!
//! CPU values are 0 until the second sample (one second after start).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::{Registry, Unit};
use sysinfo::{Pid, ProcessRefreshKind, ProcessesToUpdate, System};

/// How often CPU and memory are sampled.
pub const SAMPLE_INTERVAL: Duration = Duration::from_secs(5);
/// Delay of the second sample, the first with CPU values.
const FIRST_CPU_SAMPLE: Duration = Duration::from_secs(1);

/// The git commit the binaries were built from: `CHAT_GIT_COMMIT` in the environment of
/// the build (the Dockerfile's build argument of that name, which docker-compose.yml
/// passes on), else `unknown`. Cargo rebuilds this crate when the variable changes.
pub const GIT_COMMIT: &str = match option_env!("CHAT_GIT_COMMIT") {
    Some(commit) if !commit.is_empty() => commit,
    _ => "unknown",
};

/// Registers `build_info{service, version, git_commit} 1`.
pub fn register_build_info(registry: &mut Registry, service: &str) {
    let info = Info::new(vec![
        ("service", service.to_owned()),
        ("version", env!("CARGO_PKG_VERSION").to_owned()),
        ("git_commit", GIT_COMMIT.to_owned()),
    ]);
    registry.register(
        "build",
        "The build of this process: its service, version and git commit; always 1",
        info,
    );
}

/// The last sample, as `f64` bits.
#[derive(Debug, Default)]
struct Snapshot {
    cpu: AtomicU64,
    memory: AtomicU64,
    host_cpu: AtomicU64,
    host_memory: AtomicU64,
}

impl Snapshot {
    fn store(&self, sample: Sample) {
        self.cpu.store(sample.cpu.to_bits(), Ordering::Relaxed);
        self.memory
            .store(sample.memory.to_bits(), Ordering::Relaxed);
        self.host_cpu
            .store(sample.host_cpu.to_bits(), Ordering::Relaxed);
        self.host_memory
            .store(sample.host_memory.to_bits(), Ordering::Relaxed);
    }

    fn load(&self) -> Sample {
        let get = |v: &AtomicU64| f64::from_bits(v.load(Ordering::Relaxed));
        Sample {
            cpu: get(&self.cpu),
            memory: get(&self.memory),
            host_cpu: get(&self.host_cpu),
            host_memory: get(&self.host_memory),
        }
    }
}

/// Percentages, see the module doc.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Sample {
    /// `cpu_usage_percent`.
    pub cpu: f64,
    /// `memory_usage_percent`.
    pub memory: f64,
    /// `host_cpu_usage_percent`.
    pub host_cpu: f64,
    /// `host_memory_usage_percent`.
    pub host_memory: f64,
}

/// `cpu_usage_percent`, `memory_usage_percent`, `host_cpu_usage_percent` and
/// `host_memory_usage_percent`: a collector in the registry serving the last sample, and
/// a task refreshing it that stops when both the registry and this handle are gone.
#[derive(Debug, Clone)]
pub struct ProcessMetrics {
    snapshot: Arc<Snapshot>,
}

impl ProcessMetrics {
    /// Takes a first sample (memory is known at once), registers the collector and,
    /// inside a Tokio runtime, starts the refresh task. Outside one the values stay at
    /// the first sample.
    pub fn register(registry: &mut Registry) -> Self {
        let snapshot = Arc::new(Snapshot::default());
        let mut sampler = Sampler::new();
        snapshot.store(sampler.sample());
        registry.register_collector(Box::new(ProcessCollector {
            snapshot: snapshot.clone(),
        }));
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(refresh(sampler, Arc::downgrade(&snapshot)));
        }
        Self { snapshot }
    }

    /// The values a scrape would show now.
    pub fn current(&self) -> Sample {
        self.snapshot.load()
    }
}

async fn refresh(mut sampler: Sampler, snapshot: Weak<Snapshot>) {
    let mut next = FIRST_CPU_SAMPLE;
    loop {
        tokio::time::sleep(next).await;
        next = SAMPLE_INTERVAL;
        let Some(snapshot) = snapshot.upgrade() else {
            return;
        };
        snapshot.store(sampler.sample());
    }
}

#[derive(Debug)]
struct ProcessCollector {
    snapshot: Arc<Snapshot>,
}

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let percent = Unit::Other("percent".into());
        let sample = self.snapshot.load();
        // Collector help texts are written as is (the registry adds the full stop only to
        // what is registered through it).
        let gauges = [
            (
                "cpu_usage",
                "CPU time used by this process over the last sample interval, in percent of the CPU time available to it (all the cores it may use)",
                sample.cpu,
            ),
            (
                "memory_usage",
                "Resident memory of this process, in percent of the memory it may use (its cgroup limit, else the host's total)",
                sample.memory,
            ),
            (
                "host_cpu_usage",
                "CPU busy time of the whole host over the last sample interval, in percent of all its cores",
                sample.host_cpu,
            ),
            (
                "host_memory_usage",
                "Memory in use on the whole host (total minus available), in percent of its total",
                sample.host_memory,
            ),
        ];
        for (name, help, value) in gauges {
            let gauge = ConstGauge::new(value);
            let help = format!("{help}.");
            let metric =
                encoder.encode_descriptor(name, &help, Some(&percent), gauge.metric_type())?;
            gauge.encode(metric)?;
        }
        Ok(())
    }
}

/// Reads `/proc` (through sysinfo) and turns it into percentages.
struct Sampler {
    system: System,
    pid: Option<Pid>,
    /// Cores this process may use.
    cores: f64,
    /// When the CPU time was last read, and its value (ms).
    last_cpu: Option<(Instant, u64)>,
}

impl Sampler {
    fn new() -> Self {
        Self {
            system: System::new(),
            pid: sysinfo::get_current_pid().ok(),
            cores: std::thread::available_parallelism().map_or(1.0, |n| n.get() as f64),
            last_cpu: None,
        }
    }

    fn sample(&mut self) -> Sample {
        let now = Instant::now();
        self.system.refresh_memory();
        self.system.refresh_cpu_usage();
        let mut sample = Sample {
            host_cpu: f64::from(self.system.global_cpu_usage()).clamp(0.0, 100.0),
            ..Sample::default()
        };
        let total = self.system.total_memory();
        if total > 0 {
            let used = total.saturating_sub(self.system.available_memory());
            sample.host_memory = percent(used as f64, total as f64);
        }
        let Some(pid) = self.pid else {
            return sample;
        };
        self.system.refresh_processes_specifics(
            ProcessesToUpdate::Some(&[pid]),
            false,
            ProcessRefreshKind::nothing().with_cpu().with_memory(),
        );
        let Some(process) = self.system.process(pid) else {
            return sample;
        };
        let limit = self
            .system
            .cgroup_limits()
            .map(|c| c.total_memory)
            .filter(|&limit| limit > 0 && limit < total)
            .unwrap_or(total);
        if limit > 0 {
            sample.memory = percent(process.memory() as f64, limit as f64);
        }
        let cpu_ms = process.accumulated_cpu_time();
        if let Some((then, then_ms)) = self.last_cpu {
            let available = now.duration_since(then).as_secs_f64() * self.cores;
            if available > 0.0 {
                let used = cpu_ms.saturating_sub(then_ms) as f64 / 1000.0;
                sample.cpu = percent(used, available);
            }
        }
        self.last_cpu = Some((now, cpu_ms));
        sample
    }
}

fn percent(part: f64, whole: f64) -> f64 {
    (part / whole * 100.0).clamp(0.0, 100.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_has_the_compatibility_names_with_their_units() {
        let mut registry = Registry::default();
        let metrics = ProcessMetrics::register(&mut registry);
        let text = crate::exposition(&registry);
        let sample = metrics.current();
        assert!(
            sample.memory > 0.0 && sample.memory <= 100.0,
            "RSS is known at once: {sample:?}"
        );
        assert!(text.contains(
            "# HELP cpu_usage_percent CPU time used by this process over the last sample interval, in percent of the CPU time available to it (all the cores it may use).\n# TYPE cpu_usage_percent gauge\ncpu_usage_percent "
        ), "{text}");
        for name in [
            "memory_usage_percent",
            "host_cpu_usage_percent",
            "host_memory_usage_percent",
        ] {
            assert!(
                text.contains(&format!("# TYPE {name} gauge\n{name} ")),
                "{name} in {text}"
            );
        }
        let mut open = String::new();
        prometheus_client::encoding::text::encode(&mut open, &registry).expect("encodes");
        assert!(
            open.contains("# TYPE cpu_usage_percent gauge\n# UNIT cpu_usage_percent percent\n"),
            "{open}"
        );
    }

    #[test]
    fn cpu_is_the_share_of_available_cores() {
        let mut sampler = Sampler::new();
        sampler.sample();
        // Burn some CPU on this thread; the share must be above 0 and at most 100.
        let start = Instant::now();
        let mut x = 0u64;
        while start.elapsed() < Duration::from_millis(300) {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
        }
        std::hint::black_box(x);
        let sample = sampler.sample();
        assert!(sample.cpu > 0.0 && sample.cpu <= 100.0, "{sample:?}");
        assert!((0.0..=100.0).contains(&sample.host_cpu), "{sample:?}");
        assert!(sample.host_memory > 0.0, "{sample:?}");
    }
}
