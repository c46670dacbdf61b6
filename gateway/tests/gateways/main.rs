//! Several gateways on one PostgreSQL database (issue 20): real `obb-gateway` processes on a
//! real PostgreSQL server (Debian's package, started by the tests), HTTP on loopback. The
//! tests play the users' and the nodes' parts through the API.

// `cfg(test)` marks these modules as test code for clippy, helpers included.
#[cfg(test)]
mod migrate;
#[cfg(test)]
mod several;
