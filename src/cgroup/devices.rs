//! The device policy: which device nodes a container may create (mknod) and open.
//!
//! Container root keeps CAP_MKNOD (as in Docker), so without a policy it could make a node for
//! the host's disk (`b 8:0`) or kernel log (`c 1:11`) and open it. The policy is the OCI runtime
//! spec's default (and Docker's): deny everything, allow `m` on every node, and `rwm` on the few
//! harmless ones. It is expressed two ways, from the same rules:
//!
//! * cgroup v1: `devices.deny` / `devices.allow` lines ([`v1_writes`],
//!   Documentation/admin-guide/cgroup-v1/devices.rst);
//! * cgroup v2: an eBPF program of type `BPF_PROG_TYPE_CGROUP_DEVICE` ([`bpf_program`]), attached
//!   to the container's cgroup, as crun and youki do (runc's `devicefilter` is the model).
//!
//! # Semantics ([`decide`])
//! As the v1 kernel list and runc: a default (initially deny) and a list of exceptions. A rule of
//! kind `a` with `*:*` and `rwm` resets: default := its verdict, exceptions cleared. Every other
//! rule is appended. A request (kind c or b, major, minor, access bits) is matched against the
//! exceptions from the last to the first: an **allow** rule matches when its kind is `a` or the
//! same, its major/minor equal or `*`, and the requested access ⊆ its access; a **deny** rule
//! matches on kind/major/minor and any overlap of access. The first match decides; else the
//! default.

use std::fmt::Write as _;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeviceKind {
    /// `a`: every kind.
    All,
    /// `c`
    Char,
    /// `b`
    Block,
}

impl DeviceKind {
    fn letter(self) -> char {
        match self {
            DeviceKind::All => 'a',
            DeviceKind::Char => 'c',
            DeviceKind::Block => 'b',
        }
    }
}

/// Access bits: read, write, mknod.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct Access {
    pub read: bool,
    pub write: bool,
    pub mknod: bool,
}

impl Access {
    pub const RWM: Access = Access {
        read: true,
        write: true,
        mknod: true,
    };
    pub const M: Access = Access {
        read: false,
        write: false,
        mknod: true,
    };

    /// `r`, `w`, `m` in any order, each at most once; empty is an error.
    pub fn parse(s: &str) -> Result<Access, DeviceRuleError> {
        let bad = || DeviceRuleError::BadAccess {
            value: s.to_string(),
        };
        let mut a = Access::default();
        for c in s.chars() {
            let bit = match c {
                'r' => &mut a.read,
                'w' => &mut a.write,
                'm' => &mut a.mknod,
                _ => return Err(bad()),
            };
            if *bit {
                return Err(bad());
            }
            *bit = true;
        }
        if a == Access::default() {
            return Err(bad());
        }
        Ok(a)
    }

    /// Canonical text, `rwm` order.
    pub fn as_text(&self) -> String {
        let mut s = String::new();
        if self.read {
            s.push('r');
        }
        if self.write {
            s.push('w');
        }
        if self.mknod {
            s.push('m');
        }
        s
    }

    /// The BPF_DEVCG_ACC_* bits (include/uapi/linux/bpf.h): MKNOD 1, READ 2, WRITE 4.
    pub fn bits(&self) -> u32 {
        (self.mknod as u32) | (self.read as u32) << 1 | (self.write as u32) << 2
    }

