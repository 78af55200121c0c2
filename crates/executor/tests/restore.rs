//! Live restore: the process holding the executor is SIGKILLed while tasks run; a new executor
//! re-attaches, learns the exit that happened while it was down, cleans up a dead shim, and
//! stops everything.
//!
//! The executor to kill runs in a child process: this test binary re-executed with
//! `PLUGIND_EXECUTOR_CHILD` set, running `child_executor` which starts the tasks, prints
//! `READY <id> <pid>` lines and sleeps.

mod common;

use std::{
    io::{BufRead, BufReader},
    path::PathBuf,
    process::{Command, Stdio},
    time::Duration,
};

use common::{next_event, Env};
use plugind_executor::{CreateTask, Executor, RestoreOutcome, Runtimes, TaskEvent, TaskStatus};

const CHILD_ENV: &str = "PLUGIND_EXECUTOR_CHILD";
const NAMES: [&str; 4] = ["long1", "long2", "short", "dead"];

/// Child mode: `<exec root>|<namespace>|<bundles dir>` in the environment.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "helper of restore_after_sigkill_of_executor; needs root, runc and containerd-shim-runc-v2"]
async fn child_executor() {
    let Ok(arg) = std::env::var(CHILD_ENV) else {
        // Run directly (e.g. with --include-ignored) it has nothing to do; the parent test
        // below runs it in child mode.
        return;
    };
    let parts: Vec<&str> = arg.split('|').collect();
    let (root, ns, bundles) = (PathBuf::from(parts[0]), parts[1], PathBuf::from(parts[2]));
    let mut config = plugind_executor::ExecutorConfig::new(&root, ns);
    config.shim_binary = PathBuf::from(common::SHIM);
    let (ex, _rx) = common::executor_at(&config, &Runtimes::runc()).await;
    for name in NAMES {
        let bundle = bundles.join(name);
        let st = ex
            .create(CreateTask {
                id: name.to_owned(),
                bundle,
                runtime: None,
            })
            .await
            .expect("create in child");
        println!("READY {name} {}", st.pid);
    }
    println!("ALL-READY");
    std::future::pending::<()>().await;
}

