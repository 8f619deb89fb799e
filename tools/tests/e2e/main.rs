//! End to end: real `tally serve` processes driven by real clients (psql, psycopg 3, pgjdbc,
//! SQLAlchemy) and by a raw PostgreSQL wire client for what drivers never send. One test binary,
//! so that it links once.

mod clients;
mod cluster;
mod fuzz;
mod hostile;
mod ingest;
mod proofs;
mod proxy;
mod served;
mod settle;
mod wire;
