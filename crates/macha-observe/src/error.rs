//! Why a section could not be observed.
//!
//! Every variant names the path it was reading and, where there is one, the OS error, because its
//! `Display` text becomes the `reason` of a [`macha_core::snapshot::Section::Unavailable`] and has to
//! stand on its own in a report.

use std::io;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ObserveError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot parse {}: {detail}", path.display())]
    Parse { path: PathBuf, detail: String },
    #[error("PSI not supported by this kernel (CONFIG_PSI): {} does not exist", path.display())]
    PsiUnsupported { path: PathBuf },
    #[error("PSI disabled on this kernel (booted with psi=0?): cannot read {}: {source}", path.display())]
    PsiDisabled {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("not NixOS: {} does not exist", path.display())]
    NotNixos { path: PathBuf },
    #[error("statvfs {}: {source}", path.display())]
    Statvfs {
        path: PathBuf,
        #[source]
        source: nix::errno::Errno,
    },
}

impl ObserveError {
    pub(crate) fn read(path: &Path, source: io::Error) -> Self {
        ObserveError::Read { path: path.to_owned(), source }
    }

    pub(crate) fn parse(path: &Path, detail: impl Into<String>) -> Self {
        ObserveError::Parse { path: path.to_owned(), detail: detail.into() }
    }
}

/// Reads a whole file as text, naming the path in the error.
pub(crate) fn read_text(path: &Path) -> Result<String, ObserveError> {
    std::fs::read_to_string(path).map_err(|e| ObserveError::read(path, e))
}

/// Reads a whole file as text; a file that does not exist is `Ok(None)`.
pub(crate) fn read_text_opt(path: &Path) -> Result<Option<String>, ObserveError> {
    match std::fs::read_to_string(path) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(ObserveError::read(path, e)),
    }
}
