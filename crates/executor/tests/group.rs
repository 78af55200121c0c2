//! Shim groups against the real `containerd-shim-runc-v2` (root only): one shim serving many
//! tasks, its death noticed for every task, restarts in a new group, live restore of group
//! shims, and the shim shut down only with its last task.

mod common;

use std::{collections::HashSet, path::PathBuf, time::Duration};

use common::{executor_at, next_event, processes_with, Env};
use plugind_executor::{CreateTask, Executor, Runtimes, ShimGroup, TaskEvent, TaskStatus};

/// Pids of the shims of this test (only shims name the namespace on their command line).
fn shims(env: &Env) -> Vec<u32> {
    processes_with(&env.namespace)
        .into_iter()
        .filter(|p| !plugind_sys::process::is_zombie(*p))
        .collect()
}

fn sleeper(env: &Env, id: &str) -> PathBuf {
    env.bundle(id, &["/bin/busybox", "sleep", "1000"], |_| {})
}

async fn create_all(ex: &plugind_executor::ShimExecutor, env: &Env, ids: &[String]) -> Vec<u32> {
    let starts = ids.iter().map(|id| {
        let bundle = sleeper(env, id);
        ex.create(CreateTask {
            id: id.clone(),
            bundle,
            runtime: None,
        })
    });
    futures::future::join_all(starts)
        .await
        .into_iter()
        .zip(ids)
        .map(|(r, id)| {
            let st = r.unwrap_or_else(|e| panic!("create {id}: {e}"));
            assert_eq!(st.status, TaskStatus::Running, "{id}");
            st.pid
        })
        .collect()
}

