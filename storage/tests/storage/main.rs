//! Storage tests: fault injection on segment files, the openraft conformance suite, the
//! embedded database, and crash (kill -9) rounds.

mod db;
mod fuzz;
mod log_faults;
mod raft_suite;
