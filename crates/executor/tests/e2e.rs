//! End-to-end tests against the real `containerd-shim-runc-v2`, runc and crun (root only).

mod common;

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use common::{next_event, wait_log, Env};
use plugind_executor::{
    CreateTask, Executor, ExecutorError, RuntimeConfig, Runtimes, TaskEvent, TaskStatus,
};

fn runtimes() -> Runtimes {
    Runtimes::runc()
        .with(
            "crun",
            RuntimeConfig::crun_hybrid(std::path::Path::new("/usr/bin/crun")),
        )
        .with(
            "runc-args",
            RuntimeConfig {
                path: PathBuf::from("/usr/sbin/runc"),
                args: vec!["--log-format".into(), "json".into()],
                ..RuntimeConfig::plain(std::path::Path::new("/usr/sbin/runc"))
            },
        )
}

fn is_exit_of(id: &str) -> impl Fn(&TaskEvent) -> bool + '_ {
    move |e| matches!(e, TaskEvent::Exited { id: i, exec_id: None, .. } if i == id)
}

/// The whole lifecycle on one runtime: output, state, kill, exit event, delete, and nothing
/// left afterwards.
async fn lifecycle(runtime: Option<&str>) {
    let env = Env::new();
    let (ex, mut rx) = env.executor(&runtimes()).await;
    let id = env.id("life");
    let bundle = env.bundle(
        &id,
        &[
            "/bin/busybox",
            "sh",
            "-c",
            "echo hello; echo oops >&2; exec /bin/busybox sleep 1000",
        ],
        |_| {},
    );
    let st = ex
        .create(CreateTask {
            id: id.clone(),
            bundle: bundle.clone(),
            runtime: runtime.map(str::to_owned),
        })
        .await
        .expect("create");
    assert_eq!(st.status, TaskStatus::Running);
    assert!(st.pid > 0);
    let ev = next_event(&mut rx, |e| matches!(e, TaskEvent::Started { .. })).await;
    assert_eq!(
        ev,
        TaskEvent::Started {
            id: id.clone(),
            pid: st.pid
        }
    );
    let sock = env.shim_socket(&bundle);
    let recorded = std::fs::read_to_string(bundle.join("runtime")).expect("runtime file");
    assert_eq!(
        PathBuf::from(recorded.trim()),
        ex.runtime_binary(runtime).expect("binary")
    );

    let lines = wait_log(&ex, &id, "stdout hello").await;
    wait_log(&ex, &id, "stderr oops").await;
    assert!(
        lines
            .iter()
            .all(|l| !l.contains("oops") || l.contains("stderr")),
        "{lines:?}"
    );

    assert_eq!(
        ex.state(&id).await.expect("state").status,
        TaskStatus::Running
    );
    let err = ex.delete(&id).await.expect_err("delete of a running task");
    assert!(matches!(err, ExecutorError::StillRunning { .. }), "{err}");

    // sleep as PID 1 ignores SIGTERM: kill must escalate to SIGKILL.
    let exit = ex
        .kill(&id, Duration::from_millis(200))
        .await
        .expect("kill");
    assert_eq!(exit.status, 137);
    let ev = next_event(&mut rx, is_exit_of(&id)).await;
    let TaskEvent::Exited { exit, pid, .. } = ev else {
        unreachable!()
    };
    assert_eq!((exit.status, pid, exit.oom_killed), (137, st.pid, false));
    assert!(exit.exited_at.is_some());

    let exit = ex.delete(&id).await.expect("delete");
    assert_eq!(exit.status, 137);
    assert!(ex.state(&id).await.expect_err("gone").is_not_found());
    // The log stays readable after delete.
    assert!(ex
        .log_tail(&id, 10)
        .expect("log")
        .iter()
        .any(|l| l.ends_with("stdout hello")));
    ex.shutdown().await;
    assert_eq!(ex.background_tasks(), 0, "shutdown joins the watchers");
    env.assert_clean(&[sock]);
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs root, runc and containerd-shim-runc-v2"]
async fn lifecycle_with_runc() {
    lifecycle(None).await;
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs root, runc, crun and containerd-shim-runc-v2"]
async fn lifecycle_with_crun_through_hybrid_cgroup_wrapper() {
    common::require_root_and(&["/usr/bin/crun", "/usr/bin/unshare"]);
    lifecycle(Some("crun")).await;
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs root, runc and containerd-shim-runc-v2"]
async fn runtime_with_arguments_runs_through_wrapper_and_survives_reload() {
    let env = Env::new();
    let (ex, mut rx) = env.executor(&runtimes()).await;
    let wrapper = ex.runtime_binary(Some("runc-args")).expect("binary");
    assert!(
        wrapper.starts_with(env.exec_root().join("runtimes")),
        "{}",
        wrapper.display()
    );
    let id = env.id("args");
    let bundle = env.bundle(&id, &["/bin/busybox", "sleep", "1000"], |_| {});
    ex.create(CreateTask {
        id: id.clone(),
        bundle: bundle.clone(),
        runtime: Some("runc-args".into()),
    })
    .await
    .expect("create");
    let sock = env.shim_socket(&bundle);
    // runc with --log-format json writes JSON lines into the bundle's log.json.
    let runc_log = std::fs::read_to_string(bundle.join("log.json")).unwrap_or_default();
    assert!(
        runc_log.is_empty() || runc_log.trim_start().starts_with('{'),
        "{runc_log}"
    );
    // Reload with different arguments: a new script; the old one stays for the running task.
    let reloaded = Runtimes::runc().with(
        "runc-args",
        RuntimeConfig {
            path: "/usr/sbin/runc".into(),
            args: vec!["--log-format".into(), "text".into()],
            ..RuntimeConfig::plain(std::path::Path::new("/usr/sbin/runc"))
        },
    );
    ex.reload_runtimes(&reloaded).expect("reload");
    let new_wrapper = ex.runtime_binary(Some("runc-args")).expect("binary");
    assert_ne!(new_wrapper, wrapper);
    assert!(wrapper.exists(), "script in use was removed");
    assert!(
        ex.runtime_binary(Some("crun")).is_err(),
        "reload replaces the whole set"
    );
    // The task still runs with the old wrapper (the shim uses it for kill and delete).
    assert_eq!(
        ex.kill(&id, Duration::from_millis(100))
            .await
            .expect("kill")
            .status,
        137
    );
    next_event(&mut rx, is_exit_of(&id)).await;
    ex.delete(&id).await.expect("delete");
    ex.shutdown().await;
    env.assert_clean(&[sock]);
    // A new start sweeps scripts no longer configured.
    let (ex2, _rx) = env.executor(&reloaded).await;
    assert!(!wrapper.exists() && new_wrapper.exists());
    ex2.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs root, runc and containerd-shim-runc-v2"]
async fn oom_in_memory_limited_task_is_reported_on_exit() {
    let env = Env::new();
    let (ex, mut rx) = env.executor(&Runtimes::runc()).await;
    let id = env.id("oom");
    let bundle = env.bundle(
        &id,
        // The allocating child is OOM-killed; the shell then exits on its own.
        &[
            "/bin/busybox",
            "sh",
            "-c",
            "/bin/busybox tail /dev/zero; /bin/busybox sleep 1; exit 0",
        ],
        |v| {
            let limit = 16u64 << 20;
            v["linux"]["resources"]["memory"] =
                serde_json::json!({ "limit": limit, "swap": limit });
        },
    );
    ex.create(CreateTask {
        id: id.clone(),
        bundle: bundle.clone(),
        runtime: None,
    })
    .await
    .expect("create");
    let sock = env.shim_socket(&bundle);
    next_event(&mut rx, |e| matches!(e, TaskEvent::Oom { .. })).await;
    let ev = next_event(&mut rx, is_exit_of(&id)).await;
    let TaskEvent::Exited { exit, .. } = ev else {
        unreachable!()
    };
    assert!(exit.oom_killed, "{exit:?}");
    ex.delete(&id).await.expect("delete");
    ex.shutdown().await;
    env.assert_clean(&[sock]);
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs root, runc and containerd-shim-runc-v2"]
async fn task_failing_at_start_reports_status_and_stderr() {
    let env = Env::new();
    let (ex, mut rx) = env.executor(&Runtimes::runc()).await;
    let id = env.id("bad");
    let bundle = env.bundle(
        &id,
        &["/bin/busybox", "sh", "-c", "echo broken-config >&2; exit 3"],
        |_| {},
    );
    match ex
        .create(CreateTask {
            id: id.clone(),
            bundle: bundle.clone(),
            runtime: None,
        })
        .await
    {
        Err(ExecutorError::TaskExited {
            exit_status,
            stderr,
            ..
        }) => {
            assert_eq!(exit_status, 3);
            assert!(stderr.iter().any(|l| l == "broken-config"), "{stderr:?}");
            assert!(ex.state(&id).await.expect_err("not kept").is_not_found());
        }
        Ok(_) => {
            // It outlived Start: then its exit comes as an event, once.
            let TaskEvent::Exited { exit, .. } = next_event(&mut rx, is_exit_of(&id)).await else {
                unreachable!()
            };
            assert_eq!(exit.status, 3);
            ex.delete(&id).await.expect("delete");
        }
        Err(e) => panic!("unexpected error: {e}"),
    }
    // A missing binary: the runtime's create fails; a typed error, nothing left.
    let id2 = env.id("nobin");
    let bundle2 = env.bundle(&id2, &["/nonexistent"], |_| {});
    let err = ex
        .create(CreateTask {
            id: id2.clone(),
            bundle: bundle2,
            runtime: None,
        })
        .await
        .expect_err("no binary");
    assert!(
        matches!(
            err,
            ExecutorError::Rpc {
                method: "Create",
                ..
            } | ExecutorError::TaskExited { .. }
        ),
        "{err}"
    );
    // The runtime's own reason is in the message (issue 10, defect 8).
    let text = err.to_string();
    assert!(
        text.contains("no such file or directory") && text.contains("/nonexistent"),
        "{text}"
    );
    // Bad requests are refused before anything starts.
    let err = ex
        .create(CreateTask {
            id: "other".into(),
            bundle: bundle.clone(),
            runtime: None,
        })
        .await
        .expect_err("name");
    assert_eq!(err.kind(), plugind_types::ErrorKind::InvalidArgument);
    let err = ex
        .create(CreateTask {
            id: id.clone(),
            bundle,
            runtime: Some("nope".into()),
        })
        .await
        .expect_err("runtime");
    assert!(matches!(err, ExecutorError::UnknownRuntime { .. }), "{err}");
    ex.shutdown().await;
    env.assert_clean(&[]);
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs root, runc and containerd-shim-runc-v2"]
async fn heavy_output_never_blocks_and_log_rotates() {
    let env = Env::new();
    let mut config = env.config();
    config.log_limit = 64 << 10;
    let (ex, mut rx) = common::executor_at(&config, &Runtimes::runc()).await;
    let id = env.id("loud");
    // About 2 MiB through a 64 KiB pipe: it only finishes if the executor keeps reading.
    let bundle = env.bundle(
        &id,
        &[
            "/bin/busybox",
            "sh",
            "-c",
            "i=0; while [ $i -lt 20000 ]; do echo line-$i-padding-padding-padding-padding-padding-padding-padding-padding-padding; i=$((i+1)); done; echo finished; exec /bin/busybox sleep 1000",
        ],
        |_| {},
    );
    ex.create(CreateTask {
        id: id.clone(),
        bundle: bundle.clone(),
        runtime: None,
    })
    .await
    .expect("create");
    let sock = env.shim_socket(&bundle);
    wait_log(&ex, &id, "stdout finished").await;
    let log = ex.log_path(&id);
    let size = std::fs::metadata(&log).expect("log").len();
    assert!(size <= config.log_limit, "log is {size} bytes");
    let mut old = log.clone().into_os_string();
    old.push(".1");
    assert!(std::fs::metadata(&old).expect("rotated log").len() <= config.log_limit);
    let tail = ex.log_tail(&id, 2).expect("tail");
    assert!(
        tail[0].ends_with(
            "line-19999-padding-padding-padding-padding-padding-padding-padding-padding-padding"
        ),
        "{tail:?}"
    );
    ex.kill(&id, Duration::ZERO).await.expect("kill");
    next_event(&mut rx, is_exit_of(&id)).await;
    ex.delete(&id).await.expect("delete");
    ex.shutdown().await;
    env.assert_clean(&[sock]);
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs root, runc and containerd-shim-runc-v2"]
async fn death_of_a_shim_is_noticed_cleaned_up_and_reported_as_exit() {
    let env = Env::new();
    let (ex, mut rx) = env.executor(&Runtimes::runc()).await;
    let id = env.id("orphan");
    let bundle = env.bundle(&id, &["/bin/busybox", "sleep", "1000"], |_| {});
    let st = ex
        .create(CreateTask {
            id: id.clone(),
            bundle: bundle.clone(),
            runtime: None,
        })
        .await
        .expect("create");
    let sock = env.shim_socket(&bundle);
    let record: serde_json::Value = serde_json::from_slice(
        &std::fs::read(env.exec_root().join("tasks").join(&id).join("task.json")).expect("record"),
    )
    .expect("json");
    let shim_pid = u32::try_from(record["shim_pid"].as_u64().expect("shim pid")).expect("pid");
    assert_eq!(record["pid"].as_u64(), Some(u64::from(st.pid)));
    plugind_sys::process::send_signal(shim_pid, 9).expect("kill shim");
    let TaskEvent::Exited { exit, pid, .. } = next_event(&mut rx, is_exit_of(&id)).await else {
        unreachable!()
    };
    assert_eq!((pid, exit.status), (st.pid, 137));
    // The orphaned container was killed by the shim's `delete` subcommand.
    let alive = plugind_sys::process::ProcessIdentity::of(st.pid)
        .is_ok_and(|p| p.is_alive() && !plugind_sys::process::is_zombie(p.pid));
    assert!(!alive, "container outlived its shim's cleanup");
    assert_eq!(
        ex.state(&id).await.expect("state").status,
        TaskStatus::Stopped
    );
    ex.delete(&id).await.expect("delete");
    ex.shutdown().await;
    env.assert_clean(&[sock]);
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs root, runc and containerd-shim-runc-v2"]
async fn a_task_that_cannot_be_recorded_is_stopped_and_can_be_created_again() {
    // Recording a started task fails (here: a directory where its temp file goes; under a
    // descriptor shortage: EMFILE). The task and its shim must go, so that the next create of
    // the same id is not refused with "task ... already exists".
    let env = Env::new();
    let (ex, _rx) = env.executor(&Runtimes::runc()).await;
    let id = env.id("unrecorded");
    let bundle = env.bundle(&id, &["/bin/busybox", "sleep", "1000"], |_| {});
    let blocker = env
        .exec_root()
        .join("tasks")
        .join(&id)
        .join("task.json.tmp");
    std::fs::create_dir_all(&blocker).unwrap();
    let create = || CreateTask {
        id: id.clone(),
        bundle: bundle.clone(),
        runtime: None,
    };
    let err = ex
        .create(create())
        .await
        .expect_err("the record cannot be written");
    assert!(err.to_string().contains("task.json.tmp"), "{err}");
    assert!(ex.state(&id).await.expect_err("not kept").is_not_found());
    assert!(
        common::processes_with(&env.namespace).is_empty(),
        "the started task and its shim are stopped"
    );
    // Failing the start removed the task directory, the blocker with it.
    let _ = std::fs::remove_dir_all(&blocker);
    let st = ex.create(create()).await.expect("created again");
    assert_eq!(st.status, TaskStatus::Running);
    ex.kill(&id, Duration::from_secs(5)).await.expect("kill");
    ex.delete(&id).await.expect("delete");
    ex.shutdown().await;
    env.assert_clean(&[]);
}

/// What a runtime was asked to do: the subcommands (the first word after the global flags the
/// shim passes) of every call, in order.
fn subcommands(record: &Path) -> Vec<String> {
    std::fs::read_to_string(record)
        .unwrap_or_default()
        .lines()
        .filter_map(|line| {
            let mut words = line.split(' ');
            while let Some(w) = words.next() {
                match w {
                    "--root" | "--log" | "--log-format" | "--criu" => {
                        words.next();
                    }
                    w if w.starts_with('-') => {}
                    w => return Some(w.to_owned()),
                }
            }
            None
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs root, runc and containerd-shim-runc-v2"]
async fn single_call_runtime_starts_a_task_with_one_run_and_two_call_runtime_with_create_and_start()
{
    let env = Env::new();
    let dir = env.exec_root().join("recorders");
    std::fs::create_dir_all(&dir).expect("dir");
    // A runtime that records its arguments, then runs runc with them.
    let recorder = |name: &str| {
        let script = dir.join(name);
        let record = dir.join(format!("{name}.calls"));
        std::fs::write(
            &script,
            format!(
                "#!/bin/sh\necho \"$@\" >> '{}'\nexec runc \"$@\"\n",
                record.display()
            ),
        )
        .expect("write recorder");
        std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .expect("chmod");
        (script, record)
    };
    let (one, one_calls) = recorder("one");
    let (two, two_calls) = recorder("two");
    let runtimes = Runtimes::runc()
        .with("one", RuntimeConfig::single_call(&one))
        .with("two", RuntimeConfig::plain(&two));
    let (ex, mut rx) = env.executor(&runtimes).await;
    let mut sockets = Vec::new();
    for (runtime, calls, expected) in [
        ("one", &one_calls, &["run"][..]),
        ("two", &two_calls, &["create", "start"][..]),
    ] {
        let id = env.id(runtime);
        let bundle = env.bundle(&id, &["/bin/busybox", "sleep", "1000"], |_| {});
        let state = ex
            .create(CreateTask {
                id: id.clone(),
                bundle: bundle.clone(),
                runtime: Some(runtime.into()),
            })
            .await
            .expect("create");
        assert_eq!(state.status, TaskStatus::Running, "{runtime}");
        assert_eq!(subcommands(calls), expected, "{runtime}");
        if runtime == "one" {
            let line = std::fs::read_to_string(calls).expect("calls");
            assert!(line.contains(" run --detach --bundle "), "{line}");
        }
        // The task is a real one: it is killed and reported like any other.
        ex.kill(&id, Duration::from_millis(200))
            .await
            .expect("kill");
        next_event(&mut rx, is_exit_of(&id)).await;
        ex.delete(&id).await.expect("delete");
        sockets.push(env.shim_socket(&bundle));
    }
    ex.shutdown().await;
    env.assert_clean(&sockets);
}
