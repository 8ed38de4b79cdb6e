//! The store traits' methods that read or keep small records (`EventLog`,
//! `ReadModels`, `IdempotencyKeys`, `OperatorState`), written once for both
//! backends and stamped onto each backend's store type. The point reads
//! (`head_seq`, `booking`, `booking_read`, `trip`) call each store's own
//! `point_*` methods:
//! SQLite serves them off sqlx ([`super::sqlite_reader`]). Rows are read into
//! the typed rows of [`rows`](super::rows), shared by both dialects; the
//! only dialect difference left here is `db_time`, how a time is bound.

/// `impl_event_store!(Type, "backend name", page size)`.
macro_rules! impl_event_store {
    ($store:ty, $backend:literal, $page:expr) => {
        #[async_trait::async_trait]
        impl $crate::store::EventLog for $store {
            fn backend(&self) -> &'static str {
                $backend
            }

            async fn submit(&self, submission: Submission) -> Result<Submitted, SubmitError> {
                self.writer.submit(submission).await
            }

            fn writer_alive(&self) -> bool {
                self.writer.alive()
            }

            fn writer_failing(&self, within: std::time::Duration) -> bool {
                self.writer.failing(within)
            }

            fn writer_stats(&self) -> $crate::store::WriterStats {
                self.writer.stats()
            }

            async fn close(&self) {
                self.writer.close().await
            }

            async fn ping(&self) -> Result<(), StoreError> {
                sqlx::query("SELECT 1").execute(&self.pool).await?;
                Ok(())
            }

            async fn head_seq(&self) -> Result<i64, StoreError> {
                self.point_head_seq().await
            }

            async fn read_stream(&self, stream: &str) -> Result<Vec<StoredEvent>, StoreError> {
                let rows = sqlx::query(&format!(
                    "SELECT {EVENT_COLUMNS} FROM events WHERE stream = $1 ORDER BY stream_version"
                ))
                .bind(stream)
                .fetch_all(&self.pool)
                .await?;
                Ok(rows.iter().map($crate::store::rows::event).collect::<Result<_, _>>()?)
            }

            async fn read_after(&self, after: i64, limit: i64) -> Result<Vec<StoredEvent>, StoreError> {
                let rows = sqlx::query(&format!(
                    "SELECT {EVENT_COLUMNS} FROM events WHERE seq > $1 ORDER BY seq LIMIT $2"
                ))
                .bind(after)
                .bind(limit)
                .fetch_all(&self.pool)
                .await?;
                Ok(rows.iter().map($crate::store::rows::event).collect::<Result<_, _>>()?)
            }

            fn stream_all(&self, after: i64) -> BoxStream<'_, Result<StoredEvent, StoreError>> {
                $crate::store::paged_stream(self, after, $page)
            }

            async fn booking_history(&self, booking_id: &str) -> Result<Vec<StoredEvent>, StoreError> {
                let rows = sqlx::query(&booking_history_sql())
                    .bind(crate::domain::events::stream::booking(booking_id))
                    .bind(booking_id)
                    .fetch_all(&self.pool)
                    .await?;
                Ok(rows.iter().map($crate::store::rows::event).collect::<Result<_, _>>()?)
            }

            async fn logged_ids(
                &self,
                prefix: &str,
                after: &str,
                limit: i64,
            ) -> Result<Vec<String>, StoreError> {
                // LIKE for the prefix, the collation's order for paging:
                // correct whatever the database's collation.
                let streams: Vec<String> = sqlx::query_scalar(
                    "SELECT DISTINCT stream FROM events WHERE stream LIKE $2 AND stream > $1 \
                     ORDER BY stream LIMIT $3",
                )
                .bind(format!("{prefix}{after}"))
                .bind(format!("{prefix}%"))
                .bind(limit)
                .fetch_all(&self.pool)
                .await?;
                Ok(streams
                    .into_iter()
                    .filter_map(|s| s.strip_prefix(prefix).map(str::to_string))
                    .collect())
            }
        }

        #[async_trait::async_trait]
        impl $crate::store::ReadModels for $store {
            async fn booking(&self, booking_id: &str) -> Result<Option<BookingView>, StoreError> {
                self.point_booking(booking_id).await
            }

            async fn booking_read(
                &self,
                booking_id: &str,
            ) -> Result<$crate::store::BookingRead, StoreError> {
                self.point_booking_read(booking_id).await
            }

            async fn trip(&self, trip_id: &str) -> Result<Option<TripState>, StoreError> {
                self.point_trip(trip_id).await
            }

            async fn timeline(&self, booking_id: &str) -> Result<Vec<TimelineEntry>, StoreError> {
                let rows: Vec<$crate::store::rows::TimelineRow> = sqlx::query_as(&format!(
                    "SELECT h.seq, h.kind, h.source, h.stream, h.occurred_at, h.recorded_at, \
                        h.payload, o.outcome, o.reason \
                     FROM ({}) h LEFT JOIN event_outcomes o ON o.seq = h.seq ORDER BY h.seq",
                    booking_history_sql()
                ))
                .bind(crate::domain::events::stream::booking(booking_id))
                .bind(booking_id)
                .fetch_all(&self.pool)
                .await?;
                let mut out = Vec::with_capacity(rows.len());
                for r in rows {
                    out.push(TimelineEntry {
                        stripe: StripeRef::from_stored(&r.kind, &r.payload)?,
                        outcome: r.outcome()?,
                        seq: r.seq,
                        kind: r.kind,
                        source: r.source,
                        stream: r.stream,
                        occurred_at: r.occurred_at.0,
                        recorded_at: r.recorded_at.0,
                    });
                }
                Ok(out)
            }

            async fn outcome(&self, seq: i64) -> Result<Option<EventOutcome>, StoreError> {
                let row = sqlx::query("SELECT seq, outcome, reason FROM event_outcomes WHERE seq = $1")
                    .bind(seq)
                    .fetch_optional(&self.pool)
                    .await?;
                Ok(match row {
                    Some(r) => $crate::store::rows::outcome(&r)?,
                    None => None,
                })
            }

            async fn booking_ids(&self, after: &str, limit: i64) -> Result<Vec<String>, StoreError> {
                Ok(sqlx::query_scalar(
                    "SELECT booking_id FROM trip_participants WHERE booking_id > $1 \
                     ORDER BY booking_id LIMIT $2",
                )
                .bind(after)
                .bind(limit)
                .fetch_all(&self.pool)
                .await?)
            }

            async fn trip_ids(&self, after: &str, limit: i64) -> Result<Vec<String>, StoreError> {
                Ok(sqlx::query_scalar(
                    "SELECT trip_id FROM trips WHERE trip_id > $1 ORDER BY trip_id LIMIT $2",
                )
                .bind(after)
                .bind(limit)
                .fetch_all(&self.pool)
                .await?)
            }

            async fn bookings_of_trip(&self, trip_id: &str) -> Result<Vec<BookingView>, StoreError> {
                let rows = sqlx::query($crate::store::sql::BOOKINGS_OF_TRIP)
                    .bind(trip_id)
                    .fetch_all(&self.pool)
                    .await?;
                Ok(rows
                    .iter()
                    .map($crate::store::rows::booking)
                    .collect::<Result<_, _>>()?)
            }

            async fn stats(&self) -> Result<LedgerStats, StoreError> {
                let mut stats = LedgerStats::default();
                for r in sqlx::query($crate::store::sql::STATS_EVENTS)
                    .fetch_all(&self.pool)
                    .await?
                {
                    stats
                        .events
                        .push((r.try_get("kind")?, r.try_get("source")?, r.try_get("n")?));
                }
                for r in sqlx::query($crate::store::sql::STATS_OUTCOMES)
                    .fetch_all(&self.pool)
                    .await?
                {
                    stats
                        .outcomes
                        .push((r.try_get("outcome")?, r.try_get("reason")?, r.try_get("n")?));
                }
                stats.unbound_events = sqlx::query_scalar($crate::store::sql::STATS_UNBOUND)
                    .fetch_one(&self.pool)
                    .await?;
                for r in sqlx::query($crate::store::sql::STATS_OUTBOX)
                    .fetch_all(&self.pool)
                    .await?
                {
                    stats
                        .outbox
                        .push((r.try_get("kind")?, r.try_get("status")?, r.try_get("n")?));
                }
                let oldest: Option<$crate::store::rows::StoredTime> =
                    sqlx::query_scalar($crate::store::sql::STATS_OUTBOX_OLDEST)
                        .fetch_one(&self.pool)
                        .await?;
                stats.oldest_pending_outbox = oldest.map(|t| t.0);
                Ok(stats)
            }
        }

        #[async_trait::async_trait]
        impl $crate::store::IdempotencyKeys for $store {
            async fn idempotency_begin(
                &self,
                scope: &str,
                key: &str,
                fingerprint: &str,
                abandon_after: chrono::Duration,
            ) -> Result<IdempotencyBegin, StoreError> {
                let now = now();
                let claim = uuid::Uuid::new_v4().to_string();
                let claim_ref = &claim;
                let steps = $crate::store::on_pooled(&self.pool, |e| self.stale(e), |mut conn| async move {
                    let steps: Result<Option<Option<_>>, sqlx::Error> = async {
                        // Abandoned keys (pending, nothing committed) go
                        // first, so the insert below can claim them.
                        sqlx::query($crate::store::sql::IDEMPOTENCY_PURGE)
                            .bind(db_time(now - $crate::store::IDEMPOTENCY_RETENTION))
                            .bind(db_time(now - abandon_after))
                            .execute(&mut *conn)
                            .await?;
                        let claimed = sqlx::query($crate::store::sql::IDEMPOTENCY_CLAIM)
                            .bind(scope)
                            .bind(key)
                            .bind(fingerprint)
                            .bind(db_time(now))
                            .bind(claim_ref)
                            .execute(&mut *conn)
                            .await?
                            .rows_affected();
                        if claimed == 1 {
                            return Ok(None);
                        }
                        sqlx::query($crate::store::sql::IDEMPOTENCY_READ)
                            .bind(scope)
                            .bind(key)
                            .fetch_optional(&mut *conn)
                            .await
                            .map(Some)
                    }
                    .await;
                    (conn, steps)
                })
                .await?;
                let row = match steps {
                    None => return Ok(IdempotencyBegin::Owned { claim }),
                    Some(row) => row,
                };
                let Some(row) = row else {
                    // Purged between the two statements: claim it again.
                    return Box::pin(self.idempotency_begin(scope, key, fingerprint, abandon_after))
                        .await;
                };
                let fingerprint: String = row.try_get("fingerprint")?;
                let state: String = row.try_get("state")?;
                let seq: Option<i64> = row.try_get("seq")?;
                Ok(if state == "done" {
                    IdempotencyBegin::Completed {
                        fingerprint,
                        status: u16::try_from(row.try_get::<i32, _>("status")?).unwrap_or(500),
                        body: row
                            .try_get::<Option<String>, _>("body")?
                            .unwrap_or_default(),
                    }
                } else if let Some(seq) = seq.filter(|s| *s > 0) {
                    IdempotencyBegin::Committed { fingerprint, seq }
                } else {
                    IdempotencyBegin::InFlight { fingerprint }
                })
            }

            async fn idempotency_finish(
                &self,
                scope: &str,
                key: &str,
                claim: &str,
                status: u16,
                body: &str,
            ) -> Result<(), StoreError> {
                $crate::store::on_pooled(&self.pool, |e| self.stale(e), |mut conn| async move {
                    let done = sqlx::query($crate::store::sql::IDEMPOTENCY_FINISH)
                        .bind(scope)
                        .bind(key)
                        .bind(i32::from(status))
                        .bind(body)
                        .bind(claim)
                        .execute(&mut *conn)
                        .await;
                    (conn, done)
                })
                .await
                .map(|_| ())
            }

            async fn idempotency_settle(
                &self,
                scope: &str,
                key: &str,
                seq: i64,
                status: u16,
                body: &str,
            ) -> Result<(), StoreError> {
                $crate::store::on_pooled(&self.pool, |e| self.stale(e), |mut conn| async move {
                    let done = sqlx::query($crate::store::sql::IDEMPOTENCY_SETTLE)
                        .bind(scope)
                        .bind(key)
                        .bind(seq)
                        .bind(i32::from(status))
                        .bind(body)
                        .execute(&mut *conn)
                        .await;
                    (conn, done)
                })
                .await
                .map(|_| ())
            }

            async fn idempotency_abandon(
                &self,
                scope: &str,
                key: &str,
                claim: &str,
            ) -> Result<(), StoreError> {
                $crate::store::on_pooled(&self.pool, |e| self.stale(e), |mut conn| async move {
                    let done = sqlx::query($crate::store::sql::IDEMPOTENCY_ABANDON)
                        .bind(scope)
                        .bind(key)
                        .bind(claim)
                        .execute(&mut *conn)
                        .await;
                    (conn, done)
                })
                .await
                .map(|_| ())
            }
        }

        #[async_trait::async_trait]
        impl $crate::store::OperatorState for $store {
            async fn side_effects_paused(&self) -> Result<bool, StoreError> {
                let kind: Option<String> = sqlx::query_scalar($crate::store::sql::LAST_PAUSE_OR_RESUME)
                    .fetch_optional(&self.pool)
                    .await?;
                Ok(kind.as_deref() == Some("SideEffectsPaused"))
            }
        }
    };
}
