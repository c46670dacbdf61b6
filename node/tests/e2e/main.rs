//! End-to-end tests: the real gateway and real `obb-node` processes, with a mock OpenAI
//! upstream (`obb_node::mock`) on loopback, and one test against a real small LLM server.

#[cfg(test)]
mod batch;
#[cfg(test)]
mod daemon;
#[cfg(test)]
mod examples;
#[cfg(test)]
mod faults;
#[cfg(test)]
mod observability;
#[cfg(test)]
mod quickstart;
#[cfg(test)]
mod real_llm;
#[cfg(test)]
mod setup;
