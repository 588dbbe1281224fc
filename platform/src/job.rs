//! Jobs: units of work submitted to the compute platform, queued by priority, claimed by a worker under a
//! lease, and finished with an exit code and usage metrics.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::status::lifecycle_enum;
use cairn_store::artifacts::ObjectUri;
use cairn_store::{IndexSpec, Record};

lifecycle_enum! {
    /// Where a [`Job`] is in its lifecycle. Serialized as the upper-case name (`"PENDING"`).
    ///
    /// ```text
    ///            submit           claim            exit 0
    ///   PENDING ---------> QUEUED -------> RUNNING ---------> COMPLETED
    ///      |                 ^                ^ |
    ///      +-----------------|----------------+ |  claim straight from PENDING (no separate submit)
    ///                        +------------------+  lease lapsed or preempted: requeued
    ///
    ///   PENDING, QUEUED, RUNNING --fail----> FAILED      (rejected, unschedulable, error, exit != 0)
    ///   PENDING, QUEUED, RUNNING --cancel--> CANCELLED
    /// ```
    ///
    /// COMPLETED, FAILED and CANCELLED are terminal; a retry after FAILED is a new job. Renewing a lease
    /// rewrites a RUNNING job without changing its status, which is not a transition.
    pub enum JobStatus {
        /// Created but not yet submitted to the scheduler. The initial state.
        Pending = "PENDING" => [Queued, Running, Failed, Cancelled],
        /// Submitted and waiting for a worker to claim it, in order of priority.
        Queued = "QUEUED" => [Running, Failed, Cancelled],
        /// Claimed by a worker and executing, under a lease ([`Job::lease_expires_at`]).
        Running = "RUNNING" => [Completed, Failed, Cancelled, Queued],
        /// Finished successfully. Terminal.
        Completed = "COMPLETED" => [],
        /// Finished unsuccessfully or could not run ([`Job::failure_reason`], [`Job::exit_code`]). Terminal.
        Failed = "FAILED" => [],
        /// Stopped at a user's request. Terminal.
        Cancelled = "CANCELLED" => [],
    }
}

/// What a job asks of the machine it runs on. All zero by default (no stated requirement).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Resources {
    /// Whole CPU cores.
    pub cpus: u32,
    /// Memory, in MiB.
    pub memory_mb: u64,
    /// Number of GPUs.
    pub gpus: u32,
    /// GPU model required (e.g. `"A100"`); `None` for any model, or when no GPU is requested.
    pub gpu_type: Option<String>,
}

/// How a job is started: container image, command line and environment variables.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Environment {
    /// Container image reference (e.g. `"registry.example/train:1.4"`); empty when not yet set.
    pub image: String,
    /// Command and arguments, run without a shell; empty for the image's default entry point.
    pub command: Vec<String>,
    /// Environment variables, by name.
    pub env: BTreeMap<String, String>,
}

/// Resource usage and cost of a job, accumulated over its attempts. All zero until a worker reports.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct JobMetrics {
    /// CPU time used, in seconds.
    pub cpu_seconds: f64,
    /// GPU time used, in GPU-seconds (two GPUs for one second is 2).
    pub gpu_seconds: f64,
    /// Highest memory use observed, in MiB.
    pub peak_memory_mb: u64,
    /// Cost charged for the job, in the platform's billing currency.
    pub cost: f64,
}

