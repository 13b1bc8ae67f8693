//! VMs through berth's libvirt manager: define+start+destroy on libvirt's
//! test driver (no daemon, no guest: the cost of berth and the libvirt
//! client library) and on `qemu:///system` (a real QEMU in software
//! emulation booting Debian's cloud kernel with a busybox initramfs).
//!
//! Run as root: `cargo bench --bench virt`. The `qemu:///system` part
//! needs the VM boot files described in BENCHMARKS.md and takes about a
//! minute; `BB_VIRT_QEMU=0` leaves it out.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use berth_core::{InstanceId, Manager, NetworkConfig};
use common::peers::VmFiles;
use common::virt::{TestDriverEnv, VirtEnv};
use common::{init_logs, machine, require_root};
use criterion::{Criterion, criterion_group, criterion_main};

static NEXT_ID: AtomicUsize = AtomicUsize::new(1);

fn next_id() -> String {
    NEXT_ID.fetch_add(1, Ordering::Relaxed).to_string()
}

fn bench_test_driver(c: &mut Criterion) {
    init_logs();
    let env = TestDriverEnv::new();
    let manager = env.manager();
    let network = NetworkConfig::bridge("bb-vtest").unwrap();
    let mut group = c.benchmark_group("virt_test_driver");
    group.bench_function("define_start_destroy", |b| {
        b.iter(|| {
            let id = next_id();
            let (instance, _) = manager
                .create_container(&machine(&id), "bookworm", &network)
                .unwrap();
            manager.destroy_container(&instance.id).unwrap();
        })
    });
    group.finish();
}

fn bench_qemu_system(c: &mut Criterion) {
    if std::env::var("BB_VIRT_QEMU").as_deref() == Ok("0") {
        return;
    }
    require_root();
    init_logs();
    let env = VirtEnv::system("vbench");
    let files = VmFiles::find();
    let manager = env.manager(&files);
    let network = env.network();

    // The first create imports the base image; keep it out of the samples.
    let warm = next_id();
    manager
        .create_container(&machine(&warm), "bookworm", &network)
        .unwrap();
    manager
        .destroy_container(&InstanceId::new(env.container_name(&warm)).unwrap())
        .unwrap();

    let mut group = c.benchmark_group("virt_qemu_system");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(30));
    group.bench_function("define_start_destroy", |b| {
        b.iter(|| {
            let id = next_id();
            let (instance, _) = manager
                .create_container(&machine(&id), "bookworm", &network)
                .unwrap();
            manager.destroy_container(&instance.id).unwrap();
        })
    });
    group.finish();
}

criterion_group!(benches, bench_test_driver, bench_qemu_system);
criterion_main!(benches);
