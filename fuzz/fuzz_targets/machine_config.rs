//! Machine configuration files (YAML or JSON) from arbitrary bytes.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| berth_fuzz::check_machine_config(data));
