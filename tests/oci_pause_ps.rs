//! `rcrun pause`/`resume` (the cgroup freezer) and `rcrun ps`, as containerd's shim and podman
//! call them. Pausing needs the container's cgroup: as root always; rootless without a
//! delegated cgroup it is refused by name.

mod common;
use common::oci::*;
use common::*;

use std::path::Path;
use std::time::Duration;

const TICKER: &str = "echo ready; while :; do echo tick; sleep 0.02; done";

fn ticks(c: &Case) -> usize {
    c.output().matches("tick").count()
}

fn pause_resume_ps(c: &Case) -> Result<(), String> {
    let id = format!("pz-{}", c.name);
    let (code, out) = c.create(&id, &[]);
    if code != Some(0) {
        return Err(format!("create: {code:?}: {out}"));
    }
    let cgroups = c.cgroups(&id);
    expect_ok(&c.rcrun(&["start", &id]), "start")?;
    c.wait_output("ready")?;
    let pid = c.status(&id)?.1;

    // ps: the first process is listed (json: host pids, as runc's).
    let o = c.rcrun(&["ps", "--format", "json", &id]);
    let pids: Vec<i64> = serde_json::from_slice(&o.stdout)
        .map_err(|e| format!("ps --format json is not a pid array ({e}): {}", text(&o)))?;
    if !pids.contains(&pid) {
        return Err(format!("ps: {pids:?} lacks the first process {pid}"));
    }
    let o = c.rcrun(&["ps", &id]);
    if !String::from_utf8_lossy(&o.stdout).contains("sh -c") {
        return Err(format!("ps table: no `sh -c` line: {}", text(&o)));
    }

    if c.mode != Mode::Root {
        // No cgroup here rootless: refused, and the container runs on.
        expect_fail(&c.rcrun(&["pause", &id]), "rootless pause", "freezer")?;
        if c.status(&id)?.0 != "running" {
            return Err("a refused pause changed the status".into());
        }
    } else {
        expect_fail(
            &c.rcrun(&["resume", &id]),
            "resume of a running container",
            "container not paused",
        )?;
        expect_ok(&c.rcrun(&["pause", &id]), "pause")?;
        if c.status(&id)?.0 != "paused" {
            return Err(format!("after pause: {:?}", c.status(&id)?));
        }
        let frozen_at = ticks(c);
        std::thread::sleep(Duration::from_millis(300));
        if ticks(c) != frozen_at {
            return Err(format!("paused, yet it ticked: {frozen_at} → {}", ticks(c)));
        }
        expect_fail(
            &c.rcrun(&["pause", &id]),
            "a second pause",
            "container not running",
        )?;
        expect_ok(&c.rcrun(&["resume", &id]), "resume")?;
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while ticks(c) <= frozen_at + 3 {
            if std::time::Instant::now() > deadline {
                return Err("resumed, but it does not tick".into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        if c.status(&id)?.0 != "running" {
            return Err(format!("after resume: {:?}", c.status(&id)?));
        }
        // A paused container can be deleted by force (the freezer is thawed by the kill).
        expect_ok(&c.rcrun(&["pause", &id]), "pause again")?;
    }
    expect_ok(&c.rcrun(&["delete", "--force", &id]), "delete --force")?;
    c.assert_gone(&id, &cgroups)
}

#[test]
fn pause_resume_and_ps() {
    each_mode(
        "pause",
        serde_json::json!(["sh", "-c", TICKER]),
        None,
        pause_resume_ps,
    );
}

/// `rcrun update`: as root the limits change in the container's cgroup (flags and an OCI
/// resources file), and a memory hog exec'd after a lower memory limit dies with 137; rootless
/// without a cgroup it is refused by name.
fn update(c: &Case) -> Result<(), String> {
    let id = format!("up-{}", c.name);
    if c.mode == Mode::Root {
        edit_config(&c.bundle, |d| {
            d["linux"]["resources"]["memory"] = serde_json::json!({"limit": 268435456});
        });
    }
    let (code, out) = c.create(&id, &[]);
    if code != Some(0) {
        return Err(format!("create: {code:?}: {out}"));
    }
    let cgroups = c.cgroups(&id);
    expect_ok(&c.rcrun(&["start", &id]), "start")?;
    c.wait_output("ready")?;
    if c.mode != Mode::Root {
        expect_fail(
            &c.rcrun(&["update", "--memory", "16m", &id]),
            "rootless update",
            "no cgroup",
        )?;
    } else {
        let file = |name: &str| -> Result<String, String> {
            let dir = cgroups
                .iter()
                .find(|d| d.join(name).exists())
                .ok_or_else(|| format!("no {name} in {cgroups:?}"))?;
            Ok(std::fs::read_to_string(dir.join(name))
                .unwrap_or_default()
                .trim()
                .to_string())
        };
        let v2 = Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
        let (mem_file, pids_file) = if v2 {
            ("memory.max", "pids.max")
        } else {
            ("memory.limit_in_bytes", "pids.max")
        };
        expect_ok(
            &c.rcrun(&["update", "--memory", "16m", &id]),
            "update --memory",
        )?;
        if file(mem_file)? != "16777216" {
            return Err(format!(
                "{mem_file}: {:?} after update --memory 16m",
                file(mem_file)?
            ));
        }
        let res = c.dir.join("resources.json");
        std::fs::write(&res, r#"{"pids": {"limit": 7}}"#).unwrap();
        expect_ok(
            &c.rcrun(&["update", "--resources", res.to_str().unwrap(), &id]),
            "update --resources",
        )?;
        if file(pids_file)? != "7" {
            return Err(format!(
                "{pids_file}: {:?} after update --resources",
                file(pids_file)?
            ));
        }
        // 64 MiB in a shell variable, over the new 16 MiB limit: the kernel's OOM killer.
        let o = c.rcrun(&[
            "exec",
            &id,
            "sh",
            "-c",
            "a=$(head -c 67108864 /dev/zero | tr '\\0' x); echo survived ${#a}",
        ]);
        if o.status.code() != Some(137) {
            return Err(format!(
                "a hog after update --memory 16m: wanted 137: {}",
                text(&o)
            ));
        }
        // Raising it again (above the memory+swap total) works too.
        expect_ok(
            &c.rcrun(&["update", "--memory", "512m", &id]),
            "update --memory 512m",
        )?;
        if file(mem_file)? != "536870912" {
            return Err(format!("{mem_file}: {:?} after raising", file(mem_file)?));
        }
    }
    expect_ok(&c.rcrun(&["delete", "--force", &id]), "delete --force")?;
    c.assert_gone(&id, &cgroups)
}

#[test]
fn update_changes_the_limits() {
    each_mode(
        "update",
        serde_json::json!(["sh", "-c", "echo ready; exec sleep 300"]),
        Some(SIBLING_USERNS),
        update,
    );
}
