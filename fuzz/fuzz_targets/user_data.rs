//! cloud-init user data of a valid machine configuration changed by
//! fuzzed strings.

#![no_main]

use berth_fuzz::UserDataInput;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: UserDataInput| {
    berth_fuzz::check_user_data(input);
});