    pub fn from_bits(bits: u32) -> Access {
        Access {
            mknod: bits & 1 != 0,
            read: bits & 2 != 0,
            write: bits & 4 != 0,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceRule {
    pub allow: bool,
    pub kind: DeviceKind,
    /// None = `*`.
    pub major: Option<u32>,
    /// None = `*`.
    pub minor: Option<u32>,
    pub access: Access,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DeviceRuleError {
    #[error("invalid device permissions {value:?}: use a combination of r (read), w (write) and m (mknod), each once")]
    BadAccess { value: String },
}

/// Device names for narration (Documentation/admin-guide/devices.txt).
fn well_known(kind: DeviceKind, major: u32, minor: Option<u32>) -> Option<&'static str> {
    Some(match (kind, major, minor) {
        (DeviceKind::Char, 1, Some(3)) => "null",
        (DeviceKind::Char, 1, Some(5)) => "zero",
        (DeviceKind::Char, 1, Some(7)) => "full",
        (DeviceKind::Char, 1, Some(8)) => "random",
        (DeviceKind::Char, 1, Some(9)) => "urandom",
        (DeviceKind::Char, 1, Some(11)) => "kmsg",
        (DeviceKind::Char, 5, Some(0)) => "tty",
        (DeviceKind::Char, 5, Some(1)) => "console",
        (DeviceKind::Char, 5, Some(2)) => "ptmx",
        (DeviceKind::Char, 136, None) => "pts/*",
        (DeviceKind::Char, 10, Some(200)) => "net/tun",
        (DeviceKind::Char, 10, Some(229)) => "fuse",
        _ => return None,
    })
}

impl DeviceRule {
    pub fn allow(
        kind: DeviceKind,
        major: Option<u32>,
        minor: Option<u32>,
        access: Access,
    ) -> DeviceRule {
        DeviceRule {
            allow: true,
            kind,
            major,
            minor,
            access,
        }
    }

    pub fn deny(
        kind: DeviceKind,
        major: Option<u32>,
        minor: Option<u32>,
        access: Access,
    ) -> DeviceRule {
        DeviceRule {
            allow: false,
            ..DeviceRule::allow(kind, major, minor, access)
        }
    }

    /// The all-devices rule (`a *:* rwm`), which resets the list.
    fn is_reset(&self) -> bool {
        self.kind == DeviceKind::All
            && self.major.is_none()
            && self.minor.is_none()
            && self.access == Access::RWM
    }

    /// The cgroup v1 line: `a` for the all-devices rule, else e.g. `c 1:3 rwm`, `b *:* m`.
    pub fn v1_line(&self) -> String {
        if self.is_reset() {
            return "a".into();
        }
        let num = |n: Option<u32>| n.map_or("*".to_string(), |n| n.to_string());
        format!(
            "{} {}:{} {}",
            self.kind.letter(),
            num(self.major),
            num(self.minor),
            self.access.as_text()
        )
    }

    /// For --explain: `allow c 1:3 rwm (null)`.
    pub fn describe(&self) -> String {
        let verdict = if self.allow { "allow" } else { "deny" };
        let line = if self.is_reset() {
            "a (every device)".to_string()
        } else {
            self.v1_line()
        };
        match self
            .major
            .and_then(|major| well_known(self.kind, major, self.minor))
        {
            Some(name) => format!("{verdict} {line} ({name})"),
            None => format!("{verdict} {line}"),
        }
    }

    fn matches(&self, kind: DeviceKind, major: u32, minor: u32, access: Access) -> bool {
        let kind_ok = self.kind == DeviceKind::All || self.kind == kind;
        let num_ok = |want: Option<u32>, got: u32| want.is_none_or(|w| w == got);
        let req = access.bits();
        let mine = self.access.bits();
        let access_ok = if self.allow {
            req & !mine == 0
        } else {
            req & mine != 0
        };
        kind_ok && num_ok(self.major, major) && num_ok(self.minor, minor) && access_ok
    }
}

/// The OCI / Docker default: deny everything; `m` on every char and block node; `rwm` on null,
/// zero, full, random, urandom, tty, console, ptmx and every pts.
pub fn oci_default_rules() -> Vec<DeviceRule> {
    use DeviceKind::{All, Block, Char};
    let mut v = vec![
        DeviceRule::deny(All, None, None, Access::RWM),
        DeviceRule::allow(Char, None, None, Access::M),
        DeviceRule::allow(Block, None, None, Access::M),
    ];
    for (major, minor) in [
        (1, 3),
        (1, 5),
        (1, 7),
        (1, 8),
        (1, 9),
        (5, 0),
        (5, 1),
        (5, 2),
    ] {
        v.push(DeviceRule::allow(
            Char,
            Some(major),
            Some(minor),
            Access::RWM,
        ));
    }
    v.push(DeviceRule::allow(Char, Some(136), None, Access::RWM));
    v
}

/// `--privileged`: every device.
pub fn allow_all_rules() -> Vec<DeviceRule> {
    vec![DeviceRule::allow(DeviceKind::All, None, None, Access::RWM)]
}

/// The cgroup v1 writes in order: (file, line).
pub fn v1_writes(rules: &[DeviceRule]) -> Vec<(&'static str, String)> {
    rules
        .iter()
        .map(|r| {
            (
                if r.allow {
                    "devices.allow"
                } else {
                    "devices.deny"
                },
                r.v1_line(),
            )
        })
        .collect()
}

/// The default verdict and the exceptions after applying the reset rules.
fn effective(rules: &[DeviceRule]) -> (bool, Vec<&DeviceRule>) {
    let mut default = false;
    let mut exceptions = Vec::new();
    for r in rules {
        if r.is_reset() {
            default = r.allow;
            exceptions.clear();
        } else {
            exceptions.push(r);
        }
    }
    (default, exceptions)
}

/// What the rules decide for one access (`kind` is Char or Block).
pub fn decide(
    rules: &[DeviceRule],
    kind: DeviceKind,
    major: u32,
    minor: u32,
    access: Access,
) -> bool {
    let (default, exceptions) = effective(rules);
    exceptions
        .iter()
        .rev()
        .find(|r| r.matches(kind, major, minor, access))
        .map_or(default, |r| r.allow)
}

/// One eBPF instruction (the kernel's `struct bpf_insn`, defined with the bpf(2) calls).
pub use crate::sys::bpf::BpfInsn;

/// The opcodes used here (include/uapi/linux/bpf_common.h, bpf.h).
pub mod op {
    pub const LDX_MEM_W: u8 = 0x61; // BPF_LDX | BPF_MEM | BPF_W
    pub const ALU_AND_K: u8 = 0x54; // BPF_ALU | BPF_AND | BPF_K (32-bit, zero-extends)
    pub const ALU_RSH_K: u8 = 0x74; // BPF_ALU | BPF_RSH | BPF_K
    pub const ALU_MOV_K: u8 = 0xb4; // BPF_ALU | BPF_MOV | BPF_K
    pub const ALU_MOV_X: u8 = 0xbc; // BPF_ALU | BPF_MOV | BPF_X
    pub const JMP_JEQ_K: u8 = 0x15; // BPF_JMP | BPF_JEQ | BPF_K
    pub const JMP_JNE_K: u8 = 0x55; // BPF_JMP | BPF_JNE | BPF_K
    pub const JMP_JNE_X: u8 = 0x5d; // BPF_JMP | BPF_JNE | BPF_X
    pub const JMP_EXIT: u8 = 0x95; // BPF_JMP | BPF_EXIT
}

/// `struct bpf_cgroup_dev_ctx` offsets and `BPF_DEVCG_DEV_*` types (include/uapi/linux/bpf.h).
pub mod ctx {
    pub const ACCESS_TYPE: i16 = 0;
    pub const MAJOR: i16 = 4;
    pub const MINOR: i16 = 8;
    pub const DEV_BLOCK: i32 = 1;
    pub const DEV_CHAR: i32 = 2;
}

fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> BpfInsn {
    BpfInsn {
        code,
        regs: (src << 4) | (dst & 0x0f),
        off,
        imm,
    }
}

/// A BPF_PROG_TYPE_CGROUP_DEVICE program whose verdict is [`decide`]'s for every input.
///
/// ```text
///   r2 = ctx.access_type & 0xffff     type (1 block, 2 char)
///   r3 = ctx.access_type >> 16        requested access bits
///   r4 = ctx.major;  r5 = ctx.minor
///   per exception, last rule first:   a block that jumps to the next block on any mismatch
///     if r2 != TYPE goto next         (absent for kind a)
///     r1 = r3; r1 &= ~ACC; if r1 != 0 goto next     allow: requested ⊆ ACC
///     r1 = r3; r1 &= ACC;  if r1 == 0 goto next     deny:  requested ∩ ACC ≠ ∅
///     if r4 != MAJOR goto next        (absent for *)
///     if r5 != MINOR goto next        (absent for *)
///     r0 = VERDICT; exit
///   r0 = DEFAULT; exit
/// ```
/// Only forward jumps; the verifier sees a loop-free program that reads only the context.
pub fn bpf_program(rules: &[DeviceRule]) -> Vec<BpfInsn> {
    use op::*;
    let (default, exceptions) = effective(rules);
    let mut p = vec![
        insn(LDX_MEM_W, 2, 1, ctx::ACCESS_TYPE, 0),
        insn(ALU_AND_K, 2, 0, 0, 0xffff),
        insn(LDX_MEM_W, 3, 1, ctx::ACCESS_TYPE, 0),
        insn(ALU_RSH_K, 3, 0, 0, 16),
        insn(LDX_MEM_W, 4, 1, ctx::MAJOR, 0),
        insn(LDX_MEM_W, 5, 1, ctx::MINOR, 0),
    ];
    for r in exceptions.iter().rev() {
        // The block is built with placeholder jump offsets, fixed once its length is known.
        let mut block: Vec<BpfInsn> = Vec::new();
        let mut jumps = Vec::new();
        match r.kind {
            DeviceKind::All => {}
            DeviceKind::Char | DeviceKind::Block => {
                let t = if r.kind == DeviceKind::Char {
                    ctx::DEV_CHAR
                } else {
                    ctx::DEV_BLOCK
                };
                jumps.push(block.len());
                block.push(insn(JMP_JNE_K, 2, 0, 0, t));
            }
        }
        let acc = r.access.bits() as i32;
        block.push(insn(ALU_MOV_X, 1, 3, 0, 0));
        if r.allow {
            block.push(insn(ALU_AND_K, 1, 0, 0, !acc & 7));
            jumps.push(block.len());
            block.push(insn(JMP_JNE_K, 1, 0, 0, 0));
        } else {
            block.push(insn(ALU_AND_K, 1, 0, 0, acc));
            jumps.push(block.len());
            block.push(insn(JMP_JEQ_K, 1, 0, 0, 0));
        }
        for (reg, number) in [(4, r.major), (5, r.minor)] {
            let Some(n) = number else { continue };
            if n <= i32::MAX as u32 {
                jumps.push(block.len());
                block.push(insn(JMP_JNE_K, reg, 0, 0, n as i32));
            } else {
                // A K operand is sign-extended to 64 bits; the loaded field is zero-extended.
                // Above i32::MAX, compare with a register the 32-bit move zero-extends.
                block.push(insn(ALU_MOV_K, 6, 0, 0, n as i32));
                jumps.push(block.len());
                block.push(insn(JMP_JNE_X, reg, 6, 0, 0));
            }
        }
        block.push(insn(ALU_MOV_K, 0, 0, 0, r.allow as i32));
        block.push(insn(JMP_EXIT, 0, 0, 0, 0));
        let len = block.len();
        for j in jumps {
            // A jump lands at pc + off + 1: the first instruction after this block.
            block[j].off = (len - j - 1) as i16;
        }
        p.extend(block);
    }
    p.push(insn(op::ALU_MOV_K, 0, 0, 0, default as i32));
    p.push(insn(op::JMP_EXIT, 0, 0, 0, 0));
    p
}

/// The program as readable assembly (for --explain -v and test failures).
pub fn disassemble(p: &[BpfInsn]) -> String {
    let mut out = String::new();
    for (i, x) in p.iter().enumerate() {
        let (dst, src) = (x.regs & 0xf, x.regs >> 4);
        let text = match x.code {
            op::LDX_MEM_W => format!("r{dst} = *(u32 *)(r{src} + {})", x.off),
            op::ALU_AND_K => format!("w{dst} &= {:#x}", x.imm),
            op::ALU_RSH_K => format!("w{dst} >>= {}", x.imm),
            op::ALU_MOV_K => format!("w{dst} = {}", x.imm),
            op::ALU_MOV_X => format!("w{dst} = w{src}"),
            op::JMP_JEQ_K => format!("if r{dst} == {} goto +{}", x.imm, x.off),
            op::JMP_JNE_K => format!("if r{dst} != {} goto +{}", x.imm, x.off),
            op::JMP_JNE_X => format!("if r{dst} != r{src} goto +{}", x.off),
            op::JMP_EXIT => "exit".into(),
            c => format!("?? code {c:#x}"),
        };
        let _ = writeln!(out, "{i:4}: {text}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use DeviceKind::{All, Block, Char};

    /// Runs a program of the subset [`bpf_program`] emits on one context, checking on the way
    /// what the kernel verifier would refuse: unknown opcodes, backward or out-of-range jumps,
    /// reads of anything but the context's three u32 fields, reads of unset registers, falling
    /// off the end.
    fn run(p: &[BpfInsn], access_type: u32, major: u32, minor: u32) -> Result<u64, String> {
        let mut r = [None::<u64>; 11];
        r[1] = Some(u64::MAX); // the context pointer (only used as a base for loads)
        let mut pc = 0usize;
        let mut steps = 0;
        loop {
            steps += 1;
            if steps > 100_000 {
                return Err("does not terminate".into());
            }
            let x = p.get(pc).ok_or(format!("fell off the end at {pc}"))?;
            let (dst, src) = ((x.regs & 0xf) as usize, (x.regs >> 4) as usize);
            let get = |r: &[Option<u64>; 11], i: usize| {
                r[i].ok_or(format!("r{i} read before set at {pc}"))
            };
            let jump = |off: i16| -> Result<usize, String> {
                if off < 0 {
                    return Err(format!("backward jump at {pc}"));
                }
                let t = pc + 1 + off as usize;
                if t >= p.len() {
                    return Err(format!("jump out of range at {pc}"));
                }
                Ok(t)
            };
            match x.code {
                op::LDX_MEM_W => {
                    if src != 1 || r[1] != Some(u64::MAX) {
                        return Err(format!("load through a non-context register at {pc}"));
                    }
                    r[dst] = Some(match x.off {
                        ctx::ACCESS_TYPE => access_type,
                        ctx::MAJOR => major,
                        ctx::MINOR => minor,
                        o => return Err(format!("context read at offset {o} at {pc}")),
                    } as u64);
                }
                op::ALU_AND_K => r[dst] = Some((get(&r, dst)? as u32 & x.imm as u32) as u64),
                op::ALU_RSH_K => r[dst] = Some(((get(&r, dst)? as u32) >> x.imm) as u64),
                op::ALU_MOV_K => r[dst] = Some(x.imm as u32 as u64),
                op::ALU_MOV_X => r[dst] = Some(get(&r, src)? as u32 as u64),
                op::JMP_JEQ_K | op::JMP_JNE_K => {
                    // 64-bit compare with the sign-extended immediate.
                    let eq = get(&r, dst)? == x.imm as i64 as u64;
                    if eq == (x.code == op::JMP_JEQ_K) {
                        pc = jump(x.off)?;
                        continue;
                    }
                }
                op::JMP_JNE_X => {
                    if get(&r, dst)? != get(&r, src)? {
                        pc = jump(x.off)?;
                        continue;
                    }
                }
                op::JMP_EXIT => return get(&r, 0),
                c => return Err(format!("unknown opcode {c:#x} at {pc}")),
            }
            pc += 1;
        }
    }

    fn custom_sets() -> Vec<(&'static str, Vec<DeviceRule>)> {
        let mut with_devices = oci_default_rules();
        with_devices.push(DeviceRule::allow(Char, Some(10), Some(200), Access::RWM));
        with_devices.push(DeviceRule::allow(
            Char,
            Some(1),
            Some(11),
            Access::parse("w").unwrap(),
        ));
        with_devices.push(DeviceRule::allow(
            Block,
            Some(8),
            None,
            Access::parse("r").unwrap(),
        ));
        let mut deny_after_allow = allow_all_rules();
        deny_after_allow.push(DeviceRule::deny(
            Char,
            Some(1),
            Some(11),
            Access::parse("w").unwrap(),
        ));
        deny_after_allow.push(DeviceRule::deny(Block, None, None, Access::RWM));
        deny_after_allow.push(DeviceRule::allow(
            Block,
            Some(7),
            None,
            Access::parse("rm").unwrap(),
        ));
        let big_numbers = vec![
            DeviceRule::deny(All, None, None, Access::RWM),
            DeviceRule::allow(Char, Some(u32::MAX), Some(3), Access::RWM),
            DeviceRule::allow(Char, Some(1), Some(1 << 31), Access::RWM),
        ];
        let reset_midway = vec![
            DeviceRule::allow(Char, Some(1), Some(1), Access::RWM),
            DeviceRule::deny(All, None, None, Access::RWM),
            DeviceRule::allow(All, Some(4), None, Access::parse("mr").unwrap()),
        ];
        vec![
            ("default", oci_default_rules()),
            ("privileged", allow_all_rules()),
            ("default + devices", with_devices),
            ("allow all, then denies", deny_after_allow),
            ("reset midway", reset_midway),
            ("numbers above i32::MAX", big_numbers),
            ("empty", vec![]),
        ]
    }

    #[test]
    fn default_rules_are_the_oci_set() {
        let lines: Vec<String> = v1_writes(&oci_default_rules())
            .into_iter()
            .map(|(f, l)| format!("{f} {l}"))
            .collect();
        assert_eq!(
            lines,
            [
                "devices.deny a",
                "devices.allow c *:* m",
                "devices.allow b *:* m",
                "devices.allow c 1:3 rwm",
                "devices.allow c 1:5 rwm",
                "devices.allow c 1:7 rwm",
                "devices.allow c 1:8 rwm",
                "devices.allow c 1:9 rwm",
                "devices.allow c 5:0 rwm",
                "devices.allow c 5:1 rwm",
                "devices.allow c 5:2 rwm",
                "devices.allow c 136:* rwm",
            ]
        );
        assert_eq!(
            v1_writes(&allow_all_rules()),
            [("devices.allow", "a".to_string())]
        );
        assert_eq!(oci_default_rules()[3].describe(), "allow c 1:3 rwm (null)");
        assert_eq!(oci_default_rules()[0].describe(), "deny a (every device)");
        let rw = Access::parse("rw").unwrap();
        let d = oci_default_rules();
        assert!(decide(&d, Char, 1, 3, rw) && decide(&d, Char, 136, 7, rw));
        assert!(
            !decide(&d, Char, 1, 11, rw) && !decide(&d, Block, 8, 0, Access::parse("r").unwrap())
        );
        assert!(decide(&d, Block, 8, 0, Access::M) && decide(&d, Char, 1, 11, Access::M));
    }

    #[test]
    fn access_text() {
        assert_eq!(Access::parse("mwr").unwrap().as_text(), "rwm");
        assert_eq!(
            Access::parse("w").unwrap(),
            Access {
                write: true,
                ..Default::default()
            }
        );
        for bad in ["", "rr", "x", "rwmx", "R"] {
            assert_eq!(
                Access::parse(bad),
                Err(DeviceRuleError::BadAccess { value: bad.into() }),
                "{bad:?}"
            );
        }
        for bits in 1..8 {
            assert_eq!(Access::from_bits(bits).bits(), bits);
        }
    }

    /// The program and `decide` agree on every type × access × a sample of numbers, for every
    /// rule set; the program passes the structural checks on the way.
    #[test]
    fn program_equals_decide() {
        for (name, rules) in custom_sets() {
            let p = bpf_program(&rules);
            let mut numbers = vec![
                0u32,
                1,
                2,
                3,
                4,
                5,
                7,
                8,
                9,
                11,
                136,
                200,
                237,
                4095,
                1 << 20,
                u32::MAX,
            ];
            for r in &rules {
                for n in [r.major, r.minor].into_iter().flatten() {
                    numbers.extend([n.saturating_sub(1), n, n.saturating_add(1)]);
                }
            }
            for (kind, t) in [(Block, ctx::DEV_BLOCK), (Char, ctx::DEV_CHAR)] {
                for bits in 1..8u32 {
                    for &major in &numbers {
                        for &minor in &numbers {
                            let want = decide(&rules, kind, major, minor, Access::from_bits(bits));
                            let got = run(&p, (bits << 16) | t as u32, major, minor)
                                .unwrap_or_else(|e| panic!("{name}: {e}\n{}", disassemble(&p)));
                            assert_eq!(
                                got,
                                want as u64,
                                "{name}: {kind:?} {major}:{minor} {}\n{}",
                                Access::from_bits(bits).as_text(),
                                disassemble(&p)
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn program_shape() {
        let p = bpf_program(&oci_default_rules());
        assert_eq!(p.last().unwrap().code, op::JMP_EXIT);
        // Default verdict deny, right before the final exit.
        assert_eq!(p[p.len() - 2], insn(op::ALU_MOV_K, 0, 0, 0, 0));
        // The privileged program allows without looking.
        let all = bpf_program(&allow_all_rules());
        assert_eq!(all.len(), 8);
        assert!(p.len() < 4096);
    }

    /// As real root: the kernel's verifier accepts the default program.
    #[test]
    fn kernel_loads_the_default_program() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("SKIP: loading a BPF program needs root");
            return;
        }
        match crate::sys::bpf::load_device_program(&bpf_program(&oci_default_rules())) {
            Ok(_) => {}
            Err(crate::sys::bpf::BpfError::Load {
                source: nix::errno::Errno::EPERM,
                ..
            }) => {
                eprintln!("SKIP: BPF_PROG_LOAD refused with EPERM (no CAP_BPF/CAP_SYS_ADMIN here)")
            }
            Err(e) => panic!("{e}\n{}", disassemble(&bpf_program(&oci_default_rules()))),
        }
    }
}
