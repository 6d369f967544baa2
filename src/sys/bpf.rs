//! bpf(2) for the cgroup v2 device policy: load a `BPF_PROG_TYPE_CGROUP_DEVICE` program and
//! attach it to a cgroup directory. The program itself is built (and tested) in
//! `cgroup::devices`; this file only hands it to the kernel.

use nix::errno::Errno;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

/// One eBPF instruction, `struct bpf_insn` (include/uapi/linux/bpf.h).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BpfInsn {
    pub code: u8,
    /// dst_reg in the low nibble, src_reg in the high one (little-endian bitfields).
    pub regs: u8,
    pub off: i16,
    pub imm: i32,
}

/// include/uapi/linux/bpf.h
const BPF_PROG_LOAD: libc::c_int = 5;
const BPF_PROG_ATTACH: libc::c_int = 8;
const BPF_PROG_TYPE_CGROUP_DEVICE: u32 = 15;
const BPF_CGROUP_DEVICE: u32 = 6;
/// Several programs may sit on one cgroup (and its ancestors'): each must allow an access.
const BPF_F_ALLOW_MULTI: u32 = 2;

#[derive(Debug, thiserror::Error)]
pub enum BpfError {
    #[error("bpf(BPF_PROG_LOAD) of the device program ({insns} instructions): {source}{}", if log.is_empty() { String::new() } else { format!("; verifier: {}", log.trim()) })]
    Load {
        source: Errno,
        insns: usize,
        log: String,
    },
    #[error("open cgroup {path}: {source}")]
    Open { path: PathBuf, source: Errno },
    #[error("bpf(BPF_PROG_ATTACH, BPF_CGROUP_DEVICE) to {path}: {source}")]
    Attach { path: PathBuf, source: Errno },
}

/// The part of `union bpf_attr` that BPF_PROG_LOAD reads, up to `expected_attach_type`.
#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

/// The part of `union bpf_attr` that BPF_PROG_ATTACH reads.
#[repr(C)]
#[derive(Default)]
struct ProgAttachAttr {
    target_fd: u32,
    attach_bpf_fd: u32,
    attach_type: u32,
    attach_flags: u32,
    replace_bpf_fd: u32,
}

fn bpf<T>(cmd: libc::c_int, attr: &mut T) -> Result<libc::c_long, Errno> {
    // SAFETY: bpf(2) with a pointer to a properly laid out, zero-padded attribute struct of the
    // size passed; the kernel reads (and for the log, writes) only within the buffers it names.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *mut T,
            std::mem::size_of::<T>() as libc::c_uint,
        )
    };
    Errno::result(rc)
}

/// Loads a cgroup device program; the fd is close-on-exec (the kernel sets O_CLOEXEC on bpf
/// fds). A failure is retried once with a log buffer, so the error carries the verifier's words.
pub fn load_device_program(insns: &[BpfInsn]) -> Result<OwnedFd, BpfError> {
    let license = c"Apache-2.0";
    let mut name = [0u8; 16];
    name[..12].copy_from_slice(b"rcrun_device");
    let attr = |log: &mut Vec<u8>| ProgLoadAttr {
        prog_type: BPF_PROG_TYPE_CGROUP_DEVICE,
        insn_cnt: insns.len() as u32,
        insns: insns.as_ptr() as u64,
        license: license.as_ptr() as u64,
        log_level: if log.is_empty() { 0 } else { 1 },
        log_size: log.len() as u32,
        log_buf: if log.is_empty() {
            0
        } else {
            log.as_mut_ptr() as u64
        },
        prog_name: name,
        expected_attach_type: BPF_CGROUP_DEVICE,
        ..Default::default()
    };
    let mut no_log = Vec::new();
    let first = bpf(BPF_PROG_LOAD, &mut attr(&mut no_log));
    let fd = match first {
        Ok(fd) => fd,
        Err(e) => {
            let mut log = vec![0u8; 64 * 1024];
            let again = bpf(BPF_PROG_LOAD, &mut attr(&mut log));
            match again {
                Ok(fd) => fd,
                Err(_) => {
                    let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
                    return Err(BpfError::Load {
                        source: e,
                        insns: insns.len(),
                        log: String::from_utf8_lossy(&log[..end]).into_owned(),
                    });
                }
            }
        }
    };
    // SAFETY: BPF_PROG_LOAD returned a new fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Attaches `prog` to the cgroup v2 directory open as `cgroup_dir`.
pub fn attach_device_program(
    cgroup_dir: BorrowedFd<'_>,
    prog: BorrowedFd<'_>,
) -> Result<(), Errno> {
    let mut attr = ProgAttachAttr {
        target_fd: cgroup_dir.as_raw_fd() as u32,
        attach_bpf_fd: prog.as_raw_fd() as u32,
        attach_type: BPF_CGROUP_DEVICE,
        attach_flags: BPF_F_ALLOW_MULTI,
        replace_bpf_fd: 0,
    };
    bpf(BPF_PROG_ATTACH, &mut attr).map(drop)
}

/// Loads the program and attaches it to the cgroup at `dir`. It stays attached when the fds
/// close (the cgroup holds a reference) and goes when the cgroup is removed.
pub fn apply_device_policy(dir: &Path, insns: &[BpfInsn]) -> Result<(), BpfError> {
    let prog = load_device_program(insns)?;
    let cg = nix::fcntl::open(
        dir,
        nix::fcntl::OFlag::O_DIRECTORY | nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(|source| BpfError::Open {
        path: dir.to_path_buf(),
        source,
    })?;
    attach_device_program(cg.as_fd(), prog.as_fd()).map_err(|source| BpfError::Attach {
        path: dir.to_path_buf(),
        source,
    })
}
