//! Config files: parsing and validation never panic, whatever the text.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    let _ = eventsd::config::Config::parse(text, std::path::Path::new("/etc/eventsd"));
});
