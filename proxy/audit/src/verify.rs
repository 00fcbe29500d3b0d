//! Recomputes every chain and checks it against the signed checkpoints.
//! Pure: the store, the reader and the offline export check all call
//! [`verify_chains`](crate::verify::verify_chains) on what they loaded.
//!
//! Per instance it reports the FIRST problem in chain order (after a break
//! nothing later can be trusted anyway), plus every checkpoint whose
//! signature does not hold.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::chain::{ChainHash, Entry};
use crate::checkpoint::{Checkpoint, CheckpointKeys, CheckpointKind, SignatureProblem};
use crate::record::{Record, KIND_STATEMENT, KIND_STATEMENT_END};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "problem", rename_all = "snake_case")]
pub enum Problem {
    /// The entry's stored hash does not match its contents: a field was edited.
    Altered { instance: String, seq: u64 },
    /// Entries are missing after `after_seq`; `next_seq` is the next one present.
    Missing {
        instance: String,
        after_seq: u64,
        next_seq: u64,
    },
    /// Entry `seq` links to the hash of entry `links_to_seq`: entries were moved.
    Reordered {
        instance: String,
        seq: u64,
        links_to_seq: u64,
    },
    /// Entry `seq` is not part of the chain: the entry after it links past it.
    Inserted { instance: String, seq: u64 },
    /// A checkpoint covers more entries than the chain holds: its tail was cut.
    TruncatedTail {
        instance: String,
        checkpoint_length: u64,
        chain_length: u64,
    },
    /// The chain's hash at `length` differs from what a checkpoint signed:
    /// the chain was rewritten (hashes recomputed) up to there.
    CheckpointMismatch { instance: String, length: u64 },
    /// A checkpoint whose signature does not verify.
    ForgedCheckpoint {
        instance: String,
        length: u64,
        key_id: String,
        reason: SignatureProblem,
    },
    /// Entry `seq` is intact but its payload cannot be read.
    Malformed {
        instance: String,
        seq: u64,
        detail: String,
    },
}

impl Problem {
    pub fn instance(&self) -> &str {
        match self {
            Problem::Altered { instance, .. }
            | Problem::Missing { instance, .. }
            | Problem::Reordered { instance, .. }
            | Problem::Inserted { instance, .. }
            | Problem::TruncatedTail { instance, .. }
            | Problem::CheckpointMismatch { instance, .. }
            | Problem::ForgedCheckpoint { instance, .. }
            | Problem::Malformed { instance, .. } => instance,
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::Altered { instance, seq } => write!(
                f,
                "{instance} #{seq}: record altered (its contents no longer match its hash)"
            ),
            Problem::Missing {
                instance,
                after_seq,
                next_seq,
            } => write!(
                f,
                "{instance} #{}: record missing (after #{after_seq}, next present is #{next_seq})",
                after_seq + 1
            ),
            Problem::Reordered {
                instance,
                seq,
                links_to_seq,
            } => write!(
                f,
                "{instance} #{seq}: records reordered (it follows #{links_to_seq} in the chain)"
            ),
            Problem::Inserted { instance, seq } => write!(
                f,
                "{instance} #{seq}: record inserted (the next record links past it)"
            ),
            Problem::TruncatedTail {
                instance,
                checkpoint_length,
                chain_length,
            } => write!(
                f,
                "{instance}: tail truncated (a signed checkpoint covers #{checkpoint_length}, the chain ends at #{chain_length})"
            ),
            Problem::CheckpointMismatch { instance, length } => write!(
                f,
                "{instance} #{length}: chain rewritten (hash differs from the signed checkpoint)"
            ),
            Problem::ForgedCheckpoint {
                instance,
                length,
                key_id,
                reason,
            } => {
                let why = match reason {
                    SignatureProblem::UnknownKeyId => "unknown key id",
                    SignatureProblem::BadSignature => "bad signature",
                };
                write!(
                    f,
                    "{instance}: checkpoint at #{length} is forged ({why}, key {key_id:?})"
                )
            }
            Problem::Malformed {
                instance,
                seq,
                detail,
            } => write!(f, "{instance} #{seq}: payload unreadable ({detail})"),
        }
    }
}

