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
//! Argument comparisons are as wide as the kernel reads the argument ([`arg_width`]): 32 bits
//! for `int` parameters such as socket's family, 64 otherwise (libseccomp compares all 64).
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
pub const DEFAULT_PROFILE: &str = include_str!("../../../configs/seccomp.json");

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

fn parse_condition(syscall: &str, arg: &ArgCondition) -> Result<SeccompCondition, String> {
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
    let (len, op, value) = match arg_width::width(syscall, index) {
        arg_width::ArgWidth::Full64 => (SeccompCmpArgLen::Qword, op, value),
        arg_width::ArgWidth::Low32 => {
            // seccompiler's Dword form loads and compares only the low word (it would silently
            // drop higher bits of the value, so values are checked here first).
            let narrow = |v: u64, what: &str| {
                arg_width::low32_value(v).ok_or_else(|| {
                    format!(
                        "{syscall} argument {index} is 32 bits wide in the kernel, but the {what} {v:#x} has bits above 32 that the kernel never reads"
                    )
                })
            };
            let op = match op {
                // Bits of the mask above 32 select nothing the kernel reads.
                SeccompCmpOp::MaskedEq(mask) => SeccompCmpOp::MaskedEq(mask & 0xffff_ffff),
                other => other,
            };
            (SeccompCmpArgLen::Dword, op, narrow(value, "value")?)
        }
    };
    SeccompCondition::new(index, len, op, value).map_err(|e| e.to_string())
}

/// The argument part of one entry for one of its syscalls (argument widths differ between
/// syscalls): `None` = unconditional, otherwise ORed rules each made of ANDed conditions.
fn entry_rules(entry: &SyscallEntry, syscall: &str) -> Result<Option<Vec<SeccompRule>>, String> {
    let args = match &entry.args {
        Some(a) if !a.is_empty() => a,
        _ => return Ok(None),
    };
    let conditions = args
        .iter()
        .map(|a| parse_condition(syscall, a))
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

pub mod arg_width;
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
mod bpf_tree;

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
            let rules =
                entry_rules(entry, name).map_err(|r| invalid(format!("syscalls[{i}]: {r}")))?;
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

/// Install the programs on the calling thread, in order (see
/// [`crate::sys::seccomp::install_programs`]: no_new_privs or CAP_SYS_ADMIN first, and last
/// before execve(2)). Async-signal-safe on success.
pub fn install(filter: &CompiledFilter) -> Result<(), SecurityError> {
    crate::sys::seccomp::install_programs(&filter.programs).map_err(|(i, source)| {
        SecurityError::Install {
            index: i + 1,
            total: filter.programs.len(),
            source,
        }
    })
}

mod cache;
#[cfg(test)]
use cache::*;
pub use cache::{cache_key, load_cached};

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

mod tables;

#[cfg(test)]
mod tests;
