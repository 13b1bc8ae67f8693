//! Network options such as `bridge:br0,mtu=9000,mac=00:16:3e:aa:bb:01`
//! from arbitrary bytes.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| berth_fuzz::check_network(data));
