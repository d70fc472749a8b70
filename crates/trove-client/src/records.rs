//! Record operations: put (optionally compare-and-set), get, delete, list.

use bytes::Bytes;
use trove_proto::v1 as pb;
use trove_types::validate;

use crate::retry::Idempotency;
use crate::types::{Consistency, Record, RecordPage, RecordSummary, next_key};
use crate::{Client, Result, records_client};

impl Client {
    /// Creates or replaces a record and returns the revision of the write. With
    /// `expected_revision`, only if the record's current revision equals it (0 = the
    /// record must not exist); a mismatch is a `FailedPrecondition` error carrying the
    /// current revision.
    pub async fn put_record(
        &self,
        key: &str,
        value: impl Into<Bytes>,
        expected_revision: Option<u64>,
    ) -> Result<u64> {
        let value = value.into();
        validate::record_key(key)?;
        validate::record_value(&value)?;
        let msg = pb::PutRecordRequest {
            key: key.to_string(),
            value,
            expected_revision,
            request_id: Some(self.inner.next_request_id()),
        };
        let resp = self
            .unary(Idempotency::Safe, |ch| {
                let req = self.request(msg.clone());
                async move { records_client(ch).put(req).await }
            })
            .await?;
        Ok(resp.revision)
    }

    /// Reads a record; a missing record is a `NotFound` error.
    pub async fn get_record(&self, key: &str, consistency: Consistency) -> Result<Record> {
        validate::record_key(key)?;
        let msg = pb::GetRecordRequest {
            key: key.to_string(),
            consistency: consistency.to_pb(),
        };
        let resp = self
            .unary(Idempotency::Safe, |ch| {
                let req = self.request(msg.clone());
                async move { records_client(ch).get(req).await }
            })
            .await?;
        Ok(Record {
            key: resp.key,
            value: resp.value,
            revision: resp.revision,
            create_revision: resp.create_revision,
        })
    }

    /// Deletes a record (only at `expected_revision` if given) and returns the revision
    /// of the delete.
    pub async fn delete_record(&self, key: &str, expected_revision: Option<u64>) -> Result<u64> {
        validate::record_key(key)?;
        let msg = pb::DeleteRecordRequest {
            key: key.to_string(),
            expected_revision,
            request_id: Some(self.inner.next_request_id()),
        };
        let resp = self
            .unary(Idempotency::Safe, |ch| {
                let req = self.request(msg.clone());
                async move { records_client(ch).delete(req).await }
            })
            .await?;
        Ok(resp.revision)
    }

    /// Lists records in key order: keys starting with `prefix` (empty = all), from
    /// `start_at` (inclusive; empty = the beginning), at most `limit` (0 = the server's
    /// default of 1000; capped at 10000).
    pub async fn list_records(
        &self,
        prefix: &str,
        start_at: &str,
        limit: u32,
    ) -> Result<RecordPage> {
        let msg = pb::ListRecordsRequest {
            prefix: prefix.to_string(),
            start_after_or_at: start_at.to_string(),
            limit,
            consistency: Consistency::Linearizable.to_pb(),
        };
        let resp = self
            .unary(Idempotency::Safe, |ch| {
                let req = self.request(msg.clone());
                async move { records_client(ch).list(req).await }
            })
            .await?;
        Ok(RecordPage {
            records: resp
                .records
                .into_iter()
                .map(|r| RecordSummary {
                    key: r.key,
                    revision: r.revision,
                    size: r.size,
                })
                .collect(),
            next: next_key(resp.next),
        })
    }
}
