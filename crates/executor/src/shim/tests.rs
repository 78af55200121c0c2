//! Unit tests of the shim executor that need no shim: exit bookkeeping, background tasks,
//! the event channel, address and stats decoding.

use super::{book::Admit, start::parse_address, *};

fn test_inner(dir: &Path, handler: Arc<dyn EventHandler>) -> Arc<Inner> {
    test_inner_grouped(dir, handler, ShimGroup::None)
}

fn test_inner_grouped(
    dir: &Path,
    handler: Arc<dyn EventHandler>,
    shim_group: ShimGroup,
) -> Arc<Inner> {
    let mut config = ExecutorConfig::new(dir, "test");
    config.shim_group = shim_group;
    Arc::new_cyclic(|me| Inner {
        me: me.clone(),
        config,
        runtimes: RwLock::new(Arc::new(Resolved {
            default: "runc".into(),
            binaries: Default::default(),
        })),
        tasks: Mutex::new(HashMap::new()),
        starting: Mutex::new(HashSet::new()),
        book: Mutex::new(Book::default()),
        groups: Mutex::new(Groups::default()),
        queue: KeyedQueue::new(16),
        handler,
        background: Mutex::new(tokio::task::JoinSet::new()),
    })
}

/// A task attached without a shim (as after a dead shim): enough for event delivery.
fn shimless_task(id: &str) -> Task {
    Task {
        id: id.to_owned(),
        bundle: PathBuf::from("/nonexistent").join(id),
        client: None,
        shim: None,
        group: None,
        exit: None,
        drains: tokio::sync::Mutex::new(Drains::default()),
        watcher: Mutex::new(None),
    }
}

fn init_exit(id: &str, pid: u32, status: u32) -> TaskEvent {
    TaskEvent::Exited {
        id: id.into(),
        exec_id: None,
        pid,
        exit: ExitInfo {
            status,
            exited_at: None,
            oom_killed: false,
        },
    }
}

/// Issue 10, defect 2: a plugin restarted under the same task id whose init gets the old
/// pid back must still have its exit delivered (it was dropped as a duplicate, so the
/// plugin stayed "running" and was never restarted).
#[tokio::test]
async fn exit_of_a_recreated_task_with_the_same_pid_is_delivered() {
    let dir = tempfile::tempdir().unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let inner = test_inner(dir.path(), Arc::new(tx));
    let start = |inner: &Inner| {
        lock(&inner.book).begin("t");
        lock(&inner.book).set_init_pid("t", 42);
        inner.register(shimless_task("t"));
    };
    // A marker after each step proves what was (not) delivered before it.
    let marker = TaskEvent::Started {
        id: "t".into(),
        pid: 0,
    };

    start(&inner);
    inner.publish(init_exit("t", 42, 1)).await;
    assert_eq!(rx.recv().await, Some(init_exit("t", 42, 1)));
    inner.publish(init_exit("t", 42, 1)).await;
    inner.publish(marker.clone()).await;
    assert_eq!(rx.recv().await, Some(marker.clone()), "duplicate delivered");

    // Deleted, then created again: same id, same pid.
    inner.forget("t");
    start(&inner);
    inner.publish(init_exit("t", 42, 2)).await;
    assert_eq!(
        rx.recv().await,
        Some(init_exit("t", 42, 2)),
        "second exit lost"
    );
    // A late exit of another pid belongs to an earlier generation.
    inner.publish(init_exit("t", 41, 9)).await;
    inner.publish(marker.clone()).await;
    assert_eq!(rx.recv().await, Some(marker));
    inner.forget("t");
    assert_eq!(lock(&inner.book).size(), 0);
}

/// Issue 10, defect 9: tasks the executor spawns are joined at shutdown, and finished ones
/// do not pile up.
#[tokio::test]
async fn background_tasks_are_reaped_and_joined() {
    let dir = tempfile::tempdir().unwrap();
    let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
    let inner = test_inner(dir.path(), Arc::new(tx));
    for _ in 0..100 {
        inner.spawn_background(async {});
        tokio::task::yield_now().await;
    }
    assert!(
        lock(&inner.background).len() < 100,
        "finished tasks are reaped"
    );
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = done.clone();
    inner.spawn_background(async move {
        tokio::task::yield_now().await;
        flag.store(true, std::sync::atomic::Ordering::SeqCst);
    });
    inner.join_background().await;
    assert!(done.load(std::sync::atomic::Ordering::SeqCst));
    assert_eq!(lock(&inner.background).len(), 0);
}

