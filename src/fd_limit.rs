//! The process's open-file limit: every TCP/TLS/HTTP connection takes a descriptor, and a
//! systemd unit starts with a soft limit of 1,024 however high the hard limit is. The
//! server raises the soft limit to the hard one at start and logs the figure it runs with.

/// Raises the soft `RLIMIT_NOFILE` to the hard limit; returns the soft limit in force
/// afterwards (unchanged if raising failed), or an error when it cannot even be read.
pub fn raise_to_hard() -> std::io::Result<u64> {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit only read or write the struct we pass.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    if lim.rlim_cur < lim.rlim_max {
        let raised = libc::rlimit { rlim_cur: lim.rlim_max, rlim_max: lim.rlim_max };
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            lim = raised;
        } else {
            tracing::warn!("cannot raise the open-file limit: {}", std::io::Error::last_os_error());
        }
    }
    Ok(lim.rlim_cur)
}
