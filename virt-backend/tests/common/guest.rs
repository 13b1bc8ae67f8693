//! Fixtures of the real-guest VM tests: the shared guest image and tools
//! server.

#![allow(dead_code)]

#[path = "../../../guest-image/fixture.rs"]
mod fixture;

pub use fixture::*;

/// Returns the guest uptime in seconds at which cloud-init reported that
/// it finished, from its `Cloud-init v. X finished at ... Up N seconds`
/// console line.
pub fn cloud_init_finished_uptime(console: &str) -> Option<f64> {
    console
        .lines()
        .filter(|line| line.contains("Cloud-init v.") && line.contains(" finished at "))
        .find_map(|line| {
            let (_, rest) = line.rsplit_once(" Up ")?;
            rest.split_whitespace().next()?.parse().ok()
        })
}
