//! `rcrun spec [--rootless]`: a starter config.json for an OCI bundle (see
//! [`crate::spec::starter`]).

use crate::spec::starter;

pub fn cmd_spec(
    a: &crate::cli::SpecArgs,
    privilege: &crate::host::Privilege,
) -> anyhow::Result<i32> {
    use anyhow::Context;
    let path = a.bundle.join("config.json");
    // Only real root can run the root spec (no user namespace): anyone else gets the rootless
    // one without having to ask.
    let rootless = (a.rootless || !privilege.is_real_root()).then(|| {
        (
            nix::unistd::geteuid().as_raw(),
            nix::unistd::getegid().as_raw(),
        )
    });
    let json = serde_json::to_vec_pretty(&starter(rootless))?;
    // create_new: like runc, never overwrite a config.json someone edited.
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)
        .with_context(|| {
            format!(
                "create {} (remove it first to write a new one)",
                path.display()
            )
        })?;
    std::io::Write::write_all(&mut f, &json)
        .with_context(|| format!("write {}", path.display()))?;
    Ok(0)
}
