//! `rcrun gc`: what killed runs left behind (scratch dirs, half-written layers, cgroups), and the
//! store's id holder.

use crate::unpack::Store;
use crate::{cgroup, Ctx};
use anyhow::Result;

pub fn cmd_gc(ctx: &Ctx) -> Result<i32> {
    let store = Store::open(&ctx.store_root)?;
    let mut removed = ctx.reclaim(&store);
    removed.extend(crate::commands::containers::verbs::gc_orphans(ctx));
    let uid = nix::unistd::geteuid().as_raw();
    removed.extend(cgroup::gc_stale(
        &cgroup::CgroupFs::host(),
        (!ctx.privilege.is_real_root()).then_some(uid),
    ));
    for p in &removed {
        println!("removed {}", p.display());
    }
    // The id holder (launch/holder.rs) is not a leftover but the one process rcrun keeps by
    // design; gc is how a user stops it (it also leaves by itself when idle).
    if let Some(pid) = crate::launch::holder::stop(&ctx.store_root) {
        println!("stopped the id holder (pid {pid})");
    }
    if !ctx.quiet {
        eprintln!("gc: {} leftover(s) removed", removed.len());
    }
    Ok(0)
}