/// Issue 10, defect 9: with a bounded channel to the manager, a full channel holds the
/// executor back (its queue fills, then `publish` waits) and every exit still arrives.
#[tokio::test]
async fn a_full_event_channel_holds_events_back_and_drops_none() {
    let dir = tempfile::tempdir().unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::channel(1);
    let inner = test_inner(dir.path(), Arc::new(tx));
    let ids: Vec<String> = (0..50).map(|i| format!("t{i}")).collect();
    for id in &ids {
        lock(&inner.book).begin(id);
        inner.register(shimless_task(id));
    }
    let publisher = {
        let inner = inner.clone();
        let ids = ids.clone();
        tokio::spawn(async move {
            for (n, id) in ids.iter().enumerate() {
                inner.publish(init_exit(id, 1000 + n as u32, 0)).await;
            }
        })
    };
    // 50 exits cannot fit in a channel of 1 and a queue of 16: the publisher must wait.
    for _ in 0..200 {
        tokio::task::yield_now().await;
    }
    assert!(!publisher.is_finished(), "events were not held back");
    let mut got = std::collections::BTreeSet::new();
    while got.len() < ids.len() {
        match rx.recv().await {
            Some(TaskEvent::Exited { id, .. }) => {
                got.insert(id);
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    publisher.await.unwrap();
    assert_eq!(got.len(), 50, "an exit was dropped");
}

#[test]
fn exit_bookkeeping_stays_bounded() {
    let mut book = Book::default();
    for round in 0..10_000u32 {
        let id = format!("p{}", round % 7);
        let generation = book.begin(&id);
        book.set_init_pid(&id, 100 + round % 3);
        book.mark_oom(&id);
        for e in 0..5 {
            let exec = format!("e{e}");
            assert!(matches!(
                book.admit_exit(&id, Some(&exec), 1000 + e),
                Admit::Deliver { oom: false }
            ));
        }
        assert_eq!(
            book.admit_exit(&id, None, 100 + round % 3),
            Admit::Deliver { oom: true }
        );
        assert_eq!(
            book.admit_exit(&id, None, 100 + round % 3),
            Admit::Duplicate
        );
        book.end(&id, Some(generation));
    }
    assert_eq!(book.size(), 0, "every deleted task is forgotten");
    assert_eq!(book.admit_exit("p0", None, 100), Admit::Stale);

    // One long-lived task running exec processes that are never deleted.
    book.begin("long");
    for pid in 0..10_000 {
        book.admit_exit("long", Some("loop"), pid);
    }
    assert!(book.size() <= 1 + EXITS_PER_GENERATION, "{}", book.size());
    // Ending an old generation leaves a newer one alone.
    let old = book.begin("x");
    let new = book.begin("x");
    book.end("x", Some(old));
    assert!(book.tasks.get("x").is_some_and(|g| g.number == new));
}

#[test]
fn address_is_parsed_from_text_or_json() {
    assert_eq!(
        parse_address(b"unix:///run/containerd/s/ab"),
        Some("unix:///run/containerd/s/ab".into())
    );
    assert_eq!(parse_address(b"  unix:///x\n"), Some("unix:///x".into()));
    assert_eq!(
        parse_address(br#"{"version":3,"address":"unix:///y","protocol":"ttrpc"}"#),
        Some("unix:///y".into())
    );
    assert_eq!(parse_address(b""), None);
    assert_eq!(socket_path("unix:///run/s/1"), Some(Path::new("/run/s/1")));
}

#[test]
fn ids_are_file_name_safe() {
    check_id("plugin-1_a.b").expect("ok");
    for bad in ["", "..", ".x", "a/b", "a b", &"x".repeat(129)] {
        assert!(check_id(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn shim_group_values() {
    assert_eq!("none".parse(), Ok(ShimGroup::None));
    assert_eq!("all".parse(), Ok(ShimGroup::All));
    assert_eq!("1".parse(), Ok(ShimGroup::None));
    assert_eq!("16".parse(), Ok(ShimGroup::Max(16)));
    for bad in ["0", "", "-3", "All", "16 ", "x"] {
        assert!(bad.parse::<ShimGroup>().is_err(), "{bad:?}");
    }
    for g in [ShimGroup::None, ShimGroup::All, ShimGroup::Max(7)] {
        assert_eq!(g.to_string().parse(), Ok(g));
    }
}

/// Groups fill up to their size before a new one starts; a group whose shim died takes no
/// new member; the last member out removes the group; numbers are never re-used.
#[tokio::test]
async fn groups_fill_close_and_are_not_reused() {
    let dir = tempfile::tempdir().unwrap();
    let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
    let inner = test_inner_grouped(dir.path(), Arc::new(tx), ShimGroup::Max(2));
    let names: Vec<String> = ["a", "b", "c"]
        .iter()
        .map(|id| inner.join_group(id).unwrap().name.clone())
        .collect();
    assert_eq!(names, ["group-1", "group-1", "group-2"]);
    let g2 = inner.group_named("group-2").unwrap();
    inner.group_died(&g2);
    // group-1 is full and group-2 is dead: a new group.
    assert_eq!(inner.join_group("d").unwrap().name, "group-3");
    let g1 = inner.group_named("group-1").unwrap();
    inner.leave_group(&g1, "a").await;
    assert_eq!(inner.join_group("e").unwrap().name, "group-1", "room again");
    inner.leave_group(&g2, "c").await;
    assert!(inner.group_named("group-2").is_none(), "last member out");
    for id in ["b", "e"] {
        inner.leave_group(&g1, id).await;
    }
    assert!(inner.group_named("group-1").is_none());
    assert_eq!(inner.join_group("f").unwrap().name, "group-3");
    let g3 = inner.group_named("group-3").unwrap();
    for id in ["d", "f"] {
        inner.leave_group(&g3, id).await;
    }
    assert_eq!(
        inner.join_group("g").unwrap().name,
        "group-4",
        "never re-used"
    );
    // Without grouping nobody joins a group.
    let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
    assert!(test_inner(dir.path(), Arc::new(tx))
        .join_group("x")
        .is_none());
}
