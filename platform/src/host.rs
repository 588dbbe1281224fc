//! Host provisioning: templates describing a kind of machine, requests for a number of machines from a
//! template, and the machines that fulfil them.

use serde::{Deserialize, Serialize};

use super::status::lifecycle_enum;
use cairn_store::{IndexSpec, Record};

/// A kind of machine that can be requested: its size and the image it boots. Collection `host_templates`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostTemplate {
    /// Primary key.
    pub id: String,
    /// Human-readable name (e.g. `"gpu-a100-8x"`).
    pub name: String,
    /// Whole CPU cores per machine.
    pub cpus: u32,
    /// Memory per machine, in MiB.
    pub memory_mb: u64,
    /// GPUs per machine. Default 0.
    #[serde(default)]
    pub gpus: u32,
    /// GPU model (e.g. `"A100"`), when the machine has GPUs.
    #[serde(default)]
    pub gpu_type: Option<String>,
    /// Machine image the host boots (e.g. an AMI id or an OS image reference).
    pub image: String,
    /// When the template was created, in milliseconds since the Unix epoch.
    pub created_at: i64,
}

impl Record for HostTemplate {
    const COLLECTION: &'static str = "host_templates";

    fn id(&self) -> String {
        self.id.clone()
    }

    /// - `name` (name): a template by name.
    fn indexes() -> Vec<IndexSpec> {
        vec![IndexSpec::new("name", &["name"])]
    }
}

lifecycle_enum! {
    /// Where a [`HostRequest`] is in its lifecycle. Serialized as the upper-case name (`"PENDING"`).
    ///
    /// ```text
    ///            start               every machine READY
    ///   PENDING -------> PROVISIONING ---------------------> FULFILLED
    ///
    ///   PENDING, PROVISIONING --fail----> FAILED
    ///   PENDING, PROVISIONING --cancel--> CANCELLED
    /// ```
    ///
    /// FULFILLED, FAILED and CANCELLED are terminal; the request's machines then follow their own
    /// lifecycle ([`MachineStatus`]).
    pub enum HostRequestStatus {
        /// Accepted, not yet acted on. The initial state.
        Pending = "PENDING" => [Provisioning, Failed, Cancelled],
        /// Machines are being created.
        Provisioning = "PROVISIONING" => [Fulfilled, Failed, Cancelled],
        /// Every requested machine was provisioned. Terminal.
        Fulfilled = "FULFILLED" => [],
        /// Provisioning failed (quota, capacity, provider error). Terminal.
        Failed = "FAILED" => [],
        /// Withdrawn by the requester. Terminal.
        Cancelled = "CANCELLED" => [],
    }
}

/// A request for `count` machines built from a [`HostTemplate`]. Collection `host_requests`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostRequest {
    /// Primary key.
    pub id: String,
    /// The template the machines are built from.
    pub template_id: String,
    /// User or service that made the request.
    pub requested_by: String,
    /// Number of machines requested.
    pub count: u32,
    /// Lifecycle state; change it only along [`HostRequestStatus::can_transition_to`].
    pub status: HostRequestStatus,
    /// When the request was made, in milliseconds since the Unix epoch.
    pub created_at: i64,
    /// When the request last changed, in milliseconds since the Unix epoch.
    pub updated_at: i64,
}

impl Record for HostRequest {
    const COLLECTION: &'static str = "host_requests";

    fn id(&self) -> String {
        self.id.clone()
    }

    /// - `template_created` (template_id, created_at): requests made from a template, by time.
    /// - `status` (status): requests in a state, e.g. PENDING ones for the provisioner.
    fn indexes() -> Vec<IndexSpec> {
        vec![IndexSpec::new("template_created", &["template_id", "created_at"]), IndexSpec::new("status", &["status"])]
    }
}

