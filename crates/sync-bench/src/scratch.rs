//! A temporary folder for one run (the embedded queue file, the claim file, the daemon's
//! configuration and logs), removed when dropped.

use std::path::{Path, PathBuf};

use anyhow::Context;

/// A folder under the system's temporary directory, named uniquely, deleted on drop.
#[derive(Debug)]
pub struct Scratch {
    path: PathBuf,
    keep: bool,
}

impl Scratch {
    /// Create `<tmp>/sync-bench-<label>-<ulid>`.
    pub fn new(label: &str) -> anyhow::Result<Self> {
        let name = format!(
            "sync-bench-{label}-{}",
            ulid::Ulid::new().to_string().to_lowercase()
        );
        let path = std::env::temp_dir().join(name);
        std::fs::create_dir_all(&path)
            .with_context(|| format!("cannot create scratch folder {}", path.display()))?;
        Ok(Self { path, keep: false })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Leave the folder behind (its logs explain a failed run).
    pub fn keep(&mut self) {
        self.keep = true;
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if self.keep {
            return;
        }
        if let Err(err) = std::fs::remove_dir_all(&self.path) {
            tracing::warn!(path = %self.path.display(), cause = %err, "scratch folder not removed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_folder_goes_away_unless_kept() {
        let scratch = Scratch::new("test").unwrap();
        let path = scratch.path().to_owned();
        std::fs::write(path.join("file"), b"x").unwrap();
        drop(scratch);
        assert!(!path.exists());

        let mut kept = Scratch::new("test").unwrap();
        kept.keep();
        let path = kept.path().to_owned();
        drop(kept);
        assert!(path.exists());
        std::fs::remove_dir_all(path).unwrap();
    }
}