/// A statement whose begin entry has no completion: in flight when the
/// store was read, or the gateway stopped (crashed) before the outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IncompleteStatement {
    pub seq: u64,
    pub session_id: String,
    pub sequence: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainReport {
    pub instance: String,
    /// Entries checked.
    pub entries: u64,
    /// First entry present (after a purge or in an export window, > 1).
    pub first_seq: Option<u64>,
    pub last_seq: u64,
    pub head_hash: ChainHash,
    /// The chain starts from a signed purge anchor at this length.
    pub purge_anchor: Option<u64>,
    /// The chain starts from an unsigned window start (an export).
    pub window_start: Option<u64>,
    pub checkpoints_verified: usize,
    pub last_checkpoint: Option<u64>,
    /// Entries after the last checkpoint: protected by the chain only, not
    /// yet by a signature.
    pub unsealed_entries: u64,
    pub incomplete_statements: Vec<IncompleteStatement>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct VerifyReport {
    pub chains: Vec<ChainReport>,
    pub problems: Vec<Problem>,
}

impl VerifyReport {
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }

    pub fn first_problem(&self) -> Option<&Problem> {
        self.problems.first()
    }
}

impl fmt::Display for VerifyReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for chain in &self.chains {
            write!(
                f,
                "chain {}: {} entries (#{}..#{}), head {}, {} checkpoints verified",
                chain.instance,
                chain.entries,
                chain.first_seq.unwrap_or(chain.last_seq),
                chain.last_seq,
                chain.head_hash,
                chain.checkpoints_verified
            )?;
            if let Some(anchor) = chain.purge_anchor {
                write!(f, ", starts after purge anchor #{anchor}")?;
            }
            if let Some(start) = chain.window_start {
                write!(f, ", export window starts at #{start}")?;
            }
            if chain.unsealed_entries > 0 {
                write!(
                    f,
                    ", {} entries after the last checkpoint",
                    chain.unsealed_entries
                )?;
            }
            if !chain.incomplete_statements.is_empty() {
                write!(
                    f,
                    ", {} statements without outcome",
                    chain.incomplete_statements.len()
                )?;
            }
            writeln!(f)?;
        }
        if self.problems.is_empty() {
            writeln!(f, "OK: every chain verifies")
        } else {
            for problem in &self.problems {
                writeln!(f, "FAILED: {problem}")?;
            }
            Ok(())
        }
    }
}

/// Where a chain is expected to start when it is not at seq 1 or a purge
/// anchor: the first entry of an export window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WindowStart {
    pub first_seq: u64,
    pub prev_hash: ChainHash,
}

/// Verifies every chain found in `entries` and `checkpoints`.
/// `entries` need not be sorted; duplicates of a seq count as insertions.
pub fn verify_chains(
    entries: &[Entry],
    checkpoints: &[Checkpoint],
    keys: &CheckpointKeys,
    windows: &BTreeMap<String, WindowStart>,
) -> VerifyReport {
    let mut by_instance: BTreeMap<&str, Vec<&Entry>> = BTreeMap::new();
    for entry in entries {
        by_instance.entry(&entry.instance).or_default().push(entry);
    }
    let mut checkpoints_by_instance: BTreeMap<&str, Vec<&Checkpoint>> = BTreeMap::new();
    for checkpoint in checkpoints {
        checkpoints_by_instance
            .entry(&checkpoint.instance)
            .or_default()
            .push(checkpoint);
        by_instance.entry(&checkpoint.instance).or_default();
    }

    let mut report = VerifyReport::default();
    for (instance, mut chain) in by_instance {
        chain.sort_by_key(|entry| entry.seq);
        let instance_checkpoints = checkpoints_by_instance.remove(instance).unwrap_or_default();
        let (chain_report, problems) = verify_chain(
            instance,
            &chain,
            &instance_checkpoints,
            keys,
            windows.get(instance),
        );
        report.chains.push(chain_report);
        report.problems.extend(problems);
    }
    report
}