/// A unit of work on the compute platform. Collection `jobs`.
///
/// Times are milliseconds since the Unix epoch. Every field but `id`, `name`, `owner`, `project`, `status`
/// and `created_at` may be missing from a stored document and then takes its default.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Job {
    /// Primary key.
    pub id: String,
    /// Human-readable name; need not be unique.
    pub name: String,
    /// User who submitted the job.
    pub owner: String,
    /// Project the job belongs to and is billed to.
    pub project: String,
    /// Lifecycle state; change it only along [`JobStatus::can_transition_to`].
    pub status: JobStatus,
    /// Scheduling priority: higher is more urgent. Default 0.
    #[serde(default)]
    pub priority: i64,
    /// What the job needs to run.
    #[serde(default)]
    pub resources: Resources,
    /// How the job is started.
    #[serde(default)]
    pub environment: Environment,
    /// Free-form key-value labels for filtering and accounting.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// When the job was created, in milliseconds since the Unix epoch.
    pub created_at: i64,
    /// When the job was submitted to the queue (PENDING to QUEUED), in milliseconds since the Unix epoch.
    #[serde(default)]
    pub submitted_at: Option<i64>,
    /// When the current or last attempt started running, in milliseconds since the Unix epoch.
    #[serde(default)]
    pub started_at: Option<i64>,
    /// When the job reached a terminal state, in milliseconds since the Unix epoch.
    #[serde(default)]
    pub completed_at: Option<i64>,
    /// While RUNNING: when the worker's claim lapses unless renewed, in milliseconds since the Unix epoch. A
    /// RUNNING job whose lease has passed may be requeued or reclaimed. `None` when no claim is held. A
    /// RUNNING job without a lease is never reclaimed: queries treat the missing lease as null, which no
    /// time range includes.
    #[serde(default)]
    pub lease_expires_at: Option<i64>,
    /// Node the job is assigned to or ran on.
    #[serde(default)]
    pub node: Option<String>,
    /// Container running the job on that node.
    #[serde(default)]
    pub container_id: Option<String>,
    /// Resource usage and cost.
    #[serde(default)]
    pub metrics: JobMetrics,
    /// Why the job failed, for FAILED jobs.
    #[serde(default)]
    pub failure_reason: Option<String>,
    /// Exit code of the last attempt's process, once it has exited.
    #[serde(default)]
    pub exit_code: Option<i32>,
    /// Number of times the job has been claimed to run (QUEUED to RUNNING). Default 0.
    #[serde(default)]
    pub attempts: u32,
    /// The artifacts the job wrote (logs, outputs), as objects of the artifact store (`s3://bucket/key`;
    /// `docs/artifacts.md`). Omitted from the document when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub artifacts: Vec<ObjectUri>,
}

impl Job {
    /// A PENDING job created at `now_ms` (milliseconds since the Unix epoch), with no resource
    /// requirements, an empty environment, no labels, no assignment, zero metrics and no artifacts.
    pub fn new(
        id: impl Into<String>,
        name: impl Into<String>,
        owner: impl Into<String>,
        project: impl Into<String>,
        priority: i64,
        now_ms: i64,
    ) -> Self {
        Self {
            id: id.into(),
            name: name.into(),
            owner: owner.into(),
            project: project.into(),
            status: JobStatus::Pending,
            priority,
            resources: Resources::default(),
            environment: Environment::default(),
            labels: BTreeMap::new(),
            created_at: now_ms,
            submitted_at: None,
            started_at: None,
            completed_at: None,
            lease_expires_at: None,
            node: None,
            container_id: None,
            metrics: JobMetrics::default(),
            failure_reason: None,
            exit_code: None,
            attempts: 0,
            artifacts: Vec::new(),
        }
    }
}

impl Record for Job {
    const COLLECTION: &'static str = "jobs";

    fn id(&self) -> String {
        self.id.clone()
    }

