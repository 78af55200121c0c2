//! A ttrpc client for the shim's `containerd.task.v2.Task` service.
//!
//! containerd-shim-protos 0.12 generates its client for `containerd.task.v3.Task` (containerd 2.x),
//! which the 1.6 shim does not serve; the messages are wire-identical, so this client reuses them
//! and only sends a different service name (shim-protocol.md §1, option A). Every call carries a
//! deadline, enforced both by ttrpc (sent to the shim) and locally (so a wedged connection cannot
//! hang a caller).

use std::time::Duration;

use containerd_shim_protos::{
    api::{
        ConnectRequest, ConnectResponse, CreateTaskRequest, CreateTaskResponse, DeleteRequest,
        DeleteResponse, KillRequest, ShutdownRequest, StartRequest, StartResponse, StateRequest,
        StateResponse, WaitRequest, WaitResponse,
    },
    protobuf::well_known_types::empty::Empty,
    ttrpc::{self, context, r#async::Client},
};

use crate::error::{ExecutorError, Result};

/// The service name the containerd 1.6 runc shim registers.
pub(crate) const TASK_SERVICE: &str = "containerd.task.v2.Task";

/// True for a deadline that elapsed, on either side of the connection.
fn is_deadline(e: &ttrpc::Error) -> bool {
    match e {
        ttrpc::Error::RpcStatus(s) => s.code() == ttrpc::Code::DEADLINE_EXCEEDED,
        // ttrpc's own client-side deadline.
        ttrpc::Error::Others(m) => m == "Request deadline elapsed",
        _ => false,
    }
}

/// A connection to one shim, for one task id.
#[derive(Clone)]
pub(crate) struct TaskClient {
    /// The field name `client` is required by `ttrpc::async_client_request!`.
    client: Client,
    id: String,
    address: String,
}

impl std::fmt::Debug for TaskClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskClient")
            .field("id", &self.id)
            .field("address", &self.address)
            .finish()
    }
}

/// Generates one typed method per task service call.
macro_rules! rpc {
    ($fn:ident, $inner:ident, $method:literal, $req:ty, $resp:ty) => {
        async fn $inner(&self, ctx: context::Context, req: &$req) -> ttrpc::Result<$resp> {
            // What `ttrpc::async_client_request!` does; the macro names `::ttrpc`, which only the
            // re-export through containerd-shim-protos provides here.
            use ttrpc::proto::{Codec, RequestInit};
            let others = |what: &str, e: &dyn std::fmt::Display| {
                ttrpc::Error::Others(format!("{what}: {e}"))
            };
            let payload = Codec::encode(req).map_err(|e| others("encoding request", &e))?;
            let mut creq = ttrpc::Request::init_request(
                TASK_SERVICE.to_owned(),
                $method.to_owned(),
                ctx.timeout_nano,
                context::to_pb(ctx.metadata),
            );
            creq.set_payload(payload);
            let res = self.client.request(creq).await?;
            let mut cres = <$resp>::new();
            Codec::merge(&mut cres, &res.payload).map_err(|e| others("decoding response", &e))?;
            Ok(cres)
        }

        pub(crate) async fn $fn(&self, req: $req, timeout: Option<Duration>) -> Result<$resp> {
            let ctx = match timeout {
                // Zero would mean "no deadline" to the shim.
                Some(t) => context::with_duration(t.max(Duration::from_millis(1))),
                None => context::Context::default(),
            };
            let call = self.$inner(ctx, &req);
            let res = match timeout {
                // A little slack so the shim's own deadline error usually wins (it is clearer).
                Some(t) => tokio::time::timeout(t + Duration::from_millis(500), call)
                    .await
                    .map_err(|_| ExecutorError::Timeout {
                        id: self.id.clone(),
                        method: $method,
                    })?,
                None => call.await,
            };
            res.map_err(|source| {
                if is_deadline(&source) {
                    ExecutorError::Timeout {
                        id: self.id.clone(),
                        method: $method,
                    }
                } else {
                    ExecutorError::Rpc {
                        id: self.id.clone(),
                        method: $method,
                        source,
                    }
                }
            })
        }
    };
}

impl TaskClient {
    /// Connects to `address` (`unix://...`) within `timeout`.
    pub(crate) async fn connect(id: &str, address: &str, timeout: Duration) -> Result<TaskClient> {
        let unreachable = |source| ExecutorError::ShimUnreachable {
            id: id.to_owned(),
            address: address.to_owned(),
            source,
        };
        let client = tokio::time::timeout(timeout, Client::connect(address))
            .await
            .map_err(|_| unreachable(ttrpc::Error::Others("connect deadline elapsed".into())))?
            .map_err(unreachable)?;
        Ok(TaskClient {
            client,
            id: id.to_owned(),
            address: address.to_owned(),
        })
    }

    /// A client for task `id` over the same connection (ttrpc multiplexes calls on it).
    pub(crate) fn for_task(&self, id: &str) -> TaskClient {
        TaskClient {
            client: self.client.clone(),
            id: id.to_owned(),
            address: self.address.clone(),
        }
    }

    /// The shim's ttrpc address.
    pub(crate) fn address(&self) -> &str {
        &self.address
    }

    rpc!(
        connect_rpc,
        connect_inner,
        "Connect",
        ConnectRequest,
        ConnectResponse
    );
    rpc!(
        create,
        create_inner,
        "Create",
        CreateTaskRequest,
        CreateTaskResponse
    );
    rpc!(start, start_inner, "Start", StartRequest, StartResponse);
    rpc!(state, state_inner, "State", StateRequest, StateResponse);
    rpc!(
        delete,
        delete_inner,
        "Delete",
        DeleteRequest,
        DeleteResponse
    );
    rpc!(kill, kill_inner, "Kill", KillRequest, Empty);
    rpc!(wait, wait_inner, "Wait", WaitRequest, WaitResponse);
    rpc!(shutdown, shutdown_inner, "Shutdown", ShutdownRequest, Empty);
}
