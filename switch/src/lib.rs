//! The switch engine. The `switch` binary is `main.rs`; README.md's code map says which room
//! holds what.
#![forbid(unsafe_code)]

pub mod acquirer;
pub mod clock;
pub mod config;
pub mod domain;
pub mod issuer;
pub mod ledger;
pub mod limits;
pub mod ops;
pub mod pipeline;
pub mod recovery;
pub mod risk;
pub mod routing;
pub mod server;
pub mod threads;
pub mod wal;

/// What a caught panic said (its `&str` or `String` payload), for the error that replaces it.
pub fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "no message".to_owned())
}

#[cfg(test)]
pub(crate) mod testing {
    //! Helpers of the unit tests.

    use std::path::{Path, PathBuf};
    use std::sync::atomic::{AtomicU32, Ordering};

    /// A directory of its own under the system's temporary one, empty at first and removed
    /// (with what is in it) when dropped, also when the test fails.
    pub struct TempDir(PathBuf);

    impl TempDir {
        pub fn new(name: &str) -> TempDir {
            static NEXT: AtomicU32 = AtomicU32::new(0);
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let dir =
                std::env::temp_dir().join(format!("switch-{name}-{}-{n}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).expect("a temporary directory");
            TempDir(dir)
        }

        pub fn path(&self) -> &Path {
            &self.0
        }
    }

    impl std::ops::Deref for TempDir {
        type Target = Path;

        fn deref(&self) -> &Path {
            &self.0
        }
    }

    impl AsRef<Path> for TempDir {
        fn as_ref(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}
