//! Scale of berth's LXC manager: create latency and host memory with 10,
//! 100 and 500 running busybox containers, list time against the number of
//! running and of defined (stopped) containers, and sustained churn
//! (create plus destroy cycles per second) with 1, 4 and 16 threads.
//!
//! Memory, per container, at each count (all from /proc, no cache drop):
//! - `host_used`: growth of MemTotal - MemAvailable since before the first
//!   create, divided by the count. Reclaimable page cache and slab are not
//!   in it, because MemAvailable counts them as available.
//! - `own_pss`: proportional set size of the container's own processes
//!   (those in its PID namespace), from /proc/PID/smaps_rollup.
//! - `monitor_pss` and `monitor_rss`: PSS and RSS of its liblxc monitor
//!   process (`[lxc monitor] LXCPATH NAME`), a fork of this process.
//! - `beyond_own`: `host_used - own_pss`, the host memory a container costs
//!   beyond its own processes (monitor, kernel objects, page tables).
//! - Growth of Slab, SUnreclaim, PageTables and KernelStack, divided by
//!   the count.
//!
//! Run as root: `cargo bench --bench scale`. Environment: `BB_SCALE_MAX`
//! (largest running count, default 500), `BB_CHURN_SECONDS` (per thread
//! count, default 15), `BB_LIST_MAX` (largest defined count, default 1000).
//! Results go to `benches/results/scale.json`.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use berth_core::{InstanceId, Manager};
use berth_lxc::container::Container;
use common::lxc::{LxcEnv, StepTimes};
use common::peers::say;
use common::stats::{Samples, percentile, summary};
use common::{env_number, init_logs, machine, ms, require_root};

fn main() {
    require_root();
    init_logs();
    let max_running = env_number("BB_SCALE_MAX", 500);
    let churn_seconds = env_number("BB_CHURN_SECONDS", 15) as u64;
    let list_max = env_number("BB_LIST_MAX", 1000);

    let mut report = serde_json::Map::new();
    report.insert("host".into(), common::host::facts());
    let env = LxcEnv::new("scale");
    report.insert("density".into(), density(&env, max_running));
    report.insert("list_defined".into(), list_defined(&env, list_max));
    report.insert("churn".into(), churn(&env, churn_seconds));
    drop(env);

    let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/results/scale.json");
    std::fs::create_dir_all(out.parent().unwrap()).unwrap();
    std::fs::write(
        &out,
        serde_json::to_string_pretty(&serde_json::Value::Object(report)).unwrap(),
    )
    .unwrap();
    say(&format!("results written to {}", out.display()));
}

/// Values of /proc/meminfo in KiB, by key.
fn meminfo() -> BTreeMap<String, u64> {
    std::fs::read_to_string("/proc/meminfo")
        .unwrap()
        .lines()
        .filter_map(|line| {
            let (key, rest) = line.split_once(':')?;
            Some((
                key.to_owned(),
                rest.split_whitespace().next()?.parse().ok()?,
            ))
        })
        .collect()
}

fn used_kib(info: &BTreeMap<String, u64>) -> u64 {
    info["MemTotal"] - info["MemAvailable"]
}

/// Returns `(Rss, Pss)` of process `pid` in KiB, or zeros when it is gone.
fn rss_pss(pid: u32) -> (u64, u64) {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
    let field = |key: &str| {
        text.lines()
            .find_map(|line| line.strip_prefix(key))
            .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    (field("Rss:"), field("Pss:"))
}

/// Returns every process as `(pid, command line with NULs as spaces, PID
/// namespace)`.
fn processes() -> Vec<(u32, String, String)> {
    let mut all = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|name| name.parse::<u32>().ok())
        else {
            continue;
        };
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        let namespace = std::fs::read_link(format!("/proc/{pid}/ns/pid"))
            .map(|link| link.to_string_lossy().into_owned())
            .unwrap_or_default();
        all.push((pid, cmdline, namespace));
    }
    all
}