fn verify_chain(
    instance: &str,
    chain: &[&Entry],
    checkpoints: &[&Checkpoint],
    keys: &CheckpointKeys,
    window: Option<&WindowStart>,
) -> (ChainReport, Vec<Problem>) {
    let mut problems = Vec::new();
    let mut trusted: Vec<&Checkpoint> = Vec::new();
    for checkpoint in checkpoints {
        match checkpoint.verify_signature(keys) {
            Ok(()) => trusted.push(checkpoint),
            Err(reason) => problems.push(Problem::ForgedCheckpoint {
                instance: instance.to_owned(),
                length: checkpoint.length,
                key_id: checkpoint.key_id.clone(),
                reason,
            }),
        }
    }
    let anchor = trusted
        .iter()
        .filter(|c| c.kind == CheckpointKind::PurgeAnchor)
        .max_by_key(|c| c.length)
        .copied();

    // Where the chain must start: a signed purge anchor beats a window.
    let (mut expected_seq, mut head, window_start) = match (anchor, window) {
        (Some(anchor), _) => (anchor.length + 1, anchor.head_hash, None),
        (None, Some(window)) if window.first_seq > 1 => {
            (window.first_seq, window.prev_hash, Some(window.first_seq))
        }
        _ => (1, ChainHash::GENESIS, None),
    };
    let start_seq = expected_seq;
    let covered_by_start = expected_seq - 1;
    let chain: Vec<&Entry> = chain
        .iter()
        .copied()
        .filter(|entry| entry.seq > covered_by_start)
        .collect();

    let mut by_length: BTreeMap<u64, Vec<&Checkpoint>> = BTreeMap::new();
    for checkpoint in &trusted {
        if checkpoint.length > covered_by_start {
            by_length
                .entry(checkpoint.length)
                .or_default()
                .push(checkpoint);
        }
    }
    let hash_positions: HashMap<ChainHash, u64> =
        chain.iter().map(|entry| (entry.hash, entry.seq)).collect();

    let mut pending: BTreeMap<u64, IncompleteStatement> = BTreeMap::new();
    let mut completed: BTreeSet<u64> = BTreeSet::new();
    let mut checked = 0u64;
    let mut checkpoints_verified = 0usize;
    let mut chain_problem = None;

    for (index, entry) in chain.iter().enumerate() {
        if let Some(problem) =
            check_link(instance, &chain, index, expected_seq, head, &hash_positions)
        {
            chain_problem = Some(problem);
            break;
        }
        if let Some(problem) = track_statement(instance, entry, &mut pending, &mut completed) {
            chain_problem = Some(problem);
            break;
        }
        head = entry.hash;
        expected_seq = entry.seq + 1;
        checked += 1;
        if let Some(at_length) = by_length.get(&entry.seq) {
            if at_length.iter().any(|c| c.head_hash != head) {
                chain_problem = Some(Problem::CheckpointMismatch {
                    instance: instance.to_owned(),
                    length: entry.seq,
                });
                break;
            }
            checkpoints_verified += at_length.len();
        }
    }

    let last_seq = expected_seq - 1;
    if chain_problem.is_none() {
        if let Some((&length, _)) = by_length.range(last_seq + 1..).next_back() {
            chain_problem = Some(Problem::TruncatedTail {
                instance: instance.to_owned(),
                checkpoint_length: length,
                chain_length: last_seq,
            });
        }
        if let Some(anchor) = anchor {
            checkpoints_verified += trusted
                .iter()
                .filter(|c| c.length <= covered_by_start && c.length == anchor.length)
                .count();
        }
    }
    if let Some(problem) = chain_problem {
        problems.insert(0, problem);
    }

    let last_checkpoint = trusted
        .iter()
        .map(|c| c.length)
        .filter(|&length| length <= last_seq)
        .max();
    let report = ChainReport {
        instance: instance.to_owned(),
        entries: checked,
        first_seq: chain.first().map(|entry| entry.seq).filter(|_| checked > 0),
        last_seq,
        head_hash: head,
        purge_anchor: anchor.map(|a| a.length),
        window_start,
        checkpoints_verified,
        last_checkpoint,
        unsealed_entries: last_seq.saturating_sub(last_checkpoint.unwrap_or(start_seq - 1)),
        incomplete_statements: pending.into_values().collect(),
    };
    (report, problems)
}

/// Checks that `chain[index]` is the entry expected at this position.
fn check_link(
    instance: &str,
    chain: &[&Entry],
    index: usize,
    expected_seq: u64,
    head: ChainHash,
    hash_positions: &HashMap<ChainHash, u64>,
) -> Option<Problem> {
    let entry = chain[index];
    let instance = instance.to_owned();
    if entry.seq > expected_seq {
        return Some(Problem::Missing {
            instance,
            after_seq: expected_seq - 1,
            next_seq: entry.seq,
        });
    }
    if entry.seq < expected_seq {
        // The same seq twice (possible in an export file).
        return Some(Problem::Inserted {
            instance,
            seq: entry.seq,
        });
    }
    if entry.prev_hash != head {
        let previous = index.checked_sub(1).map(|i| chain[i]);
        if let Some(previous) = previous.filter(|p| p.prev_hash == entry.prev_hash) {
            return Some(Problem::Inserted {
                instance,
                seq: previous.seq,
            });
        }
        if let Some(&links_to_seq) = hash_positions.get(&entry.prev_hash) {
            return Some(Problem::Reordered {
                instance,
                seq: entry.seq,
                links_to_seq,
            });
        }
        if entry.compute_hash() != entry.hash {
            return Some(Problem::Altered {
                instance,
                seq: entry.seq,
            });
        }
        // Intact, but what it links to is gone: a record before it was
        // deleted and the rest renumbered.
        return Some(Problem::Missing {
            instance,
            after_seq: expected_seq - 1,
            next_seq: entry.seq,
        });
    }
    if entry.compute_hash() != entry.hash {
        return Some(Problem::Altered {
            instance,
            seq: entry.seq,
        });
    }
    None
}

