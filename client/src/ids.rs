//! Typed ids: a job's, a lease's, a key's and a node's id are different types, so that one
//! can never be passed where another is meant. On the wire each is a plain JSON string.

use serde::{Deserialize, Serialize};
use std::borrow::Borrow;
use std::fmt;

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(
            Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
        )]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            pub fn new(id: impl Into<String>) -> Self {
                Self(id.into())
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }

            pub fn into_string(self) -> String {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl From<String> for $name {
            fn from(id: String) -> Self {
                Self(id)
            }
        }

        impl From<&str> for $name {
            fn from(id: &str) -> Self {
                Self(id.to_owned())
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> Self {
                id.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        /// Lets maps keyed by the id be read with a `&str`.
        impl Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.0 == other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.0 == *other
            }
        }
    };
}

id_type!(
    /// A job's id, `job-…`, time-ordered.
    JobId
);
id_type!(
    /// One lease of a job to a node, `lease-…`; a new one for every run.
    LeaseId
);
id_type!(
    /// An API key's id (not the secret).
    KeyId
);
id_type!(
    /// A node's name, as it calls itself: 1 to 128 characters.
    NodeId
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_plain_strings_on_the_wire_and_compare_with_str() {
        let id = JobId::new("job-1");
        assert_eq!(serde_json::to_string(&id).unwrap(), "\"job-1\"");
        assert_eq!(serde_json::from_str::<JobId>("\"job-1\"").unwrap(), id);
        assert_eq!(id, "job-1");
        assert_eq!(id.to_string(), "job-1");
        let map: std::collections::HashMap<LeaseId, u8> = [(LeaseId::from("lease-1"), 1)].into();
        assert_eq!(map.get("lease-1"), Some(&1));
        assert_eq!(String::from(NodeId::from("n".to_owned())), "n");
        assert_eq!(KeyId::new("k").as_str(), "k");
        assert_eq!(KeyId::new("k").into_string(), "k");
    }
}
