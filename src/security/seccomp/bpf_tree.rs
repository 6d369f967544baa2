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
