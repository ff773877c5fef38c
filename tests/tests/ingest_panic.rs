//! A panic anywhere in rollcall-ingest ends the process with status 101 (so systemd's
//! `Restart=on-failure` restarts it), with the panic's message kept. The check runs
//! [`rollcall_ingest::exit_on_panic`], which `main` calls first, in a child process (this test
//! binary started again on the ignored test below): a panic inside a tokio task on a worker
//! thread, which tokio would otherwise catch while the process carries on and exits 0.

use std::process::Command;

const CHILD: &str = "ROLLCALL_INGEST_PANIC_CHILD";

#[test]
fn a_panic_in_a_tokio_task_ends_the_process_with_status_101() {
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "panicking_task_under_exit_on_panic",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD, "1")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(101), "stderr: {stderr}");
    assert!(stderr.contains("a writer task gave up"), "{stderr}");
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("runtime carried on"),
        "the process went on after the panic"
    );
}

#[test]
#[ignore = "the child process of a_panic_in_a_tokio_task_ends_the_process_with_status_101"]
fn panicking_task_under_exit_on_panic() {
    assert_eq!(
        std::env::var(CHILD).as_deref(),
        Ok("1"),
        "run by its parent test only"
    );
    rollcall_ingest::exit_on_panic();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let task = tokio::spawn(async { panic!("a writer task gave up") });
        let _ = task.await;
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    });
    println!("runtime carried on");
}