lifecycle_enum! {
    /// Where a [`Machine`] is in its lifecycle. Serialized as the upper-case name (`"READY"`).
    ///
    /// ```text
    ///   PROVISIONING --booted------------> READY
    ///   READY        --work assigned-----> BUSY
    ///   BUSY         --work done---------> READY
    ///   READY, BUSY  --drain-------------> DRAINING     (finish current work, take no more)
    ///   DRAINING     --drain cancelled---> READY
    ///   PROVISIONING, READY, BUSY, DRAINING --terminate--> TERMINATED
    ///   PROVISIONING, READY, BUSY, DRAINING --fault------> FAILED
    /// ```
    ///
    /// TERMINATED and FAILED are terminal; a replacement is a new machine.
    pub enum MachineStatus {
        /// Being created by the provider. The initial state.
        Provisioning = "PROVISIONING" => [Ready, Terminated, Failed],
        /// Up and idle, accepting work.
        Ready = "READY" => [Busy, Draining, Terminated, Failed],
        /// Up and running work.
        Busy = "BUSY" => [Ready, Draining, Terminated, Failed],
        /// Finishing its current work and accepting no more, before termination or maintenance.
        Draining = "DRAINING" => [Ready, Terminated, Failed],
        /// Shut down and released. Terminal.
        Terminated = "TERMINATED" => [],
        /// Lost or broken (failed to boot, stopped heartbeating, hardware fault). Terminal.
        Failed = "FAILED" => [],
    }
}

/// A machine provisioned for a [`HostRequest`]. Collection `machines`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Machine {
    /// Primary key.
    pub id: String,
    /// The request the machine was provisioned for.
    pub request_id: String,
    /// Host name.
    pub hostname: String,
    /// Network address (IP address or DNS name), once known.
    #[serde(default)]
    pub address: Option<String>,
    /// Lifecycle state; change it only along [`MachineStatus::can_transition_to`].
    pub status: MachineStatus,
    /// When the machine record was created, in milliseconds since the Unix epoch.
    pub created_at: i64,
    /// When the machine last reported in, in milliseconds since the Unix epoch; `None` before its first
    /// heartbeat.
    #[serde(default)]
    pub last_heartbeat_at: Option<i64>,
}

impl Record for Machine {
    const COLLECTION: &'static str = "machines";

    fn id(&self) -> String {
        self.id.clone()
    }

