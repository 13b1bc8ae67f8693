//! Side-by-side comparison of berth with the tools an agent would otherwise
//! shell out to, in one run on one host, the contenders alternating in
//! every iteration. The order runs through every permutation, so each
//! contender follows each other equally often, and the run pauses
//! `BB_SETTLE_MS` (default 200) before each contender.
//!
//! - LXC: berth's `LxcManager` against the lxc command-line tools
//!   (`lxc-copy -s -B overlay` of a template, seed written in-process,
//!   `lxc-start`; `lxc-stop -k`, `lxc-destroy`) and against Incus (`incus
//!   launch`, `incus stop --force`, `incus delete`), all on the same busybox
//!   root file system (built by berth's image code) and a veth NIC on a
//!   bridge. Incus's daemon runs in a network namespace of its own, so its
//!   bridge is a different device with the same role.
//! - libvirt: berth's `VirtManager` against `qemu-img create` of a qcow2
//!   overlay, `cloud-localds` of the seed, `virsh pool-refresh`, `define`,
//!   `start`; `virsh destroy`, `undefine`, `vol-delete`; `qemu:///system`,
//!   software emulation, Debian's cloud kernel with a busybox initramfs.
//!
//! Run as root: `cargo bench --bench compare`. Environment: `BB_COMPARE`
//! (a comma-separated list of `lxc`, `virt` and `start`; default
//! `lxc,virt`), `BB_ITERATIONS` (LXC iterations, default 20),
//! `BB_VM_ITERATIONS` (default 10), `BB_INCUS=0` (leave Incus out; the
//! result then goes to `compare-lxc-without-incus.json`). Medians and
//! ratios are printed and written to `benches/results/compare-<part>.json`.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use berth_core::{InstanceId, Manager, render_user_data_for_host};
use berth_lxc::container::Container;
use berth_lxc::image::busybox::{DEFAULT_BUSYBOX, build_rootfs};
use common::lxc::{LxcEnv, StepTimes};
use common::peers::{IncusPeer, ToolsPeer, VirshPeer, VmFiles, say};
use common::stats::Samples;
use common::virt::{QEMU_URI, VirtEnv};
use common::{env_number, init_logs, machine, require_root};

fn main() {
    require_root();
    init_logs();
    let parts = std::env::var("BB_COMPARE").unwrap_or_else(|_| "lxc,virt".into());
    for part in parts.split(',') {
        let result = match part {
            "lxc" => compare_lxc(env_number("BB_ITERATIONS", 20)),
            "start" => compare_start(env_number("BB_ITERATIONS", 20)),
            "virt" => compare_virt(env_number("BB_VM_ITERATIONS", 10)),
            other => panic!("BB_COMPARE contains {other:?}; expected lxc, start or virt"),
        };
        let without_incus = part == "lxc" && std::env::var("BB_INCUS").as_deref() == Ok("0");
        write_result(
            if without_incus {
                "lxc-without-incus"
            } else {
                part
            },
            result,
        );
    }
}

/// Writes `result`, with the host facts, to `benches/results/compare-<part>.json`.
fn write_result(part: &str, result: serde_json::Value) {
    let out =
        Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("benches/results/compare-{part}.json"));
    std::fs::create_dir_all(out.parent().unwrap()).unwrap();
    let document = serde_json::json!({ "host": common::host::facts(), "result": result });
    std::fs::write(&out, serde_json::to_string_pretty(&document).unwrap()).unwrap();
    say(&format!("results written to {}", out.display()));
}

/// The contenders of one comparison.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Contender {
    Berth,
    Tools,
    Incus,
}

