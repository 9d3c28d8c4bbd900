//! The listener: `LISTEN soniq_new_job` on a connection of its own, waking the claimer;
//! reconnects after an error (the claimer polls meanwhile).

use crate::connection::ConnectionConfig;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{watch, Notify};

pub(crate) async fn run(
    connection: ConnectionConfig,
    wake: Arc<Notify>,
    retry_delay: Duration,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let session = async {
            let driver_wake = Arc::clone(&wake);
            let (client, driver) = connection
                .connect_notifying(move |_| driver_wake.notify_one())
                .await?;
            client.batch_execute("LISTEN soniq_new_job").await?;
            // Jobs may have arrived while the listener was down.
            wake.notify_one();
            let _ = driver.await;
            Ok::<_, tokio_postgres::Error>(())
        };
        tokio::select! {
            result = session => {
                if let Err(e) = result {
                    tracing::warn!("listener: {e}; polling until it reconnects");
                }
            }
            _ = stop.changed() => return,
        }
        tokio::select! {
            _ = tokio::time::sleep(retry_delay) => {}
            _ = stop.changed() => return,
        }
    }
}