/// Memory of the running containers `names` of `env`, per container, in KiB.
fn container_memory(env: &LxcEnv, names: &[String]) -> serde_json::Value {
    let lxc_path = env.lxc_path();
    let all = processes();
    let mut own_pss = 0;
    let mut own_processes = 0;
    let mut monitor_rss = 0;
    let mut monitor_pss = 0;
    let mut monitors = 0;
    for name in names {
        let container = Container::new(name, &lxc_path).unwrap();
        let init = container
            .init_pid()
            .unwrap()
            .expect("a running container has an init process");
        let namespace = std::fs::read_link(format!("/proc/{init}/ns/pid"))
            .unwrap()
            .to_string_lossy()
            .into_owned();
        for (pid, _, process_namespace) in &all {
            if *process_namespace == namespace {
                own_pss += rss_pss(*pid).1;
                own_processes += 1;
            }
        }
        let monitor_line = format!("[lxc monitor] {} {name} ", lxc_path.display());
        for (pid, cmdline, _) in &all {
            if cmdline.starts_with(&monitor_line) || cmdline == monitor_line.trim_end() {
                let (rss, pss) = rss_pss(*pid);
                monitor_rss += rss;
                monitor_pss += pss;
                monitors += 1;
            }
        }
    }
    let count = names.len() as f64;
    serde_json::json!({
        "own_processes_per_container": own_processes as f64 / count,
        "own_pss_kib": own_pss as f64 / count,
        "monitors_found": monitors,
        "monitor_rss_kib": monitor_rss as f64 / count,
        "monitor_pss_kib": monitor_pss as f64 / count,
    })
}

/// Creates running containers up to `max`, measuring create latency of
/// each, and memory and list time at 10, 100 and `max`. Destroys them all
/// at the end, measuring each destroy.
fn density(env: &LxcEnv, max: usize) -> serde_json::Value {
    say(&format!("== density: up to {max} running containers"));
    let manager = env.manager();
    let network = env.network();
    // Build the template before the baseline, so it is not charged to the
    // containers.
    manager
        .create_container(&machine("0"), "bookworm", &network)
        .unwrap();
    manager
        .destroy_container(&InstanceId::new(env.container_name("0")).unwrap())
        .unwrap();
    std::thread::sleep(Duration::from_secs(1));

    let before = meminfo();
    let mut names = Vec::new();
    let mut creates = Vec::new();
    let mut checkpoints = Vec::new();
    let step_times = StepTimes::default();
    let mut steps_since_mark = Samples::default();
    let marks: Vec<usize> = [10, 100, max]
        .into_iter()
        .filter(|mark| *mark <= max)
        .collect();
    for index in 1..=max {
        let id = index.to_string();
        let started = Instant::now();
        manager
            .create_container_with_progress(&machine(&id), "bookworm", &network, &step_times)
            .unwrap_or_else(|error| {
                panic!(
                    "create container {index}: {}",
                    berth_core::error::error_chain(&error)
                )
            });
        creates.push(ms(started.elapsed()));
        for (step, elapsed) in step_times.take() {
            steps_since_mark.add(step, elapsed);
        }
        names.push(env.container_name(&id));
        if !marks.contains(&index) {
            continue;
        }

        // Let the containers' init scripts settle before reading memory.
        std::thread::sleep(Duration::from_secs(2));
        let now = meminfo();
        let per = |key: &str| (now[key] as f64 - before[key] as f64) / index as f64;
        let host_used = (used_kib(&now) as f64 - used_kib(&before) as f64) / index as f64;
        let mut memory = container_memory(env, &names);
        let own = memory["own_pss_kib"].as_f64().unwrap();
        let object = memory.as_object_mut().unwrap();
        object.insert("host_used_kib".into(), host_used.into());
        object.insert("beyond_own_kib".into(), (host_used - own).into());
        for key in ["Slab", "SUnreclaim", "PageTables", "KernelStack", "Shmem"] {
            object.insert(format!("{key}_kib"), per(key).into());
        }

        let mut lists = Vec::new();
        for _ in 0..10 {
            let started = Instant::now();
            let listed = manager.list_containers().unwrap();
            lists.push(ms(started.elapsed()));
            assert_eq!(listed.len(), index, "list sees every running container");
        }
        let recent = &creates[creates.len().saturating_sub(10)..];
        say(&format!(
            "  {index:>4} running: step p50 since the previous mark: clone {:.1} ms, start {:.1} ms, validate {:.2} ms",
            steps_since_mark.median("clone"),
            steps_since_mark.median("start"),
            steps_since_mark.median("validate"),
        ));
        say(&format!(
            "  {index:>4} running: create p50 of last 10 {:.1} ms, list p50 {:.1} ms, host {:.0} KiB/container, \
             beyond own {:.0} KiB, monitor PSS {:.0} KiB",
            percentile(recent, 50.0),
            percentile(&lists, 50.0),
            host_used,
            host_used - own,
            memory["monitor_pss_kib"].as_f64().unwrap(),
        ));
        checkpoints.push(serde_json::json!({
            "running": index,
            "memory_per_container": memory,
            "list": summary(&lists),
            "create_last_10": summary(recent),
            "create_steps_since_previous": std::mem::take(&mut steps_since_mark).summary_json(),
        }));
    }

    let mut destroys = Vec::new();
    for name in names.iter().rev() {
        let started = Instant::now();
        manager
            .destroy_container(&InstanceId::new(name.as_str()).unwrap())
            .unwrap();
        destroys.push(ms(started.elapsed()));
    }
    say(&format!(
        "  create p50 {:.1} ms (first {:.1}, last {:.1}); destroy p50 {:.1} ms",
        percentile(&creates, 50.0),
        creates[0],
        creates[creates.len() - 1],
        percentile(&destroys, 50.0)
    ));
    serde_json::json!({
        "create_ms": creates,
        "destroy_ms": destroys,
        "checkpoints": checkpoints,
    })
}

