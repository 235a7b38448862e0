//! The service catalog: which services exist, what hardware each needs, how many workers
//! should run it, and the short names the frontend uses for them.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The kind of worker a service needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Tier {
    /// A worker with a GPU.
    Gpu,
    /// Any worker.
    Cpu,
    /// A worker of type `storage` (declared, or detected from its free disk).
    Storage,
}

impl Tier {
    /// Whether a worker with these capabilities is of the kind.
    pub fn admits(self, capabilities: &rma_proto::registration::Capabilities) -> bool {
        match self {
            Self::Gpu => capabilities.has_gpu,
            Self::Cpu => true,
            Self::Storage => capabilities.worker_type == "storage",
        }
    }
}

/// What one replica of a service takes from its worker, beyond its tier: routerd assigns it
/// only where this much is left after the worker's other assignments.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Needs {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ram: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gpu_memory: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disk: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServiceSpec {
    pub tier: Tier,
    /// How many workers should run it; fewer is a gap.
    pub replicas: u32,
    pub needs: Needs,
    /// How long a call may wait for the worker's response headers.
    #[serde(skip)]
    pub timeout: Duration,
    /// The largest request body a call may carry.
    pub max_body: u64,
}

impl ServiceSpec {
    /// A service's defaults: GPU work (inference, OCR) is slow and takes whole documents.
    pub fn new(tier: Tier) -> Self {
        match tier {
            Tier::Gpu => Self {
                tier,
                replicas: 1,
                needs: Needs::default(),
                timeout: Duration::from_secs(120),
                max_body: 20 << 20,
            },
            Tier::Cpu | Tier::Storage => Self {
                tier,
                replicas: 1,
                needs: Needs::default(),
                timeout: Duration::from_secs(30),
                max_body: 10 << 20,
            },
        }
    }
}

/// The names the frontend calls services by (seed 000, section 3), with the canonical name
/// each stands for.
/// `ocr` and `llm` are the types seed 002 posts to `/api/service/{type}`.
pub const ALIASES: [(&str, &str); 6] = [
    ("rag", "rag-embeddings"),
    ("upload", "document-processing"),
    ("notes", "notes-coa"),
    ("ner", "ner-extraction"),
    ("ocr", "vision-ocr"),
    ("llm", "llm-inference"),
];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Catalog {
    services: BTreeMap<String, ServiceSpec>,
}

impl Default for Catalog {
    /// The services of seed 000, section 11: two need a GPU, four run on CPU; one replica each.
    fn default() -> Self {
        Self::new(
            [
                ("llm-inference", ServiceSpec::new(Tier::Gpu)),
                ("vision-ocr", ServiceSpec::new(Tier::Gpu)),
                ("rag-embeddings", ServiceSpec::new(Tier::Cpu)),
                ("document-processing", ServiceSpec::new(Tier::Cpu)),
                ("notes-coa", ServiceSpec::new(Tier::Cpu)),
                ("ner-extraction", ServiceSpec::new(Tier::Cpu)),
            ]
            .into_iter()
            .map(|(name, spec)| (name.to_owned(), spec)),
        )
    }
}

impl Catalog {
    pub fn new(services: impl IntoIterator<Item = (String, ServiceSpec)>) -> Self {
        Self {
            services: services.into_iter().collect(),
        }
    }

    /// The canonical name for `name`, which may be an alias; `None` for a service not in the
    /// catalog.
    pub fn resolve<'a>(&'a self, name: &'a str) -> Option<&'a str> {
        let canonical = ALIASES
            .iter()
            .find(|(alias, _)| *alias == name)
            .map_or(name, |(_, canonical)| canonical);
        self.services
            .get_key_value(canonical)
            .map(|(k, _)| k.as_str())
    }

    pub fn get(&self, name: &str) -> Option<&ServiceSpec> {
        self.services.get(name)
    }

    /// Every service, in name order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &ServiceSpec)> {
        self.services.iter().map(|(k, v)| (k.as_str(), v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aliases_and_canonical_names_resolve_and_unknown_names_do_not() {
        let catalog = Catalog::default();
        assert_eq!(catalog.resolve("rag"), Some("rag-embeddings"));
        assert_eq!(catalog.resolve("upload"), Some("document-processing"));
        assert_eq!(catalog.resolve("notes"), Some("notes-coa"));
        assert_eq!(catalog.resolve("ner"), Some("ner-extraction"));
        assert_eq!(catalog.resolve("vision-ocr"), Some("vision-ocr"));
        assert_eq!(catalog.resolve("ocr"), Some("vision-ocr"));
        assert_eq!(catalog.resolve("nope"), None);
        assert_eq!(
            catalog.get("llm-inference").map(|s| s.tier),
            Some(Tier::Gpu)
        );
        assert_eq!(catalog.iter().count(), 6);
    }
}