    /// - `status` (status): jobs in a state, e.g. for counts per state.
    /// - `owner` (owner), `project` (project): a user's or a project's jobs.
    /// - `status_priority` (status, priority descending): the scheduler's queue, most urgent first in key
    ///   order, so "top N by priority" is a forward scan; equal priorities order by id.
    /// - `project_created` (project, created_at): a project's jobs, newest or oldest first, or in a time range.
    /// - `status_lease` (status, lease_expires_at): RUNNING jobs whose lease has lapsed (`lease_expires_at`
    ///   below now), to requeue or reclaim.
    fn indexes() -> Vec<IndexSpec> {
        vec![
            IndexSpec::new("status", &["status"]),
            IndexSpec::new("owner", &["owner"]),
            IndexSpec::new("project", &["project"]),
            IndexSpec::new("status_priority", &["status", "-priority"]),
            IndexSpec::new("project_created", &["project", "created_at"]),
            IndexSpec::new("status_lease", &["status", "lease_expires_at"]),
        ]
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::testing::check_record;

    /// A job with every field set.
    fn full_job() -> Job {
        let mut job = Job::new("job-42", "train-resnet50", "alice", "vision", 700, 1_700_000_000_000);
        job.status = JobStatus::Running;
        job.resources = Resources { cpus: 8, memory_mb: 65_536, gpus: 2, gpu_type: Some("A100".to_owned()) };
        job.environment = Environment {
            image: "registry.example/train:1.4".to_owned(),
            command: vec!["python".to_owned(), "train.py".to_owned(), "--epochs=90".to_owned()],
            env: BTreeMap::from([("NCCL_DEBUG".to_owned(), "INFO".to_owned())]),
        };
        job.labels = BTreeMap::from([("team".to_owned(), "perception".to_owned())]);
        job.submitted_at = Some(1_700_000_001_000);
        job.started_at = Some(1_700_000_002_000);
        job.completed_at = Some(1_700_000_900_000);
        job.lease_expires_at = Some(1_700_000_062_000);
        job.node = Some("gpu-3".to_owned());
        job.container_id = Some("c0ffee".to_owned());
        job.metrics = JobMetrics { cpu_seconds: 5400.5, gpu_seconds: 1796.0, peak_memory_mb: 40_960, cost: 12.75 };
        job.failure_reason = Some("OOM".to_owned());
        job.exit_code = Some(137);
        job.attempts = 2;
        job.artifacts = vec!["s3://logs/job-42/stdout.log".parse().unwrap()];
        job
    }

    #[test]
    fn new_job_is_pending_with_defaults() {
        let job = Job::new("j1", "name", "bob", "proj", -3, 1234);
        assert_eq!(job.status, JobStatus::Pending);
        assert_eq!((job.priority, job.created_at, job.attempts), (-3, 1234, 0));
        assert_eq!(job.resources, Resources::default());
        assert_eq!(job.environment, Environment::default());
        assert_eq!(job.metrics, JobMetrics::default());
        assert!(job.labels.is_empty());
        assert_eq!(
            (job.submitted_at, job.started_at, job.completed_at, job.lease_expires_at),
            (None, None, None, None)
        );
        assert_eq!(job.id(), "j1");
        assert_eq!((job.node, job.container_id, job.failure_reason, job.exit_code), (None, None, None, None));
        assert!(job.artifacts.is_empty());
    }

    #[test]
    fn record_declarations_fit_a_full_job() {
        assert_eq!(Job::COLLECTION, "jobs");
        check_record(&full_job());
        // Index fields are present (as null) even when the optional values are absent.
        check_record(&Job::new("j1", "n", "o", "p", 0, 0));
        let names: Vec<String> = Job::indexes().into_iter().map(|index| index.name).collect();
        assert_eq!(names, ["status", "owner", "project", "status_priority", "project_created", "status_lease"]);
    }

    /// The serialized form is the storage format: field names and spellings must not change.
    #[test]
    fn serialized_form_is_stable() {
        let expected = json!({
            "id": "job-42",
            "name": "train-resnet50",
            "owner": "alice",
            "project": "vision",
            "status": "RUNNING",
            "priority": 700,
            "resources": {"cpus": 8, "memory_mb": 65536, "gpus": 2, "gpu_type": "A100"},
            "environment": {
                "image": "registry.example/train:1.4",
                "command": ["python", "train.py", "--epochs=90"],
                "env": {"NCCL_DEBUG": "INFO"}
            },
            "labels": {"team": "perception"},
            "created_at": 1_700_000_000_000_i64,
            "submitted_at": 1_700_000_001_000_i64,
            "started_at": 1_700_000_002_000_i64,
            "completed_at": 1_700_000_900_000_i64,
            "lease_expires_at": 1_700_000_062_000_i64,
            "node": "gpu-3",
            "container_id": "c0ffee",
            "metrics": {"cpu_seconds": 5400.5, "gpu_seconds": 1796.0, "peak_memory_mb": 40960, "cost": 12.75},
            "failure_reason": "OOM",
            "exit_code": 137,
            "attempts": 2,
            "artifacts": ["s3://logs/job-42/stdout.log"]
        });
        assert_eq!(serde_json::to_value(full_job()).unwrap(), expected);
        assert_eq!(serde_json::from_value::<Job>(expected).unwrap(), full_job());
        // Absent options are written as null, not left out.
        let doc = serde_json::to_value(Job::new("j1", "n", "o", "p", 0, 0)).unwrap();
        assert_eq!(doc["lease_expires_at"], serde_json::Value::Null);
        assert_eq!(doc["resources"]["gpu_type"], serde_json::Value::Null);
        // No artifacts: the field is left out (documents written before it existed read the same).
        assert!(doc.get("artifacts").is_none());
    }

    #[test]
    fn status_spelling() {
        assert_eq!(serde_json::to_string(&JobStatus::Pending).unwrap(), "\"PENDING\"");
        assert_eq!(serde_json::from_str::<JobStatus>("\"CANCELLED\"").unwrap(), JobStatus::Cancelled);
        assert!(serde_json::from_str::<JobStatus>("\"Pending\"").is_err());
        assert!(serde_json::from_str::<JobStatus>("\"CANCELED\"").is_err());
        let names: Vec<&str> = JobStatus::ALL.iter().map(|s| s.as_str()).collect();
        assert_eq!(names, ["PENDING", "QUEUED", "RUNNING", "COMPLETED", "FAILED", "CANCELLED"]);
        assert_eq!("QUEUED".parse::<JobStatus>().unwrap(), JobStatus::Queued);
        assert_eq!(JobStatus::Running.to_string(), "RUNNING");
    }

    #[test]
    fn lifecycle() {
        use JobStatus::*;
        let allowed = [
            (Pending, Queued),
            (Pending, Running),
            (Pending, Failed),
            (Pending, Cancelled),
            (Queued, Running),
            (Queued, Failed),
            (Queued, Cancelled),
            (Running, Completed),
            (Running, Failed),
            (Running, Cancelled),
            (Running, Queued),
        ];
        for &from in JobStatus::ALL {
            for &to in JobStatus::ALL {
                assert_eq!(from.can_transition_to(to), allowed.contains(&(from, to)), "{from} -> {to}");
            }
        }
        // Refused, spelled out: no leaving a terminal state, no self-transition.
        assert!(!Pending.can_transition_to(Completed));
        assert!(!Queued.can_transition_to(Completed));
        assert!(!Completed.can_transition_to(Running));
        assert!(!Failed.can_transition_to(Queued));
        assert!(!Cancelled.can_transition_to(Pending));
        assert!(!Running.can_transition_to(Running));
        let terminal: Vec<JobStatus> = JobStatus::ALL.iter().copied().filter(|s| s.is_terminal()).collect();
        assert_eq!(terminal, [Completed, Failed, Cancelled]);
    }

    /// An older writer's document: only the fields every version has written.
    #[test]
    fn decodes_document_without_optional_fields() {
        let old = json!({
            "id": "job-1",
            "name": "legacy",
            "owner": "carol",
            "project": "batch",
            "status": "QUEUED",
            "created_at": 1_600_000_000_000_i64
        });
        let job: Job = serde_json::from_value(old).unwrap();
        let mut expected = Job::new("job-1", "legacy", "carol", "batch", 0, 1_600_000_000_000);
        expected.status = JobStatus::Queued;
        assert_eq!(job, expected);

        // Nested structs written with fewer fields, and fields from a newer writer, decode too.
        let partial = json!({
            "id": "job-2", "name": "n", "owner": "o", "project": "p", "status": "RUNNING", "created_at": 5,
            "resources": {"gpus": 1},
            "environment": {"image": "img"},
            "metrics": {"cost": 0.5},
            "scheduler_hint": {"zone": "eu-1"}
        });
        let job: Job = serde_json::from_value(partial).unwrap();
        assert_eq!(job.resources, Resources { gpus: 1, ..Resources::default() });
        assert_eq!(job.environment.image, "img");
        assert_eq!(job.metrics.cost, 0.5);
        assert_eq!(job.metrics.cpu_seconds, 0.0);

        // Required fields stay required.
        let no_status = json!({"id": "j", "name": "n", "owner": "o", "project": "p", "created_at": 1});
        assert!(serde_json::from_value::<Job>(no_status).is_err());
    }
}
