//! Facts about the host that benchmark results depend on.

use std::process::Command;

fn first_line(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .output()
        .ok()
        .map(|output| {
            String::from_utf8_lossy(&output.stdout)
                .lines()
                .next()
                .unwrap_or_default()
                .trim()
                .to_owned()
        })
        .unwrap_or_else(|| "not installed".into())
}

fn meminfo_kib(key: &str) -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|line| line.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// Returns CPU count and model, memory, kernel, the versions of liblxc,
/// libvirt, QEMU and Incus, and the load average.
pub fn facts() -> serde_json::Value {
    let cpu_model = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|line| {
            line.strip_prefix("model name")
                .map(|rest| rest.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_default();
    serde_json::json!({
        "nproc": std::thread::available_parallelism().map_or(0, usize::from),
        "cpu_model": cpu_model,
        "memory_mib": meminfo_kib("MemTotal") / 1024,
        "kernel": first_line("uname", &["-r"]),
        "liblxc": berth_lxc::container::liblxc_version(),
        "libvirt": first_line("libvirtd", &["--version"]),
        "qemu": first_line("qemu-system-x86_64", &["--version"]),
        "incus": first_line("incus", &["--version"]),
        // Other work on the host skews timings; the 1, 5 and 15 minute load
        // averages at the time of writing show how much there was.
        "loadavg": std::fs::read_to_string("/proc/loadavg").unwrap_or_default().trim(),
    })
}
