//! Integration tests: the real `obb-gateway` binary, a temp SQLite file and HTTP on loopback.
//! The tests play the node's part through the node API; `node/` tests use real nodes.

// `cfg(test)` marks these modules as test code for clippy, helpers included.
use testkit as harness;

#[cfg(test)]
mod auth;
#[cfg(test)]
mod bad_input;
#[cfg(test)]
mod batches;
#[cfg(test)]
mod cli;
#[cfg(test)]
mod conformance;
#[cfg(test)]
mod crash;
#[cfg(test)]
mod edge;
#[cfg(test)]
mod endpoints;
#[cfg(test)]
mod export;
#[cfg(test)]
mod files;
#[cfg(test)]
mod jobs;
#[cfg(test)]
mod limits;
#[cfg(test)]
mod node_api;
#[cfg(test)]
mod operations;
#[cfg(test)]
mod queue_faults;
#[cfg(test)]
mod relay;
#[cfg(test)]
mod responses;
#[cfg(test)]
mod responses_live;
#[cfg(test)]
mod submit;
