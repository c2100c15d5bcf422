//! The history service's metrics, end to end: a real server registered in a process
//! registry, driven over gRPC, then the registry encoded and its exposition lines checked.

use std::sync::Arc;

use chat_history::HistoryServer;
use chat_history::store::embedded::EmbeddedStore;
use chat_metrics::{Metrics, exposition, missing_lines};
use chat_proto::history::history_client::HistoryClient;
use chat_proto::history::{AppendRequest, ListRequest};
use tokio_util::sync::CancellationToken;

#[tokio::test]
async fn grpc_and_store_families() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut metrics = Metrics::new("history");
    let store = Arc::new(EmbeddedStore::open(dir.path())?);
    let server = HistoryServer::bind(([127, 0, 0, 1], 0).into(), store, &mut metrics).await?;
    let url = format!("http://{}", server.local_addr());
    let stop = CancellationToken::new();
    let task = tokio::spawn(server.run(stop.clone()));

    let mut client = HistoryClient::connect(url).await?;
    let append = AppendRequest {
        room: "general".into(),
        sender: "alice".into(),
        client_id: "c1".into(),
        body: "hi".into(),
    };
    client.append(append.clone()).await?;
    assert!(client.append(append).await?.into_inner().duplicate);
    let list = ListRequest {
        room: "general".into(),
        before: None,
        after: None,
        limit: 10,
    };
    client.list(list.clone()).await?;
    let refused = client
        .list(ListRequest {
            limit: 5000,
            ..list
        })
        .await
        .expect_err("limit too large");
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);

    let text = exposition(&metrics.registry);
    let expected = r#"# HELP chat_history_appends_total Messages appended, by result: stored (new), duplicate (a resend answered with the original) or error.
# TYPE chat_history_appends_total counter
chat_history_appends_total{result="stored"} 1
chat_history_appends_total{result="duplicate"} 1
chat_history_appends_total{result="error"} 0
# HELP chat_history_store_operation_duration_seconds Time of each message store call, by operation (append, list) and backend (embedded, mongo).
# TYPE chat_history_store_operation_duration_seconds histogram
chat_history_store_operation_duration_seconds_count{op="append",backend="embedded"} 2
chat_history_store_operation_duration_seconds_count{op="list",backend="embedded"} 1
chat_history_store_operation_duration_seconds_bucket{op="list",backend="embedded",le="10"} 1
chat_history_store_operation_duration_seconds_bucket{op="list",backend="embedded",le="+Inf"} 1
# TYPE grpc_server_requests_total counter
grpc_server_requests_total{service="chat.history.v1.History",method="Append",code="OK"} 2
grpc_server_requests_total{service="chat.history.v1.History",method="List",code="OK"} 1
grpc_server_requests_total{service="chat.history.v1.History",method="List",code="INVALID_ARGUMENT"} 1
# TYPE grpc_server_request_duration_seconds histogram
grpc_server_request_duration_seconds_count{service="chat.history.v1.History",method="Append",code="OK"} 2
grpc_server_request_duration_seconds_count{service="chat.history.v1.History",method="List",code="OK"} 1
grpc_server_request_duration_seconds_count{service="chat.history.v1.History",method="List",code="INVALID_ARGUMENT"} 1"#;
    assert_eq!(missing_lines(&text, expected), Vec::<&str>::new(), "{text}");
    // No store errors: that family has no series and is left out.
    assert!(!text.contains("chat_history_store_errors_total{"));

    stop.cancel();
    task.await??;
    Ok(())
}
