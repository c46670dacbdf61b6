//! The stack both halves use: a gateway, a node running jobs on the mock upstream, keys,
//! and one finished job for the job endpoints.

use obb_node::mock::MockUpstream;
use testkit::{Gateway, NodeProcess};

pub const MODEL: &str = "gpt-4o-mini";

pub struct Stack {
    pub gw: Gateway,
    pub user: String,
    pub node_key: String,
    pub finished_job: String,
    _mock: MockUpstream,
    _node: NodeProcess,
}

impl Stack {
    pub async fn start() -> Self {
        let gw = Gateway::start(&[]).await;
        let (user, node_key) = (gw.key("user").await, gw.key("node").await);
        let mock = MockUpstream::start(&[MODEL]).await.unwrap();
        let node = NodeProcess::start(
            "run",
            &NodeProcess::config(
                &gw,
                &node_key,
                "compat-node",
                Some(&mock.base_url()),
                &format!("models = [\"{MODEL}\"]\nconcurrency = 4"),
            ),
        );
        let finished_job = gw.submit_id(&user, MODEL).await;
        let done = gw.job(&user, &format!("{finished_job}?wait=30")).await;
        assert_eq!(done["status"], "completed", "the node runs the seed job");
        Self {
            gw,
            user,
            node_key,
            finished_job,
            _mock: mock,
            _node: node,
        }
    }

    /// The key a recorded request's role stands for.
    pub fn key_for(&self, role: &str) -> String {
        match role {
            "user" => self.user.clone(),
            "node" => self.node_key.clone(),
            _ => "sk-obb-not-a-real-key".to_owned(),
        }
    }
}
