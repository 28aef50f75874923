//! Codec round trips of messages encoded by independent implementations (pyiso8583 and
//! moov-io/iso8583); see `vectors/ORIGIN.md` for where each file comes from.

#![allow(clippy::unwrap_used)] // a failed unwrap in a test helper is a test failure, as intended

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use adapters::dialect::Content;
use adapters::{Dialect, DialectName, Message};

fn vectors_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vectors")
}

fn expected_fields(json_path: &Path) -> BTreeMap<String, String> {
    let text = fs::read_to_string(json_path).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02X}")).collect()
}

/// Decodes `wire`, compares every field with the JSON listing, and re-encodes byte for byte.
fn check_vector(dialect: &Dialect, wire: &[u8], expected: &BTreeMap<String, String>, name: &str) {
    let message = dialect
        .decode(wire)
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    let mut seen = BTreeMap::new();
    seen.insert("t".to_owned(), message.mti.as_str().to_owned());
    for (field, value) in message.fields() {
        let text = match dialect.field(field).content {
            Content::Binary => hex(value),
            _ => String::from_utf8(value.to_vec()).unwrap(),
        };
        seen.insert(field.to_string(), text);
    }
    assert_eq!(&seen, expected, "{name}: decoded fields differ");
    let mut again = Vec::new();
    dialect.encode(&message, &mut again).unwrap();
    assert_eq!(again, wire, "{name}: re-encoding differs");
}

#[test]
fn pyiso8583_vectors_round_trip_in_both_dialects() {
    let dir = vectors_dir().join("pyiso8583");
    let mut checked = 0;
    for entry in fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "json") {
            continue;
        }
        let expected = expected_fields(&path);
        let stem = path.file_stem().unwrap().to_str().unwrap();
        for name in [DialectName::Default, DialectName::AsciiHexBitmap] {
            let wire = fs::read(dir.join(format!("{stem}.{name}.bin"))).unwrap();
            check_vector(name.dialect(), &wire, &expected, &format!("{stem}.{name}"));
            checked += 1;
        }
    }
    assert_eq!(checked, 2 * 15, "every pyiso8583 vector was checked");
}

#[test]
fn moov_io_vectors_round_trip_as_ascii_hex_bitmap() {
    let dir = vectors_dir().join("moov-io");
    let mut checked = 0;
    for entry in fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "dat") {
            continue;
        }
        let expected = expected_fields(&path.with_extension("json"));
        let wire = fs::read(&path).unwrap();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        check_vector(
            DialectName::AsciiHexBitmap.dialect(),
            &wire,
            &expected,
            &name,
        );
        checked += 1;
    }
    assert_eq!(checked, 12, "every moov-io vector was checked");
}

#[test]
fn a_vector_decoded_in_one_dialect_re_encodes_in_every_other() {
    let dir = vectors_dir().join("pyiso8583");
    let wire = fs::read(dir.join("reversal_advice_repeat_0421.default.bin")).unwrap();
    let message: Message = DialectName::Default
        .dialect()
        .decode(&wire)
        .unwrap()
        .into_owned();
    for name in DialectName::ALL {
        let mut out = Vec::new();
        name.dialect().encode(&message, &mut out).unwrap();
        assert_eq!(
            name.dialect().decode(&out).unwrap().into_owned(),
            message,
            "{name}"
        );
    }
}
