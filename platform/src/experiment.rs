//! ML experiments and what hangs off them: runs (one training or evaluation execution each), the model
//! versions they produce, and the templates experiments are created from.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::status::lifecycle_enum;
use cairn_store::artifacts::ObjectUri;
use cairn_store::{IndexSpec, Record};

/// The ML framework an experiment uses. Serialized as the upper-case name (`"PYTORCH"`); a name this version
/// does not know (written by a newer one) decodes as [`Framework::Other`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Framework {
    /// PyTorch.
    Pytorch,
    /// TensorFlow or Keras.
    Tensorflow,
    /// JAX.
    Jax,
    /// scikit-learn.
    Sklearn,
    /// Anything else, or not stated. The default.
    #[default]
    #[serde(other)]
    Other,
}

impl Framework {
    /// Every framework, in declaration order.
    pub const ALL: &'static [Self] = &[Self::Pytorch, Self::Tensorflow, Self::Jax, Self::Sklearn, Self::Other];

    /// The name, exactly as serialized (e.g. `"PYTORCH"`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pytorch => "PYTORCH",
            Self::Tensorflow => "TENSORFLOW",
            Self::Jax => "JAX",
            Self::Sklearn => "SKLEARN",
            Self::Other => "OTHER",
        }
    }
}

lifecycle_enum! {
    /// Where an [`Experiment`] is in its lifecycle. Serialized as the upper-case name (`"DRAFT"`).
    ///
    /// ```text
    ///          first run starts           its runs finish
    ///   DRAFT ------------------> RUNNING -----------------> COMPLETED
    ///                                |
    ///                                +----a run fails------> FAILED
    ///
    ///   COMPLETED, FAILED --a new run starts--> RUNNING
    ///   DRAFT, COMPLETED, FAILED --archive----> ARCHIVED
    /// ```
    ///
    /// DRAFT, COMPLETED and FAILED may be archived; a RUNNING experiment may not. ARCHIVED is terminal.
    pub enum ExperimentStatus {
        /// Being set up; no run has started. The initial state.
        Draft = "DRAFT" => [Running, Archived],
        /// At least one run is in progress.
        Running = "RUNNING" => [Completed, Failed],
        /// Its runs finished; a new run makes it RUNNING again.
        Completed = "COMPLETED" => [Running, Archived],
        /// A run failed; a new run makes it RUNNING again.
        Failed = "FAILED" => [Running, Archived],
        /// Kept for the record, read-only. Terminal.
        Archived = "ARCHIVED" => [],
    }
}

/// An ML experiment: a question asked with one model family and its hyperparameters, answered by
/// [`Run`]s. Collection `experiments`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Experiment {
    /// Primary key.
    pub id: String,
    /// Human-readable name.
    pub name: String,
    /// User who created the experiment.
    pub owner: String,
    /// Project the experiment belongs to.
    pub project: String,
    /// Free-text description; empty by default.
    #[serde(default)]
    pub description: String,
    /// The [`ExperimentTemplate`] it was created from, if any.
    #[serde(default)]
    pub template_id: Option<String>,
    /// ML framework. Default [`Framework::Other`].
    #[serde(default)]
    pub framework: Framework,
    /// Hyperparameters, by name; values are any JSON (numbers, strings, lists, nested objects).
    #[serde(default)]
    pub hyperparameters: BTreeMap<String, Value>,
    /// Free-form tags.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Lifecycle state; change it only along [`ExperimentStatus::can_transition_to`].
    pub status: ExperimentStatus,
    /// When the experiment was created, in milliseconds since the Unix epoch.
    pub created_at: i64,
    /// When the experiment was last changed, in milliseconds since the Unix epoch.
    pub updated_at: i64,
}

impl Record for Experiment {
    const COLLECTION: &'static str = "experiments";

    fn id(&self) -> String {
        self.id.clone()
    }

