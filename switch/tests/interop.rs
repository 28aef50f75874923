//! Interoperability: pyiso8583, an independent ISO 8583 implementation, as the acquirer.
//!
//! Python comes from `SWITCH_PYTHON` when set (CI sets it to a venv it prepared); otherwise a
//! venv with the pinned pyiso8583 is made once under `target/` on first use.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

const PYISO8583: &str = "pyiso8583==4.0.1";

fn has_pyiso8583(python: &Path) -> bool {
    Command::new(python)
        .args(["-c", "import iso8583"])
        .output()
        .is_ok_and(|o| o.status.success())
}

fn python() -> PathBuf {
    if let Some(python) = std::env::var_os("SWITCH_PYTHON") {
        let python = PathBuf::from(python);
        assert!(
            has_pyiso8583(&python),
            "SWITCH_PYTHON={} cannot import iso8583",
            python.display()
        );
        return python;
    }
    let venv = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("pyiso8583-venv");
    let python = venv.join("bin/python");
    if !has_pyiso8583(&python) {
        let made = Command::new("python3")
            .args(["-m", "venv"])
            .arg(&venv)
            .status();
        assert!(
            made.is_ok_and(|s| s.success()),
            "python3 -m venv failed: is python3 installed?"
        );
        let installed = Command::new(&python)
            .args(["-m", "pip", "install", "--quiet", PYISO8583])
            .status();
        assert!(
            installed.is_ok_and(|s| s.success()),
            "pip install {PYISO8583} failed"
        );
    }
    python
}

#[test]
fn pyiso8583_acquirer_walks_the_demo_scenario() {
    let python = python();
    let switch = Switch::start(&[]);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/interop/acquirer.py");
    let output = Command::new(python)
        .arg(script)
        .args([
            "--host",
            "127.0.0.1",
            "--port",
            &switch.addr.port().to_string(),
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "pyiso8583 acquirer failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("64 passed, 0 failed"), "{stdout}");
    let (status, log) = switch.terminate();
    assert!(status.success());
    assert!(
        !log.join("\n").contains("4000000000000002"),
        "full PAN in the switch's output"
    );
}
