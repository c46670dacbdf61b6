//! The official OpenAI SDKs' recorded requests, replayed against a real gateway while a real
//! `obb-node` runs the jobs on a mock upstream; then the live SDKs against the same stack.

#[cfg(test)]
mod live;
#[cfg(test)]
mod replay;
#[cfg(test)]
mod shapes;
#[cfg(test)]
mod stack;
