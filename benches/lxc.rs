//! Real LXC containers through berth's manager: create+start and
//! stop+destroy of the embedded busybox image with a veth NIC on a bridge
//! this benchmark creates, and list with 0, 100 and 1,000 containers
//! defined.
//!
//! berth's create always starts the container, so the containers a list
//! sees here are stopped overlay snapshot clones of berth's template, made
//! through liblxc by the set-up (`LxcEnv::define_stopped`). The list of
//! running containers is measured by the `scale` benchmark.
//!
//! Run as root: `cargo bench --bench lxc`.

mod common;

use std::hint::black_box;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use berth_core::{InstanceId, Manager};
use common::lxc::LxcEnv;
use common::{init_logs, machine, require_root};
use criterion::{Criterion, criterion_group, criterion_main};

/// Machine numbers handed out to containers, unique within the process.
static NEXT_ID: AtomicUsize = AtomicUsize::new(1_000_000);

fn next_id() -> String {
    NEXT_ID.fetch_add(1, Ordering::Relaxed).to_string()
}

fn bench_cycle(c: &mut Criterion) {
    require_root();
    init_logs();
    let env = LxcEnv::new("lxcb");
    let manager = env.manager();
    let network = env.network();

    // The first create builds the template; keep it out of the samples.
    let warm = next_id();
    manager
        .create_container(&machine(&warm), "bookworm", &network)
        .unwrap();
    manager
        .destroy_container(&InstanceId::new(env.container_name(&warm)).unwrap())
        .unwrap();

    let mut group = c.benchmark_group("lxc");
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(10));
    group.bench_function("create_start", |b| {
        b.iter_custom(|iterations| {
            let mut total = Duration::ZERO;
            for _ in 0..iterations {
                let id = next_id();
                let started = Instant::now();
                manager
                    .create_container(&machine(&id), "bookworm", &network)
                    .unwrap();
                total += started.elapsed();
                manager
                    .destroy_container(&InstanceId::new(env.container_name(&id)).unwrap())
                    .unwrap();
            }
            total
        })
    });
    group.bench_function("stop_destroy", |b| {
        b.iter_custom(|iterations| {
            let mut total = Duration::ZERO;
            for _ in 0..iterations {
                let id = next_id();
                manager
                    .create_container(&machine(&id), "bookworm", &network)
                    .unwrap();
                let instance = InstanceId::new(env.container_name(&id)).unwrap();
                let started = Instant::now();
                manager.destroy_container(&instance).unwrap();
                total += started.elapsed();
            }
            total
        })
    });
    group.finish();

    let mut group = c.benchmark_group("lxc_list_defined");
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(5));
    let mut defined = 0;
    for count in [0, 100, 1000] {
        env.define_stopped(defined, count - defined);
        defined = count;
        assert_eq!(
            manager.list_containers().unwrap().len(),
            count,
            "list sees every defined container"
        );
        group.bench_function(count.to_string(), |b| {
            b.iter(|| black_box(manager.list_containers().unwrap()))
        });
    }
    group.finish();
}

criterion_group!(benches, bench_cycle);
criterion_main!(benches);
