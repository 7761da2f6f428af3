//! Schedule leases and job runs in PostgreSQL. A claim is one upsert whose
//! condition PostgreSQL checks again after a concurrent claimer committed:
//! of two processes claiming one schedule, one wins, so one tick runs once.

use super::PgStore;
use crate::adapters::sqlite::shared::{from_micros, to_micros};
use crate::core::model::Timestamp;
use crate::ports::store::{JobRun, ScheduleStore, StoreError};

impl ScheduleStore for PgStore {
    fn last_tick(&self, schedule: &str) -> Result<Option<Timestamp>, StoreError> {
        self.read(async |c| {
            c.query_opt(
                "SELECT last_tick FROM schedule_state WHERE name = $1",
                &[&schedule],
            )
            .await?
            .and_then(|r| r.get::<_, Option<i64>>(0))
            .map(from_micros)
            .transpose()
        })
    }

    fn claim_schedule(
        &self,
        schedule: &str,
        owner: &str,
        now: Timestamp,
        lease_until: Timestamp,
    ) -> Result<bool, StoreError> {
        self.tx(async |tx| {
            let n = tx
                .execute(
                    "INSERT INTO schedule_state (name, lease_owner, lease_until) VALUES ($1, $2, $4)
                     ON CONFLICT (name) DO UPDATE SET lease_owner = $2, lease_until = $4
                     WHERE schedule_state.lease_owner IS NULL OR schedule_state.lease_owner = $2
                        OR schedule_state.lease_until <= $3",
                    &[&schedule, &owner, &to_micros(now), &to_micros(lease_until)],
                )
                .await?;
            Ok(n == 1)
        })
    }

    fn renew_schedule(
        &self,
        schedule: &str,
        owner: &str,
        lease_until: Timestamp,
    ) -> Result<bool, StoreError> {
        self.tx(async |tx| {
            let n = tx
                .execute(
                    "UPDATE schedule_state SET lease_until = $3 WHERE name = $1 AND lease_owner = $2",
                    &[&schedule, &owner, &to_micros(lease_until)],
                )
                .await?;
            Ok(n == 1)
        })
    }

    fn complete_schedule(
        &self,
        schedule: &str,
        owner: &str,
        last_tick: Timestamp,
    ) -> Result<(), StoreError> {
        self.tx(async |tx| {
            tx.execute(
                "UPDATE schedule_state SET last_tick = $3, lease_owner = NULL, lease_until = NULL
                 WHERE name = $1 AND lease_owner = $2",
                &[&schedule, &owner, &to_micros(last_tick)],
            )
            .await?;
            Ok(())
        })
    }

    fn close_abandoned_runs(
        &self,
        schedule: &str,
        owner: &str,
        now: Timestamp,
    ) -> Result<usize, StoreError> {
        self.tx(async |tx| {
            Ok(tx
                .execute(
                    "UPDATE job_runs SET finished_at = $3,
                       outcome = 'error: interrupted: its process stopped before the end'
                     WHERE schedule = $1 AND owner <> $2 AND finished_at IS NULL",
                    &[&schedule, &owner, &to_micros(now)],
                )
                .await? as usize)
        })
    }

    fn start_job_run(&self, run: &JobRun) -> Result<i64, StoreError> {
        self.tx(async |tx| {
            Ok(tx
                .query_one(
                    "INSERT INTO job_runs (schedule, job, tick, owner, started_at)
                     VALUES ($1, $2, $3, $4, $5) RETURNING seq",
                    &[
                        &run.schedule,
                        &run.job,
                        &to_micros(run.tick),
                        &run.owner,
                        &to_micros(run.started_at),
                    ],
                )
                .await?
                .get(0))
        })
    }

    fn finish_job_run(
        &self,
        id: i64,
        finished_at: Timestamp,
        outcome: &str,
    ) -> Result<(), StoreError> {
        self.tx(async |tx| {
            tx.execute(
                "UPDATE job_runs SET finished_at = $2, outcome = $3 WHERE seq = $1",
                &[&id, &to_micros(finished_at), &outcome],
            )
            .await?;
            Ok(())
        })
    }

    fn job_runs(&self, schedule: Option<&str>, limit: u32) -> Result<Vec<JobRun>, StoreError> {
        self.read(async |c| {
            c.query(
                "SELECT schedule, job, tick, owner, started_at, finished_at, outcome FROM job_runs
                 WHERE $1::text IS NULL OR schedule = $1 ORDER BY seq DESC LIMIT $2",
                &[&schedule, &i64::from(limit)],
            )
            .await?
            .iter()
            .map(|r| {
                Ok(JobRun {
                    schedule: r.get(0),
                    job: r.get(1),
                    tick: from_micros(r.get(2))?,
                    owner: r.get(3),
                    started_at: from_micros(r.get(4))?,
                    finished_at: r.get::<_, Option<i64>>(5).map(from_micros).transpose()?,
                    outcome: r.get(6),
                })
            })
            .collect()
        })
    }
}
