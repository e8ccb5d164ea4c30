//! The syscall filter of every function process: a deny list of what functions never need,
//! answered with EPERM, on top of an unprivileged uid without capabilities.
//!
//! `clone` with a namespace flag is refused too, and `clone3` answers ENOSYS (its flags are
//! behind a pointer a filter cannot read), so libc falls back to `clone`, as container
//! runtimes do.

use std::collections::BTreeMap;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

/// Syscalls refused with EPERM.
const DENIED: &[i64] = &[
    libc::SYS_mount,
    libc::SYS_umount2,
    libc::SYS_pivot_root,
    libc::SYS_chroot,
    libc::SYS_move_mount,
    libc::SYS_open_tree,
    libc::SYS_fsopen,
    libc::SYS_fsconfig,
    libc::SYS_fsmount,
    libc::SYS_fspick,
    libc::SYS_mount_setattr,
    libc::SYS_kexec_load,
    libc::SYS_kexec_file_load,
    libc::SYS_init_module,
    libc::SYS_finit_module,
    libc::SYS_delete_module,
    libc::SYS_ptrace,
    libc::SYS_process_vm_readv,
    libc::SYS_process_vm_writev,
    libc::SYS_kcmp,
    libc::SYS_bpf,
    libc::SYS_perf_event_open,
    libc::SYS_keyctl,
    libc::SYS_add_key,
    libc::SYS_request_key,
    libc::SYS_unshare,
    libc::SYS_setns,
    libc::SYS_reboot,
    libc::SYS_swapon,
    libc::SYS_swapoff,
    libc::SYS_acct,
    libc::SYS_settimeofday,
    libc::SYS_clock_settime,
    libc::SYS_clock_adjtime,
    libc::SYS_adjtimex,
    libc::SYS_sethostname,
    libc::SYS_setdomainname,
    libc::SYS_syslog,
    libc::SYS_quotactl,
    libc::SYS_open_by_handle_at,
    libc::SYS_name_to_handle_at,
    libc::SYS_userfaultfd,
    libc::SYS_vhangup,
    libc::SYS_lookup_dcookie,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_iopl,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_ioperm,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_uselib,
];

/// Namespace flags `clone` may not carry.
const NAMESPACE_FLAGS: &[i32] = &[
    libc::CLONE_NEWNS,
    libc::CLONE_NEWUTS,
    libc::CLONE_NEWIPC,
    libc::CLONE_NEWUSER,
    libc::CLONE_NEWPID,
    libc::CLONE_NEWNET,
    libc::CLONE_NEWCGROUP,
];

/// Why the filter could not be built or installed.
#[derive(Debug, thiserror::Error)]
#[error("seccomp: {0}")]
pub struct SeccompError(String);

/// The compiled filters, built once per init and installed in each function process.
pub struct Filters {
    programs: Vec<BpfProgram>,
}

impl Filters {
    /// Compiles the deny list for this machine's architecture.
    pub fn compile() -> Result<Self, SeccompError> {
        let arch = target_arch()?;
        let err = |e: seccompiler::BackendError| SeccompError(e.to_string());
        let mut denied: BTreeMap<i64, Vec<SeccompRule>> =
            DENIED.iter().map(|&nr| (nr, Vec::new())).collect();
        let clone_rules = NAMESPACE_FLAGS
            .iter()
            .map(|&flag| {
                let flag = flag as u64;
                SeccompCondition::new(
                    0,
                    SeccompCmpArgLen::Qword,
                    SeccompCmpOp::MaskedEq(flag),
                    flag,
                )
                .and_then(|condition| SeccompRule::new(vec![condition]))
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(err)?;
        denied.insert(libc::SYS_clone, clone_rules);
        let eperm = SeccompFilter::new(
            denied,
            SeccompAction::Allow,
            SeccompAction::Errno(libc::EPERM as u32),
            arch,
        )
        .map_err(err)?;
        let enosys = SeccompFilter::new(
            BTreeMap::from([(libc::SYS_clone3, Vec::new())]),
            SeccompAction::Allow,
            SeccompAction::Errno(libc::ENOSYS as u32),
            arch,
        )
        .map_err(err)?;
        let programs = [eperm, enosys]
            .into_iter()
            .map(|filter| BpfProgram::try_from(filter).map_err(err))
            .collect::<Result<_, _>>()?;
        Ok(Self { programs })
    }

    /// Installs the filters in the calling process (after `no_new_privs` is set).
    pub fn install(&self) -> Result<(), SeccompError> {
        for program in &self.programs {
            seccompiler::apply_filter(program).map_err(|e| SeccompError(e.to_string()))?;
        }
        Ok(())
    }
}

fn target_arch() -> Result<TargetArch, SeccompError> {
    if cfg!(target_arch = "x86_64") {
        Ok(TargetArch::x86_64)
    } else if cfg!(target_arch = "aarch64") {
        Ok(TargetArch::aarch64)
    } else {
        Err(SeccompError(format!(
            "no filter for the {} architecture",
            std::env::consts::ARCH
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_filters_compile() {
        let filters = Filters::compile().unwrap();
        assert_eq!(filters.programs.len(), 2);
        assert!(filters.programs[0].len() > DENIED.len());
    }

    #[test]
    fn installed_filters_refuse_what_they_list_and_allow_the_rest() {
        // In a child process, so the test process keeps its syscalls.
        let filters = Filters::compile().unwrap();
        // SAFETY: the child only makes raw syscalls and exits; it does not return into the
        // test harness or touch locks other threads may hold.
        match unsafe { nix::unistd::fork() }.unwrap() {
            nix::unistd::ForkResult::Child => {
                let code = (|| {
                    nix::sys::prctl::set_no_new_privs().ok()?;
                    filters.install().ok()?;
                    // SAFETY: plain syscalls with valid (null/empty) arguments.
                    let unshare = unsafe { libc::unshare(libc::CLONE_NEWUTS) };
                    let unshare_errno = std::io::Error::last_os_error().raw_os_error();
                    // SAFETY: as above.
                    let clone3 = unsafe { libc::syscall(libc::SYS_clone3, 0, 0) };
                    let clone3_errno = std::io::Error::last_os_error().raw_os_error();
                    // SAFETY: as above.
                    let pid = unsafe { libc::getpid() };
                    Some(
                        unshare == -1
                            && unshare_errno == Some(libc::EPERM)
                            && clone3 == -1
                            && clone3_errno == Some(libc::ENOSYS)
                            && pid > 0,
                    )
                })();
                // SAFETY: ends the child without running the parent's destructors.
                unsafe { libc::_exit(if code == Some(true) { 0 } else { 1 }) }
            }
            nix::unistd::ForkResult::Parent { child } => {
                let status = nix::sys::wait::waitpid(child, None).unwrap();
                assert_eq!(status, nix::sys::wait::WaitStatus::Exited(child, 0));
            }
        }
    }
}