    /// - `owner` (owner), `project` (project): a user's or a project's experiments.
    /// - `status` (status): experiments in a state.
    /// - `project_created` (project, created_at): a project's experiments by creation time.
    fn indexes() -> Vec<IndexSpec> {
        vec![
            IndexSpec::new("owner", &["owner"]),
            IndexSpec::new("project", &["project"]),
            IndexSpec::new("status", &["status"]),
            IndexSpec::new("project_created", &["project", "created_at"]),
        ]
    }
}

lifecycle_enum! {
    /// Where a [`Run`] is in its lifecycle. Serialized as the upper-case name (`"PENDING"`).
    ///
    /// ```text
    ///            start            succeed
    ///   PENDING --------> RUNNING ---------> COMPLETED
    ///
    ///   PENDING, RUNNING --fail----> FAILED
    ///   PENDING, RUNNING --cancel--> CANCELLED
    /// ```
    ///
    /// COMPLETED, FAILED and CANCELLED are terminal; trying again is a new run.
    pub enum RunStatus {
        /// Created; its job has not started. The initial state.
        Pending = "PENDING" => [Running, Failed, Cancelled],
        /// Executing.
        Running = "RUNNING" => [Completed, Failed, Cancelled],
        /// Finished successfully. Terminal.
        Completed = "COMPLETED" => [],
        /// Finished unsuccessfully or could not start. Terminal.
        Failed = "FAILED" => [],
        /// Stopped at a user's request. Terminal.
        Cancelled = "CANCELLED" => [],
    }
}

/// One execution of an [`Experiment`] (a training or evaluation run, one point of a sweep), usually carried
/// out by a [`Job`](super::Job). Collection `runs`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Run {
    /// Primary key.
    pub id: String,
    /// The experiment this run belongs to.
    pub experiment_id: String,
    /// The job executing the run, once submitted.
    #[serde(default)]
    pub job_id: Option<String>,
    /// Lifecycle state; change it only along [`RunStatus::can_transition_to`].
    pub status: RunStatus,
    /// The parameters this run used (the experiment's hyperparameters with this run's overrides); values
    /// are any JSON.
    #[serde(default)]
    pub parameters: BTreeMap<String, Value>,
    /// Latest value of each metric (e.g. `"val_loss"`). May hold NaN, which is stored as `null`.
    #[serde(default, deserialize_with = "super::metrics_with_nulls")]
    pub metrics: BTreeMap<String, f64>,
    /// When the run started, in milliseconds since the Unix epoch.
    #[serde(default)]
    pub started_at: Option<i64>,
    /// When the run reached a terminal state, in milliseconds since the Unix epoch.
    #[serde(default)]
    pub completed_at: Option<i64>,
    /// When the run was created, in milliseconds since the Unix epoch.
    pub created_at: i64,
    /// The artifacts the run produced (checkpoints, logs, evaluation outputs), as objects of the artifact
    /// store (`s3://bucket/key`; `docs/artifacts.md`). Omitted from the document when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub artifacts: Vec<ObjectUri>,
}

impl Record for Run {
    const COLLECTION: &'static str = "runs";

    fn id(&self) -> String {
        self.id.clone()
    }

    /// - `experiment_created` (experiment_id, created_at): an experiment's runs by creation time.
    /// - `status` (status): runs in a state.
    fn indexes() -> Vec<IndexSpec> {
        vec![
            IndexSpec::new("experiment_created", &["experiment_id", "created_at"]),
            IndexSpec::new("status", &["status"]),
        ]
    }
}

lifecycle_enum! {
    /// Where a [`ModelVersion`] is in its promotion lifecycle. Serialized as the upper-case name (`"NONE"`).
    ///
    /// ```text
    ///         promote            promote
    ///   NONE ---------> STAGING ---------> PRODUCTION
    ///     ^                |
    ///     +----reject------+
    ///
    ///   NONE, STAGING, PRODUCTION --retire--> ARCHIVED
    /// ```
    ///
    /// A version reaches PRODUCTION only through STAGING, and leaves it only by being archived (promoting a
    /// newer version is the way back). ARCHIVED is terminal.
    pub enum ModelStage {
        /// Registered, not under evaluation. The initial state.
        None = "NONE" => [Staging, Archived],
        /// Being evaluated for production.
        Staging = "STAGING" => [Production, None, Archived],
        /// Serving.
        Production = "PRODUCTION" => [Archived],
        /// Retired. Terminal.
        Archived = "ARCHIVED" => [],
    }
}

