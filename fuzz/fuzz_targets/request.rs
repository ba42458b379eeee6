//! Value-request parsing on arbitrary input: the path, the query and the label selector never
//! panic, and a selector that parses prints to a string that parses back to the same selector.
#![no_main]

use ebb::api::request::{ValuesPath, selector_from_query};
use ebb::api::selector::Selector;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(input) = std::str::from_utf8(data) else {
        return;
    };
    let (path, query) = input.split_once('?').unwrap_or((input, ""));
    let _ = ValuesPath::parse(path);
    let _ = selector_from_query(Some(query));
    if let Ok(selector) = Selector::parse(input) {
        let printed = selector.to_string();
        let reparsed = Selector::parse(&printed).expect("a printed selector parses");
        assert_eq!(reparsed, selector, "{input:?} printed as {printed:?}");
    }
});
