//! The host's cgroup layout and the liblxc keys that set limits in it.
//!
//! A host runs each controller either on a cgroup v1 hierarchy or on the
//! unified (v2) one, and a hybrid host mixes both (v1 controllers plus an
//! empty cgroup2 mount at /sys/fs/cgroup/unified). liblxc takes v1 limits as
//! `lxc.cgroup.<controller>.<file>` and v2 limits as
//! `lxc.cgroup2.<file>`, and a start fails when a key names a controller
//! the hierarchy does not have, so each limit is keyed by where its
//! controller actually runs.

use std::fs;
use std::path::Path;

/// Hierarchy a controller runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hierarchy {
    /// A cgroup v1 hierarchy.
    V1,
    /// The unified cgroup v2 hierarchy.
    V2,
}

/// Hierarchies of the memory, cpuset and cpu controllers on this host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CgroupLayout {
    /// The memory controller.
    pub memory: Option<Hierarchy>,
    /// The cpuset controller.
    pub cpuset: Option<Hierarchy>,
    /// The cpu controller.
    pub cpu: Option<Hierarchy>,
}

impl CgroupLayout {
    /// Reads the layout of this host from `/proc/self/mountinfo`.
    pub fn detect() -> Self {
        let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        Self::from_mountinfo(&mountinfo, |mount_point| {
            fs::read_to_string(Path::new(mount_point).join("cgroup.controllers"))
                .unwrap_or_default()
        })
    }

    /// Builds the layout from mountinfo text; `controllers_of` returns the
    /// `cgroup.controllers` file of a cgroup2 mount point.
    pub fn from_mountinfo(mountinfo: &str, controllers_of: impl Fn(&str) -> String) -> Self {
        let mut v1 = Vec::new();
        let mut v2 = Vec::new();
        for line in mountinfo.lines() {
            // Fields after " - " are: file system type, source, super options.
            let Some((before, after)) = line.split_once(" - ") else {
                continue;
            };
            let mut fields = after.split_whitespace();
            let (Some(fs_type), Some(_source), Some(options)) =
                (fields.next(), fields.next(), fields.next())
            else {
                continue;
            };
            let Some(mount_point) = before.split_whitespace().nth(4) else {
                continue;
            };
            match fs_type {
                "cgroup" => v1.extend(options.split(',').map(str::to_owned)),
                "cgroup2" => v2.extend(
                    controllers_of(mount_point)
                        .split_whitespace()
                        .map(str::to_owned),
                ),
                _ => {}
            }
        }
        let place = |controller: &str| {
            if v1.iter().any(|name| name == controller) {
                Some(Hierarchy::V1)
            } else if v2.iter().any(|name| name == controller) {
                Some(Hierarchy::V2)
            } else {
                None
            }
        };
        Self {
            memory: place("memory"),
            cpuset: place("cpuset"),
            cpu: place("cpu"),
        }
    }

    /// Returns the liblxc item that limits memory to `mib` MiB.
    pub fn memory_limit(&self, mib: u64) -> Option<(String, String)> {
        let bytes = mib.checked_mul(1 << 20)?;
        match self.memory? {
            Hierarchy::V1 => Some(("lxc.cgroup.memory.limit_in_bytes".into(), bytes.to_string())),
            Hierarchy::V2 => Some(("lxc.cgroup2.memory.max".into(), bytes.to_string())),
        }
    }

    /// Returns the liblxc item that pins the container to `cpus` (a cpuset
    /// list such as `0-1`).
    pub fn cpuset(&self, cpus: &str) -> Option<(String, String)> {
        match self.cpuset? {
            Hierarchy::V1 => Some(("lxc.cgroup.cpuset.cpus".into(), cpus.to_owned())),
            Hierarchy::V2 => Some(("lxc.cgroup2.cpuset.cpus".into(), cpus.to_owned())),
        }
    }

