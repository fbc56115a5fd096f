//! The pipeline's background loop: a round every tick, sooner while there is work, backing
//! off while the chain is unreachable, and a reconciliation page now and then.
//!
//! Nothing else waits for this loop: sales, transfers and entry are decided in the database
//! (invariant 3), and what the chain should become is already recorded by the consumer.

use std::future::Future;
use std::time::Duration;

use super::service::Pipeline;

/// How often the worker wakes and reconciles.
#[derive(Debug, Clone, Copy)]
pub struct WorkerConfig {
    /// Pause between rounds when there was nothing to do.
    pub tick: Duration,
    /// Longest pause while the chain is down.
    pub max_backoff: Duration,
    /// Pause between reconciliation pages.
    pub reconcile_every: Duration,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            tick: Duration::from_millis(250),
            max_backoff: Duration::from_secs(60),
            reconcile_every: Duration::from_secs(5),
        }
    }
}

impl Pipeline {
    /// Runs until `shutdown` resolves; a round in progress finishes first.
    pub async fn run(self, cfg: WorkerConfig, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        let mut backoff = cfg.tick;
        let mut next_reconcile = tokio::time::Instant::now() + cfg.reconcile_every;
        loop {
            let mut busy = false;
            match self.run_once(false).await {
                Ok(r) if r.chain_unavailable => {
                    backoff = (backoff * 2).min(cfg.max_backoff);
                    tracing::warn!(retry_in_ms = backoff.as_millis() as u64, "chain unavailable; minting paused");
                }
                Ok(r) => {
                    backoff = cfg.tick;
                    busy = r.progress > 0;
                }
                Err(e) => {
                    backoff = (backoff * 2).min(cfg.max_backoff);
                    tracing::warn!(error = %e, "chain pipeline round failed");
                }
            }
            if tokio::time::Instant::now() >= next_reconcile {
                next_reconcile = tokio::time::Instant::now() + cfg.reconcile_every;
                match self.reconcile_step().await {
                    Ok(r) if r.repaired > 0 => tracing::info!(repaired = r.repaired, "reconciliation queued repairs"),
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "reconciliation failed"),
                }
                if let Err(e) = self.report_metrics().await {
                    tracing::warn!(error = %e, "chain metrics not read");
                }
            }
            let pause = if busy { Duration::ZERO } else { backoff };
            tokio::select! {
                _ = &mut shutdown => return,
                _ = tokio::time::sleep(pause) => {}
            }
        }
    }
}
