//! `rcrun inspect --layers`: per layer, what it adds, changes and deletes (like `dive`), computed
//! from the tar entries alone: a path is "changed" when a lower layer already had it; whiteouts and
//! opaque directories are deletions.

use serde::Serialize;
use std::collections::{BTreeMap, HashSet};

#[derive(Debug, Default, Serialize)]
pub struct LayerChanges {
    pub added: u64,
    pub changed: u64,
    pub deleted: u64,
    pub added_bytes: u64,
    pub changed_bytes: u64,
    /// Deleted paths (whiteouts) and emptied directories (opaque), first 10.
    pub deletions: Vec<String>,
    /// Largest top-level directories by bytes of files in this layer (up to 5).
    pub top_dirs: Vec<(String, u64)>,
    #[serde(skip)]
    entries: Vec<(String, bool, u64)>,
}

fn clean(path: &str) -> String {
    path.trim_start_matches("./")
        .trim_start_matches('/')
        .trim_end_matches('/')
        .to_string()
}

impl LayerChanges {
    pub fn record(&mut self, path: &str, kind: tar::EntryType, size: u64) {
        let p = clean(path);
        if p.is_empty() {
            return;
        }
        let base = p.rsplit('/').next().unwrap_or("");
        let parent = p
            .rsplit_once('/')
            .map(|(d, _)| d.to_string())
            .unwrap_or_default();
        if base == ".wh..wh..opq" {
            self.deleted += 1;
            if self.deletions.len() < 10 {
                self.deletions.push(format!("/{parent}/* (opaque)"));
            }
            return;
        }
        if let Some(name) = base.strip_prefix(".wh.") {
            if !name.starts_with(".wh.") {
                self.deleted += 1;
                if self.deletions.len() < 10 {
                    let full = if parent.is_empty() {
                        name.to_string()
                    } else {
                        format!("{parent}/{name}")
                    };
                    self.deletions.push(format!("/{full}"));
                }
            }
            return;
        }
        let is_file = kind.is_file() || kind == tar::EntryType::Continuous;
        self.entries
            .push((p, kind.is_dir(), if is_file { size } else { 0 }));
    }

    /// Classifies recorded entries against the paths of lower layers, then adds this layer's.
    pub fn resolve(&mut self, lower: &mut HashSet<String>) {
        let mut dirs: BTreeMap<String, u64> = BTreeMap::new();
        for (p, is_dir, size) in std::mem::take(&mut self.entries) {
            if is_dir && lower.contains(&p) {
                continue; // a directory re-listed only because something inside changed
            }
            if lower.contains(&p) {
                self.changed += 1;
                self.changed_bytes += size;
            } else {
                self.added += 1;
                self.added_bytes += size;
            }
            let top: String = p.split('/').take(2).collect::<Vec<_>>().join("/");
            if !is_dir {
                *dirs.entry(format!("/{top}")).or_default() += size;
            }
            lower.insert(p);
        }
        let mut v: Vec<(String, u64)> = dirs.into_iter().filter(|(_, s)| *s > 0).collect();
        v.sort_by(|a, b| b.1.cmp(&a.1));
        v.truncate(5);
        self.top_dirs = v;
    }

    pub fn render(&self) -> String {
        let mut o = format!(
            "         + {} added ({}), ~ {} changed ({}), - {} deleted\n",
            self.added,
            human_bytes(self.added_bytes),
            self.changed,
            human_bytes(self.changed_bytes),
            self.deleted
        );
        if !self.top_dirs.is_empty() {
            let tops: Vec<String> = self
                .top_dirs
                .iter()
                .map(|(d, s)| format!("{d} {}", human_bytes(*s)))
                .collect();
            o.push_str(&format!("         largest: {}\n", tops.join(", ")));
        }
        if !self.deletions.is_empty() {
            o.push_str(&format!("         deletes: {}\n", self.deletions.join(" ")));
        }
        o
    }
}

/// `n` bytes as people read sizes: `512 B`, `1.5 KiB`, `3.2 MiB`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}