    /// Returns the liblxc items that cap CPU time at `power` hundredths of
    /// a core, as a CFS quota over a 100 ms period.
    pub fn cpu_quota(&self, power: u64) -> Option<Vec<(String, String)>> {
        const PERIOD_US: u64 = 100_000;
        let quota = power.checked_mul(PERIOD_US / 100)?.max(1000);
        match self.cpu? {
            Hierarchy::V1 => Some(vec![
                ("lxc.cgroup.cpu.cfs_period_us".into(), PERIOD_US.to_string()),
                ("lxc.cgroup.cpu.cfs_quota_us".into(), quota.to_string()),
            ]),
            Hierarchy::V2 => Some(vec![(
                "lxc.cgroup2.cpu.max".into(),
                format!("{quota} {PERIOD_US}"),
            )]),
        }
    }
}

/// Returns the first `count` online CPUs of the host as a cpuset list, or
/// `None` when the host has fewer.
pub fn first_online_cpus(count: u64) -> Option<String> {
    let online = fs::read_to_string("/sys/devices/system/cpu/online").ok()?;
    let cpus = parse_cpu_list(online.trim());
    if count == 0 || (cpus.len() as u64) < count {
        return None;
    }
    Some(
        cpus[..count as usize]
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(","),
    )
}

/// Returns the number of online CPUs of the host.
pub fn online_cpu_count() -> u64 {
    fs::read_to_string("/sys/devices/system/cpu/online")
        .map(|text| parse_cpu_list(text.trim()).len() as u64)
        .unwrap_or(1)
}

fn parse_cpu_list(text: &str) -> Vec<u32> {
    let mut cpus = Vec::new();
    for part in text.split(',').filter(|part| !part.is_empty()) {
        match part.split_once('-') {
            Some((first, last)) => {
                if let (Ok(first), Ok(last)) = (first.parse::<u32>(), last.parse::<u32>()) {
                    cpus.extend(first..=last);
                }
            }
            None => cpus.extend(part.parse::<u32>()),
        }
    }
    cpus
}

/// Returns the host's memory in MiB, from `/proc/meminfo`.
pub fn host_memory_mib() -> Option<u64> {
    let meminfo = fs::read_to_string("/proc/meminfo").ok()?;
    let line = meminfo.lines().find(|line| line.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
35 25 0:30 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
36 25 0:31 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
37 25 0:32 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset
38 25 0:33 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";
    const UNIFIED: &str = "30 25 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw,nsdelegate\n";

    #[test]
    fn hybrid_layout_uses_v1_keys() {
        let layout = CgroupLayout::from_mountinfo(HYBRID, |_| String::new());
        assert_eq!(layout.memory, Some(Hierarchy::V1));
        assert_eq!(
            layout.memory_limit(512).unwrap(),
            (
                "lxc.cgroup.memory.limit_in_bytes".into(),
                "536870912".into()
            )
        );
        assert_eq!(layout.cpuset("0,1").unwrap().0, "lxc.cgroup.cpuset.cpus");
        assert_eq!(
            layout.cpu_quota(150).unwrap()[1],
            ("lxc.cgroup.cpu.cfs_quota_us".into(), "150000".into())
        );
    }

    #[test]
    fn unified_layout_uses_v2_keys() {
        let layout = CgroupLayout::from_mountinfo(UNIFIED, |point| {
            assert_eq!(point, "/sys/fs/cgroup");
            "cpuset cpu io memory pids".into()
        });
        assert_eq!(
            layout.memory_limit(1).unwrap(),
            ("lxc.cgroup2.memory.max".into(), "1048576".into())
        );
        assert_eq!(
            layout.cpu_quota(50).unwrap(),
            vec![("lxc.cgroup2.cpu.max".into(), "50000 100000".into())]
        );
    }

    #[test]
    fn missing_controller_gives_no_key() {
        let layout = CgroupLayout::from_mountinfo(UNIFIED, |_| "pids".into());
        assert_eq!(layout.memory_limit(512), None);
        assert_eq!(layout.cpuset("0"), None);
    }

    #[test]
    fn cpu_lists_parsed() {
        assert_eq!(parse_cpu_list("0-3,8,10-11"), vec![0, 1, 2, 3, 8, 10, 11]);
        assert_eq!(parse_cpu_list("0"), vec![0]);
    }
}
