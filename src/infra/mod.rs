//! Concurrency machinery the use cases run on, with no business rules: a queue whose
//! workers take what has queued as one batch, and read coalescing on top of it.
pub mod coalesce;
pub mod work_queue;
