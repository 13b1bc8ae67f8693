//! Pure benchmarks: the work berth does before it touches liblxc or
//! libvirt. Needs no root and no daemon.
//!
//! Run: `cargo bench --bench pure` (add `--no-default-features` to leave
//! out the backend parts and build without liblxc and libvirt).

use std::hint::black_box;

use berth::machine_file::sample_machine_config;
use berth_core::{MacAddress, MachineConfig, NetworkConfig, render_user_data_for_host};
use criterion::{Criterion, criterion_group, criterion_main};

/// A sample machine with the optional parts a controller usually fills in:
/// SSH keys, proxies and agent environment, so the rendering does real work.
fn full_machine() -> MachineConfig {
    let mut machine = sample_machine_config("1/lxc/0", "bookworm");
    machine.authorized_keys = (0..4)
        .map(|index| {
            format!(
                "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBerthBenchKey{index:04} operator{index}@host"
            )
        })
        .collect();
    machine.proxy.http = "http://127.0.0.1:3128".into();
    machine.proxy.https = "http://127.0.0.1:3128".into();
    machine.proxy.no_proxy = "localhost,127.0.0.1".into();
    machine.apt_proxy.http = "http://127.0.0.1:3142".into();
    machine.disable_package_commands = false;
    for index in 0..8 {
        machine.agent_environment.insert(
            format!("BENCH_VAR_{index}"),
            format!("value with spaces and 'quotes' {index}"),
        );
    }
    machine
}

fn bench_user_data(c: &mut Criterion) {
    let sample = sample_machine_config("1/lxc/0", "bookworm");
    let full = full_machine();
    let mut group = c.benchmark_group("user_data");
    group.bench_function("render_sample", |b| {
        b.iter(|| render_user_data_for_host(black_box(&sample), "bench-machine-1-lxc-0").unwrap())
    });
    group.bench_function("render_full", |b| {
        b.iter(|| render_user_data_for_host(black_box(&full), "bench-machine-1-lxc-0").unwrap())
    });
    group.finish();
}

fn bench_validate(c: &mut Criterion) {
    let full = full_machine();
    c.bench_function("machine_config/validate", |b| {
        b.iter(|| black_box(&full).validate().unwrap())
    });
}

fn bench_network_config(c: &mut Criterion) {
    let mut group = c.benchmark_group("network_config");
    group.bench_function("bridge", |b| {
        b.iter(|| NetworkConfig::bridge(black_box("bb-br0")).unwrap())
    });
    group.bench_function("bridge_mtu_mac", |b| {
        b.iter(|| {
            NetworkConfig::bridge(black_box("bb-br0"))
                .and_then(|network| network.with_mtu(black_box(1500)))
                .and_then(|network| network.with_mac(black_box("0a:16:3e:aa:bb:01")))
                .unwrap()
        })
    });
    group.bench_function("mac_parse", |b| {
        b.iter(|| {
            black_box("0a:16:3e:aa:bb:01")
                .parse::<MacAddress>()
                .unwrap()
        })
    });
    group.bench_function("bridge_invalid", |b| {
        b.iter(|| NetworkConfig::bridge(black_box("a-name-that-is-too-long")).unwrap_err())
    });
    group.finish();
}

#[cfg(feature = "virt")]
fn bench_domain_xml(c: &mut Criterion) {
    use berth_virt::fat::{FatFile, build_image};
    use berth_virt::platform::GuestPlatform;
    use berth_virt::spec::{DomainSpec, domain_document, resources};
    use berth_virt::xml::to_xml;

    let machine = full_machine();
    let platform = GuestPlatform {
        arch: "x86_64".into(),
        virt_type: "qemu".into(),
        reason: "benchmark".into(),
    };
    let network = NetworkConfig::bridge("bb-br0")
        .unwrap()
        .with_mtu(1500)
        .unwrap();
    let console_log = std::path::PathBuf::from(
        "/var/lib/berth-bench/containers/bench-machine-1-kvm-0/console.log",
    );
    let spec = DomainSpec {
        name: "bench-machine-1-kvm-0",
        platform: &platform,
        resources: resources(&machine.constraints, "amd64").unwrap(),
        pool: "bb-pool",
        root_volume: "bench-machine-1-kvm-0-root.qcow2",
        seed_volume: "bench-machine-1-kvm-0-seed.img",
        kernel_boot: None,
        network: &network,
        mac: "0a:16:3e:aa:bb:01".parse().unwrap(),
        console_log: &console_log,
    };

    let mut group = c.benchmark_group("virt");
    group.bench_function("domain_document", |b| {
        b.iter(|| domain_document(black_box(&spec)))
    });
    group.bench_function("domain_xml", |b| {
        b.iter(|| to_xml(&domain_document(black_box(&spec))).unwrap())
    });

    let user_data = render_user_data_for_host(&machine, "bench-machine-1-kvm-0").unwrap();
    let files = vec![
        FatFile {
            name: "user-data".into(),
            data: user_data,
        },
        FatFile {
            name: "meta-data".into(),
            data: b"instance-id: bench-machine-1-kvm-0\n".to_vec(),
        },
        FatFile {
            name: "network-config".into(),
            data: b"version: 2\nethernets: {}\n".to_vec(),
        },
    ];
    group.bench_function("seed_fat_image", |b| {
        b.iter(|| build_image("cidata", black_box(&files)).unwrap())
    });
    group.finish();
}

#[cfg(not(feature = "virt"))]
fn bench_domain_xml(_: &mut Criterion) {}

criterion_group!(
    benches,
    bench_user_data,
    bench_validate,
    bench_network_config,
    bench_domain_xml
);
criterion_main!(benches);
