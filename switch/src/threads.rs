//! The CPU priority of the switch's maintenance threads.
//!
//! On a machine with few cores, the work that keeps the switch's state small and durable
//! (writing a snapshot, moving older answers to disk, rebuilding or growing the filter of the
//! keys on disk, fjall's flushes and compactions) takes whole cores for seconds at a time.
//! At the same priority as the request path, the scheduler gives it an equal share, and
//! answers fall behind while it runs. It runs at a lower priority ([`MAINTENANCE_NICE`]): it
//! takes the CPU the request path leaves, and all of it when the request path is idle.
//!
//! Only threads whose work can wait get it. A shard's store thread and its reads from disk
//! stay at the request path's priority: a shard waits for them.
//!
//! Linux only (a thread's nice value is its own there); elsewhere nothing changes. Raising a
//! nice value needs no privilege; where it fails anyway, the thread keeps its priority and
//! a warning says so.

/// The nice value of maintenance threads (the request path runs at 0). At 10 a thread's
/// weight is about a tenth of one at 0: it gets about 10% of a core that both want.
pub const MAINTENANCE_NICE: i32 = 10;

/// The nice value of work with a deadline that is still not urgent (the answers' spill before
/// an early rotation, which is cancelled if it is not done in time): about a third of the
/// weight of the request path.
pub const DEFERRABLE_NICE: i32 = 5;

/// Runs the calling thread at `nice` (logged as `what`), unless it already runs at that or
/// lower: this never raises a priority.
pub fn lower_this_thread(what: &str, nice: i32) {
    #[cfg(target_os = "linux")]
    lower(rustix::thread::gettid(), what, nice);
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (what, nice);
    }
}

/// Sets thread `tid`'s nice value to `nice` if it is below it; whether it runs at `nice` or
/// lower now.
#[cfg(target_os = "linux")]
fn lower(tid: rustix::process::Pid, what: &str, nice: i32) -> bool {
    match rustix::process::getpriority_process(Some(tid)) {
        Ok(current) if current >= nice => return true,
        Ok(_) => {}
        // Gone meanwhile, or not ours to read: nothing to lower.
        Err(_) => return false,
    }
    match rustix::process::setpriority_process(Some(tid), nice) {
        Ok(()) => true,
        Err(error) => {
            tracing::warn!(thread = what, %error, "cannot lower the priority of a maintenance thread: it competes with the request path");
            false
        }
    }
}

/// Runs every thread of this process named `name` (as `/proc` shows it, 15 bytes at most) at
/// `nice` or lower (never raising one): for threads a library starts. Returns how many run at
/// `nice` or lower now.
pub fn lower_threads_named(name: &str, nice: i32) -> usize {
    #[cfg(target_os = "linux")]
    {
        let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
            return 0;
        };
        let mut lowered = 0;
        for task in tasks.flatten() {
            let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
            if comm.trim_end() != name {
                continue;
            }
            let tid = task
                .file_name()
                .to_str()
                .and_then(|t| t.parse::<i32>().ok())
                .and_then(rustix::process::Pid::from_raw);
            if let Some(tid) = tid
                && lower(tid, name, nice)
            {
                lowered += 1;
            }
        }
        lowered
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (name, nice);
        0
    }
}

/// Names the calling thread `name` as the system shows it (`top -H`, `perf`, `/proc`): the first
/// 15 bytes. Actix's arbiters all show as `actix-rt|system` otherwise.
pub fn name_this_thread(name: &str) {
    #[cfg(target_os = "linux")]
    {
        let mut end = name.len().min(15);
        while !name.is_char_boundary(end) {
            end -= 1;
        }
        let Ok(name) = std::ffi::CString::new(&name[..end]) else {
            return;
        };
        // Only a name: a failure changes nothing else.
        let _ = rustix::thread::set_name(&name);
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = name;
    }
}

/// The nice value of the calling thread (None where it cannot be read).
pub fn this_threads_nice() -> Option<i32> {
    #[cfg(target_os = "linux")]
    {
        rustix::process::getpriority_process(Some(rustix::thread::gettid())).ok()
    }
    #[cfg(not(target_os = "linux"))]
    {
        None
    }
}

#[cfg(test)]
#[cfg(target_os = "linux")]
mod tests {
    use super::*;

    fn nice_of(tid: i32) -> i32 {
        let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).unwrap();
        // Field 19 is the nice value; the name (field 2) may hold spaces, so count after ')'.
        let after = &stat[stat.rfind(')').unwrap() + 2..];
        after.split(' ').nth(16).unwrap().parse().unwrap()
    }

    #[test]
    fn a_thread_lowers_only_itself() {
        let before = this_threads_nice().unwrap();
        let lowered = std::thread::spawn(|| {
            lower_this_thread("test", MAINTENANCE_NICE);
            this_threads_nice().unwrap()
        })
        .join()
        .unwrap();
        assert_eq!(lowered, before.max(MAINTENANCE_NICE));
        assert_eq!(
            this_threads_nice().unwrap(),
            before,
            "the caller is unchanged"
        );
    }

    #[test]
    fn a_thread_is_named_in_at_most_15_bytes() {
        let name = std::thread::spawn(|| {
            name_this_thread("shard-123456789é-long");
            let tid = rustix::thread::gettid().as_raw_nonzero().get();
            std::fs::read_to_string(format!("/proc/self/task/{tid}/comm")).unwrap()
        })
        .join()
        .unwrap();
        assert_eq!(name.trim_end(), "shard-123456789");
    }

    #[test]
    fn threads_are_found_by_name() {
        let (ready, wait) = std::sync::mpsc::channel();
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let worker = std::thread::Builder::new()
            .name("nice-probe".into())
            .spawn(move || {
                ready
                    .send(rustix::thread::gettid().as_raw_nonzero().get())
                    .unwrap();
                let _ = stopped.recv();
            })
            .unwrap();
        let tid = wait.recv().unwrap();
        let before = nice_of(tid);
        assert_eq!(lower_threads_named("nice-probe", DEFERRABLE_NICE), 1);
        assert_eq!(nice_of(tid), before.max(DEFERRABLE_NICE));
        assert_eq!(lower_threads_named("no-such-thread", DEFERRABLE_NICE), 0);
        stop.send(()).unwrap();
        worker.join().unwrap();
    }
}
