//! An OCI bundle (a directory with `config.json` and a root file system) → its [`Spec`], which
//! [`crate::launch::plan::compile`] turns into the plan, as it does the Spec an image run makes.

use super::SpecError;
use oci_spec::runtime::Spec;
use std::path::Path;

/// Reads `DIR/config.json`.
pub fn load(bundle: &Path) -> Result<Spec, SpecError> {
    let path = bundle.join("config.json");
    let bytes = std::fs::read(&path).map_err(|source| SpecError::Read {
        path: path.clone(),
        source,
    })?;
    serde_json::from_slice(&bytes).map_err(|source| SpecError::Parse { path, source })
}
