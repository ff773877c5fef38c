//! A panic anywhere ends rollcalld with a non-zero status.
//!
//! tokio catches a panic inside a spawned task and only reports it to whoever awaits the task's
//! handle, and a panicking thread (the journal's) just ends: either way rollcalld would go on
//! running with a part missing, and exit 0 later, so systemd's `Restart=on-failure` would not
//! restart it. [`install`] keeps the default hook's message (and backtrace) and then exits with
//! [`EXIT_STATUS`], the status Rust uses for a panic on the main thread. Unacked punches are
//! safe: every accepted one is already committed to the journal.
//!
//! The few places that deliberately turn a library's panic into an error (redb's checks on a
//! damaged file) use [`catch`], which the hook lets unwind.

use std::cell::Cell;

/// The exit status after a panic.
pub const EXIT_STATUS: i32 = 101;

thread_local! {
    static CATCHING: Cell<u32> = const { Cell::new(0) };
}

/// Installs the hook: print as Rust does, then exit the whole process with [`EXIT_STATUS`],
/// unless the panic happens inside [`catch`] on this thread.
pub fn install() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        default(info);
        if CATCHING.with(Cell::get) == 0 {
            std::process::exit(EXIT_STATUS);
        }
    }));
}

/// Runs `f`, turning a panic in it into `Err` instead of ending the process.
pub fn catch<R>(f: impl FnOnce() -> R) -> std::thread::Result<R> {
    CATCHING.with(|c| c.set(c.get() + 1));
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    CATCHING.with(|c| c.set(c.get() - 1));
    result
}

#[cfg(test)]
mod tests {
    use std::process::Command;

    /// Runs this test binary again with only `test` selected and `ROLLCALL_PANIC_CHILD` set,
    /// so the child installs the hook in a process of its own.
    fn run_child(test: &str, mode: &str) -> std::process::Output {
        Command::new(std::env::current_exe().expect("test binary"))
            .args(["--exact", test, "--nocapture", "--test-threads", "1"])
            .env("ROLLCALL_PANIC_CHILD", mode)
            .output()
            .expect("run the test binary")
    }

    fn child_mode() -> Option<String> {
        std::env::var("ROLLCALL_PANIC_CHILD").ok()
    }

    #[test]
    fn a_panic_in_a_tokio_task_ends_the_process_with_status_101() {
        if child_mode().as_deref() == Some("task") {
            super::install();
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async {
                // Nobody awaits the handle: without the hook the panic would go unnoticed.
                drop(tokio::spawn(async { panic!("a bug in a task") }));
                tokio::time::sleep(std::time::Duration::from_secs(10)).await;
            });
            // Reaching this means the panic was swallowed.
            std::process::exit(0);
        }
        let out = run_child(
            "panic::tests::a_panic_in_a_tokio_task_ends_the_process_with_status_101",
            "task",
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(super::EXIT_STATUS), "{stderr}");
        assert!(
            stderr.contains("a bug in a task"),
            "the default message is kept: {stderr}"
        );
    }

    #[test]
    fn a_panic_inside_catch_is_an_error_not_an_exit() {
        if child_mode().as_deref() == Some("catch") {
            super::install();
            let caught = super::catch(|| -> u32 { panic!("a damaged file") });
            let after = super::catch(|| 7);
            std::process::exit(if caught.is_err() && after.ok() == Some(7) {
                3
            } else {
                4
            });
        }
        let out = run_child(
            "panic::tests::a_panic_inside_catch_is_an_error_not_an_exit",
            "catch",
        );
        assert_eq!(
            out.status.code(),
            Some(3),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
