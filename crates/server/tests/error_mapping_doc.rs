//! `docs/error-mapping.md` is generated from `core::Refusal` and the front ends' mappings: this
//! test fails when the document is out of date (and rewrites it with AUTOENROLL_UPDATE_DOCS=1).
#![allow(clippy::unwrap_used, clippy::expect_used)]
use std::path::PathBuf;

const BEGIN: &str = "<!-- generated: error mapping -->\n";
const END: &str = "<!-- end generated -->";

#[test]
fn error_mapping_doc_is_generated_from_the_refusals() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/error-mapping.md");
    let doc = std::fs::read_to_string(&path).unwrap();
    let start = doc.find(BEGIN).expect("begin marker") + BEGIN.len();
    let end = doc.find(END).expect("end marker");
    let table = autoenroll_server::frontends::error_mapping_table();
    if doc[start..end] != table {
        if std::env::var("AUTOENROLL_UPDATE_DOCS").is_ok_and(|v| v == "1") {
            std::fs::write(&path, format!("{}{table}{}", &doc[..start], &doc[end..])).unwrap();
        } else {
            panic!(
                "docs/error-mapping.md is out of date; regenerate it with \
                 AUTOENROLL_UPDATE_DOCS=1 cargo test -p autoenroll-server --test error_mapping_doc"
            );
        }
    }
    // Every refusal is in it, once.
    for c in autoenroll_core::RefusalCode::ALL {
        assert_eq!(table.matches(&format!("| `{c}` |")).count(), 1, "{c}");
    }
}

/// `docs/configuration.md` is generated from the configuration structs.
#[test]
fn configuration_reference_is_generated_from_the_config_structs() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/configuration.md");
    let generated = autoenroll_server::config::reference();
    let current = std::fs::read_to_string(&path).unwrap_or_default();
    if current != generated {
        if std::env::var("AUTOENROLL_UPDATE_DOCS").is_ok_and(|v| v == "1") {
            std::fs::write(&path, &generated).unwrap();
        } else {
            panic!(
                "docs/configuration.md is out of date; regenerate it with \
                 AUTOENROLL_UPDATE_DOCS=1 cargo test -p autoenroll-server --test error_mapping_doc"
            );
        }
    }
    // Every key the file may hold is in it, and the packaged default configuration is valid.
    for key in ["`data_dir`", "`hostnames`", "## [limits]", "`request_timeout`", "## [tls]", "`sign_in_return`"] {
        assert!(generated.contains(key), "{key}");
    }
    let packaged = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../packaging/etc/server.toml");
    let raw = autoenroll_server::config::RawConfig::from_file(&packaged).unwrap();
    raw.validate().expect("the packaged server.toml validates");
}
