//! Cloud model repositories in a build without the `cloud` feature: such locations are refused by name.

use std::path::PathBuf;
use std::sync::Arc;

use rampart_types::{Error, Result};

pub fn is_remote(location: &str) -> bool {
    ["s3://", "gs://", "as://"].iter().any(|p| location.starts_with(p))
}

#[derive(Debug)]
pub struct RemoteRepository;

impl RemoteRepository {
    pub fn sync(&self) -> Result<()> {
        Ok(())
    }

    pub fn location(&self) -> &str {
        ""
    }

    pub fn local_path(&self) -> &std::path::Path {
        std::path::Path::new("")
    }
}

pub(crate) fn open_all(
    locations: &[PathBuf],
) -> Result<(Vec<PathBuf>, Vec<Arc<RemoteRepository>>)> {
    if let Some(l) = locations.iter().find(|l| l.to_str().is_some_and(is_remote)) {
        return Err(Error::unsupported(format!(
            "model repository '{}': this build has no cloud storage support (cargo feature 'cloud')",
            l.display()
        )));
    }
    Ok((locations.to_vec(), vec![]))
}
