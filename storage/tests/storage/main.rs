//! Storage tests: fault injection on segment files, the openraft conformance suite, the
//! embedded database, and crash (kill -9) rounds.

mod cluster;
mod db;
mod fuzz;
mod history;
mod log_faults;
mod producers;
mod proofs;
mod raft_suite;
