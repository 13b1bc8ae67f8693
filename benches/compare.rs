//! Side-by-side comparison of berth with the tools an agent would otherwise
//! shell out to, in one run on one host, the contenders alternating in
//! every iteration (the order rotates, so neither always runs first).
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
//! Run as root: `cargo bench --bench compare`. Environment: `BB_ITERATIONS`
//! (LXC iterations, default 20), `BB_VM_ITERATIONS` (default 10),
//! `BB_COMPARE` (`lxc`, `virt` or `lxc,virt`, the default). Medians and
//! ratios are printed and written to `benches/results/compare.json`.

mod common;

use std::path::Path;
use std::time::Instant;

use berth_core::{InstanceId, Manager, ManagerConfig, NetworkConfig, render_user_data_for_host};
use berth_lxc::image::busybox::{DEFAULT_BUSYBOX, build_rootfs};
use berth_virt::{VirtInitialiser, VirtManager};
use common::lxc::{LxcEnv, StepTimes};
use common::peers::{IncusPeer, ToolsPeer, VirshPeer, VmFiles, remove_virsh_leftovers, say};
use common::stats::Samples;
use common::{env_number, init_logs, machine, remove_tree, require_root, run, run_quietly};

fn main() {
    require_root();
    init_logs();
    let which = std::env::var("BB_COMPARE").unwrap_or_else(|_| "lxc,virt".into());
    let mut report = serde_json::Map::new();
    report.insert("host".into(), host_json());
    if which.split(',').any(|part| part == "lxc") {
        report.insert("lxc".into(), compare_lxc(env_number("BB_ITERATIONS", 20)));
    }
    if which.split(',').any(|part| part == "virt") {
        report.insert(
            "virt".into(),
            compare_virt(env_number("BB_VM_ITERATIONS", 10)),
        );
    }
    let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/results/compare.json");
    std::fs::create_dir_all(out.parent().unwrap()).unwrap();
    std::fs::write(
        &out,
        serde_json::to_string_pretty(&serde_json::Value::Object(report)).unwrap(),
    )
    .unwrap();
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
    let mut incus = match IncusPeer::setup(&env.base, &rootfs) {
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

    // Iteration 0 is a warm-up, not recorded: it builds berth's template
    // and fills the page cache for every contender.
    for iteration in 0..=iterations {
        let mut order = vec![Contender::Berth, Contender::Tools];
        if incus.is_some() {
            order.push(Contender::Incus);
        }
        let turns = order.len();
        order.rotate_left(iteration % turns);
        let id = iteration.to_string();
        let mut berth_run = Samples::default();
        let mut tools_run = Samples::default();
        let mut incus_run = Samples::default();
        for contender in order {
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

/// Connection URI of the system QEMU driver.
const QEMU_URI: &str = "qemu:///system";

/// Starts virtlogd and libvirtd unless libvirtd already responds.
pub fn ensure_libvirtd() {
    let answering = std::process::Command::new("virsh")
        .args(["-q", "-c", QEMU_URI, "version"])
        .output()
        .is_ok_and(|output| output.status.success());
    if !answering {
        say("libvirtd does not answer; starting virtlogd and libvirtd");
        std::fs::create_dir_all("/var/log/libvirt").unwrap();
        std::fs::create_dir_all("/run/libvirt").unwrap();
        run("virtlogd", &["-d"]);
        run("libvirtd", &["-d"]);
        std::thread::sleep(std::time::Duration::from_secs(2));
    }
}

fn compare_virt(iterations: usize) -> serde_json::Value {
    say(&format!(
        "== libvirt: berth vs virsh + qemu-img, {QEMU_URI}, {iterations} iterations"
    ));
    ensure_libvirtd();
    let files = VmFiles::find();
    let base = common::bench_dir("vcmp");
    let pool = "bb-vcmp";
    let bridge = "bb-vcmp";
    remove_virsh_leftovers(QEMU_URI, pool, "bbvcmp-");
    remove_virsh_leftovers(QEMU_URI, pool, "bb-peer-");
    run_quietly("virsh", &["-q", "-c", QEMU_URI, "pool-destroy", pool]);
    run_quietly("virsh", &["-q", "-c", QEMU_URI, "pool-undefine", pool]);
    let _ = berth_lxc::bridge::delete_bridge(bridge);
    remove_tree(&base);
    std::fs::create_dir_all(&base).unwrap();
    berth_lxc::bridge::ensure_bridge(bridge, None).unwrap();

    let pool_dir = base.join("pool");
    let path = |name: &str| base.join(name).to_str().unwrap().to_owned();
    let config = ManagerConfig::new()
        .with("name", "bbvcmp")
        .with("uri", QEMU_URI)
        .with("pool", pool)
        .with("pool-dir", pool_dir.to_str().unwrap())
        .with("containers-dir", path("containers"))
        .with("removed-dir", path("removed"))
        .with("lock-dir", path("locks"))
        .with("image", files.base.to_str().unwrap())
        .with("kernel", files.kernel.to_str().unwrap())
        .with("initrd", files.initrd.to_str().unwrap())
        .with("cmdline", "console=ttyS0 panic=-1")
        .with("virt-type", "qemu");
    VirtInitialiser::new(config.clone())
        .unwrap()
        .initialise_with_report()
        .expect("prepare the libvirt pool");
    let manager = VirtManager::new(config).expect("create libvirt manager");
    let network = NetworkConfig::bridge(bridge).unwrap();
    let peer = VirshPeer::setup(QEMU_URI, pool, &pool_dir, &base.join("peer"), bridge, files);

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
                let name = berth_core::container_name("bbvcmp", &id).unwrap();
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
    remove_virsh_leftovers(QEMU_URI, pool, "bbvcmp-");
    drop(manager);
    run_quietly("virsh", &["-q", "-c", QEMU_URI, "pool-destroy", pool]);
    run_quietly("virsh", &["-q", "-c", QEMU_URI, "pool-undefine", pool]);
    let _ = berth_lxc::bridge::delete_bridge(bridge);
    remove_tree(&base);
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

/// Returns the host facts the results depend on.
fn host_json() -> serde_json::Value {
    common::host::facts()
}