fn compare_lxc(iterations: usize) -> serde_json::Value {
    say(&format!(
        "== LXC: berth vs lxc tools vs Incus, {iterations} iterations"
    ));
    let env = LxcEnv::new("cmp");
    let rootfs = env.base.join("busybox-rootfs");
    std::fs::create_dir_all(&rootfs).unwrap();
    build_rootfs(Path::new(DEFAULT_BUSYBOX), &rootfs).unwrap();

    let manager = env.manager();
    let network = env.network();
    let tools = ToolsPeer::setup(&env.base, &rootfs, &env.bridge, &env.log_dir());
    let mut incus = match std::env::var("BB_INCUS").as_deref() {
        Ok("0") => None,
        _ => Some(IncusPeer::setup(&env.base, &rootfs)),
    };
    let mut incus = match incus.take().unwrap_or(Err("left out by BB_INCUS=0".into())) {
        Ok(peer) => Some(peer),
        Err(reason) => {
            say(&format!("Incus left out: {reason}"));
            None
        }
    };

    let mut berth = Samples::default();
    let mut berth_steps = Samples::default();
    let mut tool_samples = Samples::default();
    let mut incus_samples = Samples::default();
    let step_times = StepTimes::default();
    let settle = Duration::from_millis(env_number("BB_SETTLE_MS", 200) as u64);

    // Iteration 0 is a warm-up, not recorded: it builds berth's template
    // and fills the page cache for every contender.
    for iteration in 0..=iterations {
        let mut contenders = vec![Contender::Berth, Contender::Tools];
        if incus.is_some() {
            contenders.push(Contender::Incus);
        }
        let order = permutation(&contenders, iteration);
        let id = iteration.to_string();
        let mut berth_run = Samples::default();
        let mut tools_run = Samples::default();
        let mut incus_run = Samples::default();
        for contender in order {
            // Tearing down a container leaves work to the kernel (network
            // namespaces are freed asynchronously); let it finish so that it
            // is not charged to whoever runs next.
            std::thread::sleep(settle);
            match contender {
                Contender::Berth => {
                    let machine = machine(&id);
                    let name = env.container_name(&id);
                    let started = Instant::now();
                    manager
                        .create_container_with_progress(&machine, "bookworm", &network, &step_times)
                        .unwrap_or_else(|error| {
                            panic!(
                                "berth create {name}: {}",
                                berth_core::error::error_chain(&error)
                            )
                        });
                    berth_run.add("create+start", started.elapsed());
                    for (step, elapsed) in step_times.take() {
                        berth_run.add(step, elapsed);
                    }
                    let started = Instant::now();
                    manager
                        .destroy_container(&InstanceId::new(name.as_str()).unwrap())
                        .unwrap();
                    berth_run.add("stop+destroy", started.elapsed());
                }
                Contender::Tools => {
                    let name = format!("bb-tools-{id}");
                    let started = Instant::now();
                    let user_data = render_user_data_for_host(&machine(&id), &name).unwrap();
                    tools.create(&name, &user_data, &mut tools_run);
                    tools_run.add("create+start", started.elapsed());
                    let started = Instant::now();
                    tools.destroy(&name, &mut tools_run);
                    tools_run.add("stop+destroy", started.elapsed());
                }
                Contender::Incus => {
                    let peer = incus.as_ref().unwrap();
                    let name = format!("bb-inc-{id}");
                    peer.launch(&name, &mut incus_run);
                    let started = Instant::now();
                    peer.destroy(&name, &mut incus_run);
                    incus_run.add("stop+delete", started.elapsed());
                }
            }
        }
        if iteration == 0 {
            continue;
        }
        merge(&mut berth, &berth_run, &["create+start", "stop+destroy"]);
        merge(&mut berth_steps, &berth_run, &[]);
        merge(&mut tool_samples, &tools_run, &[]);
        merge(&mut incus_samples, &incus_run, &[]);
        if iteration % 5 == 0 {
            say(&format!(
                "  iteration {iteration}: berth create {:.1} ms, tools {:.1} ms",
                berth.get("create+start").last().unwrap(),
                tool_samples.get("create+start").last().unwrap()
            ));
        }
    }

    say("\nLXC medians (ms)            berth    tools    Incus   berth/tools  berth/Incus");
    let pairs = [
        ("create+start", "create+start", "launch"),
        ("stop+destroy", "stop+destroy", "stop+delete"),
    ];
    let mut ratios = serde_json::Map::new();
    for (label, tools_step, incus_step) in pairs {
        let b = berth.median(label);
        let t = tool_samples.median(tools_step);
        let i = incus_samples.median(incus_step);
        say(&format!(
            "  {label:<24} {b:>8.1} {t:>8.1} {i:>8.1} {:>12.2} {:>12.3}",
            b / t,
            b / i
        ));
        ratios.insert(format!("{label} berth/tools"), (b / t).into());
        ratios.insert(format!("{label} berth/incus"), (b / i).into());
    }
    say("  berth create steps:");
    for step in berth_steps.steps() {
        say(&format!("    {step:<20} {:>8.2}", berth_steps.median(step)));
    }
    say("  tools steps:");
    for step in tool_samples.steps() {
        say(&format!(
            "    {step:<20} {:>8.2}",
            tool_samples.median(step)
        ));
    }
    say("  Incus steps:");
    for step in incus_samples.steps() {
        say(&format!(
            "    {step:<20} {:>8.2}",
            incus_samples.median(step)
        ));
    }

    tools.cleanup();
    if let Some(peer) = incus.as_mut() {
        peer.cleanup();
    }
    drop(manager);
    drop(env);
    serde_json::json!({
        "iterations": iterations,
        "berth": berth_steps.summary_json(),
        "tools": tool_samples.summary_json(),
        "incus": if incus.is_some() { incus_samples.summary_json() } else { serde_json::Value::Null },
        "ratios": ratios,
    })
}

