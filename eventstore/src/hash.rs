//! The hash chain. Each event's hash is SHA-256 over the previous event's
//! hash and this event's stored fields, so changing any stored byte, or
//! removing or reordering an event, breaks the chain from that point on.
//!
//! Every field is written as an 8-byte big-endian length followed by its
//! bytes (absent optional fields as the length `u64::MAX`), so no two
//! different events can produce the same input. An event with a personal
//! part adds two fields at the end, its subject and the sealed bytes (so
//! the chain covers the ciphertext, and destroying the key breaks nothing);
//! one without hashes exactly as before personal parts existed.

use sha2::{Digest, Sha256};

use crate::RecordedEvent;

/// The "previous hash" of the first event.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

pub fn event_hash(previous_hash: &str, event: &RecordedEvent) -> String {
    let mut hasher = Sha256::new();
    let mut field = |bytes: Option<&[u8]>| match bytes {
        Some(bytes) => {
            hasher.update((bytes.len() as u64).to_be_bytes());
            hasher.update(bytes);
        }
        None => hasher.update(u64::MAX.to_be_bytes()),
    };
    field(Some(previous_hash.as_bytes()));
    field(Some(&event.position.to_be_bytes()));
    field(Some(event.stream_id.as_bytes()));
    field(Some(&event.version.to_be_bytes()));
    field(Some(event.event_type.as_bytes()));
    field(Some(&event.schema_version.to_be_bytes()));
    field(Some(event.data.as_bytes()));
    field(Some(event.actor.as_bytes()));
    field(Some(&event.occurred_at.timestamp_micros().to_be_bytes()));
    field(Some(&event.recorded_at.timestamp_micros().to_be_bytes()));
    for id in [event.correlation_id, event.causation_id] {
        field(id.as_ref().map(|id| id.as_bytes().as_slice()));
    }
    if let Some(sealed) = &event.sealed {
        field(Some(sealed.subject.as_bytes()));
        field(Some(&sealed.stored));
    }
    format!("{:x}", hasher.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};

    fn event() -> RecordedEvent {
        let time = Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5).single().expect("valid time");
        RecordedEvent {
            position: 1,
            stream_id: "contact-1".into(),
            version: 1,
            event_type: "ContactCreated".into(),
            schema_version: 1,
            data: "{}".into(),
            actor: "system".into(),
            occurred_at: time,
            recorded_at: time,
            correlation_id: None,
            causation_id: None,
            hash: String::new(),
            sealed: None,
        }
    }

    #[test]
    fn every_field_and_the_previous_hash_count() {
        let base = event_hash(GENESIS_HASH, &event());
        assert_eq!(base.len(), 64);
        assert_ne!(
            event_hash(&base, &event()),
            base,
            "the previous hash is part of the input"
        );
        type Change = Box<dyn Fn(&mut RecordedEvent)>;
        let changes: Vec<Change> = vec![
            Box::new(|e| e.position = 2),
            Box::new(|e| e.stream_id.push('x')),
            Box::new(|e| e.version = 2),
            Box::new(|e| e.event_type.push('x')),
            Box::new(|e| e.schema_version = 2),
            Box::new(|e| e.data = "{ }".into()),
            Box::new(|e| {
                e.sealed = Some(crate::Sealed {
                    subject: uuid::Uuid::nil(),
                    stored: vec![1],
                    opened: None,
                })
            }),
            Box::new(|e| e.actor.push('x')),
            Box::new(|e| e.occurred_at += chrono::Duration::microseconds(1)),
            Box::new(|e| e.recorded_at += chrono::Duration::microseconds(1)),
            Box::new(|e| e.correlation_id = Some(uuid::Uuid::nil())),
            Box::new(|e| e.causation_id = Some(uuid::Uuid::nil())),
        ];
        for (index, change) in changes.iter().enumerate() {
            let mut changed = event();
            change(&mut changed);
            assert_ne!(
                event_hash(GENESIS_HASH, &changed),
                base,
                "change {index} must alter the hash"
            );
        }
    }

    #[test]
    fn the_chain_covers_the_sealed_bytes_not_what_they_open_to() {
        let sealed = |opened: Option<&str>| {
            let mut e = event();
            e.sealed = Some(crate::Sealed {
                subject: uuid::Uuid::nil(),
                stored: vec![1, 2, 3],
                opened: opened.map(str::to_owned),
            });
            event_hash(GENESIS_HASH, &e)
        };
        assert_eq!(
            sealed(Some("{\"name\":\"Ada\"}")),
            sealed(None),
            "destroying the key leaves the chain as it was"
        );
    }

    #[test]
    fn field_boundaries_cannot_be_shifted() {
        let mut a = event();
        a.stream_id = "ab".into();
        a.event_type = "c".into();
        let mut b = event();
        b.stream_id = "a".into();
        b.event_type = "bc".into();
        assert_ne!(event_hash(GENESIS_HASH, &a), event_hash(GENESIS_HASH, &b));
    }
}