async fn stop(ex: &plugind_executor::ShimExecutor, id: &str) {
    ex.kill(id, Duration::from_millis(100)).await.expect("kill");
    ex.delete(id).await.expect("delete");
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs root, runc and containerd-shim-runc-v2"]
async fn twenty_tasks_in_one_group_survive_kill_of_its_shim() {
    let env = Env::new();
    let mut config = env.config();
    config.shim_group = ShimGroup::All;
    let (ex, mut rx) = executor_at(&config, &Runtimes::runc()).await;
    let ids: Vec<String> = (0..20).map(|i| env.id(&format!("g{i}"))).collect();
    let pids = create_all(&ex, &env, &ids).await;

    // One shim serves all twenty, started once (the creates ran concurrently).
    let shim = shims(&env);
    assert_eq!(shim.len(), 1, "one group shim: {shim:?}");
    let groups = ex.shim_groups();
    assert_eq!(groups.len(), 1, "{groups:?}");
    let mut sorted = ids.clone();
    sorted.sort();
    assert_eq!(groups[0].1, sorted);
    let sockets: HashSet<PathBuf> = ids
        .iter()
        .map(|id| env.shim_socket(&env.bundles().join(id)))
        .collect();
    assert_eq!(sockets.len(), 1, "every task names the group's socket");

    // kill -9 of the group shim: every task it served is reported exited.
    plugind_sys::process::send_signal(shim[0], 9).expect("kill shim");
    let mut exited = HashSet::new();
    while exited.len() < ids.len() {
        if let TaskEvent::Exited {
            id, exec_id: None, ..
        } = next_event(&mut rx, |e| matches!(e, TaskEvent::Exited { .. })).await
        {
            exited.insert(id);
        }
    }
    assert_eq!(exited, ids.iter().cloned().collect::<HashSet<_>>());
    // The clean-up after the dead shim killed the containers it left.
    for pid in &pids {
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists()
                || plugind_sys::process::is_zombie(*pid),
            "container {pid} of the dead shim still runs"
        );
    }
    // Recovered as the manager does it: delete, start again; they land in a new group.
    for id in &ids {
        assert_eq!(
            ex.state(id).await.expect("state").status,
            TaskStatus::Stopped
        );
        ex.delete(id).await.expect("delete after shim death");
    }
    create_all(&ex, &env, &ids).await;
    let shim2 = shims(&env);
    assert_eq!(shim2.len(), 1, "{shim2:?}");
    assert_ne!(shim2, shim);
    let groups = ex.shim_groups();
    assert_eq!(groups.len(), 1, "{groups:?}");
    assert_ne!(groups[0].0, "group-1", "a dead group is never re-used");
    for id in &ids {
        assert_eq!(
            ex.state(id).await.expect("state").status,
            TaskStatus::Running
        );
    }

    // Stopping one leaves the others running on the same shim.
    stop(&ex, &ids[0]).await;
    assert_eq!(shims(&env), shim2, "the group shim lives on");
    for id in &ids[1..] {
        assert_eq!(
            ex.state(id).await.expect("state").status,
            TaskStatus::Running
        );
    }
    assert_eq!(ex.shim_groups()[0].1.len(), 19);

    // The last one out shuts the shim down: nothing is left.
    let sock = env.shim_socket(&env.bundles().join(&ids[1]));
    for id in &ids[1..] {
        stop(&ex, id).await;
    }
    assert!(shims(&env).is_empty(), "group shim left: {:?}", shims(&env));
    assert!(ex.shim_groups().is_empty());
    assert!(
        std::fs::read_dir(env.exec_root().join("groups"))
            .map(|d| d.count() == 0)
            .unwrap_or(true),
        "group directories left"
    );
    ex.shutdown().await;
    env.assert_clean(&[sock]);
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs root, runc and containerd-shim-runc-v2"]
async fn restore_reattaches_group_shims_without_duplicates() {
    let env = Env::new();
    let mut config = env.config();
    config.shim_group = ShimGroup::Max(2);
    let (ex, _rx) = executor_at(&config, &Runtimes::runc()).await;
    let ids: Vec<String> = (0..5).map(|i| env.id(&format!("r{i}"))).collect();
    // One by one, so that the groups fill in order: {0,1} {2,3} {4}.
    for id in &ids {
        create_all(&ex, &env, std::slice::from_ref(id)).await;
    }
    let before = ex.shim_groups();
    assert_eq!(before.len(), 3, "{before:?}");
    let mut shim_pids = shims(&env);
    shim_pids.sort();
    assert_eq!(shim_pids.len(), 3);
    // A daemon stop with live restore: shims and tasks keep running.
    ex.shutdown().await;
    drop(ex);

    let (ex, _rx) = executor_at(&config, &Runtimes::runc()).await;
    let outcomes = ex
        .restore(
            ids.iter()
                .map(|id| (id.clone(), env.bundles().join(id)))
                .collect(),
        )
        .await;
    for o in &outcomes {
        assert!(
            matches!(o, plugind_executor::RestoreOutcome::Running { .. }),
            "{o:?}"
        );
    }
    assert_eq!(
        ex.shim_groups(),
        before,
        "the same groups, the same members"
    );
    let mut after = shims(&env);
    after.sort();
    assert_eq!(after, shim_pids, "re-attached, no shim started");
    // A new task fills the group with room instead of starting a shim.
    let extra = env.id("r5");
    create_all(&ex, &env, std::slice::from_ref(&extra)).await;
    assert_eq!(shims(&env).len(), 3);
    assert_eq!(ex.shim_groups().len(), 3);
    // A task from after the restore and one from before leave a group together: its shim goes.
    let mut all = ids.clone();
    all.push(extra);
    for id in &all {
        stop(&ex, id).await;
    }
    assert!(shims(&env).is_empty(), "shims left: {:?}", shims(&env));
    ex.shutdown().await;
    env.assert_clean(&[]);
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs root, runc and containerd-shim-runc-v2"]
async fn leftover_group_members_are_destroyed_and_their_shim_stopped() {
    let env = Env::new();
    let mut config = env.config();
    config.shim_group = ShimGroup::All;
    let (ex, _rx) = executor_at(&config, &Runtimes::runc()).await;
    let ids: Vec<String> = (0..3).map(|i| env.id(&format!("d{i}"))).collect();
    create_all(&ex, &env, &ids).await;
    ex.shutdown().await;
    drop(ex);
    // After a restart nobody adopts them: destroy each (as the manager does with leftovers).
    let (ex, _rx) = executor_at(&config, &Runtimes::runc()).await;
    let mut left = ex.leftovers();
    left.sort();
    let mut sorted = ids.clone();
    sorted.sort();
    assert_eq!(left, sorted);
    ex.destroy(&ids[0], &env.bundles().join(&ids[0]))
        .await
        .expect("destroy");
    assert_eq!(shims(&env).len(), 1, "the others still use the shim");
    for id in &ids[1..] {
        ex.destroy(id, &env.bundles().join(id))
            .await
            .expect("destroy");
    }
    assert!(shims(&env).is_empty(), "shims left: {:?}", shims(&env));
    ex.shutdown().await;
    env.assert_clean(&[]);
}

/// Torture seed 7, iteration 23: plugind killed during an enable after the task was created in
/// its group's shim but before its record was written. The restart took the group for one no
/// task names, shut it down (a no-op: it held the container), waited 10 s and removed its
/// socket, leaving an orphan shim nothing could reach.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs root, runc and containerd-shim-runc-v2"]
async fn crash_before_the_task_record_leaves_no_orphan_group_shim() {
    let env = Env::new();
    let mut config = env.config();
    config.shim_group = ShimGroup::All;
    let (ex, _rx) = executor_at(&config, &Runtimes::runc()).await;
    let id = env.id("c");
    create_all(&ex, &env, std::slice::from_ref(&id)).await;
    ex.shutdown().await;
    drop(ex);
    // As if the crash came before the record: the task runs in the shim, unrecorded.
    std::fs::remove_file(env.exec_root().join("tasks").join(&id).join("task.json"))
        .expect("remove record");
    let (ex, _rx) = executor_at(&config, &Runtimes::runc()).await;
    assert_eq!(shims(&env).len(), 1, "the group is not taken for an orphan");
    let outcome = ex
        .restore(vec![(id.clone(), env.bundles().join(&id))])
        .await;
    assert!(
        matches!(outcome[0], plugind_executor::RestoreOutcome::Failed { .. }),
        "{outcome:?}"
    );
    // What the manager does with a task it cannot adopt.
    ex.destroy(&id, &env.bundles().join(&id))
        .await
        .expect("destroy");
    assert!(shims(&env).is_empty(), "shims left: {:?}", shims(&env));
    assert!(ex.shim_groups().is_empty());
    ex.shutdown().await;
    env.assert_clean(&[]);
}

/// Sockets the process `pid` holds open.
fn sockets_of(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            d.flatten()
                .filter(|e| {
                    std::fs::read_link(e.path())
                        .is_ok_and(|l| l.to_string_lossy().starts_with("socket:"))
                })
                .count()
        })
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs root, runc and containerd-shim-runc-v2"]
async fn members_of_a_group_share_one_connection_to_its_shim() {
    let env = Env::new();
    let mut config = env.config();
    config.shim_group = ShimGroup::All;
    let (ex, _rx) = executor_at(&config, &Runtimes::runc()).await;
    let ids: Vec<String> = (0..8).map(|i| env.id(&format!("c{i}"))).collect();
    create_all(&ex, &env, &ids).await;
    let shim = shims(&env);
    assert_eq!(shim.len(), 1, "one shim: {shim:?}");
    // Its listener, its connection to the events socket, and the executor's connections: a
    // connection per task would be eight.
    let sockets = sockets_of(shim[0]);
    assert!(sockets < ids.len(), "the shim holds {sockets} sockets");
    // Every task is still driven by its own id over the shared connection.
    for id in &ids {
        assert_eq!(
            ex.state(id).await.expect("state").status,
            TaskStatus::Running
        );
    }
    let sock = env.shim_socket(&env.bundles().join(&ids[0]));
    for id in &ids {
        stop(&ex, id).await;
    }
    assert!(shims(&env).is_empty(), "group shim left: {:?}", shims(&env));
    ex.shutdown().await;
    env.assert_clean(&[sock]);
}
