//! The Rust client, end to end: one job, then a batch.
//!
//! Run it against a gateway with a node serving `echo` (see README.md):
//!     OBB_BASE_URL=http://127.0.0.1:8000 OBB_API_KEY=sk-obb-... cargo run -p openbeepboop --example rust_client

use openbeepboop::chat::ChatMessage;
use openbeepboop::{ChatCompletionRequest, Client};
use std::time::Duration;

#[tokio::main]
async fn main() -> Result<(), openbeepboop::Error> {
    let client = Client::from_env()?;

    // One job: submit, then wait for it with the gateway's long-poll.
    let request = ChatCompletionRequest::new("echo", vec![ChatMessage::new("user", "Hello!")])
        .temperature(0.2);
    let mut handle = client.chat().completions().create(request).await?;
    println!("submitted {} ({})", handle.id(), handle.status());
    let completion = handle.get(Duration::from_secs(60)).await?;
    println!(
        "answer: {}",
        completion.choices[0].message.text().unwrap_or_default()
    );

    // A batch: submitted concurrently and idempotently, then gathered.
    let questions = ["What is 2+2?", "Name a colour.", "Say goodbye."];
    let requests = questions
        .iter()
        .map(|q| ChatCompletionRequest::new("echo", vec![ChatMessage::new("user", *q)]))
        .collect();
    let handles = client
        .chat()
        .completions()
        .create_many(requests, None)
        .await?;
    let jobs = client
        .jobs()
        .wait_all(&handles, Duration::from_secs(120))
        .await?;
    for (question, job) in questions.iter().zip(jobs) {
        let answer = job
            .result
            .as_ref()
            .and_then(|r| {
                r["choices"][0]["message"]["content"]
                    .as_str()
                    .map(str::to_owned)
            })
            .unwrap_or_else(|| format!("{}", job.status));
        println!("{question} -> {answer}");
    }
    Ok(())
}
