use super::*;

/// A module shaped like an SDK filter: memory, the allocator, a few callbacks, `_initialize`.
fn module() -> Vec<u8> {
    wat::parse_str(
        r#"(module
            (memory (export "memory") 1)
            (func $f (param i32))
            (func $g (param i32) (result i32) (i32.const 1))
            (func (export "_initialize"))
            (export "proxy_on_memory_allocate" (func $g))
            (export "proxy_on_context_create" (func $f))
            (export "proxy_on_request_headers" (func $g))
            (export "proxy_on_response_headers" (func $g))
            (export "proxy_on_log" (func $f))
            (export "proxy_on_delete" (func $f))
            (@custom "name-ish" "kept as it is")
        )"#,
    )
    .unwrap()
}

const KEEP: [&str; 3] = [
    "proxy_on_context_create",
    "proxy_on_request_headers",
    "proxy_on_delete",
];

#[test]
fn drops_the_callbacks_not_asked_for_and_keeps_everything_else() {
    let before = module();
    let trimmed = keep_callbacks(&before, &KEEP).unwrap();
    assert_eq!(
        export_names(&trimmed.module).unwrap(),
        [
            "memory",
            "_initialize",
            "proxy_on_memory_allocate",
            "proxy_on_context_create",
            "proxy_on_request_headers",
            "proxy_on_delete"
        ]
    );
    assert_eq!(
        trimmed.dropped,
        ["proxy_on_response_headers", "proxy_on_log"]
    );
    wasmparser::validate(&trimmed.module).unwrap();
    // Only the export section changed: the rest, the custom section included, is byte for byte.
    let other = |m: &[u8]| {
        sections(m)
            .unwrap()
            .iter()
            .filter(|s| s.id != EXPORT_SECTION)
            .map(|s| s.raw.to_vec())
            .collect::<Vec<_>>()
    };
    assert_eq!(other(&before), other(&trimmed.module));
}

#[test]
fn trimming_again_changes_nothing() {
    let once = keep_callbacks(&module(), &KEEP).unwrap().module;
    let twice = keep_callbacks(&once, &KEEP).unwrap();
    assert_eq!(twice.module, once);
    assert!(twice.dropped.is_empty());
}

#[test]
fn keeping_every_callback_is_the_identity() {
    let m = module();
    let all: Vec<String> = export_names(&m)
        .unwrap()
        .into_iter()
        .filter(|n| is_callback(n))
        .collect();
    let all: Vec<&str> = all.iter().map(String::as_str).collect();
    assert_eq!(keep_callbacks(&m, &all).unwrap().module, m);
}

#[test]
fn refuses_a_callback_the_module_lacks_or_a_name_that_is_none() {
    // A typo must not drop the real callback silently.
    assert_eq!(
        keep_callbacks(&module(), &["proxy_on_request_header"]),
        Err(TrimError::NotExported("proxy_on_request_header".into()))
    );
    for name in ["memory", "proxy_on_", MEMORY_ALLOCATE, "on_log"] {
        assert_eq!(
            keep_callbacks(&module(), &[name]),
            Err(TrimError::NotACallback(name.into())),
            "{name}"
        );
    }
}

#[test]
fn refuses_what_is_no_module() {
    assert_eq!(keep_callbacks(b"", &[]), Err(TrimError::NotAModule));
    assert_eq!(
        keep_callbacks(b"\0asm\x02\0\0\0", &[]),
        Err(TrimError::NotAModule)
    );
    let m = module();
    // Cut anywhere inside a section: refused, never half written.
    for len in 9..m.len() {
        let cut = m.get(..len).unwrap();
        if sections(cut).is_ok() {
            continue; // cut exactly between two sections
        }
        assert!(
            matches!(keep_callbacks(cut, &KEEP), Err(TrimError::Truncated(_))),
            "cut at {len}"
        );
    }
}

#[test]
fn refuses_a_broken_export_section() {
    // One export whose name runs past the section's end.
    let broken = [MAGIC.as_slice(), &[EXPORT_SECTION, 3, 1, 9, b'a']].concat();
    assert!(matches!(
        keep_callbacks(&broken, &[]),
        Err(TrimError::Truncated(_))
    ));
    // A name that is not UTF-8.
    let bad_name = [MAGIC.as_slice(), &[EXPORT_SECTION, 5, 1, 1, 0xff, 0, 0]].concat();
    assert_eq!(keep_callbacks(&bad_name, &[]), Err(TrimError::BadName));
    // Bytes after the last entry.
    let trailing = [MAGIC.as_slice(), &[EXPORT_SECTION, 6, 1, 1, b'a', 0, 0, 0]].concat();
    assert!(matches!(
        keep_callbacks(&trailing, &[]),
        Err(TrimError::Truncated(_))
    ));
    // Two export sections.
    let two = [
        MAGIC.as_slice(),
        &[EXPORT_SECTION, 1, 0, EXPORT_SECTION, 1, 0],
    ]
    .concat();
    assert_eq!(keep_callbacks(&two, &[]), Err(TrimError::TwoExportSections));
}
