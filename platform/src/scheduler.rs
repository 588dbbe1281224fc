//! Claiming jobs for workers: the scheduler's side of the `jobs` collection.

use std::ops::Bound;

use cairn_store::{ClaimError, Collection, Query, Stored};

use super::job::{Job, JobStatus};

/// The queries a worker claims from, in order: QUEUED then PENDING jobs by descending priority
/// (`status_priority`), then RUNNING jobs whose lease lapsed before `now_ms` (`status_lease`).
pub fn claimable_jobs(now_ms: i64) -> [Query; 3] {
    [
        Query::new().eq("status", JobStatus::Queued.as_str()).order_by("priority").descending(),
        Query::new().eq("status", JobStatus::Pending.as_str()).order_by("priority").descending(),
        Query::new()
            .eq("status", JobStatus::Running.as_str())
            .range("lease_expires_at", Bound::Unbounded, Bound::Excluded(now_ms.into()))
            .use_index("status_lease"),
    ]
}

/// Atomically claims the most urgent claimable job for `node`: status RUNNING, the node recorded, the lease
/// set to `now_ms + lease_ms`, `started_at` set on the first claim and `attempts` counted. Concurrent
/// workers never claim the same job; a job whose lease lapsed is claimed again. `None` if no job is
/// claimable; [`ClaimError::Contended`] if claimable jobs exist but concurrent workers took each one this
/// claim tried (retry it).
pub fn claim_job(
    jobs: &Collection<Job>,
    node: &str,
    now_ms: i64,
    lease_ms: i64,
) -> Result<Option<Stored<Job>>, ClaimError> {
    jobs.claim(&claimable_jobs(now_ms), |job| {
        let lapsed = job.status == JobStatus::Running && job.lease_expires_at.is_some_and(|t| t < now_ms);
        if !(job.status.can_transition_to(JobStatus::Running) || lapsed) {
            return false;
        }
        job.status = JobStatus::Running;
        job.node = Some(node.to_owned());
        job.started_at.get_or_insert(now_ms);
        job.lease_expires_at = Some(now_ms + lease_ms);
        job.attempts += 1;
        true
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_store::Store;

    #[test]
    fn claims_by_priority_then_reclaims_lapsed_leases() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let jobs = store.collection::<Job>().unwrap();
        for (i, priority) in [(1, 5), (2, 50), (3, 20)] {
            jobs.insert(&Job::new(format!("j{i}"), "train", "alice", "p1", priority, 1_000)).unwrap();
        }
        let order: Vec<String> = (0..3).map(|_| claim_job(&jobs, "n1", 2_000, 10_000).unwrap().unwrap().id).collect();
        assert_eq!(order, vec!["j2", "j3", "j1"]);
        assert!(claim_job(&jobs, "n2", 5_000, 10_000).unwrap().is_none(), "leases still held");
        let again = claim_job(&jobs, "n2", 13_000, 10_000).unwrap().unwrap();
        assert_eq!((again.doc.node.as_deref(), again.doc.attempts, again.doc.started_at), (Some("n2"), 2, Some(2_000)));
        assert_eq!(again.doc.lease_expires_at, Some(23_000));
        store.check_indexes().unwrap();
    }
}