/// Measures list time with 0 to `max` stopped containers defined.
fn list_defined(env: &LxcEnv, max: usize) -> serde_json::Value {
    say(&format!(
        "== list with up to {max} defined (stopped) containers"
    ));
    let manager = env.manager();
    let mut points = Vec::new();
    let mut defined = 0;
    for count in [0, 10, 100, 250, 500, 1000]
        .into_iter()
        .filter(|count| *count <= max)
    {
        env.define_stopped(100_000 + defined, count - defined);
        defined = count;
        let mut lists = Vec::new();
        for _ in 0..10 {
            let started = Instant::now();
            let listed = manager.list_containers().unwrap();
            lists.push(ms(started.elapsed()));
            assert_eq!(listed.len(), count, "list sees every defined container");
        }
        say(&format!(
            "  {count:>5} defined: list p50 {:.2} ms",
            percentile(&lists, 50.0)
        ));
        points.push(serde_json::json!({ "defined": count, "list": summary(&lists) }));
    }
    for index in 0..defined {
        let name = env.container_name(&(100_000 + index).to_string());
        manager
            .destroy_container(&InstanceId::new(name.as_str()).unwrap())
            .unwrap();
    }
    serde_json::Value::Array(points)
}

/// Runs create+destroy cycles on 1, 4 and 16 threads sharing one manager,
/// each for `seconds`, and returns cycles per second and cycle latency.
fn churn(env: &LxcEnv, seconds: u64) -> serde_json::Value {
    say(&format!(
        "== churn: create+destroy cycles for {seconds} s per thread count"
    ));
    let manager = env.manager();
    let network = env.network();
    let next_id = AtomicUsize::new(200_000);
    let mut results = Vec::new();
    for threads in [1, 4, 16] {
        let stop = AtomicBool::new(false);
        let started = Instant::now();
        let per_thread: Vec<Samples> = std::thread::scope(|scope| {
            let workers: Vec<_> = (0..threads)
                .map(|_| {
                    scope.spawn(|| {
                        let mut samples = Samples::default();
                        let step_times = StepTimes::default();
                        while !stop.load(Ordering::Relaxed) {
                            let id = next_id.fetch_add(1, Ordering::Relaxed).to_string();
                            let cycle = Instant::now();
                            manager
                                .create_container_with_progress(
                                    &machine(&id),
                                    "bookworm",
                                    &network,
                                    &step_times,
                                )
                                .unwrap_or_else(|error| {
                                    panic!(
                                        "create {id}: {}",
                                        berth_core::error::error_chain(&error)
                                    )
                                });
                            samples.add("create", cycle.elapsed());
                            for (step, elapsed) in step_times.take() {
                                samples.add(&format!("create step {step}"), elapsed);
                            }
                            let destroy = Instant::now();
                            manager
                                .destroy_container(
                                    &InstanceId::new(env.container_name(&id)).unwrap(),
                                )
                                .unwrap();
                            samples.add("destroy", destroy.elapsed());
                            samples.add("cycle", cycle.elapsed());
                        }
                        samples
                    })
                })
                .collect();
            std::thread::sleep(Duration::from_secs(seconds));
            stop.store(true, Ordering::Relaxed);
            workers
                .into_iter()
                .map(|worker| worker.join().unwrap())
                .collect()
        });
        let elapsed = started.elapsed().as_secs_f64();
        let mut all = Samples::default();
        for samples in &per_thread {
            for step in samples.steps() {
                for value in samples.get(step) {
                    all.add_ms(step, *value);
                }
            }
        }
        let cycles = all.get("cycle").len();
        let rate = cycles as f64 / elapsed;
        say(&format!(
            "  {threads:>2} threads: {cycles} cycles in {elapsed:.1} s = {rate:.1}/s; cycle p50 {:.1} ms, create p50 {:.1} ms, destroy p50 {:.1} ms",
            all.median("cycle"),
            all.median("create"),
            all.median("destroy")
        ));
        results.push(serde_json::json!({
            "threads": threads,
            "cycles": cycles,
            "seconds": elapsed,
            "cycles_per_second": rate,
            "steps": all.summary_json(),
        }));
    }
    serde_json::Value::Array(results)
}