/// Starts and kill-stops the same stopped containers through liblxc
/// in-process (berth's `Container` handle) and through `lxc-start` and
/// `lxc-stop -k`, alternating, to separate the cost of the call path from
/// the rest of a create. The containers are berth's clones with berth's
/// configuration, made by one berth create each and then stopped.
fn compare_start(iterations: usize) -> serde_json::Value {
    say(&format!(
        "== start and stop of one container: liblxc in-process vs lxc-start/lxc-stop, {iterations} iterations"
    ));
    let env = LxcEnv::new("cst");
    let manager = env.manager();
    let network = env.network();
    let lxc_path = env.lxc_path();
    let path = lxc_path.to_str().unwrap().to_owned();
    let mut samples = Samples::default();
    for iteration in 0..=iterations {
        let id = iteration.to_string();
        let name = env.container_name(&id);
        manager
            .create_container(&machine(&id), "bookworm", &network)
            .unwrap();
        let container = Container::new(&name, &lxc_path).unwrap();
        container.stop().unwrap();
        let mut run = Samples::default();
        for turn in 0..2 {
            if (turn == 0) == (iteration % 2 == 0) {
                let started = Instant::now();
                container.start().unwrap();
                run.add("in-process start", started.elapsed());
                let started = Instant::now();
                container.stop().unwrap();
                run.add("in-process stop", started.elapsed());
            } else {
                run.add(
                    "lxc-start",
                    common::timed_run("lxc-start", &["-P", &path, "-n", &name]),
                );
                run.add(
                    "lxc-stop -k",
                    common::timed_run("lxc-stop", &["-P", &path, "-n", &name, "-k"]),
                );
            }
        }
        drop(container);
        manager
            .destroy_container(&InstanceId::new(name.as_str()).unwrap())
            .unwrap();
        if iteration > 0 {
            merge(&mut samples, &run, &[]);
        }
    }
    for step in samples.steps() {
        say(&format!("  {step:<20} {:>8.2} ms", samples.median(step)));
    }
    say(&format!(
        "  in-process/tools: start {:.2}, stop {:.2}",
        samples.median("in-process start") / samples.median("lxc-start"),
        samples.median("in-process stop") / samples.median("lxc-stop -k")
    ));
    drop(manager);
    drop(env);
    samples.summary_json()
}

/// Returns permutation number `index` (modulo their count) of `items`, so
/// that over consecutive indices each item runs before and after each other
/// item equally often.
fn permutation<T: Copy>(items: &[T], index: usize) -> Vec<T> {
    let mut remaining = items.to_vec();
    let mut order = Vec::with_capacity(items.len());
    let count: usize = (1..=items.len()).product();
    let mut rank = index % count;
    for left in (1..=items.len()).rev() {
        let block: usize = (1..left).product();
        order.push(remaining.remove(rank / block));
        rank %= block;
    }
    order
}

/// Adds the samples of `run` to `all`: only `steps`, or every step when
/// `steps` is empty.
fn merge(all: &mut Samples, run: &Samples, steps: &[&str]) {
    for step in run.steps() {
        if steps.is_empty() || steps.contains(&step) {
            for value in run.get(step) {
                all.add_ms(step, *value);
            }
        }
    }
}