/// A registered version of a named model, produced by an experiment's run. Collection `model_versions`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelVersion {
    /// Primary key.
    pub id: String,
    /// Name of the model in the registry; versions of one model share it.
    pub model_name: String,
    /// Version number within the model, from 1, increasing.
    pub version: u32,
    /// The experiment that produced it.
    pub experiment_id: String,
    /// The run that produced it, if known.
    #[serde(default)]
    pub run_id: Option<String>,
    /// Where the model's files are (e.g. `"s3://models/resnet50/3/"`).
    pub artifact_uri: String,
    /// Evaluation metrics, by name. May hold NaN, which is stored as `null`.
    #[serde(default, deserialize_with = "super::metrics_with_nulls")]
    pub metrics: BTreeMap<String, f64>,
    /// Promotion stage; change it only along [`ModelStage::can_transition_to`].
    pub stage: ModelStage,
    /// When the version was registered, in milliseconds since the Unix epoch.
    pub created_at: i64,
}

impl Record for ModelVersion {
    const COLLECTION: &'static str = "model_versions";

    fn id(&self) -> String {
        self.id.clone()
    }

    /// - `model_version` (model_name, version): a model's versions in order; the latest is the last.
    /// - `experiment_id` (experiment_id): the versions an experiment produced.
    /// - `stage` (stage): versions in a stage, e.g. everything in PRODUCTION.
    fn indexes() -> Vec<IndexSpec> {
        vec![
            IndexSpec::new("model_version", &["model_name", "version"]),
            IndexSpec::new("experiment_id", &["experiment_id"]),
            IndexSpec::new("stage", &["stage"]),
        ]
    }
}

/// A reusable starting point for experiments: framework and default hyperparameters, which a new
/// [`Experiment`] copies and may override. Collection `experiment_templates`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExperimentTemplate {
    /// Primary key.
    pub id: String,
    /// Human-readable name.
    pub name: String,
    /// Free-text description; empty by default.
    #[serde(default)]
    pub description: String,
    /// ML framework. Default [`Framework::Other`].
    #[serde(default)]
    pub framework: Framework,
    /// Hyperparameters an experiment created from the template starts with; values are any JSON.
    #[serde(default)]
    pub default_hyperparameters: BTreeMap<String, Value>,
    /// When the template was created, in milliseconds since the Unix epoch.
    pub created_at: i64,
}

impl Record for ExperimentTemplate {
    const COLLECTION: &'static str = "experiment_templates";

    fn id(&self) -> String {
        self.id.clone()
    }

