//! `obb-mock-upstream [MODEL…]`: the mock OpenAI-compatible server of `testkit::mock` as a
//! process, for live SDK runs and benchmarks. It is not an LLM; it answers `mock: …`.

use testkit::mock::MockUpstream;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let models: Vec<String> = std::env::args().skip(1).collect();
    let names: Vec<&str> = if models.is_empty() {
        vec!["mock"]
    } else {
        models.iter().map(String::as_str).collect()
    };
    let mock = MockUpstream::start(&names).await?;
    println!("listening on {}", mock.base_url());
    tokio::signal::ctrl_c().await?;
    Ok(())
}
