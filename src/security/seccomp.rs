//! Seccomp: parse Docker/OCI seccomp profiles and compile them to classic BPF
//! (argument conditions by `seccompiler`, the syscall-number dispatch as a
//! binary search of our own, see [`build_program`]), cache the result, and
//! install it.
//!
//! # Translating a multi-action profile into seccompiler filters
//!
//! A `seccompiler::SeccompFilter` has exactly one match action and one
//! mismatch action, while a profile maps each (syscall, args) to one of
//! several actions (ALLOW, ERRNO(1), ERRNO(38), KILL, ...) with a default for
//! everything else. We emit a *stack* of filters and rely on how the kernel
//! combines them. kernel/seccomp.c, `seccomp_run_filters()`:
//!
//! ```c
//! /* All filters in the list are evaluated and the lowest BPF return
//!  * value always takes priority (ignoring the DATA). */
//! for (; f; f = f->prev) {            /* newest filter first */
//!     u32 cur_ret = bpf_prog_run_pin_on_cpu(f->prog, sd);
//!     if (ACTION_ONLY(cur_ret) < ACTION_ONLY(ret)) { ret = cur_ret; *match = f; }
//! }
//! ```
//!
//! i.e. every filter runs, the most restrictive action wins (KILL_PROCESS <
//! KILL_THREAD < TRAP < ERRNO < USER_NOTIF < TRACE < LOG < ALLOW), and among
//! equal actions the strict `<` keeps the first one seen, which is the most
//! recently installed filter's (seccomp(2): "the return value for the system
//! call is the first-seen action value of highest precedence (along with its
//! accompanying data)"). Filters we emit, in install order:
//!
//! 1. x32 guard (x86_64 only, only if the default action is ALLOW/LOG): x32
//!    syscalls (`nr | 0x40000000`, same AUDIT_ARCH_X86_64) get ERRNO(ENOSYS),
//!    so they cannot bypass a deny-list. With a restrictive default they never
//!    match a rule anyway and get the default action from filter 3.
//! 2. One filter per distinct non-ALLOW rule action `A`: match → `A`,
//!    mismatch → ALLOW. Installed in reverse order of first appearance in the
//!    profile, so if overlapping rules with equal action class but different
//!    data (two ERRNOs) both match, the entry that comes first in the profile
//!    wins (it is the newest of the two).
//! 3. The default filter (omitted if the default action is ALLOW): match →
//!    ALLOW, mismatch → default action, whose rules are the *union* of all
//!    rules of all actions. So a call that matches no rule gets the default
//!    action (all filters of step 2 say ALLOW), and a call that matches a rule
//!    with action `A` gets `A` (this filter says ALLOW, the `A` filter says `A`).
//!    It never returns non-ALLOW together with a step-2 filter, so its position
//!    does not affect tie-breaking; it is installed last because it is the one
//!    most likely to deny seccomp(2) itself.
//!
//! The result is exact for profiles whose rules for a given call do not
//! overlap with different actions (true for Docker's profile). If they do
//! overlap, the most restrictive action wins (libseccomp would pick one by its
//! own internal rule ordering).
//!
//! Compatibility details copied from runc (libcontainer/seccomp/
//! seccomp_linux.go, `matchCall`): entries whose action equals the default
//! action are skipped ("This rule is redundant, silently skip it"); syscall
//! names unknown for the target arch are skipped with a debug log; when an
//! entry has several conditions on the *same* argument index, each condition
//! becomes a separate (ORed) rule ("Revert to old behavior"), otherwise all
//! conditions of an entry are ANDed. Several entries for one name are ORed.
//! Argument comparisons are 64-bit, like libseccomp's.
//!
//! Limitation: each seccompiler program starts with an architecture check that
//! kills the process on a foreign audit arch, so 32-bit compat syscalls
//! (`int 0x80` on x86_64, AArch32 on arm64) are not supported (Docker allows
//! them via `archMap` sub-architectures).

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use ::caps::CapsHashSet;
use seccompiler::{
    sock_filter, BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition,
    SeccompRule, TargetArch,
};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::SecurityError;

/// The default profile, embedded at build time.
pub const DEFAULT_PROFILE: &str = include_str!("../../configs/seccomp.json");

/// Name used in error messages for profiles passed as bytes.
const INLINE_PROFILE: &str = "<seccomp profile>";

// ---------------------------------------------------------------------------
// Profile format (Docker / OCI). Unknown fields (e.g. "comment", "flags",
// "listenerPath") are ignored; `null` is accepted wherever a list is optional.
// ---------------------------------------------------------------------------

/// A seccomp profile in Docker's `profiles/seccomp/default.json` format (also
/// accepts the OCI `linux.seccomp` object: `architectures`, `syscalls`).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Profile {
    pub default_action: String,
    #[serde(default)]
    pub default_errno_ret: Option<u32>,
    #[serde(default)]
    pub arch_map: Option<Vec<ArchMapEntry>>,
    #[serde(default)]
    pub architectures: Option<Vec<String>>,
    #[serde(default)]
    pub syscalls: Option<Vec<SyscallEntry>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ArchMapEntry {
    pub architecture: String,
    #[serde(default)]
    pub sub_architectures: Option<Vec<String>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SyscallEntry {
    #[serde(default)]
    pub names: Option<Vec<String>>,
    /// Old single-name form.
    #[serde(default)]
    pub name: Option<String>,
    pub action: String,
    #[serde(default)]
    pub errno_ret: Option<u32>,
    #[serde(default)]
    pub args: Option<Vec<ArgCondition>>,
    #[serde(default)]
    pub includes: Option<Selector>,
    #[serde(default)]
    pub excludes: Option<Selector>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ArgCondition {
    pub index: u32,
    pub value: u64,
    #[serde(default)]
    pub value_two: Option<u64>,
    pub op: String,
}

/// `includes` / `excludes` of an entry.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Selector {
    #[serde(default)]
    pub caps: Option<Vec<String>>,
    #[serde(default)]
    pub arches: Option<Vec<String>>,
    #[serde(default)]
    pub min_kernel: Option<String>,
}

/// Parse a profile. `name` is only used in error messages (a path or a label).
pub fn parse_profile(name: &str, profile_json: &[u8]) -> Result<Profile, SecurityError> {
    serde_json::from_slice(profile_json).map_err(|source| SecurityError::ProfileParse {
        path: name.to_string(),
        source,
    })
}

// ---------------------------------------------------------------------------
// Compilation
// ---------------------------------------------------------------------------

/// A compiled profile: BPF programs in install order plus some statistics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompiledFilter {
    /// Install in this order (see the module docs).
    pub programs: Vec<BpfProgram>,
    /// Number of (syscall, entry) rules that made it into the filter.
    pub rule_count: usize,
    /// The profile's default action, e.g. `SCMP_ACT_ERRNO(1)`.
    pub default_action: String,
    /// Total BPF instructions over all programs.
    pub bpf_instructions: usize,
}

/// Compile a profile for the given capability set (the container's bounding
/// set, used for `includes.caps` / `excludes.caps`) and target arch.
/// `minKernel` is compared with the running kernel (uname).
pub fn compile(
    profile_json: &[u8],
    caps: &CapsHashSet,
    target_arch: TargetArch,
) -> Result<CompiledFilter, SecurityError> {
    compile_named(INLINE_PROFILE, profile_json, caps, target_arch)
}

/// Like [`compile`], with `name` (e.g. the profile's path) used in errors.
pub fn compile_named(
    name: &str,
    profile_json: &[u8],
    caps: &CapsHashSet,
    target_arch: TargetArch,
) -> Result<CompiledFilter, SecurityError> {
    let profile = parse_profile(name, profile_json)?;
    let kernel = running_kernel_version()?;
    compile_profile(name, &profile, caps, target_arch, kernel)
}

/// Kernel version as (major, minor, patch).
pub type KernelVersion = (u32, u32, u32);

/// Parse "6.18.44-foo" / "4.8" into (6, 18, 44) / (4, 8, 0).
pub fn parse_kernel_version(release: &str) -> Option<KernelVersion> {
    let mut parts = release
        .split(|c: char| !c.is_ascii_digit())
        .take(3)
        .map(|p| p.parse::<u32>());
    let major = parts.next()?.ok()?;
    let minor = parts.next().and_then(|r| r.ok()).unwrap_or(0);
    let patch = parts.next().and_then(|r| r.ok()).unwrap_or(0);
    Some((major, minor, patch))
}

/// `uname -r` of the running kernel.
pub fn kernel_release() -> Result<String, SecurityError> {
    // SAFETY: utsname is plain old data; an all-zero value is valid and
    // uname(2) fills it in (NUL-terminated fields) or fails without writing.
    let mut uts: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: `uts` is a valid, writable utsname.
    if unsafe { libc::uname(&mut uts) } != 0 {
        return Err(SecurityError::Uname(io::Error::last_os_error()));
    }
    // SAFETY: the kernel NUL-terminates `release`, which lives as long as `uts`.
    let release = unsafe { std::ffi::CStr::from_ptr(uts.release.as_ptr()) };
    Ok(release.to_string_lossy().into_owned())
}

fn running_kernel_version() -> Result<KernelVersion, SecurityError> {
    let release = kernel_release()?;
    parse_kernel_version(&release).ok_or_else(|| {
        SecurityError::Uname(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("unparsable kernel release {release:?}"),
        ))
    })
}

fn arch_name(arch: TargetArch) -> &'static str {
    match arch {
        TargetArch::x86_64 => "x86_64",
        TargetArch::aarch64 => "aarch64",
        TargetArch::riscv64 => "riscv64",
    }
}

/// Names under which profiles refer to an arch in `includes/excludes.arches`
/// (Docker uses Go's GOARCH names; OCI uses SCMP_ARCH_*).
fn arch_aliases(arch: TargetArch) -> &'static [&'static str] {
    match arch {
        TargetArch::x86_64 => &["amd64", "x86_64", "SCMP_ARCH_X86_64"],
        TargetArch::aarch64 => &["arm64", "aarch64", "SCMP_ARCH_AARCH64"],
        TargetArch::riscv64 => &["riscv64", "SCMP_ARCH_RISCV64"],
    }
}

fn canonical_cap(name: &str) -> String {
    ::caps::to_canonical(name.trim())
}

/// Does this entry apply? Same logic as moby's profiles/seccomp `setupSeccomp`:
/// all `includes.caps` must be present, any `excludes.caps` present skips it;
/// `includes.arches` must contain the arch, `excludes.arches` must not;
/// `includes.minKernel` must be <= the running kernel (and, symmetrically,
/// `excludes.minKernel` skips the entry on kernels >= it).
/// The entries of `profile` that apply to a container with these capabilities on this arch and
/// kernel (Docker's `includes`/`excludes` evaluated), in profile order: what an OCI
/// `linux.seccomp` object, which has no such selectors, lists.
pub fn applicable_entries<'a>(
    profile_name: &str,
    profile: &'a Profile,
    caps: &CapsHashSet,
    arch: TargetArch,
) -> Result<Vec<&'a SyscallEntry>, SecurityError> {
    let kernel = running_kernel_version()?;
    let cap_names = super::caps::cap_names(caps);
    let mut out = Vec::new();
    for e in profile.syscalls.iter().flatten() {
        if entry_applies(e, &cap_names, arch, kernel, profile_name)? {
            out.push(e);
        }
    }
    Ok(out)
}

