//! `--explain`: each startup step, as it happens, on stderr — one greppable line per step:
//! `rcrun: [   1.234 ms] STAGE  what (kernel call and values) (took 0.123 ms)`.
//! The lines come from the code that executes each step, so they cannot drift from it.

use std::cell::RefCell;
use std::io::Write;
use std::time::{Duration, Instant};

pub struct Explain {
    pub enabled: bool,
    start: Instant,
    /// Time spent per stage, for the summary (stage name → total).
    totals: RefCell<Vec<(String, Duration)>>,
}

impl Explain {
    pub fn new(enabled: bool) -> Explain {
        Explain {
            enabled,
            start: Instant::now(),
            totals: RefCell::new(Vec::new()),
        }
    }

    pub fn step(&self, stage: &str, what: &str, took: Duration) {
        self.add(stage, took);
        self.detail(stage, what, took);
    }

    fn add(&self, stage: &str, took: Duration) {
        let mut t = self.totals.borrow_mut();
        match t.iter_mut().find(|(s, _)| s == stage) {
            Some(e) => e.1 += took,
            None => t.push((stage.to_string(), took)),
        }
    }

    /// Narrates a step without counting it in the stage totals (parts of a step counted whole).
    pub fn detail(&self, stage: &str, what: &str, took: Duration) {
        if self.enabled {
            let at = self.start.elapsed().as_secs_f64() * 1000.0;
            let line = format!(
                "rcrun: [{at:9.3} ms] {stage:<10} {what} ({:.3} ms)\n",
                took.as_secs_f64() * 1000.0
            );
            let _ = std::io::stderr().write_all(line.as_bytes());
        }
    }

    /// Heads the steps of one of the launcher's three calls (spawn, start, wait): a line of its
    /// own, not a step, so it counts in no stage.
    pub fn phase(&self, name: &str, what: &str) {
        if self.enabled {
            let at = self.start.elapsed().as_secs_f64() * 1000.0;
            let line = format!("rcrun: [{at:9.3} ms] ══ {name}: {what}\n");
            let _ = std::io::stderr().write_all(line.as_bytes());
        }
    }

    /// Runs `f`, then narrates it with its duration (also when it fails, marked FAILED).
    pub fn timed<T, E>(
        &self,
        stage: &str,
        what: &str,
        f: impl FnOnce() -> Result<T, E>,
    ) -> Result<T, E> {
        let t = Instant::now();
        let r = f();
        if r.is_ok() {
            self.step(stage, what, t.elapsed());
        } else {
            self.step(stage, &format!("FAILED: {what}"), t.elapsed());
        }
        r
    }

    pub fn flush(&self) {
        let _ = std::io::stderr().flush();
    }

    pub fn reset_totals(&self) {
        self.totals.borrow_mut().clear();
    }

    /// `stage<TAB>nanoseconds` lines, for the child to hand its timings to the parent.
    pub fn export_totals(&self) -> String {
        self.totals
            .borrow()
            .iter()
            .map(|(s, d)| format!("{s}\t{}\n", d.as_nanos()))
            .collect()
    }

    pub fn absorb_totals(&self, text: &str) {
        for line in text.lines() {
            let Some((stage, nanos)) = line.split_once('\t') else {
                continue;
            };
            let Ok(nanos) = nanos.parse::<u64>() else {
                continue;
            };
            self.add(stage, Duration::from_nanos(nanos));
        }
    }

    /// The closing summary: total time and each stage's share.
    pub fn summary(&self) {
        if !self.enabled {
            return;
        }
        let total = self.start.elapsed();
        let t = self.totals.borrow();
        let parts: Vec<String> = t
            .iter()
            .map(|(s, d)| {
                format!(
                    "{s} {:.1}%",
                    100.0 * d.as_secs_f64() / total.as_secs_f64().max(1e-9)
                )
            })
            .collect();
        let line = format!(
            "rcrun: total {:.3} ms: {}\n",
            total.as_secs_f64() * 1000.0,
            parts.join(", ")
        );
        let _ = std::io::stderr().write_all(line.as_bytes());
    }
}