/// Kills the child executor if the test fails before it does.
struct ChildGuard(std::process::Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs root, runc and containerd-shim-runc-v2"]
async fn restore_after_sigkill_of_executor() {
    let env = Env::new();
    // Fixed ids inside a unique namespace and exec root.
    for name in NAMES {
        env.bundle(
            name,
            &[
                "/bin/busybox",
                "sh",
                "-c",
                "echo started; exec /bin/busybox sleep 1000",
            ],
            |_| {},
        );
    }
    // long1 keeps writing, to show its output is drained again after re-attach.
    env.bundle(
        "long1",
        &[
            "/bin/busybox",
            "sh",
            "-c",
            "while true; do echo tick; /bin/busybox usleep 20000; done",
        ],
        |_| {},
    );
    let arg = format!(
        "{}|{}|{}",
        env.exec_root().display(),
        env.namespace,
        env.bundles().display()
    );
    let mut child = ChildGuard(
        Command::new(std::env::current_exe().expect("test binary"))
            .args([
                "--exact",
                "child_executor",
                "--include-ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, arg)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn child"),
    );
    let child = &mut child.0;
    let mut pids = std::collections::HashMap::new();
    for line in BufReader::new(child.stdout.take().expect("stdout")).lines() {
        let line = line.expect("child output");
        // libtest may print its "test child_executor ... " prefix on the same line.
        if line.contains("ALL-READY") {
            break;
        }
        if let Some(rest) = line.find("READY ").map(|i| &line[i + 6..]) {
            let (name, pid) = rest.split_once(' ').expect("READY line");
            pids.insert(name.to_owned(), pid.parse::<u32>().expect("pid"));
        }
    }
    assert_eq!(
        pids.len(),
        NAMES.len(),
        "child did not start every task: {pids:?}"
    );
    let sockets: Vec<PathBuf> = NAMES
        .iter()
        .map(|n| env.shim_socket(&env.bundles().join(n)))
        .collect();

    child.kill().expect("SIGKILL the executor");
    child.wait().expect("reap child");
    // While it is down: one task exits, and one shim dies.
    plugind_sys::process::send_signal(pids["short"], 9).expect("kill short");
    let record: serde_json::Value = serde_json::from_slice(
        &std::fs::read(env.exec_root().join("tasks/dead/task.json")).expect("task record"),
    )
    .expect("record json");
    let shim_pid = u32::try_from(record["shim_pid"].as_u64().expect("shim pid")).expect("pid");
    plugind_sys::process::send_signal(shim_pid, 9).expect("kill shim");
    // Wait until both are really gone (the shim reaps its task; the dead shim is reaped by init).
    for pid in [pids["short"], shim_pid] {
        let mut delay = Duration::from_millis(1);
        while std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| !s.contains(") Z"))
        {
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_millis(50));
        }
    }

    let (ex, mut rx) = env.executor(&Runtimes::runc()).await;
    let list = NAMES
        .iter()
        .map(|n| ((*n).to_owned(), env.bundles().join(n)))
        .collect();
    let outcomes = ex.restore(list).await;
    for o in &outcomes {
        match (o.id(), o) {
            ("long1" | "long2", RestoreOutcome::Running { id, pid }) => {
                assert_eq!(*pid, pids[id.as_str()])
            }
            ("short", RestoreOutcome::Exited { exit, .. }) => assert_eq!(exit.status, 137),
            ("dead", RestoreOutcome::Exited { .. }) => {}
            _ => panic!("unexpected outcome {o:?}"),
        }
    }
    // The exit that happened while down is reported (once: dedup against the shim's retries).
    let TaskEvent::Exited { exit, pid, .. } = next_event(
        &mut rx,
        |e| matches!(e, TaskEvent::Exited { id, .. } if id == "short"),
    )
    .await
    else {
        unreachable!()
    };
    assert_eq!((exit.status, pid), (137, pids["short"]));
    next_event(
        &mut rx,
        |e| matches!(e, TaskEvent::Exited { id, .. } if id == "dead"),
    )
    .await;
    // The dead shim's container was killed by the shim's `delete` (runc delete --force).
    assert!(
        !plugind_sys::process::ProcessIdentity::of(pids["dead"]).is_ok_and(|p| p.is_alive() && {
            std::fs::read_to_string(format!("/proc/{}/stat", p.pid))
                .is_ok_and(|s| !s.contains(") Z"))
        })
    );

    // The re-attached tasks are fully usable: their shims answer, output still flows, they can
    // be stopped.
    for name in ["long1", "long2"] {
        assert_eq!(
            ex.state(name).await.expect("state").status,
            TaskStatus::Running
        );
    }
    let log = ex.log_path("long1");
    let size0 = std::fs::metadata(&log).map(|m| m.len()).unwrap_or(0);
    let mut delay = Duration::from_millis(1);
    for _ in 0..200 {
        if std::fs::metadata(&log).map(|m| m.len()).unwrap_or(0) > size0 {
            break;
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_millis(300));
    }
    assert!(
        std::fs::metadata(&log).expect("log").len() > size0,
        "no output drained after re-attach"
    );
    for name in ["long1", "long2"] {
        assert_eq!(
            ex.kill(name, Duration::from_millis(100))
                .await
                .expect("kill")
                .status,
            137
        );
        next_event(
            &mut rx,
            |e| matches!(e, TaskEvent::Exited { id, .. } if id == name),
        )
        .await;
    }
    for name in NAMES {
        ex.delete(name).await.expect("delete");
    }
    assert!(ex.task_ids().is_empty());
    ex.shutdown().await;
    // Exactly once so far (the shim may still be retrying; those retries are deduplicated).
    let mut short_exits = 1;
    while let Ok(ev) = rx.try_recv() {
        if matches!(ev, TaskEvent::Exited { ref id, exec_id: None, .. } if id == "short") {
            short_exits += 1;
        }
    }
    assert_eq!(
        short_exits, 1,
        "exit of the task that ended while down reported twice"
    );
    env.assert_clean(&sockets);
}