fn entry_applies(
    entry: &SyscallEntry,
    cap_names: &[String],
    arch: TargetArch,
    kernel: KernelVersion,
    profile_name: &str,
) -> Result<bool, SecurityError> {
    let has_cap = |c: &String| cap_names.contains(&canonical_cap(c));
    let arch_matches = |list: &Vec<String>| {
        list.iter().any(|a| {
            arch_aliases(arch)
                .iter()
                .any(|alias| alias.eq_ignore_ascii_case(a))
        })
    };
    let min_kernel = |s: &String| {
        parse_kernel_version(s).ok_or_else(|| SecurityError::ProfileInvalid {
            path: profile_name.to_string(),
            reason: format!("bad minKernel {s:?} (expected e.g. \"4.8\")"),
        })
    };
    if let Some(inc) = &entry.includes {
        if let Some(caps) = &inc.caps {
            if !caps.iter().all(has_cap) {
                return Ok(false);
            }
        }
        if let Some(arches) = &inc.arches {
            if !arches.is_empty() && !arch_matches(arches) {
                return Ok(false);
            }
        }
        if let Some(mk) = &inc.min_kernel {
            if kernel < min_kernel(mk)? {
                return Ok(false);
            }
        }
    }
    if let Some(exc) = &entry.excludes {
        if let Some(caps) = &exc.caps {
            if caps.iter().any(has_cap) {
                return Ok(false);
            }
        }
        if let Some(arches) = &exc.arches {
            if arch_matches(arches) {
                return Ok(false);
            }
        }
        if let Some(mk) = &exc.min_kernel {
            if kernel >= min_kernel(mk)? {
                return Ok(false);
            }
        }
    }
    Ok(true)
}

fn parse_action(name: &str, errno_ret: Option<u32>) -> Result<SeccompAction, String> {
    // runc: a missing errnoRet means EPERM.
    let data = errno_ret.unwrap_or(libc::EPERM as u32);
    if data > 0xffff {
        return Err(format!(
            "errnoRet {data} does not fit in SECCOMP_RET_DATA (16 bits)"
        ));
    }
    Ok(match name {
        "SCMP_ACT_ALLOW" => SeccompAction::Allow,
        "SCMP_ACT_ERRNO" => SeccompAction::Errno(data),
        "SCMP_ACT_KILL" | "SCMP_ACT_KILL_THREAD" => SeccompAction::KillThread,
        "SCMP_ACT_KILL_PROCESS" => SeccompAction::KillProcess,
        "SCMP_ACT_TRAP" => SeccompAction::Trap,
        "SCMP_ACT_LOG" => SeccompAction::Log,
        "SCMP_ACT_TRACE" => SeccompAction::Trace(data),
        "SCMP_ACT_NOTIFY" => {
            return Err("SCMP_ACT_NOTIFY (seccomp user notification) is not supported".into())
        }
        other => return Err(format!("unknown action {other:?}")),
    })
}

fn action_label(action: &SeccompAction) -> String {
    match action {
        SeccompAction::Allow => "SCMP_ACT_ALLOW".into(),
        SeccompAction::Errno(e) => format!("SCMP_ACT_ERRNO({e})"),
        SeccompAction::KillThread => "SCMP_ACT_KILL_THREAD".into(),
        SeccompAction::KillProcess => "SCMP_ACT_KILL_PROCESS".into(),
        SeccompAction::Trap => "SCMP_ACT_TRAP".into(),
        SeccompAction::Log => "SCMP_ACT_LOG".into(),
        SeccompAction::Trace(d) => format!("SCMP_ACT_TRACE({d})"),
    }
}

fn parse_condition(arg: &ArgCondition) -> Result<SeccompCondition, String> {
    let index = u8::try_from(arg.index)
        .ok()
        .filter(|i| *i <= 5)
        .ok_or_else(|| format!("argument index {} out of range 0..=5", arg.index))?;
    let (op, value) = match arg.op.as_str() {
        "SCMP_CMP_EQ" => (SeccompCmpOp::Eq, arg.value),
        "SCMP_CMP_NE" => (SeccompCmpOp::Ne, arg.value),
        "SCMP_CMP_LT" => (SeccompCmpOp::Lt, arg.value),
        "SCMP_CMP_LE" => (SeccompCmpOp::Le, arg.value),
        "SCMP_CMP_GT" => (SeccompCmpOp::Gt, arg.value),
        "SCMP_CMP_GE" => (SeccompCmpOp::Ge, arg.value),
        // libseccomp: (arg & value) == valueTwo
        "SCMP_CMP_MASKED_EQ" => (
            SeccompCmpOp::MaskedEq(arg.value),
            arg.value_two.unwrap_or(0),
        ),
        other => return Err(format!("unknown argument operator {other:?}")),
    };
    SeccompCondition::new(index, SeccompCmpArgLen::Qword, op, value).map_err(|e| e.to_string())
}

/// The argument part of one entry: `None` = unconditional, otherwise ORed
/// rules each made of ANDed conditions.
fn entry_rules(entry: &SyscallEntry) -> Result<Option<Vec<SeccompRule>>, String> {
    let args = match &entry.args {
        Some(a) if !a.is_empty() => a,
        _ => return Ok(None),
    };
    let conditions = args
        .iter()
        .map(parse_condition)
        .collect::<Result<Vec<_>, _>>()?;
    let mut per_index = [0usize; 6];
    for a in args {
        per_index[a.index as usize] += 1;
    }
    let rules = if per_index.iter().any(|&n| n > 1) {
        // runc compatibility: same-index conditions are ORed.
        conditions
            .into_iter()
            .map(|c| SeccompRule::new(vec![c]))
            .collect::<Result<Vec<_>, _>>()
    } else {
        SeccompRule::new(conditions).map(|r| vec![r])
    };
    rules.map(Some).map_err(|e| e.to_string())
}

/// Rules for one syscall in one filter.
#[derive(Debug, Clone)]
enum SyscallRules {
    Always,
    When(Vec<SeccompRule>),
}

impl SyscallRules {
    fn merge(&mut self, new: &Option<Vec<SeccompRule>>) {
        match (&mut *self, new) {
            (SyscallRules::Always, _) => {}
            (_, None) => *self = SyscallRules::Always,
            (SyscallRules::When(old), Some(rules)) => old.extend(rules.iter().cloned()),
        }
    }
    fn from(new: &Option<Vec<SeccompRule>>) -> Self {
        match new {
            None => SyscallRules::Always,
            Some(rules) => SyscallRules::When(rules.clone()),
        }
    }
}

type RuleMap = BTreeMap<i64, SyscallRules>;

fn add_rules(map: &mut RuleMap, nr: i64, rules: &Option<Vec<SeccompRule>>) {
    map.entry(nr)
        .and_modify(|r| r.merge(rules))
        .or_insert_with(|| SyscallRules::from(rules));
}

/// One filter of the stack: syscalls in `map` whose rules match get `matched`, everything else
/// `mismatch`.
///
/// seccompiler compiles each rule (its argument conditions); the dispatch on the syscall number
/// is ours. seccompiler's own `SeccompFilter` tests the numbers one after another, which for
/// Docker's profile is a chain of ~1,600 instructions: installing it took 1.4 ms, most of it in
/// the kernel's action cache, which runs the filter once per syscall number to find the ones
/// that are always allowed (kernel/seccomp.c, seccomp_cache_prepare_bitmap). A binary search
/// reaches any number in about 9 comparisons, so that pass and every filtered call get cheaper.
fn build_program(
    map: RuleMap,
    mismatch: SeccompAction,
    matched: SeccompAction,
    arch: TargetArch,
    what: String,
) -> Result<BpfProgram, SecurityError> {
    let bpf_err = |source| SecurityError::Bpf {
        what: what.clone(),
        source,
    };
    let mut cases = Vec::with_capacity(map.len());
    for (nr, rules) in map {
        let nr = u32::try_from(nr)
            .map_err(|_| bpf_err(seccompiler::BackendError::InvalidArgumentNumber))?;
        cases.push((nr, rules));
    }
    let prog = bpf_tree::program(
        arch_audit_value(arch),
        cases,
        mismatch.into(),
        matched.into(),
    );
    if prog.len() >= bpf_tree::BPF_MAX_LEN {
        return Err(bpf_err(seccompiler::BackendError::FilterTooLarge(
            prog.len(),
        )));
    }
    Ok(prog)
}

/// AUDIT_ARCH_* of include/uapi/linux/audit.h: EM_* | __AUDIT_ARCH_64BIT | __AUDIT_ARCH_LE.
fn arch_audit_value(arch: TargetArch) -> u32 {
    const AUDIT_64_LE: u32 = 0x8000_0000 | 0x4000_0000;
    match arch {
        TargetArch::x86_64 => 62 | AUDIT_64_LE,
        TargetArch::aarch64 => 183 | AUDIT_64_LE,
        TargetArch::riscv64 => 243 | AUDIT_64_LE,
    }
}

/// Classic-BPF layout of one filter with a binary-search dispatch on the syscall number.
///
/// ```text
///   ld  arch ; jeq AUDIT_ARCH ? +1 : +0 ; ret KILL_PROCESS     (as seccompiler)
///   ld  nr
///   tree:  jge LO ? right : left         over intervals of numbers with one outcome each
///                                        (a `ja` trampoline when `left` is > 255 insns)
///          ret ACTION                    leaf: a run of numbers with unconditional rules, or a
///                                        gap between them (ret MISMATCH)
///          ja body                       leaf: one number with argument conditions
///   bodies: per syscall, seccompiler's rule programs, each followed by `ret MATCH`, then
///           `ret MISMATCH` (the layout of seccompiler's own per-syscall chains)
///   ret MISMATCH                         landing spot of the last rule's unused skip jump
/// ```
/// Conditional jumps have 8-bit offsets, so every far target goes through `ja` (32-bit).
mod bpf_tree {
    use super::SyscallRules;
    use seccompiler::{sock_filter, BpfProgram};

    /// BPF_MAXINSNS (include/uapi/linux/bpf_common.h).
    pub const BPF_MAX_LEN: usize = 4096;
    /// BPF_LD | BPF_W | BPF_ABS.
    const LD_W_ABS: u16 = 0x20;
    const JA: u16 = 0x05;
    const JEQ_K: u16 = 0x05 | 0x10;
    const JGE_K: u16 = 0x05 | 0x30;
    const RET_K: u16 = 0x06;
    /// offsetof(struct seccomp_data, nr / arch).
    const NR: u32 = 0;
    const ARCH: u32 = 4;

    fn ins(code: u16, jt: u8, jf: u8, k: u32) -> sock_filter {
        sock_filter { code, jt, jf, k }
    }

    /// Where a syscall number leads: a return, or a body (index into `bodies`).
    #[derive(Clone, Copy, PartialEq)]
    enum Target {
        Ret(u32),
        Body(usize),
    }

    /// Tree code plus the positions of `ja body` placeholders to patch: (index, body).
    struct Tree {
        code: Vec<sock_filter>,
        fixups: Vec<(usize, usize)>,
    }

