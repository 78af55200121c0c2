//! Public-API tests that need no root: argument checks, unknown tasks, the events socket's life.

use std::{path::PathBuf, sync::Arc, time::Duration};

use plugind_executor::{
    CreateTask, EventHandler, Executor, ExecutorConfig, ExecutorError, RestoreOutcome, Runtimes,
    ShimExecutor, TaskEvent,
};
use plugind_types::ErrorKind;

async fn executor(root: &std::path::Path) -> ShimExecutor {
    let (tx, _rx) = tokio::sync::mpsc::unbounded_channel::<TaskEvent>();
    let handler: Arc<dyn EventHandler> = Arc::new(tx);
    ShimExecutor::new(
        ExecutorConfig::new(root, "plugind-api-test"),
        &Runtimes::runc(),
        handler,
    )
    .await
    .expect("executor")
}

#[tokio::test]
async fn bad_requests_are_refused_before_any_shim_runs() {
    let dir = tempfile::Builder::new()
        .prefix("pa")
        .tempdir_in("/tmp")
        .expect("tempdir");
    let ex = executor(dir.path()).await;
    let bundle = dir.path().join("t1");
    let create = |id: &str, bundle: PathBuf, runtime: Option<&str>| CreateTask {
        id: id.to_owned(),
        bundle,
        runtime: runtime.map(str::to_owned),
    };
    let err = ex
        .create(create("a/b", bundle.clone(), None))
        .await
        .expect_err("bad id");
    assert!(matches!(err, ExecutorError::InvalidId { .. }), "{err}");
    let err = ex
        .create(create("t1", PathBuf::from("rel/t1"), None))
        .await
        .expect_err("relative");
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    let err = ex
        .create(create("t2", bundle.clone(), None))
        .await
        .expect_err("name mismatch");
    assert!(matches!(err, ExecutorError::InvalidBundle { .. }), "{err}");
    let err = ex
        .create(create("t1", bundle.clone(), None))
        .await
        .expect_err("no config.json");
    assert!(err.to_string().contains("config.json"), "{err}");
    std::fs::create_dir_all(&bundle).expect("mkdir");
    std::fs::write(bundle.join("config.json"), b"{}").expect("config");
    let err = ex
        .create(create("t1", bundle.clone(), Some("nope")))
        .await
        .expect_err("runtime");
    assert!(matches!(err, ExecutorError::UnknownRuntime { .. }), "{err}");

    for e in [
        ex.state("t1").await.expect_err("state"),
        ex.kill("t1", Duration::ZERO).await.expect_err("kill"),
        ex.delete("t1").await.expect_err("delete"),
    ] {
        assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
    }
    // Restore of a bundle that never had a shim: reported, nothing attached.
    let out = ex.restore(vec![("t1".to_owned(), bundle)]).await;
    assert!(
        matches!(&out[..], [RestoreOutcome::Failed { error, .. }] if error.is_not_found()),
        "{out:?}"
    );
    assert!(ex.task_ids().is_empty());
    ex.shutdown().await;
}

#[tokio::test]
async fn events_socket_replaces_a_stale_one_and_is_removed_at_shutdown() {
    let dir = tempfile::Builder::new()
        .prefix("pa")
        .tempdir_in("/tmp")
        .expect("tempdir");
    let sock = dir.path().join("events.sock");
    std::fs::write(&sock, b"stale").expect("stale file");
    let ex = executor(dir.path()).await;
    {
        use std::os::unix::fs::FileTypeExt;
        assert!(std::fs::metadata(&sock)
            .expect("socket")
            .file_type()
            .is_socket());
    }
    std::os::unix::net::UnixStream::connect(&sock).expect("events service accepts");
    ex.shutdown().await;
    assert!(!sock.exists(), "events socket left after shutdown");
}
