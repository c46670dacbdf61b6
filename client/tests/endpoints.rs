//! The Rust client's embeddings and responses against a real gateway and a real node whose
//! upstream is the mock: both return the job handle chat does, read as their own types.

use openbeepboop::embeddings::EmbeddingList;
use openbeepboop::{
    Client, EmbeddingRequest, Endpoint, Error, JobStatus, Response, ResponseRequest, SubmitOptions,
};
use serde_json::{Value, json};
use std::time::Duration;
use testkit::mock::{MockUpstream, mock_embedding, mock_tokens};
use testkit::{Gateway, NodeProcess};

const WAIT: Duration = Duration::from_secs(30);

/// A gateway, its user key, its node key, and the mock upstream (model `m`).
#[cfg(test)]
async fn stack() -> (Gateway, String, String, MockUpstream) {
    let gw = Gateway::start(&[]).await;
    let (user, key) = (gw.key("user").await, gw.key("node").await);
    let mock = MockUpstream::start(&["m"]).await.expect("the mock starts");
    (gw, user, key, mock)
}

#[cfg(test)]
fn node(gw: &Gateway, key: &str, mock: &MockUpstream, command: &str) -> NodeProcess {
    NodeProcess::start(
        command,
        &NodeProcess::config(
            gw,
            key,
            "rust-client-endpoints",
            Some(&mock.base_url()),
            "models = [\"m\"]",
        ),
    )
}

