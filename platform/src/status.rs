//! Lifecycle enums: the shape every status type in the domain shares.
//!
//! A status type is declared once, with [`lifecycle_enum!`], as a table: each state, its serialized name and
//! the states it may move to. From that table come the enum (serialized as the name, e.g. `"PENDING"`),
//! `ALL`, `as_str`, `next_states`, `can_transition_to`, `is_terminal`, `Display` and `FromStr`, so the
//! serde form, the string form and the transition rules cannot drift apart.
//!
//! Conventions, checked by the tests below for every status type:
//! - the first state declared is the one a record starts in;
//! - a state is never its own successor (rewriting a record without changing its status is not a transition);
//! - a terminal state has no successors, and some terminal state is reachable from every state;
//! - names are upper-case ASCII letters and `_`, and never change once written (retire a state instead).

use std::fmt;

/// The error of parsing a string that names no state of a status type, as in `"RUNNIN".parse::<JobStatus>()`
/// (see [`JobStatus`](super::JobStatus)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseStatusError {
    kind: &'static str,
    input: String,
}

impl ParseStatusError {
    pub(crate) fn new(kind: &'static str, input: &str) -> Self {
        Self { kind, input: input.to_owned() }
    }

    /// The status type's name, e.g. `"JobStatus"`.
    pub fn kind(&self) -> &'static str {
        self.kind
    }

    /// The string that was rejected.
    pub fn input(&self) -> &str {
        &self.input
    }
}

impl fmt::Display for ParseStatusError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?} is not a {}", self.input, self.kind)
    }
}

impl std::error::Error for ParseStatusError {}

/// Declares a status enum from its transition table:
///
/// ```text
/// lifecycle_enum! {
///     /// docs, including the state diagram
///     pub enum RunStatus {
///         /// docs
///         Pending = "PENDING" => [Running, Cancelled],
///         Running = "RUNNING" => [Completed],
///         Completed = "COMPLETED" => [],
///         Cancelled = "CANCELLED" => [],
///     }
/// }
/// ```
macro_rules! lifecycle_enum {
    (
        $(#[$meta:meta])*
        pub enum $name:ident {
            $(
                $(#[$variant_meta:meta])*
                $variant:ident = $text:literal => [$($next:ident),* $(,)?]
            ),+ $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, ::serde::Serialize, ::serde::Deserialize)]
        pub enum $name {
            $(
                $(#[$variant_meta])*
                #[serde(rename = $text)]
                $variant,
            )+
        }

        impl $name {
            /// Every state, in declaration order; the first is the one a record starts in.
            pub const ALL: &'static [Self] = &[$(Self::$variant),+];

            /// The state's name, exactly as serialized (e.g. `"PENDING"`).
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $text,)+
                }
            }

            /// The states this state may move to directly; empty for a terminal state. A state is never
            /// its own successor.
            pub fn next_states(self) -> &'static [Self] {
                match self {
                    $(Self::$variant => &[$(Self::$next),*],)+
                }
            }

            /// Whether the lifecycle allows moving from this state straight to `next`. False for `next ==
            /// self` and for every move out of a terminal state.
            pub fn can_transition_to(self, next: Self) -> bool {
                self.next_states().contains(&next)
            }

            /// Whether this state is final: no transition leaves it.
            pub fn is_terminal(self) -> bool {
                self.next_states().is_empty()
            }
        }

        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl ::std::str::FromStr for $name {
            type Err = $crate::ParseStatusError;

            /// Parses the serialized name (`"PENDING"`); case-sensitive.
            fn from_str(text: &str) -> Result<Self, Self::Err> {
                Self::ALL
                    .iter()
                    .copied()
                    .find(|state| state.as_str() == text)
                    .ok_or_else(|| $crate::ParseStatusError::new(stringify!($name), text))
            }
        }

        #[cfg(test)]
        impl $crate::status::Lifecycle for $name {
            const ALL: &'static [Self] = $name::ALL;
            fn as_str(self) -> &'static str {
                $name::as_str(self)
            }
            fn next_states(self) -> &'static [Self] {
                $name::next_states(self)
            }
        }
    };
}

pub(crate) use lifecycle_enum;

/// What the generic tests need of a status type (implemented by [`lifecycle_enum!`] in test builds).
#[cfg(test)]
pub(crate) trait Lifecycle:
    Copy
    + Eq
    + fmt::Debug
    + fmt::Display
    + std::str::FromStr<Err = ParseStatusError>
    + serde::Serialize
    + serde::de::DeserializeOwned
    + 'static
{
    const ALL: &'static [Self];
    fn as_str(self) -> &'static str;
    fn next_states(self) -> &'static [Self];
}

#[cfg(test)]
mod tests {
    use super::{Lifecycle, ParseStatusError};
    use crate::{ExperimentStatus, HostRequestStatus, JobStatus, MachineStatus, ModelStage, RunStatus};

    /// States reachable from `from` in one or more steps.
    fn reachable<S: Lifecycle>(from: S) -> Vec<S> {
        let mut seen = vec![from];
        let mut i = 0;
        while let Some(&state) = seen.get(i) {
            for &next in state.next_states() {
                if !seen.contains(&next) {
                    seen.push(next);
                }
            }
            i += 1;
        }
        seen
    }

    fn check<S: Lifecycle>() {
        let all = S::ALL;
        assert!(!all.is_empty());
        for (i, &state) in all.iter().enumerate() {
            let name = state.as_str();
            assert!(!name.is_empty() && name.bytes().all(|b| b.is_ascii_uppercase() || b == b'_'), "{name}");
            assert!(all.iter().skip(i + 1).all(|other| other.as_str() != name), "duplicate name {name}");
            // as_str, Display, FromStr and serde agree.
            assert_eq!(serde_json::to_value(state).unwrap(), serde_json::Value::String(name.to_owned()));
            assert_eq!(serde_json::from_value::<S>(serde_json::json!(name)).unwrap(), state);
            assert_eq!(state.to_string(), name);
            assert_eq!(name.parse::<S>().ok(), Some(state));
            // Transition table sanity.
            let next = state.next_states();
            assert!(!next.contains(&state), "{name} lists itself as a successor");
            for (j, n) in next.iter().enumerate() {
                assert!(!next.iter().skip(j + 1).any(|m| m == n), "{name} lists {n:?} twice");
            }
            assert!(
                reachable(state).iter().any(|s| s.next_states().is_empty()),
                "no terminal state is reachable from {name}"
            );
        }
        let first = all.first().copied().unwrap();
        assert_eq!(reachable(first).len(), all.len(), "some state is unreachable from {first:?}");
        // Lower case, unknown names and the empty string are refused.
        let lower = first.as_str().to_ascii_lowercase();
        assert!(lower.parse::<S>().is_err());
        assert!(serde_json::from_value::<S>(serde_json::json!(lower)).is_err());
        assert!("".parse::<S>().is_err());
    }

    #[test]
    fn every_status_type_is_consistent() {
        check::<JobStatus>();
        check::<ExperimentStatus>();
        check::<RunStatus>();
        check::<ModelStage>();
        check::<HostRequestStatus>();
        check::<MachineStatus>();
    }

    #[test]
    fn parse_error_names_the_type_and_input() {
        let err = "RUNNIN".parse::<JobStatus>().unwrap_err();
        assert_eq!(err, ParseStatusError::new("JobStatus", "RUNNIN"));
        assert_eq!(err.kind(), "JobStatus");
        assert_eq!(err.input(), "RUNNIN");
        assert_eq!(err.to_string(), "\"RUNNIN\" is not a JobStatus");
    }
}
