//! The test PostgreSQL of `testkit::postgres` (issue 20's suites run on it): a fresh
//! cluster starts on loopback as a non-root user, answers SQL, and is gone after its drop.

use std::net::TcpStream;
use testkit::postgres::Postgres;

#[test]
fn a_fresh_cluster_answers_on_loopback_and_is_gone_after_its_drop() {
    let server = Postgres::start();
    assert_eq!(server.psql("obb", "SELECT 1 + 1"), "2", "{}", server.log());
    assert!(server.url("obb").starts_with("postgres://obb@127.0.0.1:"));
    server.create_database("second");
    assert_eq!(server.psql("second", "SELECT current_database()"), "second");
    let port = server.port;
    drop(server);
    assert!(
        TcpStream::connect(("127.0.0.1", port)).is_err(),
        "the server stopped with its test"
    );
}