    /// Splits all of u32 into intervals `[lo, next lo)` with one target each: neighbouring
    /// numbers with the same plain return share one (Docker's allow-list is mostly runs of
    /// consecutive numbers), gaps get `mismatch`. The first interval starts at 0.
    fn intervals(cases: &[(u32, Target)], mismatch: u32) -> Vec<(u32, Target)> {
        let mut out: Vec<(u32, Target)> = Vec::new();
        let mut push = |lo: u32, t: Target| {
            let merges =
                matches!((out.last(), t), (Some((_, Target::Ret(a))), Target::Ret(b)) if *a == b);
            if !merges {
                out.push((lo, t));
            }
        };
        let mut next = Some(0u32);
        for &(nr, t) in cases {
            if next.is_some_and(|n| nr > n) {
                push(next.unwrap_or(0), Target::Ret(mismatch));
            }
            push(nr, t);
            next = nr.checked_add(1);
        }
        if let Some(n) = next {
            push(n, Target::Ret(mismatch));
        }
        out
    }

    /// Binary search over intervals (sorted by `lo`; the first covers 0).
    fn tree(iv: &[(u32, Target)]) -> Tree {
        let mut t = Tree {
            code: Vec::new(),
            fixups: Vec::new(),
        };
        if let [(_, target)] = iv {
            match *target {
                Target::Ret(k) => t.code.push(ins(RET_K, 0, 0, k)),
                Target::Body(b) => {
                    t.fixups.push((0, b));
                    t.code.push(ins(JA, 0, 0, 0));
                }
            }
            return t;
        }
        let mid = iv.len() / 2;
        let left = tree(&iv[..mid]);
        let right = tree(&iv[mid..]);
        let pivot = iv[mid].0;
        match u8::try_from(left.code.len()) {
            Ok(skip) => t.code.push(ins(JGE_K, skip, 0, pivot)),
            Err(_) => {
                t.code.push(ins(JGE_K, 0, 1, pivot));
                t.code.push(ins(JA, 0, 0, left.code.len() as u32));
            }
        }
        for part in [left, right] {
            let base = t.code.len();
            t.fixups
                .extend(part.fixups.into_iter().map(|(i, b)| (base + i, b)));
            t.code.extend(part.code);
        }
        t
    }

    /// `cases` sorted by number (a BTreeMap's order).
    pub fn program(
        audit_arch: u32,
        cases: Vec<(u32, SyscallRules)>,
        mismatch: u32,
        matched: u32,
    ) -> BpfProgram {
        let mut bodies: Vec<Vec<sock_filter>> = Vec::new();
        let targets: Vec<(u32, Target)> = cases
            .into_iter()
            .map(|(nr, rules)| match rules {
                SyscallRules::Always => (nr, Target::Ret(matched)),
                SyscallRules::When(rules) => {
                    let mut body = Vec::new();
                    for rule in rules {
                        // A rule program falls through on a match and jumps one past its end
                        // (over our `ret MATCH`) on a mismatch (seccompiler backend/rule.rs).
                        body.extend(BpfProgram::from(rule));
                        body.push(ins(RET_K, 0, 0, matched));
                    }
                    body.push(ins(RET_K, 0, 0, mismatch));
                    bodies.push(body);
                    (nr, Target::Body(bodies.len() - 1))
                }
            })
            .collect();
        let mut prog = vec![
            ins(LD_W_ABS, 0, 0, ARCH),
            ins(JEQ_K, 1, 0, audit_arch),
            ins(RET_K, 0, 0, libc::SECCOMP_RET_KILL_PROCESS),
            ins(LD_W_ABS, 0, 0, NR),
        ];
        let t = tree(&intervals(&targets, mismatch));
        let tree_start = prog.len();
        prog.extend(t.code);
        let mut body_start = Vec::with_capacity(bodies.len());
        for b in bodies {
            body_start.push(prog.len());
            prog.extend(b);
        }
        for (i, b) in t.fixups {
            let at = tree_start + i;
            prog[at].k = (body_start[b] - (at + 1)) as u32;
        }
        // Each rule program opens with a second `ja` that skips the whole rule plus the chain's
        // final `ret MISMATCH`, to the next syscall's test in seccompiler's layout. We never take
        // it, but the kernel checks every jump lands inside the program (bpf_check_classic), so
        // the last one needs an instruction to land on, as in seccompiler's programs.
        prog.push(ins(RET_K, 0, 0, mismatch));
        prog
    }
}

/// Hand-written guard: on x86_64, syscalls with the x32 bit set → ERRNO(ENOSYS).
fn x32_guard() -> BpfProgram {
    const BPF_LD_W_ABS: u16 = 0x20; // BPF_LD (0x00) | BPF_W (0x00) | BPF_ABS (0x20)
    const BPF_JEQ_K: u16 = 0x05 | 0x10;
    const BPF_JGE_K: u16 = 0x05 | 0x30;
    const BPF_RET_K: u16 = 0x06;
    const AUDIT_ARCH_X86_64: u32 = 62 | 0x8000_0000 | 0x4000_0000;
    const X32_SYSCALL_BIT: u32 = 0x4000_0000;
    let ins = |code, jt, jf, k| sock_filter { code, jt, jf, k };
    vec![
        ins(BPF_LD_W_ABS, 0, 0, 4), // seccomp_data.arch
        ins(BPF_JEQ_K, 0, 3, AUDIT_ARCH_X86_64),
        ins(BPF_LD_W_ABS, 0, 0, 0), // seccomp_data.nr
        ins(BPF_JGE_K, 0, 1, X32_SYSCALL_BIT),
        ins(
            BPF_RET_K,
            0,
            0,
            libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32,
        ),
        ins(BPF_RET_K, 0, 0, libc::SECCOMP_RET_ALLOW),
    ]
}

/// Compile an already parsed profile for an explicit kernel version (pure;
/// used by [`compile`] and by tests).
pub fn compile_profile(
    profile_name: &str,
    profile: &Profile,
    caps: &CapsHashSet,
    arch: TargetArch,
    kernel: KernelVersion,
) -> Result<CompiledFilter, SecurityError> {
    compile_profile_with(profile_name, profile, caps, arch, kernel, build_program)
}

/// Signature of [`build_program`] (tests swap in seccompiler's linear layout to compare).
type ProgramBuilder = fn(
    RuleMap,
    SeccompAction,
    SeccompAction,
    TargetArch,
    String,
) -> Result<BpfProgram, SecurityError>;

fn compile_profile_with(
    profile_name: &str,
    profile: &Profile,
    caps: &CapsHashSet,
    arch: TargetArch,
    kernel: KernelVersion,
    build_program: ProgramBuilder,
) -> Result<CompiledFilter, SecurityError> {
    let invalid = |reason: String| SecurityError::ProfileInvalid {
        path: profile_name.to_string(),
        reason,
    };
    let default_action = parse_action(&profile.default_action, profile.default_errno_ret)
        .map_err(|r| invalid(format!("defaultAction: {r}")))?;
    let table = syscall_table(arch).ok_or_else(|| {
        invalid(format!(
            "target arch {} is not supported (no syscall table; x86_64 and aarch64 are)",
            arch_name(arch)
        ))
    })?;
    let cap_names = super::caps::cap_names(caps);

    // Action groups in order of first appearance; the union feeds the default filter.
    let mut groups: Vec<(SeccompAction, RuleMap)> = Vec::new();
    let mut union: RuleMap = BTreeMap::new();
    let mut rule_count = 0usize;

    for (i, entry) in profile.syscalls.iter().flatten().enumerate() {
        if !entry_applies(entry, &cap_names, arch, kernel, profile_name)? {
            continue;
        }
        let action = parse_action(&entry.action, entry.errno_ret)
            .map_err(|r| invalid(format!("syscalls[{i}]: {r}")))?;
        if action == default_action {
            tracing::debug!(
                entry = i,
                "seccomp entry has the default action; skipped (as runc)"
            );
            continue;
        }
        let rules = entry_rules(entry).map_err(|r| invalid(format!("syscalls[{i}]: {r}")))?;
        let names = entry.names.iter().flatten().chain(entry.name.iter());
        let group = match groups.iter().position(|(a, _)| *a == action) {
            Some(g) => g,
            None => {
                groups.push((action.clone(), BTreeMap::new()));
                groups.len() - 1
            }
        };
        for name in names {
            let Some(&nr) = table.get(name.as_str()) else {
                tracing::debug!(
                    syscall = %name,
                    arch = arch_name(arch),
                    "unknown seccomp syscall ignored"
                );
                continue;
            };
            add_rules(&mut groups[group].1, nr, &rules);
            add_rules(&mut union, nr, &rules);
            rule_count += 1;
        }
    }

    let mut programs = Vec::new();
    let permissive_default = matches!(default_action, SeccompAction::Allow | SeccompAction::Log);
    if arch == TargetArch::x86_64 && permissive_default {
        programs.push(x32_guard());
    }
    for (action, map) in groups.into_iter().rev() {
        if action == SeccompAction::Allow || map.is_empty() {
            continue; // ALLOW needs no filter of its own: it only shapes the union
        }
        let what = format!("action {}", action_label(&action));
        programs.push(build_program(
            map,
            SeccompAction::Allow,
            action,
            arch,
            what,
        )?);
    }
    if default_action != SeccompAction::Allow {
        let what = format!("default action {}", action_label(&default_action));
        programs.push(build_program(
            union,
            default_action.clone(),
            SeccompAction::Allow,
            arch,
            what,
        )?);
    }

    let bpf_instructions = programs.iter().map(Vec::len).sum();
    Ok(CompiledFilter {
        programs,
        rule_count,
        default_action: action_label(&default_action),
        bpf_instructions,
    })
}

// ---------------------------------------------------------------------------
// Install
// ---------------------------------------------------------------------------

/// `struct sock_fprog` (linux/filter.h) pointing at seccompiler's
/// `sock_filter`, which is `#[repr(C)]` with the kernel layout.
#[repr(C)]
struct SockFprog {
    len: libc::c_ushort,
    filter: *const sock_filter,
}