fn compare_virt(iterations: usize) -> serde_json::Value {
    say(&format!(
        "== libvirt: berth vs virsh + qemu-img, {QEMU_URI}, {iterations} iterations"
    ));
    let env = VirtEnv::system("vcmp");
    let files = VmFiles::find();
    let manager = env.manager(&files);
    let network = env.network();
    let peer = VirshPeer::setup(
        &env.uri,
        &env.pool,
        &env.pool_dir(),
        &env.base.join("peer"),
        &env.bridge,
        files,
    );

    let mut berth = Samples::default();
    let mut peer_samples = Samples::default();
    let step_times = StepTimes::default();
    for iteration in 0..=iterations {
        let id = iteration.to_string();
        let mut berth_run = Samples::default();
        let mut peer_run = Samples::default();
        let berth_first = iteration % 2 == 0;
        for turn in 0..2 {
            if (turn == 0) == berth_first {
                let machine = machine(&id);
                let name = env.container_name(&id);
                let started = Instant::now();
                manager
                    .create_container_with_progress(&machine, "bookworm", &network, &step_times)
                    .unwrap_or_else(|error| {
                        panic!(
                            "berth create {name}: {}",
                            berth_core::error::error_chain(&error)
                        )
                    });
                berth_run.add("create+start", started.elapsed());
                for (step, elapsed) in step_times.take() {
                    berth_run.add(step, elapsed);
                }
                let started = Instant::now();
                manager
                    .destroy_container(&InstanceId::new(name.as_str()).unwrap())
                    .unwrap();
                berth_run.add("stop+destroy", started.elapsed());
            } else {
                let name = format!("bb-peer-{id}");
                let user_data = render_user_data_for_host(&machine(&id), &name).unwrap();
                let mac = format!(
                    "0a:16:3e:00:{:02x}:{:02x}",
                    iteration / 256,
                    iteration % 256
                );
                let started = Instant::now();
                peer.create(&name, &user_data, &mac, &mut peer_run);
                peer_run.add("create+start", started.elapsed());
                let without_seed =
                    peer_run.get("create+start")[0] - peer_run.get("seed (cloud-localds)")[0];
                peer_run.add_ms("create+start without seed", without_seed);
                let started = Instant::now();
                peer.destroy(&name, &mut peer_run);
                peer_run.add("stop+destroy", started.elapsed());
            }
        }
        if iteration == 0 {
            continue;
        }
        merge(&mut berth, &berth_run, &[]);
        merge(&mut peer_samples, &peer_run, &[]);
        say(&format!(
            "  iteration {iteration}: berth {:.0} ms, virsh {:.0} ms",
            berth.get("create+start").last().unwrap(),
            peer_samples.get("create+start").last().unwrap()
        ));
    }

    let b_create = berth.median("create+start");
    let b_destroy = berth.median("stop+destroy");
    let p_create = peer_samples.median("create+start");
    let p_create_no_seed = peer_samples.median("create+start without seed");
    let p_destroy = peer_samples.median("stop+destroy");
    let b_cycle = median_of_sums(&berth, &["create+start", "stop+destroy"]);
    let p_cycle = median_of_sums(&peer_samples, &["create+start", "stop+destroy"]);
    let p_cycle_no_seed = median_of_sums(
        &peer_samples,
        &["create+start without seed", "stop+destroy"],
    );
    say("\nlibvirt medians (ms)                    berth    virsh   berth/virsh");
    say(&format!(
        "  define+start                    {b_create:>9.1} {p_create:>8.1} {:>12.2}",
        b_create / p_create
    ));
    say(&format!(
        "  define+start (peer without seed) {b_create:>8.1} {p_create_no_seed:>8.1} {:>12.2}",
        b_create / p_create_no_seed
    ));
    say(&format!(
        "  destroy+undefine+delete         {b_destroy:>9.1} {p_destroy:>8.1} {:>12.2}",
        b_destroy / p_destroy
    ));
    say(&format!(
        "  whole cycle                     {b_cycle:>9.1} {p_cycle:>8.1} {:>12.2}",
        b_cycle / p_cycle
    ));
    say(&format!(
        "  whole cycle (peer without seed) {b_cycle:>9.1} {p_cycle_no_seed:>8.1} {:>12.2}",
        b_cycle / p_cycle_no_seed
    ));
    say("  berth steps:");
    for step in berth.steps() {
        say(&format!("    {step:<28} {:>8.2}", berth.median(step)));
    }
    say("  virsh steps:");
    for step in peer_samples.steps() {
        say(&format!(
            "    {step:<28} {:>8.2}",
            peer_samples.median(step)
        ));
    }

    peer.cleanup();
    drop(manager);
    drop(env);
    serde_json::json!({
        "iterations": iterations,
        "berth": berth.summary_json(),
        "virsh": peer_samples.summary_json(),
        "ratios": {
            "define+start berth/virsh": b_create / p_create,
            "define+start berth/virsh without seed": b_create / p_create_no_seed,
            "destroy berth/virsh": b_destroy / p_destroy,
            "cycle berth/virsh": b_cycle / p_cycle,
            "cycle berth/virsh without seed": b_cycle / p_cycle_no_seed,
        },
    })
}

/// Returns the median over iterations of the sum of `steps`.
fn median_of_sums(samples: &Samples, steps: &[&str]) -> f64 {
    let count = samples.get(steps[0]).len();
    let sums: Vec<f64> = (0..count)
        .map(|index| steps.iter().map(|step| samples.get(step)[index]).sum())
        .collect();
    common::stats::percentile(&sums, 50.0)
}
