//! End-to-end tests: the real server on a free port, called through the generated
//! tonic clients, each test on its own fresh database built by the production migrations.
//! SQLite by default; PostgreSQL when `LOYALTY_TEST_DATABASE_URL` is set.
mod helpers;

mod batching;
mod clock;
mod crash;
mod events;
mod failover;
mod faults;
mod feedback;
mod fuzz;
mod grpcurl;
mod idempotency;
mod isolation;
mod members;
mod money;
mod offers;
mod points;
mod programme;
mod programs;
mod random_ops;
mod rewards;
mod security;
mod serving;
mod telemetry;
mod upgrade;
