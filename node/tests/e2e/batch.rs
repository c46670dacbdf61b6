use crate::stack;
use std::time::Duration;
use testkit::{Gateway, NodeProcess};

#[tokio::test(flavor = "multi_thread")]
async fn batch_finishes_the_queue_then_exits_zero_with_a_summary() {
    let (gw, user, key, mock) = stack(&[]).await;
    let mut ids = Vec::new();
    for model in ["m", "m", "m", "echo", "other"] {
        ids.push(gw.submit_id(&user, model).await);
    }
    let mut node = NodeProcess::start(
        "batch",
        &NodeProcess::config(
            &gw,
            &key,
            "cron",
            Some(&mock.base_url()),
            "models = [\"m\", \"echo\"]\nbatch_size = 2",
        ),
    );
    let status = node.wait(Duration::from_secs(30)).expect("batch exits");
    assert!(status.success(), "{}", node.log());
    assert!(
        node.log().contains("batch done: 4 completed, 0 failed"),
        "{}",
        node.log()
    );
    for id in &ids[..4] {
        assert_eq!(gw.job(&user, id).await["status"], "completed");
    }
    let echoed = gw.job(&user, &ids[3]).await;
    assert_eq!(
        echoed["result"]["choices"][0]["message"]["content"],
        "echo: hello"
    );
    assert_eq!(
        gw.job(&user, &ids[4]).await["status"],
        "queued",
        "a model it does not serve is left alone"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn batch_exits_non_zero_when_the_gateway_or_the_upstream_is_unreachable() {
    let gw = Gateway::start(&[]).await;
    let key = gw.key("node").await;
    let closed = format!("http://127.0.0.1:{}/v1", closed_port());
    let mut no_upstream = NodeProcess::start(
        "batch",
        &NodeProcess::config(&gw, &key, "n", Some(&closed), "models = [\"m\"]"),
    );
    let status = no_upstream.wait(Duration::from_secs(30)).expect("exits");
    assert!(!status.success());
    assert!(
        no_upstream.log().contains("cannot reach the upstream"),
        "{}",
        no_upstream.log()
    );

    let mut config = NodeProcess::config(&gw, &key, "n", None, "");
    config = config.replace(&gw.base, &format!("http://127.0.0.1:{}", closed_port()));
    let mut no_gateway = NodeProcess::start("batch", &config);
    let status = no_gateway.wait(Duration::from_secs(30)).expect("exits");
    assert!(!status.success());
    assert!(
        no_gateway.log().contains("cannot reach the gateway"),
        "{}",
        no_gateway.log()
    );

    let mut bad_key =
        NodeProcess::start("batch", &NodeProcess::config(&gw, &gw.admin, "n", None, ""));
    let status = bad_key.wait(Duration::from_secs(30)).expect("exits");
    assert!(!status.success());
    assert!(
        bad_key.log().contains("refused the node key"),
        "{}",
        bad_key.log()
    );
}

/// A loopback port with nothing listening.
fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