    /// - `name` (name): a template by name.
    fn indexes() -> Vec<IndexSpec> {
        vec![IndexSpec::new("name", &["name"])]
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::testing::check_record;

    fn full_experiment() -> Experiment {
        Experiment {
            id: "exp-1".to_owned(),
            name: "resnet sweep".to_owned(),
            owner: "alice".to_owned(),
            project: "vision".to_owned(),
            description: "learning-rate sweep".to_owned(),
            template_id: Some("tmpl-1".to_owned()),
            framework: Framework::Pytorch,
            hyperparameters: BTreeMap::from([
                ("lr".to_owned(), json!(0.1)),
                ("layers".to_owned(), json!([64, 128, 256])),
                ("optimizer".to_owned(), json!({"name": "sgd", "momentum": 0.9})),
            ]),
            tags: vec!["baseline".to_owned(), "imagenet".to_owned()],
            status: ExperimentStatus::Running,
            created_at: 1_700_000_000_000,
            updated_at: 1_700_000_050_000,
        }
    }

    fn full_run() -> Run {
        Run {
            id: "run-7".to_owned(),
            experiment_id: "exp-1".to_owned(),
            job_id: Some("job-42".to_owned()),
            status: RunStatus::Completed,
            parameters: BTreeMap::from([("lr".to_owned(), json!(0.05)), ("seed".to_owned(), json!(7))]),
            metrics: BTreeMap::from([("val_loss".to_owned(), 0.31), ("top1".to_owned(), 0.764)]),
            started_at: Some(1_700_000_010_000),
            completed_at: Some(1_700_003_610_000),
            created_at: 1_700_000_005_000,
            artifacts: vec!["s3://checkpoints/run-7/epoch-90.pt".parse().unwrap()],
        }
    }

    fn full_model_version() -> ModelVersion {
        ModelVersion {
            id: "mv-3".to_owned(),
            model_name: "resnet50".to_owned(),
            version: 3,
            experiment_id: "exp-1".to_owned(),
            run_id: Some("run-7".to_owned()),
            artifact_uri: "s3://models/resnet50/3/".to_owned(),
            metrics: BTreeMap::from([("top1".to_owned(), 0.764)]),
            stage: ModelStage::Staging,
            created_at: 1_700_003_700_000,
        }
    }

    fn full_template() -> ExperimentTemplate {
        ExperimentTemplate {
            id: "tmpl-1".to_owned(),
            name: "image-classification".to_owned(),
            description: "ResNet on ImageNet".to_owned(),
            framework: Framework::Pytorch,
            default_hyperparameters: BTreeMap::from([("lr".to_owned(), json!(0.1)), ("epochs".to_owned(), json!(90))]),
            created_at: 1_690_000_000_000,
        }
    }

    #[test]
    fn record_declarations_fit_samples() {
        assert_eq!(
            [Experiment::COLLECTION, Run::COLLECTION, ModelVersion::COLLECTION, ExperimentTemplate::COLLECTION],
            ["experiments", "runs", "model_versions", "experiment_templates"]
        );
        check_record(&full_experiment());
        check_record(&full_run());
        check_record(&full_model_version());
        check_record(&full_template());
    }

    #[test]
    fn serialized_form_is_stable() {
        assert_eq!(
            serde_json::to_value(full_experiment()).unwrap(),
            json!({
                "id": "exp-1", "name": "resnet sweep", "owner": "alice", "project": "vision",
                "description": "learning-rate sweep", "template_id": "tmpl-1", "framework": "PYTORCH",
                "hyperparameters": {"layers": [64, 128, 256], "lr": 0.1, "optimizer": {"momentum": 0.9, "name": "sgd"}},
                "tags": ["baseline", "imagenet"], "status": "RUNNING",
                "created_at": 1_700_000_000_000_i64, "updated_at": 1_700_000_050_000_i64
            })
        );
        assert_eq!(
            serde_json::to_value(full_run()).unwrap(),
            json!({
                "id": "run-7", "experiment_id": "exp-1", "job_id": "job-42", "status": "COMPLETED",
                "parameters": {"lr": 0.05, "seed": 7}, "metrics": {"top1": 0.764, "val_loss": 0.31},
                "started_at": 1_700_000_010_000_i64, "completed_at": 1_700_003_610_000_i64,
                "created_at": 1_700_000_005_000_i64, "artifacts": ["s3://checkpoints/run-7/epoch-90.pt"]
            })
        );
        assert_eq!(
            serde_json::to_value(full_model_version()).unwrap(),
            json!({
                "id": "mv-3", "model_name": "resnet50", "version": 3, "experiment_id": "exp-1", "run_id": "run-7",
                "artifact_uri": "s3://models/resnet50/3/", "metrics": {"top1": 0.764}, "stage": "STAGING",
                "created_at": 1_700_003_700_000_i64
            })
        );
        assert_eq!(
            serde_json::to_value(full_template()).unwrap(),
            json!({
                "id": "tmpl-1", "name": "image-classification", "description": "ResNet on ImageNet",
                "framework": "PYTORCH", "default_hyperparameters": {"epochs": 90, "lr": 0.1},
                "created_at": 1_690_000_000_000_i64
            })
        );
    }

    #[test]
    fn status_spelling() {
        assert_eq!(serde_json::to_string(&RunStatus::Pending).unwrap(), "\"PENDING\"");
        assert_eq!(serde_json::to_string(&ExperimentStatus::Draft).unwrap(), "\"DRAFT\"");
        assert_eq!(serde_json::to_string(&ModelStage::None).unwrap(), "\"NONE\"");
        assert_eq!(serde_json::from_str::<ModelStage>("\"PRODUCTION\"").unwrap(), ModelStage::Production);
        assert!(serde_json::from_str::<RunStatus>("\"pending\"").is_err());
        let names = |all: &[RunStatus]| all.iter().map(|s| s.as_str()).collect::<Vec<_>>();
        assert_eq!(names(RunStatus::ALL), ["PENDING", "RUNNING", "COMPLETED", "FAILED", "CANCELLED"]);
        let names: Vec<&str> = ExperimentStatus::ALL.iter().map(|s| s.as_str()).collect();
        assert_eq!(names, ["DRAFT", "RUNNING", "COMPLETED", "FAILED", "ARCHIVED"]);
        let names: Vec<&str> = ModelStage::ALL.iter().map(|s| s.as_str()).collect();
        assert_eq!(names, ["NONE", "STAGING", "PRODUCTION", "ARCHIVED"]);
    }

    #[test]
    fn framework_spelling_and_fallback() {
        for &framework in Framework::ALL {
            assert_eq!(serde_json::to_value(framework).unwrap(), json!(framework.as_str()));
            assert_eq!(serde_json::from_value::<Framework>(json!(framework.as_str())).unwrap(), framework);
        }
        assert_eq!(Framework::Tensorflow.as_str(), "TENSORFLOW");
        // A framework added by a newer writer reads as OTHER instead of making the record unreadable.
        assert_eq!(serde_json::from_str::<Framework>("\"XGBOOST\"").unwrap(), Framework::Other);
        assert_eq!(Framework::default(), Framework::Other);
    }

    #[test]
    fn experiment_lifecycle() {
        use ExperimentStatus::*;
        assert!(Draft.can_transition_to(Running));
        assert!(Draft.can_transition_to(Archived));
        assert!(Running.can_transition_to(Completed));
        assert!(Running.can_transition_to(Failed));
        assert!(Completed.can_transition_to(Running));
        assert!(Failed.can_transition_to(Running));
        assert!(Completed.can_transition_to(Archived));
        assert!(!Draft.can_transition_to(Completed));
        assert!(!Running.can_transition_to(Archived));
        assert!(!Running.can_transition_to(Draft));
        assert!(!Running.can_transition_to(Running));
        for &next in ExperimentStatus::ALL {
            assert!(!Archived.can_transition_to(next));
        }
        let terminal: Vec<_> = ExperimentStatus::ALL.iter().copied().filter(|s| s.is_terminal()).collect();
        assert_eq!(terminal, [Archived]);
    }

    #[test]
    fn run_lifecycle() {
        use RunStatus::*;
        let allowed = [
            (Pending, Running),
            (Pending, Failed),
            (Pending, Cancelled),
            (Running, Completed),
            (Running, Failed),
            (Running, Cancelled),
        ];
        for &from in RunStatus::ALL {
            for &to in RunStatus::ALL {
                assert_eq!(from.can_transition_to(to), allowed.contains(&(from, to)), "{from} -> {to}");
            }
        }
        assert!(!Pending.can_transition_to(Completed));
        assert!(!Failed.can_transition_to(Running));
        let terminal: Vec<_> = RunStatus::ALL.iter().copied().filter(|s| s.is_terminal()).collect();
        assert_eq!(terminal, [Completed, Failed, Cancelled]);
    }

    #[test]
    fn model_stage_lifecycle() {
        use ModelStage::*;
        assert!(None.can_transition_to(Staging));
        assert!(Staging.can_transition_to(Production));
        assert!(Staging.can_transition_to(None));
        assert!(Production.can_transition_to(Archived));
        assert!(None.can_transition_to(Archived));
        assert!(!None.can_transition_to(Production), "production only through staging");
        assert!(!Production.can_transition_to(Staging));
        assert!(!Archived.can_transition_to(None));
        assert!(!Archived.can_transition_to(Production));
        let terminal: Vec<_> = ModelStage::ALL.iter().copied().filter(|s| s.is_terminal()).collect();
        assert_eq!(terminal, [Archived]);
    }

    /// NaN metrics are written as `null` by serde_json and must read back (as NaN) rather than fail.
    #[test]
    fn nan_metrics_survive_json() {
        let mut run = full_run();
        run.metrics.insert("loss".to_owned(), f64::NAN);
        run.metrics.insert("grad_norm".to_owned(), f64::INFINITY);
        let text = serde_json::to_string(&run).unwrap();
        assert!(text.contains("\"loss\":null"), "{text}");
        let back: Run = serde_json::from_str(&text).unwrap();
        assert!(back.metrics["loss"].is_nan());
        assert!(back.metrics["grad_norm"].is_nan(), "infinity is stored as null too");
        assert_eq!(back.metrics["val_loss"], 0.31);

        let mut version = full_model_version();
        version.metrics.insert("auc".to_owned(), f64::NAN);
        let back: ModelVersion = serde_json::from_str(&serde_json::to_string(&version).unwrap()).unwrap();
        assert!(back.metrics["auc"].is_nan());
        assert!(serde_json::from_value::<ModelVersion>(json!({
            "id": "m", "model_name": "n", "version": 1, "experiment_id": "e", "artifact_uri": "u",
            "stage": "NONE", "created_at": 0, "metrics": {"auc": "high"}
        }))
        .is_err());
    }

    /// Documents holding only the required fields (as an older writer would produce) decode with defaults.
    #[test]
    fn decode_minimal_documents() {
        let experiment: Experiment = serde_json::from_value(json!({
            "id": "e", "name": "n", "owner": "o", "project": "p", "status": "DRAFT", "created_at": 1, "updated_at": 2
        }))
        .unwrap();
        assert_eq!((experiment.description.as_str(), experiment.template_id), ("", None));
        assert_eq!(experiment.framework, Framework::Other);
        assert!(experiment.hyperparameters.is_empty() && experiment.tags.is_empty());

        let run: Run =
            serde_json::from_value(json!({"id": "r", "experiment_id": "e", "status": "PENDING", "created_at": 1}))
                .unwrap();
        assert_eq!((run.job_id.clone(), run.started_at, run.completed_at), (None, None, None));
        assert!(run.parameters.is_empty() && run.metrics.is_empty() && run.artifacts.is_empty());
        assert!(!serde_json::to_value(&run).unwrap().as_object().unwrap().contains_key("artifacts"));

        let version: ModelVersion = serde_json::from_value(json!({
            "id": "m", "model_name": "n", "version": 1, "experiment_id": "e", "artifact_uri": "u",
            "stage": "NONE", "created_at": 0
        }))
        .unwrap();
        assert_eq!(version.run_id, None);
        assert!(version.metrics.is_empty());

        let template: ExperimentTemplate =
            serde_json::from_value(json!({"id": "t", "name": "n", "created_at": 0})).unwrap();
        assert_eq!(template.framework, Framework::Other);
        assert!(template.description.is_empty() && template.default_hyperparameters.is_empty());
    }

    /// A run names its artifacts as `s3://bucket/key`; a malformed one is refused with the document.
    #[test]
    fn runs_name_their_artifacts_as_object_uris() {
        let run = full_run();
        let doc = serde_json::to_value(&run).unwrap();
        assert_eq!(doc["artifacts"], json!(["s3://checkpoints/run-7/epoch-90.pt"]));
        assert_eq!(serde_json::from_value::<Run>(doc.clone()).unwrap(), run);
        let (bucket, key) = (run.artifacts[0].bucket(), run.artifacts[0].key());
        assert_eq!((bucket, key), ("checkpoints", "run-7/epoch-90.pt"));
        let mut bad = doc;
        bad["artifacts"] = json!(["checkpoints/run-7/epoch-90.pt"]);
        let err = serde_json::from_value::<Run>(bad).unwrap_err();
        assert!(err.to_string().contains("not an object URI"), "{err}");
    }
}