/// Install the programs on the calling thread, in order, with
/// seccomp(SECCOMP_SET_MODE_FILTER, 0, ..).
///
/// Requires `no_new_privs` (see [`super::caps::set_no_new_privs`]) or
/// `CAP_SYS_ADMIN` in the thread's user namespace (seccomp(2)); this function
/// does *not* set `no_new_privs` itself (unlike `seccompiler::apply_filter`),
/// so the caller decides. Call it as the very last step before execve(2).
///
/// Async-signal-safe on success (no allocation, no locks): it may be called
/// in a child after fork(2) of a multithreaded process.
pub fn install(filter: &CompiledFilter) -> Result<(), SecurityError> {
    let total = filter.programs.len();
    for (i, prog) in filter.programs.iter().enumerate() {
        if prog.is_empty() || prog.len() > u16::MAX as usize {
            return Err(SecurityError::Install {
                index: i + 1,
                total,
                source: io::Error::from_raw_os_error(libc::EINVAL),
            });
        }
        let fprog = SockFprog {
            len: prog.len() as libc::c_ushort,
            filter: prog.as_ptr(),
        };
        // SAFETY: `fprog` points to `prog.len()` initialized sock_filter
        // structs that outlive the call; the kernel copies the program
        // (copy_from_user) and keeps no reference to our memory.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_seccomp,
                libc::SECCOMP_SET_MODE_FILTER as libc::c_ulong,
                0 as libc::c_ulong,
                &fprog as *const SockFprog,
            )
        };
        if rc != 0 {
            return Err(SecurityError::Install {
                index: i + 1,
                total,
                source: io::Error::last_os_error(),
            });
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Cache
// ---------------------------------------------------------------------------

const CACHE_MAGIC: &[u8; 8] = b"RCSECBPF";
/// 2: binary-search dispatch (format 1 held seccompiler's linear chains).
const CACHE_FORMAT: u32 = 2;

/// Cache key: sha256 over the profile bytes, the sorted cap names, the arch,
/// the kernel release (minKernel) and this crate's version (compiler logic).
pub fn cache_key(
    profile_json: &[u8],
    caps: &CapsHashSet,
    arch: TargetArch,
) -> Result<String, SecurityError> {
    let release = kernel_release()?;
    Ok(cache_key_with_release(profile_json, caps, arch, &release))
}

fn cache_key_with_release(
    profile_json: &[u8],
    caps: &CapsHashSet,
    arch: TargetArch,
    release: &str,
) -> String {
    let mut h = Sha256::new();
    let mut field = |label: &[u8], bytes: &[u8]| {
        h.update(label);
        h.update((bytes.len() as u64).to_le_bytes());
        h.update(bytes);
    };
    field(b"profile", profile_json);
    field(b"caps", super::caps::cap_names(caps).join(",").as_bytes());
    field(b"arch", arch_name(arch).as_bytes());
    field(b"kernel", release.as_bytes());
    field(b"version", env!("CARGO_PKG_VERSION").as_bytes());
    field(b"format", &CACHE_FORMAT.to_le_bytes());
    hex::encode(h.finalize())
}

fn cache_path(cache_dir: &Path, key: &str) -> PathBuf {
    cache_dir.join(format!("seccomp-{key}.bpf"))
}

/// Serialize: magic, format, key, rule_count, default_action, programs,
/// then sha256 of all preceding bytes (detects truncation and corruption).
fn encode_cache(key: &str, f: &CompiledFilter) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + f.bpf_instructions * 8);
    out.extend_from_slice(CACHE_MAGIC);
    out.extend_from_slice(&CACHE_FORMAT.to_le_bytes());
    out.extend_from_slice(key.as_bytes()); // 64 hex chars
    out.extend_from_slice(&(f.rule_count as u32).to_le_bytes());
    out.extend_from_slice(&(f.default_action.len() as u32).to_le_bytes());
    out.extend_from_slice(f.default_action.as_bytes());
    out.extend_from_slice(&(f.programs.len() as u32).to_le_bytes());
    for p in &f.programs {
        out.extend_from_slice(&(p.len() as u32).to_le_bytes());
        for ins in p {
            out.extend_from_slice(&ins.code.to_le_bytes());
            out.push(ins.jt);
            out.push(ins.jf);
            out.extend_from_slice(&ins.k.to_le_bytes());
        }
    }
    let sum = Sha256::digest(&out);
    out.extend_from_slice(&sum);
    out
}

/// Inverse of [`encode_cache`]; `None` on any inconsistency.
fn decode_cache(key: &str, data: &[u8]) -> Option<CompiledFilter> {
    let body_len = data.len().checked_sub(32)?;
    let (body, sum) = data.split_at(body_len);
    if Sha256::digest(body).as_slice() != sum {
        return None;
    }
    let mut r = Reader { data: body };
    if r.take(8)? != CACHE_MAGIC || r.u32()? != CACHE_FORMAT || r.take(key.len())? != key.as_bytes()
    {
        return None;
    }
    let rule_count = r.u32()? as usize;
    let n = r.u32()? as usize;
    let default_action = String::from_utf8(r.take(n)?.to_vec()).ok()?;
    let nprogs = r.u32()? as usize;
    let mut programs = Vec::with_capacity(nprogs.min(64));
    let mut bpf_instructions = 0;
    for _ in 0..nprogs {
        let len = r.u32()? as usize;
        let raw = r.take(len.checked_mul(8)?)?;
        let prog: BpfProgram = raw
            .chunks_exact(8)
            .map(|c| sock_filter {
                code: u16::from_le_bytes([c[0], c[1]]),
                jt: c[2],
                jf: c[3],
                k: u32::from_le_bytes([c[4], c[5], c[6], c[7]]),
            })
            .collect();
        bpf_instructions += prog.len();
        programs.push(prog);
    }
    if !r.data.is_empty() {
        return None;
    }
    Some(CompiledFilter {
        programs,
        rule_count,
        default_action,
        bpf_instructions,
    })
}

