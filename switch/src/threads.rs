//! The CPU priority of the switch's maintenance threads.
//!
//! On a machine with few cores, the work that keeps the switch's state small and durable
//! (writing a snapshot, moving older answers to disk, rebuilding or growing the filter of the
//! keys on disk, fjall's flushes and compactions) takes whole cores for seconds at a time.
//! At the same priority as the request path, the scheduler gives it an equal share, and
//! answers fall behind while it runs. It runs at a lower priority ([`MAINTENANCE_NICE`]): it
//! takes the CPU the request path leaves, and all of it when the request path is idle.
//!
//! Only work that can wait, and that holds nothing the request path waits for, gets it. A
//! shard's store thread and its reads from disk stay at the request path's priority: a shard
//! waits for them. So do fjall's workers, at a smaller step ([`DEFERRABLE_NICE`]): a store
//! thread waits for their flushes (fjall halts writes when they fall behind, and a store
//! thread that takes nothing for 30 s stops the switch). The snapshotter lowers only its
//! copy and its write ([`run_lowered`]), not the store's sync and settling, which hold
//! fjall's journal lock that every store thread's write takes.
//!
//! The steps are relative to the process's own nice value (a service started at `Nice=-5`
//! runs its maintenance at 5), capped at 19. Linux only (a thread's nice value is its own
//! there); elsewhere nothing changes. Raising a nice value needs no privilege; where it fails
//! anyway, the thread keeps its priority and a warning says so.

/// How far below the request path maintenance runs, in nice steps. At 10 a thread's weight is
/// about a tenth of the request path's: it gets about 10% of a core that both want.
pub const MAINTENANCE_NICE: i32 = 10;

/// The step for work with a deadline or that others may wait for (the answers' spill before
/// an early rotation, cancelled if it is not done in time; fjall's flushes and compactions):
/// about a third of the weight of the request path.
pub const DEFERRABLE_NICE: i32 = 5;

/// Runs the calling thread `step` nice steps below the process (logged as `what`), unless it
/// already runs that low: this never raises a priority.
pub fn lower_this_thread(what: &str, step: i32) {
    #[cfg(target_os = "linux")]
    lower(rustix::thread::gettid(), what, step);
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (what, step);
    }
}

/// Runs `work` on a thread of its own, `step` nice steps below the process, and returns what
/// it returns: for a part of a thread's work that can wait, where the rest must not (a lowered
/// thread cannot raise itself back). Runs it on the calling thread if no thread can be had.
pub fn run_lowered<T: Send>(what: &str, step: i32, work: impl FnOnce() -> T + Send) -> T {
    let work = std::sync::Mutex::new(Some(work));
    let run = || {
        let taken = work.lock().unwrap_or_else(|e| e.into_inner()).take();
        taken.map(|work| work())
    };
    let done = std::thread::scope(|scope| {
        let spawned = std::thread::Builder::new()
            .name(what.to_owned())
            .spawn_scoped(scope, || {
                lower_this_thread(what, step);
                run()
            });
        // A panic of the work is the caller's, as if it had run here.
        spawned.ok().map(|thread| {
            thread
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    });
    if let Some(Some(result)) = done {
        return result;
    }
    tracing::warn!(
        thread = what,
        "cannot start a thread of lower priority: the work runs at the caller's"
    );
    match run() {
        Some(result) => result,
        // The work is taken once, by whichever runs it, and a thread that ran it returned.
        None => unreachable!("{what}: the work was taken and not done"),
    }
}

/// The nice value `step` steps below the process's own (its main thread's), capped at 19.
#[cfg(target_os = "linux")]
fn target_nice(step: i32) -> Option<i32> {
    let main = rustix::process::getpid();
    let base = rustix::process::getpriority_process(Some(main)).ok()?;
    Some(base.saturating_add(step).min(19))
}

/// Sets thread `tid`'s nice value `step` steps below the process's if it runs higher; whether
/// it runs that low now.
#[cfg(target_os = "linux")]
fn lower(tid: rustix::process::Pid, what: &str, step: i32) -> bool {
    let current = rustix::process::getpriority_process(Some(tid));
    let (Some(nice), Ok(current)) = (target_nice(step), current) else {
        tracing::warn!(
            thread = what,
            "cannot read a thread's priority: it keeps the request path's"
        );
        return false;
    };
    if current >= nice {
        return true;
    }
    match rustix::process::setpriority_process(Some(tid), nice) {
        Ok(()) => true,
        Err(error) => {
            tracing::warn!(thread = what, %error, "cannot lower the priority of a maintenance thread: it competes with the request path");
            false
        }
    }
}

/// Runs every thread of this process named `name` (as `/proc` shows it, 15 bytes at most)
/// `step` nice steps below the process (never raising one): for threads a library starts.
/// Returns how many run that low now.
pub fn lower_threads_named(name: &str, step: i32) -> usize {
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
                && lower(tid, name, step)
            {
                lowered += 1;
            }
        }
        lowered
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (name, step);
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

    /// What a thread at `before` runs at once lowered by `step`.
    fn expected(before: i32, step: i32) -> i32 {
        let process = nice_of(rustix::process::getpid().as_raw_nonzero().get());
        before.max((process + step).min(19))
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
        assert_eq!(lowered, expected(before, MAINTENANCE_NICE));
        assert_eq!(
            this_threads_nice().unwrap(),
            before,
            "the caller is unchanged"
        );
    }

    #[test]
    fn work_run_lowered_returns_its_result_and_leaves_the_caller_as_it_was() {
        let before = this_threads_nice().unwrap();
        let caller = std::thread::current().id();
        let borrowed = [1, 2, 3];
        let (sum, nice, thread) = run_lowered("lowered-work", DEFERRABLE_NICE, || {
            (
                borrowed.iter().sum::<i32>(),
                this_threads_nice().unwrap(),
                std::thread::current().id(),
            )
        });
        assert_eq!(sum, 6);
        assert_eq!(nice, expected(before, DEFERRABLE_NICE));
        assert_ne!(thread, caller, "on a thread of its own");
        assert_eq!(
            this_threads_nice().unwrap(),
            before,
            "the caller is unchanged"
        );
        let panicked = std::panic::catch_unwind(|| run_lowered("lowered-panic", 1, || panic!("x")));
        assert!(panicked.is_err(), "a panic of the work is the caller's");
    }

    #[test]
    fn a_thread_is_named_in_at_most_15_bytes() {
        let name = std::thread::spawn(|| {
            name_this_thread("shard-12345678é-long");
            let tid = rustix::thread::gettid().as_raw_nonzero().get();
            std::fs::read_to_string(format!("/proc/self/task/{tid}/comm")).unwrap()
        })
        .join()
        .unwrap();
        // 'é' takes bytes 15 and 16: cut before it, not through it.
        assert_eq!(name.trim_end(), "shard-12345678");
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
        assert_eq!(nice_of(tid), expected(before, DEFERRABLE_NICE));
        assert_eq!(lower_threads_named("no-such-thread", DEFERRABLE_NICE), 0);
        stop.send(()).unwrap();
        worker.join().unwrap();
    }
}