    /// - `request_created` (request_id, created_at): a request's machines, by time.
    /// - `status` (status): machines in a state, e.g. READY ones to place work on.
    fn indexes() -> Vec<IndexSpec> {
        vec![IndexSpec::new("request_created", &["request_id", "created_at"]), IndexSpec::new("status", &["status"])]
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::testing::check_record;

    fn full_template() -> HostTemplate {
        HostTemplate {
            id: "ht-1".to_owned(),
            name: "gpu-a100-8x".to_owned(),
            cpus: 96,
            memory_mb: 1_179_648,
            gpus: 8,
            gpu_type: Some("A100".to_owned()),
            image: "ami-0abc123".to_owned(),
            created_at: 1_690_000_000_000,
        }
    }

    fn full_request() -> HostRequest {
        HostRequest {
            id: "req-123".to_owned(),
            template_id: "ht-1".to_owned(),
            requested_by: "autoscaler".to_owned(),
            count: 3,
            status: HostRequestStatus::Provisioning,
            created_at: 1_700_000_000_000,
            updated_at: 1_700_000_030_000,
        }
    }

    fn full_machine() -> Machine {
        Machine {
            id: "machine-456".to_owned(),
            request_id: "req-123".to_owned(),
            hostname: "gpu-node-17".to_owned(),
            address: Some("10.0.1.100".to_owned()),
            status: MachineStatus::Ready,
            created_at: 1_700_000_001_000,
            last_heartbeat_at: Some(1_700_000_091_000),
        }
    }

    #[test]
    fn record_declarations_fit_samples() {
        assert_eq!(
            [HostTemplate::COLLECTION, HostRequest::COLLECTION, Machine::COLLECTION],
            ["host_templates", "host_requests", "machines"]
        );
        check_record(&full_template());
        check_record(&full_request());
        check_record(&full_machine());
        check_record(&Machine { address: None, last_heartbeat_at: None, ..full_machine() });
    }

    #[test]
    fn serialized_form_is_stable() {
        assert_eq!(
            serde_json::to_value(full_template()).unwrap(),
            json!({
                "id": "ht-1", "name": "gpu-a100-8x", "cpus": 96, "memory_mb": 1_179_648, "gpus": 8,
                "gpu_type": "A100", "image": "ami-0abc123", "created_at": 1_690_000_000_000_i64
            })
        );
        assert_eq!(
            serde_json::to_value(full_request()).unwrap(),
            json!({
                "id": "req-123", "template_id": "ht-1", "requested_by": "autoscaler", "count": 3,
                "status": "PROVISIONING", "created_at": 1_700_000_000_000_i64, "updated_at": 1_700_000_030_000_i64
            })
        );
        assert_eq!(
            serde_json::to_value(full_machine()).unwrap(),
            json!({
                "id": "machine-456", "request_id": "req-123", "hostname": "gpu-node-17", "address": "10.0.1.100",
                "status": "READY", "created_at": 1_700_000_001_000_i64, "last_heartbeat_at": 1_700_000_091_000_i64
            })
        );
    }

    #[test]
    fn status_spelling() {
        assert_eq!(serde_json::to_string(&HostRequestStatus::Pending).unwrap(), "\"PENDING\"");
        assert_eq!(serde_json::to_string(&MachineStatus::Provisioning).unwrap(), "\"PROVISIONING\"");
        assert_eq!(serde_json::from_str::<MachineStatus>("\"DRAINING\"").unwrap(), MachineStatus::Draining);
        assert!(serde_json::from_str::<MachineStatus>("\"RUNNING\"").is_err());
        let names: Vec<&str> = HostRequestStatus::ALL.iter().map(|s| s.as_str()).collect();
        assert_eq!(names, ["PENDING", "PROVISIONING", "FULFILLED", "FAILED", "CANCELLED"]);
        let names: Vec<&str> = MachineStatus::ALL.iter().map(|s| s.as_str()).collect();
        assert_eq!(names, ["PROVISIONING", "READY", "BUSY", "DRAINING", "TERMINATED", "FAILED"]);
    }

    #[test]
    fn host_request_lifecycle() {
        use HostRequestStatus::*;
        let allowed = [
            (Pending, Provisioning),
            (Pending, Failed),
            (Pending, Cancelled),
            (Provisioning, Fulfilled),
            (Provisioning, Failed),
            (Provisioning, Cancelled),
        ];
        for &from in HostRequestStatus::ALL {
            for &to in HostRequestStatus::ALL {
                assert_eq!(from.can_transition_to(to), allowed.contains(&(from, to)), "{from} -> {to}");
            }
        }
        assert!(!Pending.can_transition_to(Fulfilled), "fulfilment goes through provisioning");
        assert!(!Fulfilled.can_transition_to(Cancelled));
        let terminal: Vec<_> = HostRequestStatus::ALL.iter().copied().filter(|s| s.is_terminal()).collect();
        assert_eq!(terminal, [Fulfilled, Failed, Cancelled]);
    }

    #[test]
    fn machine_lifecycle() {
        use MachineStatus::*;
        assert!(Provisioning.can_transition_to(Ready));
        assert!(Ready.can_transition_to(Busy));
        assert!(Busy.can_transition_to(Ready));
        assert!(Busy.can_transition_to(Draining));
        assert!(Draining.can_transition_to(Ready));
        assert!(Draining.can_transition_to(Terminated));
        assert!(Busy.can_transition_to(Failed));
        assert!(!Provisioning.can_transition_to(Busy), "a machine is READY before it takes work");
        assert!(!Draining.can_transition_to(Busy), "a draining machine takes no new work");
        assert!(!Ready.can_transition_to(Provisioning));
        for &next in MachineStatus::ALL {
            assert!(!Terminated.can_transition_to(next));
            assert!(!Failed.can_transition_to(next));
        }
        let terminal: Vec<_> = MachineStatus::ALL.iter().copied().filter(|s| s.is_terminal()).collect();
        assert_eq!(terminal, [Terminated, Failed]);
    }

    #[test]
    fn decode_minimal_documents() {
        let template: HostTemplate = serde_json::from_value(json!({
            "id": "t", "name": "n", "cpus": 4, "memory_mb": 16384, "image": "img", "created_at": 0
        }))
        .unwrap();
        assert_eq!((template.gpus, template.gpu_type), (0, None));

        let machine: Machine = serde_json::from_value(json!({
            "id": "m", "request_id": "r", "hostname": "h", "status": "PROVISIONING", "created_at": 0
        }))
        .unwrap();
        assert_eq!((machine.address, machine.last_heartbeat_at), (None, None));

        // A status this version does not know is refused, not guessed.
        assert!(serde_json::from_value::<Machine>(json!({
            "id": "m", "request_id": "r", "hostname": "h", "status": "RUNNING", "created_at": 0
        }))
        .is_err());
    }
}
