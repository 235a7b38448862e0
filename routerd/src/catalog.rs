//! The service catalog: which services exist, what hardware each needs, how many workers
//! should run it, and the short names the frontend uses for them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The hardware a service needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Tier {
    Gpu,
    Cpu,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceSpec {
    pub tier: Tier,
    /// How many workers should run it; fewer is a gap.
    pub replicas: u32,
}

/// The names the frontend calls services by (seed 000, section 3), with the canonical name
/// each stands for.
pub const ALIASES: [(&str, &str); 4] = [
    ("rag", "rag-embeddings"),
    ("upload", "document-processing"),
    ("notes", "notes-coa"),
    ("ner", "ner-extraction"),
];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Catalog {
    services: BTreeMap<String, ServiceSpec>,
}

impl Default for Catalog {
    /// The services of seed 000, section 11: two need a GPU, four run on CPU; one replica each.
    fn default() -> Self {
        let spec = |tier| ServiceSpec { tier, replicas: 1 };
        Self::new(
            [
                ("llm-inference", spec(Tier::Gpu)),
                ("vision-ocr", spec(Tier::Gpu)),
                ("rag-embeddings", spec(Tier::Cpu)),
                ("document-processing", spec(Tier::Cpu)),
                ("notes-coa", spec(Tier::Cpu)),
                ("ner-extraction", spec(Tier::Cpu)),
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
        assert_eq!(catalog.resolve("nope"), None);
        assert_eq!(
            catalog.get("llm-inference").map(|s| s.tier),
            Some(Tier::Gpu)
        );
        assert_eq!(catalog.iter().count(), 6);
    }
}