#[cfg(test)]
fn floats(list: &EmbeddingList) -> Vec<Vec<f64>> {
    list.data
        .iter()
        .map(|item| item.embedding.as_floats().unwrap_or_default().to_vec())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn an_embeddings_job_returns_the_handle_chat_does_and_each_input_gets_its_vector() {
    let (gw, user, key, mock) = stack().await;
    let _node = node(&gw, &key, &mock, "run");
    let client = Client::new(&gw.base, &user).unwrap();

    let mut one = client
        .embeddings()
        .create(EmbeddingRequest::new("m", "the quick brown fox"))
        .await
        .unwrap();
    assert!(one.id().as_str().starts_with("job-"), "{}", one.id());
    assert_eq!(one.status(), JobStatus::Queued);
    assert_eq!(
        (one.job.object.as_str(), one.job.endpoint),
        ("embedding.job", Endpoint::Embeddings)
    );
    let list: EmbeddingList = one.get_as(WAIT).await.unwrap();
    assert_eq!(list.object, "list");
    assert_eq!(
        floats(&list),
        vec![mock_embedding(&json!("the quick brown fox"))]
    );
    assert_eq!(list.usage.map(|u| u.prompt_tokens), Some(4));
    assert_eq!(one.status(), JobStatus::Completed);
    let not_chat = one.get(WAIT).await.err().unwrap();
    assert!(
        matches!(&not_chat, Error::ApiStatus { status: 200, message }
            if message.contains("is not a ChatCompletion")),
        "get reads a chat completion, and says when the result is none: {not_chat}"
    );

    let texts = vec!["first".to_owned(), "second text".to_owned()];
    let request = EmbeddingRequest::many("m", texts.clone()).field("encoding_format", "float");
    let options = SubmitOptions {
        idempotency_key: Some("rust-embed-1".to_owned()),
        priority: Some(1),
        ttl: Some(Duration::from_secs(600)),
    };
    let mut many = client
        .embeddings()
        .create_with(request.clone(), options.clone())
        .await
        .unwrap();
    let again = client
        .embeddings()
        .create_with(request, options)
        .await
        .unwrap();
    assert_eq!(again.id(), many.id(), "the same key returns the same job");
    assert_eq!(many.job.priority, 1);
    assert_eq!(many.job.expires_at - many.job.created_at, 600);
    let list: EmbeddingList = many.get_as(WAIT).await.unwrap();
    let indexes: Vec<u32> = list.data.iter().map(|item| item.index).collect();
    assert_eq!(indexes, vec![0, 1]);
    assert_eq!(
        floats(&list),
        texts
            .iter()
            .map(|t| mock_embedding(&json!(t)))
            .collect::<Vec<_>>()
    );
    let stored: Value = client.jobs().get(many.id()).await.unwrap().result.unwrap();
    assert_eq!(stored, serde_json::to_value(&list).unwrap());

    let refused = client
        .embeddings()
        .create(EmbeddingRequest::many(
            "m",
            vec!["fine".into(), String::new()],
        ))
        .await
        .err()
        .unwrap();
    assert!(
        matches!(&refused, Error::ApiStatus { status: 400, message } if message.contains("empty")),
        "{refused}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn embeddings_jobs_the_client_queued_share_one_upstream_call() {
    let (gw, user, key, mock) = stack().await;
    let client = Client::new(&gw.base, &user).unwrap();
    let texts: Vec<String> = (0..5).map(|n| format!("document {n}")).collect();
    let mut handles = Vec::new();
    for text in &texts {
        let request = EmbeddingRequest::new("m", text.as_str());
        handles.push(client.embeddings().create(request).await.unwrap());
    }
    let mut batch = node(&gw, &key, &mock, "batch");
    let exited = batch
        .wait(Duration::from_secs(60))
        .expect("the batch node exits");
    assert!(exited.success(), "{}", batch.log());
    assert_eq!(
        mock.embedding_calls(),
        vec![5],
        "the five jobs went up as one call"
    );
    let jobs = client.jobs().wait_all(&handles, WAIT).await.unwrap();
    for (job, text) in jobs.iter().zip(&texts) {
        let list: EmbeddingList = serde_json::from_value(job.result.clone().unwrap()).unwrap();
        assert_eq!(
            floats(&list),
            vec![mock_embedding(&json!(text))],
            "{}",
            job.id
        );
        assert_eq!(
            list.usage.map(|u| u.prompt_tokens),
            Some(mock_tokens(&json!(text))),
            "each job has its own share of the call's usage"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_response_is_a_job_whose_id_is_the_responses_and_get_as_returns_the_finished_response() {
    let (gw, user, key, mock) = stack().await;
    let _node = node(&gw, &key, &mock, "run");
    let client = Client::new(&gw.base, &user).unwrap();

    let request = ResponseRequest::new("m", "Hello, responses")
        .instructions("Be brief.")
        .max_output_tokens(32)
        .field("stream", true);
    let mut handle = client.responses().create(request).await.unwrap();
    assert!(handle.id().as_str().starts_with("resp_"), "{}", handle.id());
    assert_eq!(handle.status(), JobStatus::Queued);
    assert_eq!(
        (
            handle.job.endpoint,
            handle.job.object.as_str(),
            handle.job.model.as_str()
        ),
        (Endpoint::Responses, "response.job", "m")
    );
    let response: Response = handle.get_as(WAIT).await.unwrap();
    assert_eq!(
        (response.object.as_str(), response.status.as_str()),
        ("response", "completed")
    );
    assert!(
        response.output_text().contains("Hello, responses"),
        "{response:?}"
    );
    let job = client.jobs().get(handle.id()).await.unwrap();
    assert_eq!(
        (&job.id, job.endpoint, job.status),
        (handle.id(), Endpoint::Responses, JobStatus::Completed)
    );

    let options = SubmitOptions {
        priority: Some(5),
        ..SubmitOptions::default()
    };
    let mut waiting = client
        .responses()
        .create_with(ResponseRequest::new("nobody-serves", "never run"), options)
        .await
        .unwrap();
    assert_eq!(
        (waiting.status(), waiting.job.priority),
        (JobStatus::Queued, 5)
    );
    assert_eq!(waiting.refresh(Duration::ZERO).await.unwrap().priority, 5);
    assert_eq!(waiting.cancel().await.unwrap().status, JobStatus::Cancelled);
    let cancelled = waiting.get_as::<Response>(WAIT).await.err().unwrap();
    assert!(matches!(cancelled, Error::JobCancelled(_)), "{cancelled}");
}