struct Reader<'a> {
    data: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.data.len() < n {
            return None;
        }
        let (a, b) = self.data.split_at(n);
        self.data = b;
        Some(a)
    }
    fn u32(&mut self) -> Option<u32> {
        self.take(4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
}

/// Write `data` to `path` atomically: a mode-0600 temp file in the same
/// directory, fsync, then rename(2) over the destination.
fn write_atomic(path: &Path, data: &[u8]) -> Result<(), SecurityError> {
    let err = |source| SecurityError::CacheWrite {
        path: path.to_path_buf(),
        source,
    };
    let dir = path.parent().unwrap_or_else(|| Path::new("."));
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(err)?;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let file_name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("seccomp");
    let tmp = dir.join(format!(".{file_name}.{}.{nanos}.tmp", std::process::id()));
    let result = (|| {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.map_err(err)
}

/// Compile with a cache in `cache_dir` (created with mode 0700 if missing).
/// Returns the filter and whether it came from the cache.
///
/// A hit costs one read plus a sha256 over the file; no JSON is parsed. A
/// missing, truncated or corrupt file is recompiled and rewritten. The cache
/// is an optimisation: a failure to *write* it is logged (warn) and the freshly
/// compiled filter is returned anyway; errors reading an existing file other
/// than "not found" are also logged and treated as a miss.
pub fn load_cached(
    cache_dir: &Path,
    profile_json: &[u8],
    caps: &CapsHashSet,
    arch: TargetArch,
) -> Result<(CompiledFilter, bool), SecurityError> {
    let key = cache_key(profile_json, caps, arch)?;
    let path = cache_path(cache_dir, &key);
    match fs::read(&path) {
        Ok(data) => match decode_cache(&key, &data) {
            Some(filter) => return Ok((filter, true)),
            None => tracing::debug!(path = %path.display(), "corrupt seccomp cache ignored"),
        },
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(source) => {
            let e = SecurityError::CacheRead {
                path: path.clone(),
                source,
            };
            tracing::warn!("{e}; recompiling");
        }
    }
    let filter = compile(profile_json, caps, arch)?;
    if let Err(e) = write_atomic(&path, &encode_cache(&key, &filter)) {
        tracing::warn!("{e}; continuing without cache");
    }
    Ok((filter, false))
}

// ---------------------------------------------------------------------------
// Syscall tables
// ---------------------------------------------------------------------------

/// Syscall name → number for `arch`, built once from the embedded tables.
///
/// seccompiler has the same tables but keeps them private (`mod
/// syscall_table`, only used by its JSON frontend), and libc's `SYS_*`
/// constants only exist for the host target. So the tables are embedded as
/// data below: generated from seccompiler 0.5.0's `src/syscall_table/*.rs`
/// (themselves generated from Linux 6.12 headers), cross-checked against
/// libc 0.2's x86_64/aarch64 `SYS_*` constants (no mismatch), plus the
/// generic numbers 463..=469 added in Linux 6.13–6.17 (setxattrat ..
/// file_setattr; same numbers on both arches).
/// `None` for riscv64, whose table is not embedded.
pub fn syscall_table(arch: TargetArch) -> Option<&'static HashMap<&'static str, i64>> {
    static X86_64: OnceLock<HashMap<&'static str, i64>> = OnceLock::new();
    static AARCH64: OnceLock<HashMap<&'static str, i64>> = OnceLock::new();
    let (cell, data) = match arch {
        TargetArch::x86_64 => (&X86_64, tables::X86_64),
        TargetArch::aarch64 => (&AARCH64, tables::AARCH64),
        TargetArch::riscv64 => return None,
    };
    Some(cell.get_or_init(|| {
        data.split_whitespace()
            .filter_map(|pair| {
                let (name, nr) = pair.split_once('=')?;
                Some((name, nr.parse().ok()?))
            })
            .collect()
    }))
}

mod tables {
    /// x86_64: 382 syscalls, `name=nr` sorted by number.
    pub(super) const X86_64: &str = "\
    read=0 write=1 open=2 close=3 stat=4 fstat=5 lstat=6 poll=7 lseek=8 mmap=9 mprotect=10 \
    munmap=11 brk=12 rt_sigaction=13 rt_sigprocmask=14 rt_sigreturn=15 ioctl=16 pread64=17 \
    pwrite64=18 readv=19 writev=20 access=21 pipe=22 select=23 sched_yield=24 mremap=25 msync=26 \
    mincore=27 madvise=28 shmget=29 shmat=30 shmctl=31 dup=32 dup2=33 pause=34 nanosleep=35 \
    getitimer=36 alarm=37 setitimer=38 getpid=39 sendfile=40 socket=41 connect=42 accept=43 \
    sendto=44 recvfrom=45 sendmsg=46 recvmsg=47 shutdown=48 bind=49 listen=50 getsockname=51 \
    getpeername=52 socketpair=53 setsockopt=54 getsockopt=55 clone=56 fork=57 vfork=58 execve=59 \
    exit=60 wait4=61 kill=62 uname=63 semget=64 semop=65 semctl=66 shmdt=67 msgget=68 msgsnd=69 \
    msgrcv=70 msgctl=71 fcntl=72 flock=73 fsync=74 fdatasync=75 truncate=76 ftruncate=77 \
    getdents=78 getcwd=79 chdir=80 fchdir=81 rename=82 mkdir=83 rmdir=84 creat=85 link=86 unlink=87 \
    symlink=88 readlink=89 chmod=90 fchmod=91 chown=92 fchown=93 lchown=94 umask=95 gettimeofday=96 \
    getrlimit=97 getrusage=98 sysinfo=99 times=100 ptrace=101 getuid=102 syslog=103 getgid=104 \
    setuid=105 setgid=106 geteuid=107 getegid=108 setpgid=109 getppid=110 getpgrp=111 setsid=112 \
    setreuid=113 setregid=114 getgroups=115 setgroups=116 setresuid=117 getresuid=118 setresgid=119 \
    getresgid=120 getpgid=121 setfsuid=122 setfsgid=123 getsid=124 capget=125 capset=126 \
    rt_sigpending=127 rt_sigtimedwait=128 rt_sigqueueinfo=129 rt_sigsuspend=130 sigaltstack=131 \
    utime=132 mknod=133 uselib=134 personality=135 ustat=136 statfs=137 fstatfs=138 sysfs=139 \
    getpriority=140 setpriority=141 sched_setparam=142 sched_getparam=143 sched_setscheduler=144 \
    sched_getscheduler=145 sched_get_priority_max=146 sched_get_priority_min=147 \
    sched_rr_get_interval=148 mlock=149 munlock=150 mlockall=151 munlockall=152 vhangup=153 \
    modify_ldt=154 pivot_root=155 _sysctl=156 prctl=157 arch_prctl=158 adjtimex=159 setrlimit=160 \
    chroot=161 sync=162 acct=163 settimeofday=164 mount=165 umount2=166 swapon=167 swapoff=168 \
    reboot=169 sethostname=170 setdomainname=171 iopl=172 ioperm=173 create_module=174 \
    init_module=175 delete_module=176 get_kernel_syms=177 query_module=178 quotactl=179 \
    nfsservctl=180 getpmsg=181 putpmsg=182 afs_syscall=183 tuxcall=184 security=185 gettid=186 \
    readahead=187 setxattr=188 lsetxattr=189 fsetxattr=190 getxattr=191 lgetxattr=192 fgetxattr=193 \
    listxattr=194 llistxattr=195 flistxattr=196 removexattr=197 lremovexattr=198 fremovexattr=199 \
    tkill=200 time=201 futex=202 sched_setaffinity=203 sched_getaffinity=204 set_thread_area=205 \
    io_setup=206 io_destroy=207 io_getevents=208 io_submit=209 io_cancel=210 get_thread_area=211 \
    lookup_dcookie=212 epoll_create=213 epoll_ctl_old=214 epoll_wait_old=215 remap_file_pages=216 \
    getdents64=217 set_tid_address=218 restart_syscall=219 semtimedop=220 fadvise64=221 \
    timer_create=222 timer_settime=223 timer_gettime=224 timer_getoverrun=225 timer_delete=226 \
    clock_settime=227 clock_gettime=228 clock_getres=229 clock_nanosleep=230 exit_group=231 \
    epoll_wait=232 epoll_ctl=233 tgkill=234 utimes=235 vserver=236 mbind=237 set_mempolicy=238 \
    get_mempolicy=239 mq_open=240 mq_unlink=241 mq_timedsend=242 mq_timedreceive=243 mq_notify=244 \
    mq_getsetattr=245 kexec_load=246 waitid=247 add_key=248 request_key=249 keyctl=250 \
    ioprio_set=251 ioprio_get=252 inotify_init=253 inotify_add_watch=254 inotify_rm_watch=255 \
    migrate_pages=256 openat=257 mkdirat=258 mknodat=259 fchownat=260 futimesat=261 newfstatat=262 \
    unlinkat=263 renameat=264 linkat=265 symlinkat=266 readlinkat=267 fchmodat=268 faccessat=269 \
    pselect6=270 ppoll=271 unshare=272 set_robust_list=273 get_robust_list=274 splice=275 tee=276 \
    sync_file_range=277 vmsplice=278 move_pages=279 utimensat=280 epoll_pwait=281 signalfd=282 \
    timerfd_create=283 eventfd=284 fallocate=285 timerfd_settime=286 timerfd_gettime=287 \
    accept4=288 signalfd4=289 eventfd2=290 epoll_create1=291 dup3=292 pipe2=293 inotify_init1=294 \
    preadv=295 pwritev=296 rt_tgsigqueueinfo=297 perf_event_open=298 recvmmsg=299 fanotify_init=300 \
    fanotify_mark=301 prlimit64=302 name_to_handle_at=303 open_by_handle_at=304 clock_adjtime=305 \
    syncfs=306 sendmmsg=307 setns=308 getcpu=309 process_vm_readv=310 process_vm_writev=311 \
    kcmp=312 finit_module=313 sched_setattr=314 sched_getattr=315 renameat2=316 seccomp=317 \
    getrandom=318 memfd_create=319 kexec_file_load=320 bpf=321 execveat=322 userfaultfd=323 \
    membarrier=324 mlock2=325 copy_file_range=326 preadv2=327 pwritev2=328 pkey_mprotect=329 \
    pkey_alloc=330 pkey_free=331 statx=332 io_pgetevents=333 rseq=334 uretprobe=335 \
    pidfd_send_signal=424 io_uring_setup=425 io_uring_enter=426 io_uring_register=427 open_tree=428 \
    move_mount=429 fsopen=430 fsconfig=431 fsmount=432 fspick=433 pidfd_open=434 clone3=435 \
    close_range=436 openat2=437 pidfd_getfd=438 faccessat2=439 process_madvise=440 epoll_pwait2=441 \
    mount_setattr=442 quotactl_fd=443 landlock_create_ruleset=444 landlock_add_rule=445 \
    landlock_restrict_self=446 memfd_secret=447 process_mrelease=448 futex_waitv=449 \
    set_mempolicy_home_node=450 cachestat=451 fchmodat2=452 map_shadow_stack=453 futex_wake=454 \
    futex_wait=455 futex_requeue=456 statmount=457 listmount=458 lsm_get_self_attr=459 \
    lsm_set_self_attr=460 lsm_list_modules=461 mseal=462 setxattrat=463 getxattrat=464 \
    listxattrat=465 removexattrat=466 open_tree_attr=467 file_getattr=468 file_setattr=469";

    /// aarch64: 325 syscalls, `name=nr` sorted by number.
    pub(super) const AARCH64: &str = "\
    io_setup=0 io_destroy=1 io_submit=2 io_cancel=3 io_getevents=4 setxattr=5 lsetxattr=6 \
    fsetxattr=7 getxattr=8 lgetxattr=9 fgetxattr=10 listxattr=11 llistxattr=12 flistxattr=13 \
    removexattr=14 lremovexattr=15 fremovexattr=16 getcwd=17 lookup_dcookie=18 eventfd2=19 \
    epoll_create1=20 epoll_ctl=21 epoll_pwait=22 dup=23 dup3=24 fcntl=25 inotify_init1=26 \
    inotify_add_watch=27 inotify_rm_watch=28 ioctl=29 ioprio_set=30 ioprio_get=31 flock=32 \
    mknodat=33 mkdirat=34 unlinkat=35 symlinkat=36 linkat=37 renameat=38 umount2=39 mount=40 \
    pivot_root=41 nfsservctl=42 statfs=43 fstatfs=44 truncate=45 ftruncate=46 fallocate=47 \
    faccessat=48 chdir=49 fchdir=50 chroot=51 fchmod=52 fchmodat=53 fchownat=54 fchown=55 openat=56 \
    close=57 vhangup=58 pipe2=59 quotactl=60 getdents64=61 lseek=62 read=63 write=64 readv=65 \
    writev=66 pread64=67 pwrite64=68 preadv=69 pwritev=70 sendfile=71 pselect6=72 ppoll=73 \
    signalfd4=74 vmsplice=75 splice=76 tee=77 readlinkat=78 newfstatat=79 fstat=80 sync=81 fsync=82 \
    fdatasync=83 sync_file_range=84 timerfd_create=85 timerfd_settime=86 timerfd_gettime=87 \
    utimensat=88 acct=89 capget=90 capset=91 personality=92 exit=93 exit_group=94 waitid=95 \
    set_tid_address=96 unshare=97 futex=98 set_robust_list=99 get_robust_list=100 nanosleep=101 \
    getitimer=102 setitimer=103 kexec_load=104 init_module=105 delete_module=106 timer_create=107 \
    timer_gettime=108 timer_getoverrun=109 timer_settime=110 timer_delete=111 clock_settime=112 \
    clock_gettime=113 clock_getres=114 clock_nanosleep=115 syslog=116 ptrace=117 sched_setparam=118 \
    sched_setscheduler=119 sched_getscheduler=120 sched_getparam=121 sched_setaffinity=122 \
    sched_getaffinity=123 sched_yield=124 sched_get_priority_max=125 sched_get_priority_min=126 \
    sched_rr_get_interval=127 restart_syscall=128 kill=129 tkill=130 tgkill=131 sigaltstack=132 \
    rt_sigsuspend=133 rt_sigaction=134 rt_sigprocmask=135 rt_sigpending=136 rt_sigtimedwait=137 \
    rt_sigqueueinfo=138 rt_sigreturn=139 setpriority=140 getpriority=141 reboot=142 setregid=143 \
    setgid=144 setreuid=145 setuid=146 setresuid=147 getresuid=148 setresgid=149 getresgid=150 \
    setfsuid=151 setfsgid=152 times=153 setpgid=154 getpgid=155 getsid=156 setsid=157 getgroups=158 \
    setgroups=159 uname=160 sethostname=161 setdomainname=162 getrlimit=163 setrlimit=164 \
    getrusage=165 umask=166 prctl=167 getcpu=168 gettimeofday=169 settimeofday=170 adjtimex=171 \
    getpid=172 getppid=173 getuid=174 geteuid=175 getgid=176 getegid=177 gettid=178 sysinfo=179 \
    mq_open=180 mq_unlink=181 mq_timedsend=182 mq_timedreceive=183 mq_notify=184 mq_getsetattr=185 \
    msgget=186 msgctl=187 msgrcv=188 msgsnd=189 semget=190 semctl=191 semtimedop=192 semop=193 \
    shmget=194 shmctl=195 shmat=196 shmdt=197 socket=198 socketpair=199 bind=200 listen=201 \
    accept=202 connect=203 getsockname=204 getpeername=205 sendto=206 recvfrom=207 setsockopt=208 \
    getsockopt=209 shutdown=210 sendmsg=211 recvmsg=212 readahead=213 brk=214 munmap=215 mremap=216 \
    add_key=217 request_key=218 keyctl=219 clone=220 execve=221 mmap=222 fadvise64=223 swapon=224 \
    swapoff=225 mprotect=226 msync=227 mlock=228 munlock=229 mlockall=230 munlockall=231 \
    mincore=232 madvise=233 remap_file_pages=234 mbind=235 get_mempolicy=236 set_mempolicy=237 \
    migrate_pages=238 move_pages=239 rt_tgsigqueueinfo=240 perf_event_open=241 accept4=242 \
    recvmmsg=243 wait4=260 prlimit64=261 fanotify_init=262 fanotify_mark=263 name_to_handle_at=264 \
    open_by_handle_at=265 clock_adjtime=266 syncfs=267 setns=268 sendmmsg=269 process_vm_readv=270 \
    process_vm_writev=271 kcmp=272 finit_module=273 sched_setattr=274 sched_getattr=275 \
    renameat2=276 seccomp=277 getrandom=278 memfd_create=279 bpf=280 execveat=281 userfaultfd=282 \
    membarrier=283 mlock2=284 copy_file_range=285 preadv2=286 pwritev2=287 pkey_mprotect=288 \
    pkey_alloc=289 pkey_free=290 statx=291 io_pgetevents=292 rseq=293 kexec_file_load=294 \
    pidfd_send_signal=424 io_uring_setup=425 io_uring_enter=426 io_uring_register=427 open_tree=428 \
    move_mount=429 fsopen=430 fsconfig=431 fsmount=432 fspick=433 pidfd_open=434 clone3=435 \
    close_range=436 openat2=437 pidfd_getfd=438 faccessat2=439 process_madvise=440 epoll_pwait2=441 \
    mount_setattr=442 quotactl_fd=443 landlock_create_ruleset=444 landlock_add_rule=445 \
    landlock_restrict_self=446 memfd_secret=447 process_mrelease=448 futex_waitv=449 \
    set_mempolicy_home_node=450 cachestat=451 fchmodat2=452 map_shadow_stack=453 futex_wake=454 \
    futex_wait=455 futex_requeue=456 statmount=457 listmount=458 lsm_get_self_attr=459 \
    lsm_set_self_attr=460 lsm_list_modules=461 mseal=462 setxattrat=463 getxattrat=464 \
    listxattrat=465 removexattrat=466 open_tree_attr=467 file_getattr=468 file_setattr=469";
}

#[cfg(test)]
mod tests {
    use super::*;
    use ::caps::Capability;

    const DOCKER_FIXTURE: &str = "/work/shared/fixtures/docker-default-seccomp.json";
    const K: KernelVersion = (6, 18, 0);

    fn docker_profile() -> Option<Vec<u8>> {
        match fs::read(DOCKER_FIXTURE) {
            Ok(b) => Some(b),
            Err(_) => {
                eprintln!("skipping: {DOCKER_FIXTURE} not present");
                None
            }
        }
    }

    fn defaults() -> CapsHashSet {
        super::super::caps::default_caps()
    }

    fn with(extra: Capability) -> CapsHashSet {
        let mut c = defaults();
        c.insert(extra);
        c
    }

    fn compile_k(
        json: &[u8],
        caps: &CapsHashSet,
        arch: TargetArch,
        k: KernelVersion,
    ) -> CompiledFilter {
        let p = parse_profile("test", json).unwrap();
        compile_profile("test", &p, caps, arch, k).unwrap()
    }

    // --- a tiny classic-BPF interpreter + the kernel's combination rule ------

    const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
    const AUDIT_ARCH_AARCH64: u32 = 0xc000_00b7;

    fn run_prog(prog: &[sock_filter], data: &[u8; 64]) -> u32 {
        let mut a: u32 = 0;
        let mut pc = 0usize;
        loop {
            let i = &prog[pc];
            pc += 1;
            match i.code & 0x07 {
                0x00 => {
                    assert_eq!(i.code, 0x20, "only LD|W|ABS expected");
                    let k = i.k as usize;
                    a = u32::from_le_bytes(data[k..k + 4].try_into().unwrap());
                }
                0x04 => {
                    assert_eq!(i.code & 0xf0, 0x50, "only ALU AND expected");
                    a &= i.k;
                }
                0x05 => {
                    let taken = match i.code & 0xf0 {
                        0x00 => {
                            pc += i.k as usize;
                            continue;
                        }
                        0x10 => a == i.k,
                        0x20 => a > i.k,
                        0x30 => a >= i.k,
                        0x40 => a & i.k != 0,
                        op => panic!("jump op {op:#x}"),
                    };
                    pc += if taken { i.jt } else { i.jf } as usize;
                }
                0x06 => return i.k,
                c => panic!("class {c:#x}"),
            }
        }
    }

    /// kernel/seccomp.c seccomp_run_filters(): newest first, lowest
    /// ACTION_ONLY wins, ties keep the first seen.
    fn eval(f: &CompiledFilter, arch: u32, nr: i64, args: [u64; 6]) -> u32 {
        let mut data = [0u8; 64];
        data[0..4].copy_from_slice(&(nr as i32).to_le_bytes());
        data[4..8].copy_from_slice(&arch.to_le_bytes());
        for (i, a) in args.iter().enumerate() {
            data[16 + i * 8..24 + i * 8].copy_from_slice(&a.to_le_bytes());
        }
        let action_only = |r: u32| (r & 0xffff_0000) as i32;
        let mut ret = libc::SECCOMP_RET_ALLOW;
        for p in f.programs.iter().rev() {
            let cur = run_prog(p, &data);
            if action_only(cur) < action_only(ret) {
                ret = cur;
            }
        }
        ret
    }

    const ALLOW: u32 = libc::SECCOMP_RET_ALLOW;
    const EPERM: u32 = libc::SECCOMP_RET_ERRNO | 1;
    const ENOSYS: u32 = libc::SECCOMP_RET_ERRNO | 38;

    fn x86(f: &CompiledFilter, name: &str, args: [u64; 6]) -> u32 {
        let nr = syscall_table(TargetArch::x86_64).unwrap()[name];
        eval(f, AUDIT_ARCH_X86_64, nr, args)
    }

    /// The expectations from the brief, for a container with Docker's default caps.
    fn check_docker_semantics(f: &CompiledFilter) {
        let z = [0u64; 6];
        let a0 = |v: u64| [v, 0, 0, 0, 0, 0];
        assert_eq!(x86(f, "getpid", z), ALLOW);
        assert_eq!(x86(f, "read", z), ALLOW);
        assert_eq!(x86(f, "unshare", a0(libc::CLONE_NEWUSER as u64)), EPERM);
        assert_eq!(x86(f, "mount", z), EPERM);
        assert_eq!(x86(f, "umount2", z), EPERM);
        assert_eq!(x86(f, "setns", z), EPERM);
        assert_eq!(x86(f, "keyctl", z), EPERM);
        assert_eq!(x86(f, "add_key", z), EPERM);
        assert_eq!(x86(f, "request_key", z), EPERM);
        assert_eq!(x86(f, "bpf", z), EPERM);
        assert_eq!(x86(f, "perf_event_open", z), EPERM);
        assert_eq!(x86(f, "reboot", z), EPERM);
        assert_eq!(x86(f, "init_module", z), EPERM);
        assert_eq!(x86(f, "finit_module", z), EPERM);
        assert_eq!(x86(f, "delete_module", z), EPERM);
        assert_eq!(x86(f, "kexec_load", z), EPERM);
        assert_eq!(x86(f, "kexec_file_load", z), EPERM);
        assert_eq!(x86(f, "open_by_handle_at", z), EPERM);
        assert_eq!(x86(f, "swapon", z), EPERM);
        assert_eq!(x86(f, "swapoff", z), EPERM);
        assert_eq!(x86(f, "ptrace", z), ALLOW); // kernel >= 4.8
        assert_eq!(x86(f, "clone3", z), ENOSYS);
        // clone: plain fork-style flags ok, any namespace flag denied
        let fork_flags =
            (libc::SIGCHLD | libc::CLONE_CHILD_SETTID | libc::CLONE_CHILD_CLEARTID) as u64;
        assert_eq!(x86(f, "clone", a0(fork_flags)), ALLOW);
        for ns in [
            libc::CLONE_NEWUSER,
            libc::CLONE_NEWNS,
            libc::CLONE_NEWNET,
            libc::CLONE_NEWPID,
        ] {
            assert_eq!(x86(f, "clone", a0(fork_flags | ns as u64)), EPERM);
        }
        // personality: only the safe values
        for ok in [0u64, 0x8, 0x20000, 0x20008, 0xffff_ffff] {
            assert_eq!(x86(f, "personality", a0(ok)), ALLOW, "{ok:#x}");
        }
        for bad in [0x0040000u64, 0x0400000, 0x1_0000_0000] {
            assert_eq!(x86(f, "personality", a0(bad)), EPERM, "{bad:#x}");
        }
        // socket: AF_INET ok, AF_ALG (38) and AF_VSOCK (40) denied
        assert_eq!(x86(f, "socket", a0(2)), ALLOW);
        assert_eq!(x86(f, "socket", a0(39)), ALLOW);
        assert_eq!(x86(f, "socket", a0(38)), EPERM);
        assert_eq!(x86(f, "socket", a0(40)), EPERM);
        // unknown / x32 numbers get the default action; foreign arch is killed
        assert_eq!(eval(f, AUDIT_ARCH_X86_64, 0x4000_0000 | 39, z), EPERM);
        assert_eq!(eval(f, AUDIT_ARCH_X86_64, 999, z), EPERM);
        assert_eq!(
            eval(f, 0x4000_0003 /* i386 */, 20, z),
            libc::SECCOMP_RET_KILL_PROCESS
        );
    }

    #[test]
    fn parses_both_profiles() {
        let ours = parse_profile("default", DEFAULT_PROFILE.as_bytes()).unwrap();
        assert_eq!(ours.default_action, "SCMP_ACT_ERRNO");
        assert_eq!(ours.default_errno_ret, Some(1));
        assert!(ours.syscalls.as_ref().unwrap().len() > 20);
        if let Some(d) = docker_profile() {
            let docker = parse_profile(DOCKER_FIXTURE, &d).unwrap();
            assert_eq!(docker.syscalls.unwrap().len(), ours.syscalls.unwrap().len());
        }
    }

    #[test]
    fn parse_errors_name_the_source() {
        let err = parse_profile("/etc/x.json", b"{\"defaultAction\": 3}").unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("/etc/x.json") && !msg.contains('\n'), "{msg}");
        let err = compile(
            br#"{"defaultAction":"SCMP_ACT_BOGUS"}"#,
            &defaults(),
            TargetArch::x86_64,
        )
        .unwrap_err();
        assert!(err.to_string().contains("SCMP_ACT_BOGUS"), "{err}");
        let bad_op = br#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"names":["read"],
            "action":"SCMP_ACT_ALLOW","args":[{"index":0,"value":1,"op":"SCMP_CMP_FOO"}]}]}"#;
        let err = compile(bad_op, &defaults(), TargetArch::x86_64).unwrap_err();
        assert!(
            err.to_string().contains("syscalls[0]") && err.to_string().contains("SCMP_CMP_FOO")
        );
    }

    #[test]
    fn default_profile_semantics() {
        let f = compile_k(
            DEFAULT_PROFILE.as_bytes(),
            &defaults(),
            TargetArch::x86_64,
            K,
        );
        assert_eq!(f.default_action, "SCMP_ACT_ERRNO(1)");
        assert_eq!(f.programs.len(), 2, "ENOSYS filter + default filter");
        assert!(f.rule_count > 300, "{}", f.rule_count);
        assert_eq!(
            f.bpf_instructions,
            f.programs.iter().map(Vec::len).sum::<usize>()
        );
        assert!(f.programs.iter().all(|p| p.len() < 4096));
        check_docker_semantics(&f);
    }

    #[test]
    fn docker_fixture_semantics_match() {
        let Some(d) = docker_profile() else { return };
        let theirs = compile_k(&d, &defaults(), TargetArch::x86_64, K);
        check_docker_semantics(&theirs);
        let ours = compile_k(
            DEFAULT_PROFILE.as_bytes(),
            &defaults(),
            TargetArch::x86_64,
            K,
        );
        assert_eq!(
            ours.programs, theirs.programs,
            "same BPF as Docker's profile"
        );
    }

    /// seccompiler's own layout (a linear chain of syscall numbers), the reference for the tree.
    fn linear_program(
        map: RuleMap,
        mismatch: SeccompAction,
        matched: SeccompAction,
        arch: TargetArch,
        _what: String,
    ) -> Result<BpfProgram, SecurityError> {
        let rules: BTreeMap<i64, Vec<SeccompRule>> = map
            .into_iter()
            .map(|(nr, r)| {
                let v = match r {
                    SyscallRules::Always => Vec::new(),
                    SyscallRules::When(v) => v,
                };
                (nr, v)
            })
            .collect();
        let filter = seccompiler::SeccompFilter::new(rules, mismatch, matched, arch).unwrap();
        Ok(BpfProgram::try_from(filter).unwrap())
    }

    /// The kernel's structural checks (net/core/filter.c, bpf_check_classic): every jump lands
    /// inside the program, including ones no input reaches, and the last instruction returns.
    fn assert_classic_bpf_valid(prog: &[sock_filter]) {
        let n = prog.len();
        for (pc, i) in prog.iter().enumerate() {
            if i.code == 0x05 {
                assert!(pc + 1 + (i.k as usize) < n, "ja at {pc} leaves the program");
            } else if i.code & 0x07 == 0x05 {
                let far = pc + 1 + i.jt.max(i.jf) as usize;
                assert!(far < n, "jump at {pc} leaves the program");
            }
        }
        assert_eq!(
            prog[n - 1].code & 0x07,
            0x06,
            "last instruction must be ret"
        );
    }

    /// The binary-search programs decide exactly like seccompiler's linear ones: every syscall
    /// number (and x32 and out-of-range ones), each with argument vectors that hit the
    /// conditional rules (clone flags, personality values, socket families) and random ones.
    #[test]
    fn tree_dispatch_matches_linear_chain() {
        let mut profiles = vec![("default", DEFAULT_PROFILE.as_bytes().to_vec())];
        if let Some(d) = docker_profile() {
            profiles.push(("docker fixture", d));
        }
        let all: CapsHashSet = ::caps::all();
        let mut arg_values: Vec<u64> = vec![
            0,
            1,
            8,
            16,
            0x0008,
            0x20000,
            0x20008,
            0xffff_ffff,
            libc::CLONE_NEWUSER as u64,
            libc::CLONE_NEWNS as u64,
            (libc::CLONE_NEWUSER | libc::CLONE_NEWNET) as u64,
            libc::AF_NETLINK as u64,
            libc::AF_INET as u64,
            libc::NETLINK_AUDIT as u64,
            u64::MAX,
            1 << 32,
        ];
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..8 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            arg_values.push(x);
        }
        let mut checked = 0;
        for (name, json) in &profiles {
            let p = parse_profile(name, json).unwrap();
            for caps in [defaults(), all.clone()] {
                for (arch, audit) in [
                    (TargetArch::x86_64, AUDIT_ARCH_X86_64),
                    (TargetArch::aarch64, AUDIT_ARCH_AARCH64),
                ] {
                    let tree = compile_profile(name, &p, &caps, arch, K).unwrap();
                    let linear =
                        compile_profile_with(name, &p, &caps, arch, K, linear_program).unwrap();
                    assert!(
                        tree.bpf_instructions * 3 < linear.bpf_instructions,
                        "{name}: tree {} vs linear {} instructions",
                        tree.bpf_instructions,
                        linear.bpf_instructions
                    );
                    for prog in &tree.programs {
                        assert_classic_bpf_valid(prog);
                    }
                    let nrs = (0..600i64).chain([0x4000_0000, 0x4000_0001, 0x4000_0200, -1]);
                    for nr in nrs {
                        for (i, &v) in arg_values.iter().enumerate() {
                            let mut args = [0u64; 6];
                            args[i % 6] = v;
                            args[(i + 1) % 6] = v.rotate_left(7);
                            for a in [audit, AUDIT_ARCH_X86_64 ^ 1] {
                                assert_eq!(
                                    eval(&tree, a, nr, args),
                                    eval(&linear, a, nr, args),
                                    "{name} {arch:?} nr {nr} args {args:?} arch {a:#x}"
                                );
                                checked += 1;
                            }
                        }
                    }
                }
            }
        }
        assert!(checked > 50_000, "{checked} cases");
    }

    #[test]
    fn includes_and_excludes_by_caps() {
        let j = DEFAULT_PROFILE.as_bytes();
        let z = [0u64; 6];
        let a0 = |v: u64| [v, 0, 0, 0, 0, 0];
        let admin = compile_k(j, &with(Capability::CAP_SYS_ADMIN), TargetArch::x86_64, K);
        assert_eq!(
            admin.programs.len(),
            1,
            "clone3 ENOSYS entry excluded by CAP_SYS_ADMIN"
        );
        assert_eq!(x86(&admin, "mount", z), ALLOW);
        assert_eq!(x86(&admin, "unshare", z), ALLOW);
        assert_eq!(x86(&admin, "clone3", z), ALLOW);
        assert_eq!(x86(&admin, "clone", a0(libc::CLONE_NEWUSER as u64)), ALLOW);
        assert_eq!(x86(&admin, "keyctl", z), EPERM, "never allowed");
        assert_eq!(x86(&admin, "reboot", z), EPERM);

        let boot = compile_k(j, &with(Capability::CAP_SYS_BOOT), TargetArch::x86_64, K);
        assert_eq!(x86(&boot, "reboot", z), ALLOW);
        assert_eq!(x86(&boot, "kexec_load", z), EPERM);
        let module = compile_k(j, &with(Capability::CAP_SYS_MODULE), TargetArch::x86_64, K);
        assert_eq!(x86(&module, "finit_module", z), ALLOW);
        let drs = compile_k(
            j,
            &with(Capability::CAP_DAC_READ_SEARCH),
            TargetArch::x86_64,
            K,
        );
        assert_eq!(x86(&drs, "open_by_handle_at", z), ALLOW);
        let none = compile_k(j, &CapsHashSet::new(), TargetArch::x86_64, K);
        assert_eq!(
            x86(&none, "chroot", z),
            EPERM,
            "chroot needs CAP_SYS_CHROOT"
        );
        assert_eq!(
            x86(
                &compile_k(j, &defaults(), TargetArch::x86_64, K),
                "chroot",
                z
            ),
            ALLOW
        );
    }

    #[test]
    fn includes_by_min_kernel_and_arch() {
        let j = DEFAULT_PROFILE.as_bytes();
        let z = [0u64; 6];
        let old = compile_k(j, &defaults(), TargetArch::x86_64, (4, 7, 10));
        assert_eq!(x86(&old, "ptrace", z), EPERM);
        let new = compile_k(j, &defaults(), TargetArch::x86_64, (4, 8, 0));
        assert_eq!(x86(&new, "ptrace", z), ALLOW);
        assert_eq!(x86(&new, "arch_prctl", z), ALLOW, "includes.arches amd64");
        // with CAP_SYS_PTRACE ptrace is allowed even on old kernels
        let old_ptrace = compile_k(
            j,
            &with(Capability::CAP_SYS_PTRACE),
            TargetArch::x86_64,
            (4, 7, 0),
        );
        assert_eq!(x86(&old_ptrace, "ptrace", z), ALLOW);
        assert_eq!(parse_kernel_version("6.18.44-fc-v782"), Some((6, 18, 44)));
        assert_eq!(parse_kernel_version("4.8"), Some((4, 8, 0)));
        assert_eq!(parse_kernel_version("x"), None);
    }

    #[test]
    fn aarch64_compiles() {
        let f = compile_k(
            DEFAULT_PROFILE.as_bytes(),
            &defaults(),
            TargetArch::aarch64,
            K,
        );
        let t = syscall_table(TargetArch::aarch64).unwrap();
        let z = [0u64; 6];
        assert_eq!(eval(&f, AUDIT_ARCH_AARCH64, t["getpid"], z), ALLOW);
        assert_eq!(eval(&f, AUDIT_ARCH_AARCH64, t["mount"], z), EPERM);
        assert_eq!(eval(&f, AUDIT_ARCH_AARCH64, t["clone3"], z), ENOSYS);
        assert_eq!(
            eval(&f, AUDIT_ARCH_X86_64, 39, z),
            libc::SECCOMP_RET_KILL_PROCESS
        );
        assert!(t.get("open").is_none(), "aarch64 has no open(2)");
        if let Some(d) = docker_profile() {
            compile_k(&d, &defaults(), TargetArch::aarch64, K);
        }
        assert!(compile(DEFAULT_PROFILE.as_bytes(), &defaults(), TargetArch::riscv64).is_err());
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn x86_64_table_matches_libc() {
        let t = syscall_table(TargetArch::x86_64).unwrap();
        assert_eq!(t["read"], libc::SYS_read);
        assert_eq!(t["clone3"], libc::SYS_clone3);
        assert_eq!(t["unshare"], libc::SYS_unshare);
        assert_eq!(t["keyctl"], libc::SYS_keyctl);
        assert_eq!(t["personality"], libc::SYS_personality);
        assert_eq!(t["file_setattr"], 469);
        assert!(t.len() > 370);
    }

    #[test]
    fn unknown_names_are_skipped() {
        let j = br#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[
            {"names":["getpid","no_such_syscall","socketcall"],"action":"SCMP_ACT_ALLOW",
             "comment":"socketcall does not exist on x86_64","someFutureField":{"x":1}}]}"#;
        let f = compile_k(j, &defaults(), TargetArch::x86_64, K);
        assert_eq!(f.rule_count, 1);
        assert_eq!(x86(&f, "getpid", [0; 6]), ALLOW);
        assert_eq!(
            x86(&f, "getppid", [0; 6]),
            EPERM,
            "errnoRet defaults to EPERM"
        );
    }

    #[test]
    fn multi_action_and_conditions() {
        // Deny-list profile with several actions, ANDed args and same-index OR.
        let j = br#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[
            {"names":["mkdir"],"action":"SCMP_ACT_ERRNO","errnoRet":13},
            {"names":["rmdir"],"action":"SCMP_ACT_ERRNO","errnoRet":30},
            {"names":["kill"],"action":"SCMP_ACT_ERRNO",
             "args":[{"index":0,"value":1,"op":"SCMP_CMP_EQ"},{"index":1,"value":9,"op":"SCMP_CMP_EQ"}]},
            {"names":["tkill"],"action":"SCMP_ACT_KILL_PROCESS",
             "args":[{"index":1,"value":9,"op":"SCMP_CMP_EQ"},{"index":1,"value":15,"op":"SCMP_CMP_EQ"}]},
            {"names":["getpid"],"action":"SCMP_ACT_ALLOW"}
        ]}"#;
        let f = compile_k(j, &defaults(), TargetArch::x86_64, K);
        // guard + ERRNO(13) + ERRNO(30) + ERRNO(1) + KILL_PROCESS; getpid entry skipped (= default)
        assert_eq!(f.programs.len(), 5);
        assert_eq!(f.rule_count, 4);
        let e = |n: u32| libc::SECCOMP_RET_ERRNO | n;
        assert_eq!(x86(&f, "mkdir", [0; 6]), e(13));
        assert_eq!(x86(&f, "rmdir", [0; 6]), e(30));
        assert_eq!(x86(&f, "kill", [1, 9, 0, 0, 0, 0]), e(1));
        assert_eq!(
            x86(&f, "kill", [1, 15, 0, 0, 0, 0]),
            ALLOW,
            "args are ANDed"
        );
        assert_eq!(x86(&f, "kill", [2, 9, 0, 0, 0, 0]), ALLOW);
        assert_eq!(
            x86(&f, "tkill", [5, 9, 0, 0, 0, 0]),
            libc::SECCOMP_RET_KILL_PROCESS
        );
        assert_eq!(
            x86(&f, "tkill", [5, 15, 0, 0, 0, 0]),
            libc::SECCOMP_RET_KILL_PROCESS
        );
        assert_eq!(x86(&f, "tkill", [5, 2, 0, 0, 0, 0]), ALLOW);
        assert_eq!(x86(&f, "getpid", [0; 6]), ALLOW);
        // x32 numbers cannot bypass the deny-list
        let mkdir = syscall_table(TargetArch::x86_64).unwrap()["mkdir"];
        assert_eq!(
            eval(&f, AUDIT_ARCH_X86_64, 0x4000_0000 | mkdir, [0; 6]),
            e(38)
        );

        // Overlap with equal action class: the earlier entry wins the tie.
        let j = br#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[
            {"names":["mkdir"],"action":"SCMP_ACT_ERRNO","errnoRet":13},
            {"names":["mkdir"],"action":"SCMP_ACT_ERRNO","errnoRet":30}]}"#;
        let f = compile_k(j, &defaults(), TargetArch::x86_64, K);
        assert_eq!(x86(&f, "mkdir", [0; 6]), e(13));
        // Overlap with different classes: the most restrictive wins.
        let j = br#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[
            {"names":["mkdir"],"action":"SCMP_ACT_ALLOW"},
            {"names":["mkdir"],"action":"SCMP_ACT_KILL_PROCESS","args":[{"index":1,"value":0,"op":"SCMP_CMP_EQ"}]}]}"#;
        let f = compile_k(j, &defaults(), TargetArch::x86_64, K);
        assert_eq!(x86(&f, "mkdir", [0, 0o755, 0, 0, 0, 0]), ALLOW);
        assert_eq!(x86(&f, "mkdir", [0; 6]), libc::SECCOMP_RET_KILL_PROCESS);
        assert_eq!(x86(&f, "rmdir", [0; 6]), EPERM);
    }

    // --- cache --------------------------------------------------------------

    fn temp_dir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("rcrun-sec-test-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn cache_miss_hit_and_corruption() {
        let dir = temp_dir("cache");
        let j = DEFAULT_PROFILE.as_bytes();
        let caps = defaults();
        let (f1, cached) = load_cached(&dir, j, &caps, TargetArch::x86_64).unwrap();
        assert!(!cached);
        let (f2, cached) = load_cached(&dir, j, &caps, TargetArch::x86_64).unwrap();
        assert!(cached);
        assert_eq!(f1, f2);
        assert_eq!(f2, compile(j, &caps, TargetArch::x86_64).unwrap());

        let key = cache_key(j, &caps, TargetArch::x86_64).unwrap();
        let path = cache_path(&dir, &key);
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let entries: Vec<_> = fs::read_dir(&dir).unwrap().collect();
        assert_eq!(entries.len(), 1, "no temp files left behind");

        // different caps / arch → different key → miss
        let (_, cached) = load_cached(
            &dir,
            j,
            &with(Capability::CAP_SYS_ADMIN),
            TargetArch::x86_64,
        )
        .unwrap();
        assert!(!cached);
        let (_, cached) = load_cached(&dir, j, &caps, TargetArch::aarch64).unwrap();
        assert!(!cached);

        // truncated → recompiled and rewritten
        let good = fs::read(&path).unwrap();
        fs::write(&path, &good[..good.len() / 2]).unwrap();
        let (f3, cached) = load_cached(&dir, j, &caps, TargetArch::x86_64).unwrap();
        assert!(!cached);
        assert_eq!(f3, f1);
        assert_eq!(fs::read(&path).unwrap(), good);
        // one flipped bit in a BPF instruction → recompiled
        let mut bad = good.clone();
        bad[200] ^= 0x01;
        fs::write(&path, &bad).unwrap();
        let (_, cached) = load_cached(&dir, j, &caps, TargetArch::x86_64).unwrap();
        assert!(!cached);
        // empty / garbage
        fs::write(&path, b"").unwrap();
        assert!(!load_cached(&dir, j, &caps, TargetArch::x86_64).unwrap().1);
        assert!(load_cached(&dir, j, &caps, TargetArch::x86_64).unwrap().1);
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn cache_unwritable_dir_still_compiles() {
        let dir = temp_dir("ro");
        fs::write(&dir, b"not a directory").unwrap();
        let (f, cached) = load_cached(
            &dir.join("sub"),
            DEFAULT_PROFILE.as_bytes(),
            &defaults(),
            TargetArch::x86_64,
        )
        .unwrap();
        assert!(!cached && !f.programs.is_empty());
        let err = write_atomic(&dir.join("sub/x"), b"x").unwrap_err();
        assert!(matches!(err, SecurityError::CacheWrite { .. }) && err.to_string().contains("sub"));
        let _ = fs::remove_file(&dir);
    }

    #[test]
    fn cache_key_inputs() {
        let c = defaults();
        let a = cache_key_with_release(b"p", &c, TargetArch::x86_64, "6.1");
        assert_eq!(
            a,
            cache_key_with_release(b"p", &c, TargetArch::x86_64, "6.1")
        );
        assert_ne!(
            a,
            cache_key_with_release(b"q", &c, TargetArch::x86_64, "6.1")
        );
        assert_ne!(
            a,
            cache_key_with_release(b"p", &c, TargetArch::aarch64, "6.1")
        );
        assert_ne!(
            a,
            cache_key_with_release(b"p", &c, TargetArch::x86_64, "6.2")
        );
        assert_ne!(
            a,
            cache_key_with_release(b"p", &with(Capability::CAP_BPF), TargetArch::x86_64, "6.1")
        );
        assert_eq!(a.len(), 64);
    }

    // --- real kernel: fork, install, probe -----------------------------------

    /// Fork; in the child set no_new_privs, install the precompiled filter,
    /// run `probe` and `_exit` with its result. Only async-signal-safe work
    /// happens in the child (prctl, seccomp, raw syscalls, open/read, _exit):
    /// the test process is multithreaded. Returns the child's exit code.
    #[cfg(target_arch = "x86_64")]
    fn in_filtered_child(filter: &CompiledFilter, probe: fn() -> i32) -> i32 {
        // SAFETY: see above; the child never returns into Rust test code.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            // SAFETY: integer-only prctl; `install` does no allocation; `_exit`
            // never returns.
            unsafe {
                if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
                    libc::_exit(200);
                }
                if install(filter).is_err() {
                    libc::_exit(201);
                }
                libc::_exit(probe());
            }
        }
        let mut status = 0;
        // SAFETY: waiting for our own child with a valid status pointer.
        let rc = unsafe { libc::waitpid(pid, &mut status, 0) };
        assert_eq!(rc, pid);
        assert!(libc::WIFEXITED(status), "child died: status {status:#x}");
        libc::WEXITSTATUS(status)
    }

    /// Raw syscall with integer arguments; 0 on success, else the errno.
    /// Callers in this module pass only integers or NULL (0) pointers.
    fn sys(nr: libc::c_long, a: [libc::c_long; 5]) -> i32 {
        // SAFETY: all arguments are plain integers / NULL pointers, which the
        // kernel validates (EFAULT at worst); nothing in our memory is written.
        let rc = unsafe { libc::syscall(nr, a[0], a[1], a[2], a[3], a[4]) };
        if rc >= 0 {
            0
        } else {
            std::io::Error::last_os_error()
                .raw_os_error()
                .unwrap_or(255)
        }
    }

    /// /proc/self/status contains "Seccomp:\t2", using only open/read/close.
    fn seccomp_mode_is_filter() -> i32 {
        let mut buf = [0u8; 4096];
        // SAFETY: NUL-terminated path literal; `buf` is valid for `buf.len()`
        // bytes; the fd is closed before returning.
        let n = unsafe {
            let fd = libc::open(c"/proc/self/status".as_ptr(), libc::O_RDONLY);
            if fd < 0 {
                return 102;
            }
            let n = libc::read(fd, buf.as_mut_ptr().cast(), buf.len());
            libc::close(fd);
            n
        };
        if n <= 0 {
            return 103;
        }
        let needle = b"\nSeccomp:\t2\n";
        if buf[..n as usize].windows(needle.len()).any(|w| w == needle) {
            0
        } else {
            104
        }
    }

    /// (label, probe run in the filtered child, expected exit code / errno)
    type Probe = (&'static str, fn() -> i32, i32);

    /// Arguments are chosen so that, even if the filter let a call through,
    /// it would fail harmlessly (bad fd, NULL pointers) or affect only the
    /// throwaway child.
    #[cfg(target_arch = "x86_64")]
    fn probes() -> Vec<Probe> {
        use libc::{SYS_personality as PERS, EPERM as P};
        vec![
            ("getpid", || sys(libc::SYS_getpid, [0; 5]), 0),
            (
                "unshare(CLONE_NEWUSER)",
                || {
                    sys(
                        libc::SYS_unshare,
                        [libc::CLONE_NEWUSER as libc::c_long, 0, 0, 0, 0],
                    )
                },
                P,
            ),
            (
                "mount(NULL,NULL,NULL,0,NULL)",
                || sys(libc::SYS_mount, [0; 5]),
                P,
            ),
            (
                "clone3(NULL,0)",
                || sys(libc::SYS_clone3, [0; 5]),
                libc::ENOSYS,
            ),
            ("keyctl(0)", || sys(libc::SYS_keyctl, [0; 5]), P),
            ("setns(-1,0)", || sys(libc::SYS_setns, [-1, 0, 0, 0, 0]), P),
            (
                "personality(0xffffffff)",
                || sys(PERS, [0xffff_ffff, 0, 0, 0, 0]),
                0,
            ),
            (
                "personality(ADDR_NO_RANDOMIZE)",
                || sys(PERS, [0x0040000, 0, 0, 0, 0]),
                P,
            ),
            ("Seccomp: 2", seccomp_mode_is_filter, 0),
        ]
    }

    #[cfg(target_arch = "x86_64")]
    fn check_in_kernel(profile: &[u8]) {
        let f = compile(profile, &defaults(), TargetArch::x86_64).unwrap();
        for (name, probe, want) in probes() {
            let got = in_filtered_child(&f, probe);
            assert_eq!(got, want, "{name}: got {got}, want {want}");
        }
        // Sanity check of the probes themselves under an allow-all profile
        // (which compiles to just the x32 guard on x86_64, so "Seccomp: 2"
        // still holds): setns(-1) gives EBADF and clone3(NULL, 0) EINVAL,
        // i.e. the answers above really came from the filter.
        let allow_all = compile(
            br#"{"defaultAction":"SCMP_ACT_ALLOW"}"#,
            &defaults(),
            TargetArch::x86_64,
        )
        .unwrap();
        assert_eq!(allow_all.programs.len(), 1);
        assert_eq!(in_filtered_child(&allow_all, seccomp_mode_is_filter), 0);
        let setns = || sys(libc::SYS_setns, [-1, 0, 0, 0, 0]);
        assert_eq!(in_filtered_child(&allow_all, setns), libc::EBADF);
        let clone3 = || sys(libc::SYS_clone3, [0; 5]);
        assert_eq!(in_filtered_child(&allow_all, clone3), libc::EINVAL);
        let pers = || sys(libc::SYS_personality, [0x0040000, 0, 0, 0, 0]);
        assert_eq!(in_filtered_child(&allow_all, pers), 0);
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn kernel_enforces_default_profile() {
        check_in_kernel(DEFAULT_PROFILE.as_bytes());
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn kernel_enforces_docker_fixture() {
        if let Some(d) = docker_profile() {
            check_in_kernel(&d);
        }
    }
}
