//! Compiles a validated policy once into an index by audience and method, so a decision only
//! looks at the few rules that could apply.

use std::collections::HashMap;

use sha2::{Digest, Sha256};

use crate::policy::{MethodSpec, Policy, Rule};

/// Candidate rules (indices into `CompiledPolicy::rules`, ascending = file order) by method.
#[derive(Debug, Default)]
struct MethodIndex {
    /// Rules naming the method, merged with the `*`-method rules.
    by_method: HashMap<Box<str>, Vec<u32>>,
    /// Rules with method `*`: the candidates for any method not named by a rule.
    any_method: Vec<u32>,
}

impl MethodIndex {
    fn insert(&mut self, idx: u32, rule: &Rule) {
        for method in &rule.methods {
            match method {
                MethodSpec::Any => self.any_method.push(idx),
                MethodSpec::Exact(m) => self.by_method.entry(m.clone()).or_default().push(idx),
            }
        }
    }

    fn finish(&mut self) {
        dedup_sorted(&mut self.any_method);
        for list in self.by_method.values_mut() {
            list.extend_from_slice(&self.any_method);
            dedup_sorted(list);
        }
    }

    fn candidates(&self, method: &str) -> &[u32] {
        self.by_method.get(method).unwrap_or(&self.any_method)
    }
}

fn dedup_sorted(list: &mut Vec<u32>) {
    list.sort_unstable();
    list.dedup();
}

/// A policy ready to evaluate.
#[derive(Debug)]
pub struct CompiledPolicy {
    pub rules: Vec<Rule>,
    /// First 16 hex digits of the SHA-256 of the file's bytes.
    pub version: String,
    /// Rules by concrete audience (rules with an audience pattern that matches it are folded in).
    by_audience: HashMap<Box<str>, MethodIndex>,
    /// For audiences no rule names concretely: the rules with audience patterns only.
    other_audiences: MethodIndex,
}

/// The policy version of some policy bytes.
pub fn version_of(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    let mut hex = hex::encode(digest);
    hex.truncate(16);
    hex
}

impl CompiledPolicy {
    pub fn compile(policy: Policy, source_bytes: &[u8]) -> Self {
        let rules = policy.rules;
        let mut by_audience: HashMap<Box<str>, MethodIndex> = HashMap::new();
        let mut other_audiences = MethodIndex::default();
        // Concrete audiences first, so pattern rules can be folded into each of them.
        for rule in &rules {
            for aud in &rule.audiences {
                if let Some(exact) = aud.exact() {
                    by_audience.entry(exact.into()).or_default();
                }
            }
        }
        for (i, rule) in rules.iter().enumerate() {
            let Ok(idx) = u32::try_from(i) else {
                break; // more than 4 billion rules cannot be loaded anyway
            };
            for aud in &rule.audiences {
                match aud.exact() {
                    Some(exact) => {
                        if let Some(bucket) = by_audience.get_mut(exact) {
                            bucket.insert(idx, rule);
                        }
                    }
                    None => {
                        other_audiences.insert(idx, rule);
                        for (name, bucket) in by_audience.iter_mut() {
                            if aud.matches(name) {
                                bucket.insert(idx, rule);
                            }
                        }
                    }
                }
            }
        }
        other_audiences.finish();
        for bucket in by_audience.values_mut() {
            bucket.finish();
        }
        Self {
            rules,
            version: version_of(source_bytes),
            by_audience,
            other_audiences,
        }
    }

    /// The rules that may apply to this audience and method, in file order. Each must still be
    /// checked in full: the index only narrows.
    pub fn candidates(&self, audience: &str, method: &str) -> &[u32] {
        self.by_audience
            .get(audience)
            .unwrap_or(&self.other_audiences)
            .candidates(method)
    }
}
