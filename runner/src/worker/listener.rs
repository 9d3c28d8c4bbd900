//! The listener: `LISTEN soniq_new_job` on a connection of its own, waking the claimer;
//! reconnects after an error (the claimer polls meanwhile).

use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{watch, Notify};
use tokio_postgres::{AsyncMessage, NoTls};

pub(crate) async fn run(
    database_url: String,
    wake: Arc<Notify>,
    retry_delay: Duration,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let session = async {
            let (client, mut connection) = tokio_postgres::connect(&database_url, NoTls).await?;
            let (done_tx, mut done_rx) = tokio::sync::oneshot::channel::<()>();
            let driver_wake = Arc::clone(&wake);
            tokio::spawn(async move {
                let mut messages =
                    futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
                while let Some(message) = futures_util::StreamExt::next(&mut messages).await {
                    match message {
                        Ok(AsyncMessage::Notification(_)) => driver_wake.notify_one(),
                        Ok(_) => {}
                        Err(_) => break,
                    }
                }
                let _ = done_tx.send(());
            });
            client.batch_execute("LISTEN soniq_new_job").await?;
            // Jobs may have arrived while the listener was down.
            wake.notify_one();
            let _ = (&mut done_rx).await;
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