fn track_statement(
    instance: &str,
    entry: &Entry,
    pending: &mut BTreeMap<u64, IncompleteStatement>,
    completed: &mut BTreeSet<u64>,
) -> Option<Problem> {
    if entry.kind != KIND_STATEMENT && entry.kind != KIND_STATEMENT_END {
        return None;
    }
    let malformed = |detail: String| Problem::Malformed {
        instance: instance.to_owned(),
        seq: entry.seq,
        detail,
    };
    match entry.record() {
        Ok(Record::Statement(begin)) => {
            pending.insert(
                entry.seq,
                IncompleteStatement {
                    seq: entry.seq,
                    session_id: begin.session_id,
                    sequence: begin.sequence,
                },
            );
            None
        }
        Ok(Record::StatementEnd(end)) => {
            if pending.remove(&end.begin_seq).is_some() {
                completed.insert(end.begin_seq);
                None
            } else if completed.contains(&end.begin_seq) {
                Some(malformed(format!(
                    "second completion of the statement at #{}",
                    end.begin_seq
                )))
            } else {
                // The begin entry may be before a purge anchor or window.
                None
            }
        }
        Ok(_) => Some(malformed("payload does not match its kind".into())),
        Err(error) => Some(malformed(error.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::CheckpointSigner;
    use hoop_common::time::Timestamp;

    fn chain(length: u64) -> Vec<Entry> {
        let mut head = ChainHash::GENESIS;
        (1..=length)
            .map(|seq| {
                let entry = Entry::seal(
                    "gw",
                    seq,
                    Timestamp::from_unix_micros(seq as i64),
                    "audit_read",
                    None,
                    format!(
                        r#"{{"action":"n{seq}","detail":null,"event":"audit_read","reader":"r"}}"#
                    ),
                    head,
                );
                head = entry.hash;
                entry
            })
            .collect()
    }

    fn checkpoint(signer: &CheckpointSigner, entries: &[Entry], length: u64) -> Checkpoint {
        let head = entries[length as usize - 1].hash;
        signer.sign(
            "gw",
            CheckpointKind::Periodic,
            length,
            head,
            Timestamp::from_unix_micros(0),
        )
    }

    fn verify(
        entries: &[Entry],
        checkpoints: &[Checkpoint],
        signer: &CheckpointSigner,
    ) -> VerifyReport {
        verify_chains(
            entries,
            checkpoints,
            &signer.public_keys(),
            &BTreeMap::new(),
        )
    }

    #[test]
    fn a_rehashed_chain_is_caught_by_the_checkpoint() {
        let signer = CheckpointSigner::from_seed("k", &[1; 32]);
        let mut entries = chain(6);
        let checkpoints = vec![checkpoint(&signer, &entries, 6)];
        assert!(verify(&entries, &checkpoints, &signer).is_ok());

        // Edit entry 3 and recompute every hash from there, as an attacker
        // who knows the algorithm (but not the key) would.
        entries[2].payload = entries[2].payload.replace("n3", "xx");
        for i in 2..entries.len() {
            entries[i].prev_hash = if i == 0 {
                ChainHash::GENESIS
            } else {
                entries[i - 1].hash
            };
            entries[i].hash = entries[i].compute_hash();
        }
        let report = verify(&entries, &checkpoints, &signer);
        assert_eq!(
            report.first_problem(),
            Some(&Problem::CheckpointMismatch {
                instance: "gw".into(),
                length: 6
            })
        );
    }

    #[test]
    fn an_inserted_record_with_renumbering_is_named() {
        let signer = CheckpointSigner::from_seed("k", &[1; 32]);
        let mut entries = chain(5);
        let forged = Entry::seal(
            "gw",
            3,
            Timestamp::from_unix_micros(3),
            "audit_read",
            None,
            r#"{"action":"forged","detail":null,"event":"audit_read","reader":"r"}"#.into(),
            entries[1].hash,
        );
        for entry in entries.iter_mut().skip(2) {
            entry.seq += 1;
        }
        entries.insert(2, forged);
        let report = verify(&entries, &[], &signer);
        assert_eq!(
            report.first_problem(),
            Some(&Problem::Inserted {
                instance: "gw".into(),
                seq: 3
            })
        );
    }
}
